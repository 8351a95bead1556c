"""The Kubernetes CustomResourceDefinitions, generated from the pydantic models.

Nothing here restates a field: the OpenAPI v3 schemas of the DiarizationTuning and
DiarizationTrial CRDs are converted from the JSON schemas pydantic makes of
``diartune.spec.model`` and ``diartune.operator.api``, so names, types, bounds and descriptions
live there only. Kubernetes wants *structural* schemas, so the conversion

- inlines every ``$ref``;
- turns ``X | None`` into ``nullable: true``, ``const`` into a one-value ``enum``,
  ``dict[str, Any]`` into ``x-kubernetes-preserve-unknown-fields``, ``str | int`` into
  ``x-kubernetes-int-or-string``, and other unions of scalars (``str | int | float | bool``)
  into an untyped node that preserves unknown fields: the API server takes any value
  there, the models check it, and CEL cannot see it;
- merges the discriminated union of parameter types into one object with a ``type``
  enum, and turns what told the variants apart into CEL rules (``x-kubernetes-validations``),
  or, for fields CEL cannot see (``choices``), into ``allOf`` implications of ``required``;
- passes through the CEL rules (``x-kubernetes-validations``) that the models declare
  beside their cross-field validators, which plain JSON-schema keywords cannot express;
- drops ``title`` and ``default``: defaults are applied by the models, not by the API
  server, so that a stored resource holds only what its author wrote.

``render_crds()`` gives the YAML that ``diartune crd`` prints; ``crd_files()`` gives the
files checked into ``charts/diartune/crds/`` (``diartune crd --output-dir charts/diartune/crds``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from diartune.operator.api import (
    GROUP,
    TRIAL_KIND,
    TRIAL_PLURAL,
    TUNING_KIND,
    TUNING_PLURAL,
    VERSION,
    DiarizationTrialSpec,
    DiarizationTrialStatus,
    DiarizationTuningStatus,
)
from diartune.spec.model import API_VERSION, DiarizationTuning

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
T = TypeVar("T")


def _rule(rule: str, message: str) -> Rule:
    return {"rule": rule, "message": message}


class CrdError(ValueError):
    """A JSON schema construct with no structural OpenAPI equivalent."""


# --- JSON schema -> structural OpenAPI v3 ------------------------------------------------


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``, as Kubernetes takes it."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    return _tidy(_Converter(definitions).convert(schema, model.__name__))


class _Converter:
    """Converts one pydantic JSON schema, resolving references against its ``$defs``."""

    def __init__(self, definitions: Schema) -> None:
        self.definitions = definitions

    def convert(self, node: Schema, where: str) -> Schema:
        """The structural form of ``node``; ``where`` names it in errors."""
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
            elif key == "patternProperties":
                result.update(self._keyed(value, node.get("propertyNames", {}), where))
            elif key == "propertyNames":
                continue  # checked with patternProperties
            elif key == "items":
                result[key] = self.convert(value, f"{where}[]")
            elif key == "const":
                result["enum"] = [value]
            elif key == "exclusiveMinimum":
                result.update(minimum=value, exclusiveMinimum=True)
            elif key == "exclusiveMaximum":
                result.update(maximum=value, exclusiveMaximum=True)
            elif key == "x-kubernetes-validations":
                # pydantic sorts a schema's keys: each rule's expression first again.
                result[key] = [{"rule": rule["rule"], **rule} for rule in value]
            elif key in _KEPT:
                result[key] = value
            else:
                raise CrdError(f"{where}: JSON schema keyword {key!r} has no structural form")
        return result

    def _reference(self, node: Schema, where: str) -> Schema:
        name = node["$ref"].removeprefix("#/$defs/")
        if name not in self.definitions:
            raise CrdError(f"{where}: unresolved reference {node['$ref']!r}")
        # Keywords beside a $ref (a field's description) win over the model's own.
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return self.convert({**self.definitions[name], **siblings}, where)

    def _additional(self, value: bool | Schema, where: str) -> Schema:
        if value is False:  # extra="forbid": a structural schema prunes unknown fields
            return {}
        if value is True or value == {}:
            return {"x-kubernetes-preserve-unknown-fields": True}
        return {"additionalProperties": self.convert(value, f"{where}{{}}")}

    def _keyed(self, patterns: Schema, names: Schema, where: str) -> Schema:
        """A map whose keys follow a pattern: its values' schema, and a CEL rule on its keys
        (structural schemas have no patternProperties)."""
        if len(patterns) != 1:
            raise CrdError(f"{where}: several key patterns have no structural form")
        [(pattern, values)] = patterns.items()
        checks = [f"k.matches({json.dumps(pattern)})"]
        if "maxLength" in names:
            checks.append(f"size(k) <= {names['maxLength']}")
        rule = _rule(f"self.all(k, {' && '.join(checks)})", f"keys must match {pattern}")
        return {
            "additionalProperties": self.convert(values, f"{where}{{}}"),
            "x-kubernetes-validations": [rule],
        }

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
        elif all(option.get("type") in _SCALARS and "anyOf" not in option for option in present):
            # The branches' own bounds stay with the models: a structural schema has no
            # per-type constraints in a union (the API server takes more, never less).
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
    # Any scalar: structural schemas have no such type, so the node is left untyped, which
    # they allow when it preserves unknown fields. The API server then takes any value
    # there (the models check it) and CEL rules cannot see it.
    return {"x-kubernetes-preserve-unknown-fields": True}


_ORDER = (
    "type",
    "description",
    "nullable",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "allOf",
    "x-kubernetes-validations",
)


def _tidy(node: Schema) -> Schema:
    """``node`` with its keywords in a fixed order, for a readable and stable YAML."""
    ordered = {key: node[key] for key in sorted(node, key=_ORDER.index)}
    if "properties" in ordered:
        ordered["properties"] = {k: _tidy(v) for k, v in ordered["properties"].items()}
    for key in ("additionalProperties", "items"):
        if isinstance(ordered.get(key), dict):
            ordered[key] = _tidy(ordered[key])
    return ordered


def _cel_visible(node: Schema) -> bool:
    """Whether CEL rules can refer to a value of this schema (untyped nodes are hidden)."""
    if node.get("x-kubernetes-int-or-string"):
        return True
    if "type" not in node:
        return False
    if "items" in node:
        return _cel_visible(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        return _cel_visible(node["additionalProperties"])
    return True


class _MergedUnion:
    """A discriminated union of object schemas, as one object with a ``type`` enum.

    What told the variants apart becomes constraints that hold for some values of the tag
    only: CEL rules where CEL can see the properties involved, otherwise ``allOf``
    implications made of ``required``, the only structural way to test a field's presence.
    """

    def __init__(self, tag: str, variants: dict[str, Schema], where: str) -> None:
        self.tag = tag
        self.variants = variants
        self.where = where
        self.properties: Schema = {}
        self.integers: dict[str, list[str]] = {}  # variant -> its properties widened to number
        for value, variant in variants.items():
            for prop, sub in variant["properties"].items():
                if prop != tag:
                    self._add(value, prop, sub)

    def _add(self, value: str, prop: str, sub: Schema) -> None:
        known = self.properties.setdefault(prop, sub)
        if known == sub:
            return
        # An integer in one variant and a number in another (low, high): a number, plus a
        # CEL rule that it is integral in the integer variants.
        types = {known.get("type"), sub.get("type")}
        widened = {**sub, "type": "number"}
        if types == {"integer", "number"} and {**known, "type": "number"} == widened:
            self.properties[prop] = widened
            for other, variant in self.variants.items():
                if variant["properties"].get(prop, {}).get("type") == "integer":
                    self.integers.setdefault(other, []).append(prop)
            return
        raise CrdError(f"{self.where}.{prop}: the variants of {self.tag!r} disagree on it")

    def schema(self) -> Schema:
        """The merged object schema."""
        kinds = " ".join(
            f"{value}: {variant.get('description', '')}" for value, variant in self.variants.items()
        )
        common = set.intersection(*(set(v.get("required", [])) for v in self.variants.values()))
        node: Schema = {
            "type": "object",
            "properties": {
                self.tag: {"type": "string", "enum": list(self.variants), "description": kinds},
                **self.properties,
            },
            "required": [self.tag, *(p for p in self.properties if p in common)],
        }
        rules: list[tuple[Rule, str]] = []
        implications: list[tuple[Schema, str]] = []
        for value, variant in self.variants.items():
            self._variant(value, variant, common, rules, implications)
        if implications:
            node["allOf"] = [self._implication(*item) for item in _grouped(implications)]
        if rules:
            node["x-kubernetes-validations"] = [self._guard(*item) for item in _grouped(rules)]
        return node

    def _variant(
        self,
        value: str,
        variant: Schema,
        common: set[str],
        rules: list[tuple[Rule, str]],
        implications: list[tuple[Schema, str]],
    ) -> None:
        needed = [p for p in variant["properties"] if p in variant.get("required", [])]
        needed = [p for p in needed if p not in common]
        foreign = [p for p in self.properties if p not in variant["properties"]]
        visible = [p for p in needed if _cel_visible(self.properties[p])]
        if visible:
            has = " && ".join(f"has(self.{p})" for p in visible)
            rules.append((_rule(has, f"{_and(visible)} required"), value))
        if hidden := [p for p in needed if p not in visible]:
            implications.append(({"required": hidden}, value))
        visible_foreign = [p for p in foreign if _cel_visible(self.properties[p])]
        if visible_foreign:
            rule = " && ".join(f"!has(self.{p})" for p in visible_foreign)
            rules.append((_rule(rule, f"{_and(visible_foreign)} not allowed"), value))
        if hidden := [p for p in foreign if p not in visible_foreign]:
            absent = [{"required": [p]} for p in hidden]
            implications.append(
                ({"not": absent[0] if len(absent) == 1 else {"anyOf": absent}}, value)
            )
        if integers := self.integers.get(value, []):
            rule = " && ".join(
                f"(!has(self.{p}) || double(int(self.{p})) == self.{p})" for p in integers
            )
            plural = "must be integers" if len(integers) > 1 else "must be an integer"
            rules.append((_rule(rule, f"{' and '.join(integers)} {plural}"), value))
        present = " && ".join(f"has(self.{p})" for p in visible)
        for own in variant.get("x-kubernetes-validations", []):
            rule = f"!({present}) || ({own['rule']})" if present else own["rule"]
            rules.append((_rule(rule, own["message"]), value))

    def _implication(self, then: Schema, values: list[str]) -> Schema:
        """``then`` holds when the tag is one of ``values``."""
        # ``then`` first: when both fail, the API server reports the first one's error.
        return {"anyOf": [then, {"not": {"properties": {self.tag: {"enum": values}}}}]}

    def _guard(self, rule: Rule, values: list[str]) -> Rule:
        """``rule`` holds when the tag is one of ``values``."""
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
    if len(names) == 1:
        return f"{names[0]} is"
    return f"{', '.join(names[:-1])} and {names[-1]} are"


def _grouped(found: Iterable[tuple[T, str]]) -> list[tuple[T, list[str]]]:
    """Items equal but for the tag value they hold for, as one item with the values."""
    groups: list[tuple[T, list[str]]] = []
    for item, value in found:
        for known, values in groups:
            if known == item:
                values.append(value)
                break
        else:
            groups.append((item, [value]))
    return groups


# --- The resources -----------------------------------------------------------------------


def patchable(node: Schema) -> Schema:
    """``node`` with no nullable field required: the operator writes statuses with JSON
    merge patches, in which a null removes the field, so the API server would then find a
    required field missing (and refuse the whole status)."""
    node = dict(node)
    properties = node.get("properties")
    if properties is not None:
        node["properties"] = {k: patchable(v) for k, v in properties.items()}
        required = [k for k in node.get("required", []) if not properties[k].get("nullable")]
        if required:
            node["required"] = required
        else:
            node.pop("required", None)
    for key in ("additionalProperties", "items"):
        if isinstance(node.get(key), dict):
            node[key] = patchable(node[key])
    return node


def _resource(description: str, spec: Schema, status: Schema, name_limit: int | None) -> Schema:
    """The root schema of a custom resource; apiVersion, kind and metadata are Kubernetes'."""
    root: Schema = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"The versioned schema of this object: {API_VERSION}.",
            },
            "kind": {"type": "string", "description": "The REST resource of this object."},
            "metadata": {"type": "object"},  # the API server's own: nothing else is allowed
            "spec": spec,
            "status": patchable(status),
        },
        "required": ["spec"],
    }
    if name_limit is not None:  # a tighter limit than Kubernetes' 253 characters
        rule = f"size(self.metadata.name) <= {name_limit}"
        root["x-kubernetes-validations"] = [
            _rule(rule, f"metadata.name must be at most {name_limit} characters")
        ]
    return root


def tuning_schema() -> Schema:
    """The OpenAPI v3 schema of a DiarizationTuning (its status is the operator's)."""
    converted = structural_schema(DiarizationTuning)
    properties = converted["properties"]
    name_limit = properties["metadata"]["properties"]["name"].get("maxLength")
    status = structural_schema(DiarizationTuningStatus)
    status = _tidy({**status, "description": properties["status"]["description"]})
    return _resource(converted["description"], properties["spec"], status, name_limit)


def trial_schema() -> Schema:
    """The OpenAPI v3 schema of a DiarizationTrial."""
    return _resource(
        "One trial of a DiarizationTuning: its parameters and what it measured.",
        structural_schema(DiarizationTrialSpec),
        structural_schema(DiarizationTrialStatus),
        None,
    )


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> Schema:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


AGE = _column("Age", ".metadata.creationTimestamp", "date")
TUNING_COLUMNS = [
    _column("Phase", ".status.phase"),
    _column("Stage", ".status.stage"),
    _column("Trials", ".status.progress", description="Search trials finished/planned."),
    _column("Running", ".status.trialsRunning", "integer", description="Trials running."),
    _column("Failed", ".status.trialsFailed", "integer", description="Search trials failed."),
    _column(
        "Best DER",
        ".status.bestTrial.components.derPercent",
        description="The best trial's DER on development.",
    ),
    _column(
        "Test DER",
        ".status.testComponents.derPercent",
        description="The tuned pipeline's DER on test.",
    ),
    AGE,
]
TRIAL_COLUMNS = [
    _column("Tuning", ".spec.tuning"),
    _column("Stage", ".spec.stage"),
    _column("Budget", ".spec.budget", "number", description="Multi-fidelity budget."),
    _column("State", ".status.state"),
    _column("DER", ".status.components.derPercent", description="DER on its subset."),
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
    return _crd(TUNING_KIND, TUNING_PLURAL, "dtune", tuning_schema(), TUNING_COLUMNS)


def trial_crd() -> dict[str, Any]:
    """The DiarizationTrial CustomResourceDefinition (one per trial, as Katib's Trial)."""
    return _crd(TRIAL_KIND, TRIAL_PLURAL, "dtrial", trial_schema(), TRIAL_COLUMNS)


# --- YAML --------------------------------------------------------------------------------

HEADER = (
    "# Generated by `diartune crd` from diartune/spec/model.py and diartune/operator/api.py:"
    " do not edit.\n"
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
