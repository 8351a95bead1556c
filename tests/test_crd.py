"""The CRDs generated from the models: checked in, structural, faithful to the models.

``check_document`` below is a small OpenAPI checker for what a structural schema says,
CEL rules aside; the tests marked ``cluster`` apply the CRDs to a real API server
(tests/cluster.py), which compiles the CEL rules, checks that the schemas are
structural, and enforces both.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import Cluster, cluster_fixture  # noqa: F401  (the session fixture "cluster")
from pydantic import BaseModel, Field

from diartune.cli import main
from diartune.operator import crd
from diartune.operator.api import (
    DiarizationTrialSpec,
    DiarizationTrialStatus,
    DiarizationTuningStatus,
)
from diartune.records import Components, Trial, TrialRecord
from diartune.spec.file import parse_tuning
from diartune.spec.model import DiarizationTuning, Pipeline, SpecError

ROOT = Path(__file__).resolve().parent.parent
CHART_CRDS = ROOT / "charts/diartune/crds"
EXAMPLES = ROOT / "examples"
Schema = dict[str, Any]

# Keywords a structural schema may hold at a node, and inside value validations.
NODE_KEYWORDS = {
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
    "anyOf",
    "not",
    "x-kubernetes-validations",
}
JUNCTOR_KEYWORDS = {"enum", "pattern", "required", "properties", "allOf", "anyOf", "not"}


def sample() -> dict[str, Any]:
    """A tuning that uses every kind of field, for when examples/ is empty."""
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "ems", "namespace": "speech"},
        "spec": {
            "data": {
                "database": "s3://corpora/ems/database.yml",
                "protocol": "EMS.SpeakerDiarization.Dispatch",
                "s3": {"endpoint": "http://minio:9000", "credentialsSecret": "s3-creds"},
            },
            "pipeline": {
                "segmentation": "s3://models/seg.ckpt",
                "embedding": "s3://models/emb.ckpt",
                "clustering": "AgglomerativeClustering",
                "plda": None,
            },
            "objective": {"collar": 0.25, "skipOverlap": False},
            "stages": [
                {
                    "name": "fine-tune",
                    "fineTune": {"maxEpochs": 5, "batchesPerEpoch": 100},
                    "searchSpace": {
                        "training.learning_rate": {
                            "type": "float",
                            "low": 1e-5,
                            "high": 1e-2,
                            "log": True,
                        },
                        "training.batch_size": {"type": "int", "low": 8, "high": 64},
                    },
                    "maxTrialCount": 10,
                },
                {
                    "name": "clustering",
                    "searchSpace": {
                        "clustering.threshold": {"type": "categorical", "choices": [0.5, 0.7]},
                        "clustering.method": {
                            "type": "categorical",
                            "choices": ["average", "centroid"],
                        },
                    },
                    "maxTrialCount": 4,
                },
            ],
            "optimizer": {"seed": 3, "initialDesignSize": 4},
            "parallelTrialCount": 2,
            "artifacts": "s3://runs/diartune",
            "trialTemplate": {
                "image": "ghcr.io/diartune/trial:0.1.0",
                "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"gpu": 1}},
                "nodeSelector": {"gpu": "a100"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "env": [
                    {"name": "HF_HUB_OFFLINE", "value": "0"},
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}},
                ],
                "activeDeadlineSeconds": 3600,
            },
        },
    }


def documents() -> list[tuple[str, dict[str, Any]]]:
    """The examples' DiarizationTunings, and the sample."""
    found = [("sample", sample())]
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text("utf-8")):
            if isinstance(document, dict) and document.get("kind") == "DiarizationTuning":
                found.append((path.name, document))
    return found


# --- A small OpenAPI checker, for the structural schemas crd.py makes --------------------


def check_document(value: Any, schema: Schema, path: str = "") -> list[str]:
    """What ``value`` breaks in ``schema`` (CEL rules aside), one line per problem."""
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: must not be null"]
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [f"{path}: must be an integer or a string"]
    elif "type" in schema and not _has_type(value, schema["type"]):
        return [f"{path}: must be of type {schema['type']}"]
    problems = _check_value(value, schema, path)
    for junctor in schema.get("allOf", []):
        problems += check_document(value, junctor, path)
    if "anyOf" in schema and all(check_document(value, s, path) for s in schema["anyOf"]):
        problems.append(f"{path}: matches none of anyOf")
    if "not" in schema and not check_document(value, schema["not"], path):
        problems.append(f"{path}: must not match {schema['not']}")
    if isinstance(value, dict):
        problems += _check_object(value, schema, path)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += check_document(item, schema["items"], f"{path}[{index}]")
    return problems


def _has_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "object": dict, "array": list}
    return isinstance(value, types[kind])


def _check_value(value: Any, schema: Schema, path: str) -> list[str]:
    checks = {
        "enum": lambda v, s: v in s,
        "pattern": lambda v, s: re.search(s, v) is not None,
        "minLength": lambda v, s: len(v) >= s,
        "maxLength": lambda v, s: len(v) <= s,
        "minimum": lambda v, s: v >= s,
        "maximum": lambda v, s: v <= s,
        "minItems": lambda v, s: len(v) >= s,
        "maxItems": lambda v, s: len(v) <= s,
        "minProperties": lambda v, s: len(v) >= s,
        "maxProperties": lambda v, s: len(v) <= s,
    }
    return [
        f"{path}: fails {keyword}={schema[keyword]!r}"
        for keyword, check in checks.items()
        if keyword in schema and not check(value, schema[keyword])
    ]


def _check_object(value: dict[str, Any], schema: Schema, path: str) -> list[str]:
    required = [name for name in schema.get("required", []) if name not in value]
    problems = [f"{path}.{name}: required" for name in required]
    properties = schema.get("properties", {})
    for name, item in value.items():
        where = f"{path}.{name}" if path else name
        if where == "metadata":
            continue  # ObjectMeta: Kubernetes' own
        if name in properties:
            problems += check_document(item, properties[name], where)
        elif "additionalProperties" in schema:
            problems += check_document(item, schema["additionalProperties"], where)
        elif not schema.get("x-kubernetes-preserve-unknown-fields") and "type" in schema:
            problems.append(f"{where}: unknown field")
    return problems


# --- Walking schemas ---------------------------------------------------------------------


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node under properties, additionalProperties and items, with its path."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


def junctors(schema: Schema) -> Iterator[Schema]:
    """The schemas inside allOf, anyOf and not, nested ones included."""
    for sub in [*schema.get("allOf", []), *schema.get("anyOf", [])]:
        yield sub
        yield from junctors(sub)
    if "not" in schema:
        yield schema["not"]
        yield from junctors(schema["not"])


def keywords(schema: Schema) -> Iterator[str]:
    """Every keyword used in ``schema``, in nested schemas and junctors too."""
    for key, value in schema.items():
        yield key
        if key == "properties":
            for sub in value.values():
                yield from keywords(sub)
        elif key in ("additionalProperties", "items", "not") and isinstance(value, dict):
            yield from keywords(value)
        elif key in ("allOf", "anyOf"):
            for sub in value:
                yield from keywords(sub)


def openapi(which: dict[str, Any]) -> Schema:
    return dict(which["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def model_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """The description of each field of ``model``, nested models' included, by CRD path.

    The variants of a discriminated union are one object in the CRD: their descriptions
    are found in that of its tag property (``.type``).
    """
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    found: dict[str, str] = {}

    def resolve(node: Schema) -> Schema:
        if "$ref" not in node:
            return node
        return {**definitions[node["$ref"].split("/")[-1]], **_without(node, "$ref")}

    def walk(node: Schema, path: str) -> None:
        node = resolve(node)
        if path and "description" in node:
            found.setdefault(path, node["description"])
        for option in node.get("anyOf", []):
            walk(option, path)
        for option in map(resolve, node.get("oneOf", [])):
            tag = node["discriminator"]["propertyName"]
            found[f"{path}.{tag}"] = found.get(f"{path}.{tag}", "") + option["description"]
            walk(_without(option, "description"), path)
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return found


def _without(node: Schema, key: str) -> Schema:
    return {k: v for k, v in node.items() if k != key}


# --- The tests ---------------------------------------------------------------------------


def test_checked_in_crds_are_generated() -> None:
    expected = crd.crd_files()
    assert sorted(path.name for path in CHART_CRDS.glob("*.yaml")) == sorted(expected)
    for name, text in expected.items():
        assert (CHART_CRDS / name).read_text("utf-8") == text, (
            f"{name} is stale: run .venv/bin/diartune crd --output-dir {CHART_CRDS}"
        )


def test_diartune_crd_prints_both_crds_and_regenerates_the_chart_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = list(yaml.safe_load_all(crd.render_crds()))
    assert [c["metadata"]["name"] for c in loaded] == [
        "diarizationtunings.diartune.io",
        "diarizationtrials.diartune.io",
    ]
    assert loaded == [crd.tuning_crd(), crd.trial_crd()]
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd.render_crds()
    assert main(["crd", "--output-dir", str(tmp_path)]) == 0
    for path in CHART_CRDS.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize(
    ("make", "kind", "plural", "short"),
    [
        (crd.tuning_crd, "DiarizationTuning", "diarizationtunings", "dtune"),
        (crd.trial_crd, "DiarizationTrial", "diarizationtrials", "dtrial"),
    ],
)
def test_names_scope_and_version(make: Any, kind: str, plural: str, short: str) -> None:
    spec = make()["spec"]
    assert spec["group"] == "diartune.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": [short],
        "categories": ["diartune"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    def columns(which: dict[str, Any]) -> list[tuple[str, str, str]]:
        found = which["spec"]["versions"][0]["additionalPrinterColumns"]
        return [(c["name"], c["jsonPath"], c["type"]) for c in found]

    assert columns(crd.tuning_crd()) == [
        ("Phase", ".status.phase", "string"),
        ("Stage", ".status.stage", "string"),
        ("Trials", ".status.progress", "string"),
        ("Running", ".status.trialsRunning", "integer"),
        ("Failed", ".status.trialsFailed", "integer"),
        ("Best DER", ".status.bestTrial.components.derPercent", "string"),
        ("Test DER", ".status.testComponents.derPercent", "string"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ]
    assert columns(crd.trial_crd()) == [
        ("Tuning", ".spec.tuning", "string"),
        ("Stage", ".spec.stage", "string"),
        ("Budget", ".spec.budget", "number"),
        ("State", ".status.state", "string"),
        ("DER", ".status.components.derPercent", "string"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ]
    # Every column's path is a field of the schema: kubectl prints nothing for a typo.
    for make in (crd.tuning_crd, crd.trial_crd):
        described = {path for path, _ in nodes(openapi(make()))}
        for _, path, _ in columns(make()):
            assert path in described or path.startswith(".metadata."), path


@pytest.mark.parametrize("make", [crd.tuning_crd, crd.trial_crd], ids=["tuning", "trial"])
def test_schemas_are_structural(make: Any) -> None:
    root = openapi(make())
    used = set(keywords(root))
    for keyword in ("$ref", "$defs", "oneOf", "const", "discriminator", "title", "default"):
        assert keyword not in used, keyword
    props = root["properties"]
    assert props["metadata"] == {"type": "object"}
    assert props["apiVersion"]["type"] == props["kind"]["type"] == "string"
    assert root["required"] == ["spec"]
    for path, node in nodes(root):
        assert set(node) <= NODE_KEYWORDS, (path, set(node) - NODE_KEYWORDS)
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        elif "type" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields") is True, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties", {}) is not False, path
        assert "anyOf" not in node, f"{path}: anyOf only inside allOf"
        for junctor in junctors(node):
            assert set(junctor) <= JUNCTOR_KEYWORDS, (path, junctor)
            # A junctor's properties must be the node's own, and hold no type.
            for name, sub in junctor.get("properties", {}).items():
                assert name in node["properties"], (path, name)
                assert set(sub) <= JUNCTOR_KEYWORDS, (path, sub)


def test_tuning_status_is_the_operators_model() -> None:
    status = openapi(crd.tuning_crd())["properties"]["status"]
    model = crd.patchable(crd.structural_schema(DiarizationTuningStatus))
    assert status["properties"] == model["properties"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    components = status["properties"]["testComponents"]["properties"]
    assert set(components) == {
        "der",
        "derPercent",
        "missedSpeechSeconds",
        "missedSpeechPercent",
        "falseAlarmSeconds",
        "falseAlarmPercent",
        "confusionSeconds",
        "confusionPercent",
        "referenceSpeechSeconds",
    }


@pytest.mark.parametrize("make", [crd.tuning_crd, crd.trial_crd], ids=["tuning", "trial"])
def test_no_nullable_status_field_is_required(make: Any) -> None:
    """The operator merge-patches statuses, where a null removes the field: a required
    nullable field (bestTrial.checkpoint of a clustering trial) would get the whole status
    refused with 422."""
    status = openapi(make())["properties"]["status"]
    required_nulls = [
        f"status{path}.{name}"
        for path, node in nodes(status)
        for name in node.get("required", [])
        if node.get("properties", {}).get(name, {}).get("nullable")
    ]
    assert required_nulls == []
    best = openapi(crd.tuning_crd())["properties"]["status"]["properties"]["bestTrial"]
    assert best["required"] == ["name", "stage", "params"]


@pytest.mark.parametrize("make", [crd.tuning_crd, crd.trial_crd], ids=["tuning", "trial"])
def test_every_field_is_explained(make: Any) -> None:
    """What ``kubectl explain`` prints for each field: none is left without a description
    (but metadata, Kubernetes' own, of which a CRD may say nothing)."""
    undescribed = [
        path
        for path, node in nodes(openapi(make()))
        if not path.endswith(("{}", "[]", ".metadata")) and not node.get("description")
    ]
    assert undescribed == []


@pytest.mark.parametrize(
    ("make", "models"),
    [
        (crd.tuning_crd, {"spec": DiarizationTuning}),
        (crd.trial_crd, {"spec": DiarizationTrialSpec, "status": DiarizationTrialStatus}),
        (crd.tuning_crd, {"status": DiarizationTuningStatus}),
    ],
    ids=["tuning", "trial", "tuning-status"],
)
def test_every_description_is_kept(make: Any, models: dict[str, type[BaseModel]]) -> None:
    described = dict(nodes(openapi(make())))
    for prefix, model in models.items():
        for path, description in model_descriptions(model).items():
            where = path if model is DiarizationTuning else f".{prefix}{path}"
            if where.startswith((".metadata", ".apiVersion", ".kind")):
                continue
            if where.endswith("searchSpace{}.type"):  # the union's variants: all in one
                for part in description.split("."):
                    assert part in described[where]["description"], where
            else:
                assert described[where].get("description") == description, where


def test_stages_search_space_is_one_object_with_cel_rules() -> None:
    stage = openapi(crd.tuning_crd())["properties"]["spec"]["properties"]["stages"]["items"]
    space = stage["properties"]["searchSpace"]
    assert space["type"] == "object"
    assert space["minProperties"] == 1
    parameter = space["additionalProperties"]
    assert set(parameter["properties"]) == {"type", "low", "high", "log", "choices"}
    assert parameter["properties"]["type"]["enum"] == ["float", "int", "categorical"]
    assert parameter["required"] == ["type"]
    assert parameter["properties"]["choices"]["minItems"] == 1
    rules = {rule["rule"]: rule["message"] for rule in parameter["x-kubernetes-validations"]}
    float_or_int = "!(self.type in ['float', 'int'])"
    assert rules[f"{float_or_int} || (has(self.low) && has(self.high))"] == (
        "low and high are required when type is float or int"
    )
    assert any("self.low < self.high" in rule for rule in rules if rule.startswith(float_or_int))
    assert any("self.low > 0.0" in rule and "self.log" in rule for rule in rules)
    assert any("double(int(self.low)) == self.low" in r for r in rules if "'int'" in r)
    # CEL cannot see the untyped choices: required/forbidden by allOf implications.
    assert {"anyOf": [{"required": ["choices"]}, _not_type("categorical")]} in parameter["allOf"]
    forbidden = {"not": {"required": ["choices"]}}
    assert {"anyOf": [forbidden, _not_type("float", "int")]} in parameter["allOf"]


def _not_type(*values: str) -> Schema:
    return {"not": {"properties": {"type": {"enum": list(values)}}}}


def test_model_validators_have_cel_rules() -> None:
    spec = openapi(crd.tuning_crd())["properties"]["spec"]["properties"]
    [vbx] = spec["pipeline"]["x-kubernetes-validations"]
    assert "VBxClustering" in vbx["rule"] and "has(self.plda)" in vbx["rule"]
    # Declared on the model beside its validator, passed through by the generator.
    assert Pipeline.model_json_schema()["x-kubernetes-validations"] == [vbx]
    name = openapi(crd.tuning_crd())["x-kubernetes-validations"]
    assert name == [
        {
            "rule": "size(self.metadata.name) <= 63",
            "message": "metadata.name must be at most 63 characters",
        }
    ]


def test_scalar_unions() -> None:
    template = openapi(crd.tuning_crd())["properties"]["spec"]["properties"]["trialTemplate"]
    limits = template["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    trial = openapi(crd.trial_crd())["properties"]["spec"]["properties"]
    for name in ("params", "fullParams"):
        assert trial[name]["additionalProperties"] == {"x-kubernetes-preserve-unknown-fields": True}


@pytest.mark.parametrize(
    ("source", "document"), [pytest.param(*item, id=item[0]) for item in documents()]
)
def test_tunings_validate_against_the_crd(source: str, document: dict[str, Any]) -> None:
    parse_tuning(document, source)  # the models take it...
    assert check_document(document, openapi(crd.tuning_crd())) == []  # ...and so does the CRD


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec/data/databse", "x", "spec.data.databse: unknown field"),
        ("spec/parallelTrialCount", 0, "spec.parallelTrialCount: fails minimum=1"),
        ("spec/data/protocol", "EMS", "spec.data.protocol: fails pattern"),
        ("spec/stages/1/searchSpace/clustering.method", {"type": "categorical"}, "anyOf"),
        ("spec/stages/1/maxTrialCount", "5", "must be of type integer"),
        ("spec/trialTemplate/resources/limits/gpu", 1.5, "must be an integer or a string"),
        ("spec/pipeline/clustering", "KMeans", "fails enum"),
    ],
)
def test_the_checker_refuses_what_the_crd_refuses(path: str, value: Any, expected: str) -> None:
    document = copy.deepcopy(sample())
    *parents, last = path.split("/")
    node: Any = document
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    problems = check_document(document, openapi(crd.tuning_crd()))
    assert any(expected in problem for problem in problems), problems


def test_trial_resource_holds_a_trial_and_its_record() -> None:
    record = TrialRecord(
        name="clustering-003",
        stage="clustering",
        number=3,
        params={"clustering.threshold": 0.7, "clustering.method": "centroid"},
        full_params={"clustering.threshold": 0.7, "segmentation.min_duration_off": 0.0},
        segmentation="s3://models/seg.ckpt",
        state="Succeeded",
        der=0.21,
        components=Components.of(1.0, 2.0, 3.3, 30.0),
        seconds=12.5,
    )
    spec = DiarizationTrialSpec(tuning="ems", **record.model_dump(include=set(Trial.model_fields)))
    status = DiarizationTrialStatus.of(record).model_copy(update={"job": "ems-clustering-003"})
    document = {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTrial",
        "metadata": {"name": "ems-clustering-003"},
        "spec": spec.model_dump(mode="json", by_alias=True),
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    assert check_document(document, openapi(crd.trial_crd())) == []
    parsed = DiarizationTrialSpec.model_validate(document["spec"]).trial()
    assert DiarizationTrialStatus.model_validate(document["status"]).record(parsed) == record
    document["status"]["state"] = "Lost"
    [problem] = check_document(document, openapi(crd.trial_crd()))
    assert problem.startswith("status.state: fails enum")


class _Bounds(BaseModel):
    ratio: float = Field(gt=0, lt=1, description="Open interval.")
    size: int | str


class _Tuple(BaseModel):
    pair: tuple[int, int]


class _Mixed(BaseModel):
    value: list[int] | str


def test_conversion_of_bounds_and_refusal_of_what_has_no_structural_form() -> None:
    schema = crd.structural_schema(_Bounds)
    assert schema["properties"]["ratio"] == {
        "type": "number",
        "description": "Open interval.",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    assert schema["properties"]["size"] == {"x-kubernetes-int-or-string": True}
    with pytest.raises(crd.CrdError, match="prefixItems"):
        crd.structural_schema(_Tuple)
    with pytest.raises(crd.CrdError, match="no structural form"):
        crd.structural_schema(_Mixed)


# --- On a real API server (tests/cluster.py) ---------------------------------------------


@pytest.fixture(scope="module")
def crds_applied(cluster: Cluster) -> Cluster:
    """The checked-in CRDs, applied and established."""
    cluster.kubectl("apply", "--server-side", "-f", str(CHART_CRDS))
    for name in ("diarizationtunings.diartune.io", "diarizationtrials.diartune.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return cluster


def dry_run(cluster: Cluster, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --dry-run=server --validate=strict`` of ``document``."""
    return cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump(document),
        check=False,
    )


@pytest.mark.cluster
def test_the_api_server_takes_the_crds_and_the_examples(crds_applied: Cluster) -> None:
    for source, document in documents():
        document = {**document, "metadata": {**document["metadata"], "namespace": "default"}}
        done = dry_run(crds_applied, document)
        assert done.returncode == 0, f"{source}: {done.stderr}"
    explained = crds_applied.kubectl("explain", "diarizationtuning.spec.stages").stdout
    assert "Trials in this stage, failed ones included; with multiFidelity" in explained
    field = "dtune.status.testComponents.confusionSeconds"
    explained = crds_applied.kubectl("explain", field).stdout
    assert "Speech attributed to the wrong speaker, in seconds." in explained


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "spec/stages/0/searchSpace/training.batch_size",
            {"type": "int", "low": 64, "high": 8},
            "low must be less than high when type is float or int",
        ),
        (
            "spec/stages/0/searchSpace/training.learning_rate",
            {"type": "float", "low": 0, "high": 1, "log": True},
            "a log scale needs low > 0 when type is float or int",
        ),
        (
            "spec/stages/0/searchSpace/training.batch_size",
            {"type": "int", "low": 8.5, "high": 64},
            "low and high must be integers when type is int",
        ),
        (
            "spec/stages/1/searchSpace/clustering.method",
            {"type": "categorical"},
            "clustering.method.choices: Required value",
        ),
        (
            "spec/stages/1/searchSpace/clustering.method",
            {"type": "categorical", "choices": ["ward"], "low": 1},
            "low, high and log are not allowed when type is categorical",
        ),
        ("spec/pipeline/clustering", "VBxClustering", "VBxClustering needs a PLDA"),
        ("spec/data/databse", "x", 'unknown field "spec.data.databse"'),
        ("metadata/name", "x" * 64, "metadata.name must be at most 63 characters"),
    ],
)
def test_the_api_server_refuses_what_the_models_refuse(
    crds_applied: Cluster, path: str, value: Any, expected: str
) -> None:
    document = copy.deepcopy(sample())
    document["metadata"]["namespace"] = "default"
    *parents, last = path.split("/")
    node: Any = document
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    with pytest.raises(SpecError):
        parse_tuning(document)
    done = dry_run(crds_applied, document)
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr


@pytest.mark.cluster
def test_trials_and_their_status_on_the_api_server(crds_applied: Cluster) -> None:
    trial = {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTrial",
        "metadata": {"name": "ems-clustering-3", "namespace": "default"},
        "spec": {
            "tuning": "ems",
            "name": "clustering-003",
            "stage": "clustering",
            "number": 3,
            "params": {"clustering.threshold": 0.7, "clustering.method": "centroid"},
            "fullParams": {"clustering.threshold": 0.7, "clustering.method": "centroid"},
            "segmentation": "s3://models/seg.ckpt",
        },
    }
    kubectl = crds_applied.kubectl
    kubectl("apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(trial))
    try:
        components = Components.of(1.0, 2.0, 3.3, 30.0).model_dump(by_alias=True)
        status = {"state": "Succeeded", "der": 0.21, "components": components, "job": "x"}
        patch = ("patch", "dtrial", "ems-clustering-3", "--subresource=status", "--type=merge")
        kubectl(*patch, "-p", json.dumps({"status": status}))
        columns = kubectl("get", "dtrial", "ems-clustering-3", "--no-headers").stdout.split()
        assert columns[:6] == ["ems-clustering-3", "ems", "clustering", "Succeeded", "21.00", "%"]
        refused = kubectl(*patch, "-p", '{"status": {"state": "Lost"}}', check=False)
        assert refused.returncode != 0 and 'Unsupported value: "Lost"' in refused.stderr
    finally:
        kubectl("delete", "dtrial", "ems-clustering-3", "--ignore-not-found")
