"""The Kubernetes CustomResourceDefinitions, generated from the pydantic models.

Nothing here restates a field: the OpenAPI v3 schemas of the DiarizationTuning and
DiarizationTrial CRDs are converted from the JSON schemas pydantic makes of
``diartune.spec`` and ``diartune.records``, so names, types, bounds and descriptions
live there only. Kubernetes wants *structural* schemas, so the conversion

- inlines every ``$ref``;
- turns ``X | None`` into ``nullable: true``, ``const`` into a one-value ``enum``,
  ``dict[str, Any]`` into ``x-kubernetes-preserve-unknown-fields``, ``str | int`` into
  ``x-kubernetes-int-or-string``, and other unions of scalars into an untyped node
  whose CEL rule only takes scalars;
- merges the discriminated union of parameter types into one object with a ``type``
  enum, and turns what told the variants apart into CEL rules (``x-kubernetes-validations``);
- adds the CEL rules of the cross-field checks pydantic runs in model validators
  (``VALIDATIONS``), which a JSON schema cannot carry;
- drops ``title`` and ``default``: defaults are applied by the models, not by the API
  server, so that a stored resource holds only what its author wrote.

``render_crds()`` gives the YAML that ``diartune crd`` prints and that is checked into
``charts/diartune/crds/`` (regenerate with ``python -m diartune.crd --output-dir DIR``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from diartune.records import TrialRecord
from diartune.spec import (
    API_VERSION,
    KIND,
    CategoricalParameter,
    DiarizationTuning,
    FloatParameter,
    IntParameter,
    Pipeline,
)

GROUP, VERSION = API_VERSION.split("/")
TRIAL_KIND = "DiarizationTrial"

Schema = dict[str, Any]
Rule = dict[str, str]

# JSON-schema keywords that mean the same in a Kubernetes structural schema.
_KEPT = frozenset(
    {
        "type",
        "description",
        "enum",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "nullable",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
# Keywords with no effect on what the API server accepts.
_DROPPED = frozenset({"title", "default", "examples", "$schema"})
_SCALARS = frozenset({"string", "integer", "number", "boolean"})
_CEL_SCALAR = "type(self) in [string, int, uint, double, bool]"


def _rule(rule: str, message: str) -> Rule:
    return {"rule": rule, "message": message}


_LOW_BELOW_HIGH = _rule("self.low < self.high", "low must be less than high")
_LOG_NEEDS_POSITIVE_LOW = _rule(
    "!has(self.log) || !self.log || self.low > 0.0", "a log scale needs low > 0"
)

# The cross-field checks of the models' validators, as CEL rules on each model's object.
# Rules of a discriminated-union variant are written for the merged object, in which the
# variants' numbers are all ``double``; they run only for that variant's ``type``.
VALIDATIONS: dict[type[BaseModel], tuple[Rule, ...]] = {
    FloatParameter: (_LOW_BELOW_HIGH, _LOG_NEEDS_POSITIVE_LOW),
    IntParameter: (_LOW_BELOW_HIGH, _LOG_NEEDS_POSITIVE_LOW),
    CategoricalParameter: (),  # unique choices: checked by the operator (quadratic in CEL)
    Pipeline: (
        _rule(
            "self.clustering != 'VBxClustering' || (has(self.plda) && self.plda != '')",
            "VBxClustering needs a PLDA (local path, s3:// URI or hub id)",
        ),
    ),
}


class CrdError(ValueError):
    """A JSON schema construct with no structural OpenAPI equivalent."""


# --- JSON schema -> structural OpenAPI v3 ------------------------------------------------


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``, as Kubernetes takes it."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    rules = {cls.__name__: list(found) for cls, found in VALIDATIONS.items()}
    return _Converter(definitions, rules).convert(schema, model.__name__, model.__name__)


class _Converter:
    """Converts one pydantic JSON schema, resolving references against its ``$defs``."""

    def __init__(self, definitions: Schema, rules: dict[str, list[Rule]]) -> None:
        self.definitions = definitions
        self.rules = rules

    def convert(self, node: Schema, where: str, name: str | None = None) -> Schema:
        """The structural form of ``node``; ``where`` names it in errors, ``name`` its model."""
        if "$ref" in node:
            return self._reference(node, where)
        if "anyOf" in node or "oneOf" in node:
            return self._union(node, where)
        result: Schema = {}
        for key, value in node.items():
            if key in _DROPPED:
                continue
            if key == "properties":
                result[key] = {
                    prop: self.convert(sub, f"{where}.{prop}") for prop, sub in value.items()
                }
            elif key == "additionalProperties":
                result.update(self._additional(value, where))
            elif key == "items":
                result[key] = self.convert(value, f"{where}[]")
            elif key == "const":
                result["enum"] = [value]
            elif key == "exclusiveMinimum":
                result.update(minimum=value, exclusiveMinimum=True)
            elif key == "exclusiveMaximum":
                result.update(maximum=value, exclusiveMaximum=True)
            elif key == "x-kubernetes-validations":
                result[key] = list(value)
            elif key in _KEPT:
                result[key] = value
            else:
                raise CrdError(f"{where}: JSON schema keyword {key!r} has no structural form")
        rules = [*result.pop("x-kubernetes-validations", []), *self.rules.get(name or "", [])]
        if rules:
            result["x-kubernetes-validations"] = _unique(rules)
        return result

    def _reference(self, node: Schema, where: str) -> Schema:
        name = node["$ref"].removeprefix("#/$defs/")
        if name not in self.definitions:
            raise CrdError(f"{where}: unresolved reference {node['$ref']!r}")
        # Keywords beside a $ref (a field's description) win over the model's own.
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return self.convert({**self.definitions[name], **siblings}, where, name)

    def _additional(self, value: bool | Schema, where: str) -> Schema:
        if value is False:  # extra="forbid": a structural schema prunes unknown fields
            return {}
        if value is True or value == {}:
            return {"x-kubernetes-preserve-unknown-fields": True}
        return {"additionalProperties": self.convert(value, f"{where}{{}}")}

    def _union(self, node: Schema, where: str) -> Schema:
        options: list[Schema] = node.get("anyOf") or node["oneOf"]
        outer = {
            key: value
            for key, value in node.items()
            if key not in ("anyOf", "oneOf", "discriminator") and key not in _DROPPED
        }
        present = [option for option in options if option != {"type": "null"}]
        nullable = len(present) < len(options)
        if len(present) == 1:
            result = self.convert({**present[0], **outer}, where)
        elif "discriminator" in node:
            result = self._merge_variants(present, node["discriminator"], where)
            result.update(self.convert(outer, where))
        elif all(set(option) == {"type"} and option["type"] in _SCALARS for option in present):
            result = _scalar_union({option["type"] for option in present})
            result.update(self.convert(outer, where))
        else:
            raise CrdError(f"{where}: a union of {present} has no structural form")
        if nullable:
            result["nullable"] = True
        return result

    def _merge_variants(self, options: list[Schema], discriminator: Schema, where: str) -> Schema:
        tag = discriminator["propertyName"]
        variants: dict[str, Schema] = {}
        for option in options:
            variant = self.convert(option, where)
            variants[variant["properties"][tag]["enum"][0]] = variant
        return _MergedUnion(tag, variants, where).schema()


def _scalar_union(types: set[str]) -> Schema:
    if types == {"integer", "string"}:
        return {"x-kubernetes-int-or-string": True}
    # Any scalar: an untyped node (structural when it preserves unknown fields) whose rule
    # refuses objects and lists.
    names = " or ".join(sorted(types))
    return {
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-validations": [_rule(_CEL_SCALAR, f"must be a {names}")],
    }


class _MergedUnion:
    """A discriminated union of object schemas, as one object plus CEL rules."""

    def __init__(self, tag: str, variants: dict[str, Schema], where: str) -> None:
        self.tag = tag
        self.variants = variants
        self.where = where
        self.properties: Schema = {}
        self.integers: dict[str, set[str]] = {}  # variant -> properties widened to number
        for value, variant in variants.items():
            for prop, sub in variant["properties"].items():
                if prop != tag:
                    self._add(value, prop, sub)

    def _add(self, value: str, prop: str, sub: Schema) -> None:
        known = self.properties.setdefault(prop, sub)
        if known == sub:
            return
        widened = {**sub, "type": "number"}
        if {known.get("type"), sub.get("type")} == {"integer", "number"} and widened == {
            **known,
            "type": "number",
        }:
            self.properties[prop] = widened
            for other, variant in self.variants.items():
                if variant["properties"].get(prop, {}).get("type") == "integer":
                    self.integers.setdefault(other, set()).add(prop)
            return
        raise CrdError(f"{self.where}.{prop}: the variants of {self.tag!r} disagree on it")

    def schema(self) -> Schema:
        """The merged object schema."""
        values = list(self.variants)
        kinds = "; ".join(
            f"{value}: {variant.get('description', '')}".strip()
            for value, variant in self.variants.items()
        )
        required = set.intersection(*(set(v.get("required", [])) for v in self.variants.values()))
        return {
            "type": "object",
            "properties": {
                self.tag: {"type": "string", "enum": values, "description": kinds},
                **self.properties,
            },
            "required": [self.tag, *sorted(required - {self.tag})],
            "x-kubernetes-validations": self._rules(required),
        }

    def _rules(self, common: set[str]) -> list[Rule]:
        found: list[tuple[Rule, str]] = []
        for value, variant in self.variants.items():
            needed = sorted(set(variant.get("required", [])) - common)
            if needed:
                rule = " && ".join(f"has(self.{prop})" for prop in needed)
                found.append((_rule(rule, f"{_and(needed)} required"), value))
            foreign = sorted(set(self.properties) - set(variant["properties"]))
            if foreign:
                rule = " && ".join(f"!has(self.{prop})" for prop in foreign)
                found.append((_rule(rule, f"{_and(foreign)} not allowed"), value))
            for prop in sorted(self.integers.get(value, ())):
                rule = f"!has(self.{prop}) || double(int(self.{prop})) == self.{prop}"
                found.append((_rule(rule, f"{prop} must be an integer"), value))
            present = " && ".join(f"has(self.{prop})" for prop in needed)
            for own in variant.get("x-kubernetes-validations", []):
                rule = f"!({present}) || ({own['rule']})" if present else own["rule"]
                found.append((_rule(rule, own["message"]), value))
        return [self._guard(rule, values) for rule, values in _grouped(found)]

    def _guard(self, rule: Rule, values: list[str]) -> Rule:
        if len(values) == len(self.variants):
            return rule
        if len(values) == 1:
            condition = f"self.{self.tag} != '{values[0]}'"
        else:
            condition = f"!(self.{self.tag} in [{', '.join(repr(v) for v in values)}])"
        return _rule(
            f"{condition} || ({rule['rule']})",
            f"{rule['message']} when {self.tag} is {' or '.join(values)}",
        )


def _and(names: list[str]) -> str:
    return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + (
        " are" if len(names) > 1 else " is"
    )


def _grouped(found: Iterable[tuple[Rule, str]]) -> list[tuple[Rule, list[str]]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for rule, value in found:
        groups.setdefault((rule["rule"], rule["message"]), []).append(value)
    return [(_rule(rule, message), values) for (rule, message), values in groups.items()]


def _unique(rules: list[Rule]) -> list[Rule]:
    seen: list[Rule] = []
    for rule in rules:
        if rule not in seen:
            seen.append(rule)
    return seen


# --- The resources -----------------------------------------------------------------------


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


def _fields(model: type[BaseModel], names: Iterable[str]) -> dict[str, Any]:
    return {name: (model.model_fields[name].annotation, model.model_fields[name]) for name in names}


TrialSpec: type[BaseModel] = create_model(
    "DiarizationTrialSpec",
    __base__=_Document,
    __doc__="What the trial runs: its place in the tuning and its parameters.",
    tuning=(str, Field(description="The DiarizationTuning this trial belongs to.")),
    **_fields(TrialRecord, ("stage", "number", "params", "full_params", "segmentation")),
)
TrialStatus: type[BaseModel] = create_model(
    "DiarizationTrialStatus",
    __base__=_Document,
    __doc__="What the trial measured; written by the operator only.",
    state=(
        Literal["Pending", "Running", "Succeeded", "Failed"] | None,
        Field(None, description="Pending, Running, then Succeeded or Failed."),
    ),
    job=(str | None, Field(None, description="The Job that runs the trial.")),
    **_fields(
        TrialRecord,
        ("der", "components", "checkpoint", "artifacts", "message", "bad_input", "seconds"),
    ),
)


def _object_meta(root: Schema) -> Schema:
    """The root of a custom resource: apiVersion, kind and metadata belong to Kubernetes."""
    properties = root["properties"]
    properties["apiVersion"] = {
        "type": "string",
        "description": "The versioned schema of this object: " + API_VERSION + ".",
    }
    properties["kind"] = {"type": "string", "description": "The REST resource of this object."}
    properties["metadata"] = {"type": "object"}
    root["required"] = [name for name in root.get("required", []) if name == "spec"]
    return {"type": "object", **root, "properties": {**properties}}


def _name_rules(model: type[BaseModel]) -> list[Rule]:
    """CEL rules for the limits the model puts on metadata.name beyond Kubernetes' own."""
    schema = model.model_fields["metadata"].annotation
    limit = None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        limit = schema.model_json_schema()["properties"]["name"].get("maxLength")
    if limit is None:
        return []
    return [_rule(f"size(self.metadata.name) <= {limit}", f"metadata.name: at most {limit} chars")]


def tuning_schema() -> Schema:
    """The OpenAPI v3 schema of a DiarizationTuning."""
    root = _object_meta(structural_schema(DiarizationTuning))
    root["properties"]["status"] = {
        "type": "object",
        "description": root["properties"]["status"].get("description", ""),
        "x-kubernetes-preserve-unknown-fields": True,
    }
    rules = _name_rules(DiarizationTuning)
    if rules:
        root["x-kubernetes-validations"] = rules
    return root


def trial_schema() -> Schema:
    """The OpenAPI v3 schema of a DiarizationTrial."""
    root: Schema = {
        "type": "object",
        "description": "One trial of a DiarizationTuning: its parameters and what it measured.",
        "properties": {
            "spec": structural_schema(TrialSpec),
            "status": structural_schema(TrialStatus),
        },
        "required": ["spec"],
    }
    return _object_meta(root)


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> Schema:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


AGE = _column("Age", ".metadata.creationTimestamp", "date")
TUNING_COLUMNS = [
    _column("Phase", ".status.phase"),
    _column("Stage", ".status.stage"),
    _column("Done", ".status.trialsDone", "integer", description="Trials finished."),
    _column("Running", ".status.trialsRunning", "integer", description="Trials running."),
    _column("Best DER", ".status.bestDer", "number", description="Best DER so far."),
    AGE,
]
TRIAL_COLUMNS = [
    _column("Tuning", ".spec.tuning"),
    _column("Stage", ".spec.stage"),
    _column("State", ".status.state"),
    _column("DER", ".status.der", "number"),
    AGE,
]


def _crd(
    kind: str, plural: str, short: str, schema: Schema, columns: list[Schema]
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "diartune"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["diartune"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def tuning_crd() -> dict[str, Any]:
    """The DiarizationTuning CustomResourceDefinition."""
    return _crd(KIND, "diarizationtunings", "dtune", tuning_schema(), TUNING_COLUMNS)


def trial_crd() -> dict[str, Any]:
    """The DiarizationTrial CustomResourceDefinition (one per trial, as Katib's Trial)."""
    return _crd(TRIAL_KIND, "diarizationtrials", "dtrial", trial_schema(), TRIAL_COLUMNS)


# --- YAML --------------------------------------------------------------------------------

HEADER = (
    "# Generated by `diartune crd` from diartune/spec.py and diartune/records.py: do not edit.\n"
)
CRDS: dict[str, Callable[[], dict[str, Any]]] = {
    f"{GROUP}_diarizationtunings.yaml": tuning_crd,
    f"{GROUP}_diarizationtrials.yaml": trial_crd,
}


def render_crd(crd: dict[str, Any]) -> str:
    """One CRD as a YAML document, with the generated-file header."""
    return HEADER + yaml.safe_dump(crd, sort_keys=False, allow_unicode=True, width=100)


def crd_files() -> dict[str, str]:
    """The YAML of each CRD, by its file name in ``charts/diartune/crds/``."""
    return {name: render_crd(make()) for name, make in CRDS.items()}


def render_crds() -> str:
    """Both CRDs as one multi-document YAML stream (what ``diartune crd`` prints)."""
    return "---\n".join(crd_files().values())


def main(argv: list[str] | None = None) -> int:
    """Print the CRDs, or write one file per CRD into ``--output-dir``."""
    parser = argparse.ArgumentParser(prog="diartune crd", description=main.__doc__)
    parser.add_argument("--output-dir", type=Path, help="e.g. charts/diartune/crds")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        sys.stdout.write(render_crds())
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in crd_files().items():
        (args.output_dir / name).write_text(text, encoding="utf-8")
        print(args.output_dir / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
