"""A corpus of hostile and borderline specs, and what ``diartune validate`` must do with them.

Each case is a document (a valid spec changed at one path) or the raw bytes of a file,
and the expectation: accepted, or refused with a message that names the field (or the
file) and says what was expected. Used by tests/test_hostile_specs.py, which also
publishes the table in docs/security.md (``python tests/hostile_specs.py``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC: dict[str, Any] = {
    "apiVersion": "diartune.io/v1alpha1",
    "kind": "DiarizationTuning",
    "metadata": {"name": "ems", "namespace": "speech"},
    "spec": {
        "data": {
            "database": "s3://corpus/ems/database.yml",
            "protocol": "EMS.SpeakerDiarization.Dispatch",
            "s3": {"endpoint": "https://minio.example:9000", "credentialsSecret": "ems-s3"},
        },
        "pipeline": {
            "segmentation": "s3://models/segmentation.ckpt",
            "embedding": "s3://models/embedding.ckpt",
        },
        "stages": [
            {
                "name": "clustering",
                "searchSpace": {
                    "clustering.threshold": {"type": "float", "low": 0.1, "high": 1.2},
                    "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
                },
                "maxTrialCount": 20,
            }
        ],
        "parallelTrialCount": 2,
        "artifacts": "s3://runs/diartune",
        "trialTemplate": {
            "image": "registry.example/diartune/trial:0.1.0",
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi"},
                "limits": {"nvidia.com/gpu": 1},
            },
            "env": [
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "EXTRA", "valueFrom": {"secretKeyRef": {"name": "extra", "key": "K"}}},
            ],
        },
    },
}
DELETE = object()


@dataclass(frozen=True)
class Case:
    """One hostile or borderline input and what validation must answer."""

    name: str
    changes: dict[str, Any] = field(default_factory=dict)  # path -> value (DELETE removes)
    raw: bytes | None = None  # the file's bytes instead of a document
    refused: str | None = None  # a substring of the one-line error; None: accepted
    kind: str = "file"  # for raw cases that are not regular files: fifo, directory, device

    def document(self) -> dict[str, Any]:
        """The valid spec with this case's changes."""
        document = copy.deepcopy(SPEC)
        for path, value in self.changes.items():
            *parents, last = path.split("/")
            node: Any = document
            for key in parents:
                node = node[int(key)] if key.isdigit() else node[key]
            if value is DELETE:
                del node[last]
            elif isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        return document

    def text(self) -> bytes:
        """The file's bytes."""
        if self.raw is not None:
            return self.raw
        plain = json.loads(json.dumps(self.document()))  # no shared objects: no YAML aliases
        return yaml.safe_dump(plain, allow_unicode=True, width=1 << 20).encode()


S = "spec"
STAGE = "spec/stages/0"
SPACE = "spec/stages/0/searchSpace"
TEMPLATE = "spec/trialTemplate"
THRESHOLD = f"{SPACE}/clustering.threshold"
SIZE = f"{SPACE}/clustering.min_cluster_size"


def _numbers() -> list[Case]:
    inf, nan = float("inf"), float("nan")
    cases = [
        Case("float low NaN", {f"{THRESHOLD}/low": nan}, refused="clustering.threshold.low"),
        Case("float high inf", {f"{THRESHOLD}/high": inf}, refused="clustering.threshold.high"),
        Case("float low -inf", {f"{THRESHOLD}/low": -inf}, refused="clustering.threshold.low"),
        Case(
            "float high 1e308",
            {f"{THRESHOLD}/high": 1e308},
            refused="less than or equal to 1000000",
        ),
        Case(
            "int bound 10^30", {f"{SIZE}/high": 10**30}, refused="clustering.min_cluster_size.high"
        ),
        Case("int bound float", {f"{SIZE}/high": 20.5}, refused="clustering.min_cluster_size.high"),
        Case("int bound string", {f"{SIZE}/high": "20"}, refused="valid integer"),
        Case("seed 2^40", {f"{S}/optimizer": {"seed": 2**40}}, refused="optimizer.seed"),
        Case("seed negative", {f"{S}/optimizer": {"seed": -1}}, refused="optimizer.seed"),
        Case("seed string", {f"{S}/optimizer": {"seed": "5"}}, refused="optimizer.seed"),
        Case("seed bool", {f"{S}/optimizer": {"seed": True}}, refused="optimizer.seed"),
        Case(
            "design 10^7",
            {f"{S}/optimizer": {"initialDesignSize": 10**7}},
            refused="initialDesignSize",
        ),
        Case(
            "design negative",
            {f"{S}/optimizer": {"initialDesignSize": -1}},
            refused="initialDesignSize",
        ),
        Case("maxTrialCount 10^20", {f"{STAGE}/maxTrialCount": 10**20}, refused="maxTrialCount"),
        Case("maxTrialCount 0", {f"{STAGE}/maxTrialCount": 0}, refused="maxTrialCount"),
        Case("maxTrialCount string", {f"{STAGE}/maxTrialCount": "10"}, refused="maxTrialCount"),
        Case(
            "parallelTrialCount 10^9",
            {f"{S}/parallelTrialCount": 10**9},
            refused="parallelTrialCount",
        ),
        Case("parallelTrialCount 0", {f"{S}/parallelTrialCount": 0}, refused="parallelTrialCount"),
        Case(
            'parallelTrialCount "5"', {f"{S}/parallelTrialCount": "5"}, refused="parallelTrialCount"
        ),
        Case(
            "maxFailedTrialCount -1",
            {f"{S}/maxFailedTrialCount": -1},
            refused="maxFailedTrialCount",
        ),
        Case(
            "maxFailedTrialCount 10^12",
            {f"{S}/maxFailedTrialCount": 10**12},
            refused="maxFailedTrialCount",
        ),
        Case("collar inf", {f"{S}/objective": {"collar": inf}}, refused="objective.collar"),
        Case("collar NaN", {f"{S}/objective": {"collar": nan}}, refused="objective.collar"),
        Case("collar negative", {f"{S}/objective": {"collar": -0.5}}, refused="objective.collar"),
        Case("collar 11 s", {f"{S}/objective": {"collar": 11}}, refused="objective.collar"),
        Case("aggregate unknown", {f"{S}/objective": {"aggregate": "median"}}, refused="aggregate"),
        Case(
            "segmentation batch 0",
            {"spec/pipeline/segmentationBatchSize": 0},
            refused="segmentationBatchSize",
        ),
        Case(
            "embedding batch 10^6",
            {"spec/pipeline/embeddingBatchSize": 10**6},
            refused="embeddingBatchSize",
        ),
        Case(
            "deadline 10^20",
            {f"{TEMPLATE}/activeDeadlineSeconds": 10**20},
            refused="activeDeadlineSeconds",
        ),
        Case(
            "deadline 0", {f"{TEMPLATE}/activeDeadlineSeconds": 0}, refused="activeDeadlineSeconds"
        ),
        Case("backoffLimit 21", {f"{TEMPLATE}/backoffLimit": 21}, refused="backoffLimit"),
        Case("backoffLimit -1", {f"{TEMPLATE}/backoffLimit": -1}, refused="backoffLimit"),
        Case('suspend "yes"', {f"{S}/suspend": "yes"}, refused="suspend"),
        Case("suspend 1", {f"{S}/suspend": 1}, refused="suspend"),
        Case("negative threshold", {f"{THRESHOLD}/low": -1.0}, refused="at least 0"),
        Case(
            "log with low 0",
            {THRESHOLD: {"type": "float", "low": 0, "high": 1, "log": True}},
            refused="log scale",
        ),
        Case(
            "low equals high",
            {THRESHOLD: {"type": "float", "low": 1, "high": 1}},
            refused="less than high",
        ),
        Case(
            "space smaller than budget",
            {SPACE: {"clustering.min_cluster_size": {"type": "int", "low": 1, "high": 3}}},
            refused="holds only 3 configurations",
        ),
        Case("epochs 0", {f"{STAGE}/fineTune": {"maxEpochs": 0}}, refused="maxEpochs"),
        Case("epochs 10^9", {f"{STAGE}/fineTune": {"maxEpochs": 10**9}}, refused="maxEpochs"),
        Case(
            "batches per epoch 0",
            {f"{STAGE}/fineTune": {"batchesPerEpoch": 0}},
            refused="batchesPerEpoch",
        ),
        Case(
            "toleration seconds -1",
            {f"{TEMPLATE}/tolerations": [{"key": "a", "tolerationSeconds": -1}]},
            refused="tolerationSeconds",
        ),
    ]
    return cases


def _choices() -> list[Case]:
    method = f"{SPACE}/clustering.method"
    return [
        Case("no choices", {method: {"type": "categorical", "choices": []}}, refused="choices"),
        Case(
            "duplicate choices",
            {method: {"type": "categorical", "choices": ["average", "average"]}},
            refused="unique",
        ),
        Case(
            "1000 choices",
            {method: {"type": "categorical", "choices": list(range(1000))}},
            refused="choices",
        ),
        Case(
            "NaN choice",
            {THRESHOLD: {"type": "categorical", "choices": [float("nan"), 0.5]}},
            refused="clustering.threshold",
        ),
        Case(
            "huge string choice",
            {method: {"type": "categorical", "choices": ["x" * 100]}},
            refused="clustering.method",
        ),
        Case(
            "unknown method",
            {method: {"type": "categorical", "choices": ["bogus"]}},
            refused="unsupported values",
        ),
        Case("categorical without choices", {method: {"type": "categorical"}}, refused="choices"),
        Case(
            "unknown parameter type",
            {method: {"type": "enum", "choices": ["average"]}},
            refused="clustering.method",
        ),
        Case(
            "unknown parameter",
            {f"{SPACE}/clustering.foo": {"type": "float", "low": 0, "high": 1}},
            refused="unknown parameter",
        ),
        Case(
            "training without fineTune",
            {f"{SPACE}/training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}},
            refused="need fineTune",
        ),
        Case(
            "Fa with agglomerative",
            {f"{SPACE}/clustering.Fa": {"type": "float", "low": 0.01, "high": 0.5}},
            refused="has no parameter 'Fa'",
        ),
        Case(
            "min_cluster_size 0",
            {SIZE: {"type": "int", "low": 0, "high": 20}},
            refused="at least 1",
        ),
        Case(
            "33 parameters",
            {
                SPACE: {
                    f"clustering.p{i}": {"type": "float", "low": 0, "high": 1} for i in range(33)
                }
            },
            refused="searchSpace",
        ),
        Case("empty search space", {SPACE: {}}, refused="searchSpace"),
    ]


def _kubernetes() -> list[Case]:
    env = f"{TEMPLATE}/env"
    return [
        Case(
            "memory lots",
            {f"{TEMPLATE}/resources": {"limits": {"memory": "lots"}}},
            refused="limits.memory",
        ),
        Case(
            "cpu negative",
            {f"{TEMPLATE}/resources": {"requests": {"cpu": "-1"}}},
            refused="requests.cpu",
        ),
        Case(
            "resource name with !",
            {f"{TEMPLATE}/resources": {"limits": {"gpu!": 1}}},
            refused="resources.limits",
        ),
        Case("env name '1 BAD='", {env: [{"name": "1 BAD=", "value": "x"}]}, refused="env[0].name"),
        Case(
            "env value and valueFrom",
            {
                env: [
                    {
                        "name": "A",
                        "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            },
            refused="not both",
        ),
        Case(
            "env from a ConfigMap",
            {env: [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
            refused="configMapKeyRef",
        ),
        Case(
            "env from a field",
            {env: [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]},
            refused="fieldRef",
        ),
        Case(
            "inline AWS secret",
            {env: [{"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}]},
            refused="set by diartune",
        ),
        Case(
            "inline HF token",
            {env: [{"name": "HF_TOKEN", "value": "hf_abc"}]},
            refused="set by diartune",
        ),
        Case(
            "inline secret-looking value",
            {env: [{"name": "DB_PASSWORD", "value": "hunter2"}]},
            refused="use valueFrom.secretKeyRef",
        ),
        Case(
            "inline api key",
            {env: [{"name": "MY_API_KEY", "value": "k"}]},
            refused="use valueFrom.secretKeyRef",
        ),
        Case(
            "control variable",
            {env: [{"name": "DIARTUNE_CACHE", "value": "/x"}]},
            refused="set by diartune",
        ),
        Case(
            "secret name invalid",
            {env: [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}]},
            refused="secretKeyRef.name",
        ),
        Case("empty image", {f"{TEMPLATE}/image": ""}, refused="trialTemplate.image"),
        Case(
            "image with spaces", {f"{TEMPLATE}/image": "my image:1"}, refused="trialTemplate.image"
        ),
        Case(
            "image upper case",
            {f"{TEMPLATE}/image": "Registry/Trial:1"},
            refused="trialTemplate.image",
        ),
        Case(
            "pull policy Sometimes",
            {f"{TEMPLATE}/imagePullPolicy": "Sometimes"},
            refused="imagePullPolicy",
        ),
        Case(
            "node selector key with space",
            {f"{TEMPLATE}/nodeSelector": {"a b": "c"}},
            refused="nodeSelector",
        ),
        Case(
            "node selector value too long",
            {f"{TEMPLATE}/nodeSelector": {"a": "b" * 64}},
            refused="nodeSelector",
        ),
        Case(
            "toleration operator Maybe",
            {f"{TEMPLATE}/tolerations": [{"key": "a", "operator": "Maybe"}]},
            refused="operator",
        ),
        Case(
            "serviceAccountName",
            {f"{TEMPLATE}/serviceAccountName": "cluster-admin"},
            refused="unknown field",
        ),
        Case(
            "securityContext",
            {f"{TEMPLATE}/securityContext": {"privileged": True}},
            refused="unknown field",
        ),
        Case(
            "hostPath volume",
            {f"{TEMPLATE}/volumes": [{"hostPath": {"path": "/"}}]},
            refused="unknown field",
        ),
        Case(
            "65 env variables",
            {env: [{"name": f"V{i}", "value": "x"} for i in range(65)]},
            refused="env",
        ),
    ]


def _locations() -> list[Case]:
    data = "spec/data"
    pipeline = "spec/pipeline"
    return [
        Case("s3:// alone", {f"{data}/database": "s3://"}, refused="database"),
        Case(
            "s3:/b/x",
            {f"{data}/database": "s3:/b/x"},
            refused="expected an s3://bucket/key URI or a local path",
        ),
        Case(
            "S3://b/x",
            {f"{data}/database": "S3://bucket/x"},
            refused="expected an s3://bucket/key URI or a local path",
        ),
        Case(
            "https database", {f"{data}/database": "https://host/db.yml"}, refused="data.database"
        ),
        Case(
            "file:// database", {f"{data}/database": "file:///etc/passwd"}, refused="data.database"
        ),
        Case(
            "bucket upper case",
            {f"{data}/database": "s3://Corpus/db.yml"},
            refused="valid bucket name",
        ),
        Case("empty database", {f"{data}/database": ""}, refused="data.database"),
        Case("newline in path", {f"{data}/database": "db.yml\nx"}, refused="control characters"),
        Case(
            "protocol without task", {f"{data}/protocol": "EMS.Dispatch"}, refused="data.protocol"
        ),
        Case(
            "protocol with spaces",
            {f"{data}/protocol": "EMS.SpeakerDiarization.A B"},
            refused="data.protocol",
        ),
        Case(
            "model with two slashes",
            {f"{pipeline}/segmentation": "models/sub/seg"},
            refused="Hugging Face id org/name",
        ),
        Case(
            "model https",
            {f"{pipeline}/embedding": "https://hub/x.ckpt"},
            refused="pipeline.embedding",
        ),
        Case(
            "endpoint with credentials",
            {f"{data}/s3/endpoint": "http://user:pass@minio:9000"},
            refused="data.s3.endpoint",
        ),
        Case("endpoint ftp", {f"{data}/s3/endpoint": "ftp://minio"}, refused="data.s3.endpoint"),
        Case(
            "endpoint with query",
            {f"{data}/s3/endpoint": "http://minio:9000/?token=x"},
            refused="data.s3.endpoint",
        ),
        Case("region with spaces", {f"{data}/s3/region": "us east"}, refused="data.s3.region"),
        Case(
            "credentials secret bad name",
            {f"{data}/s3/credentialsSecret": "Creds_1"},
            refused="credentialsSecret",
        ),
        Case("artifacts https", {"spec/artifacts": "https://x/y"}, refused="spec.artifacts"),
        Case(
            "VBx without PLDA", {f"{pipeline}/clustering": "VBxClustering"}, refused="needs a PLDA"
        ),
        Case(
            "clustering KMeans",
            {f"{pipeline}/clustering": "KMeansClustering"},
            refused="pipeline.clustering",
        ),
        Case(
            "token secret bad name", {f"{pipeline}/tokenSecret": "HF Token"}, refused="tokenSecret"
        ),
    ]


def _names_and_types() -> list[Case]:
    return [
        Case("name upper case", {"metadata/name": "EMS"}, refused="metadata.name"),
        Case("name a..b", {"metadata/name": "a..b"}, refused="metadata.name"),
        Case("name starting with -", {"metadata/name": "-ems"}, refused="metadata.name"),
        Case("name 64 characters", {"metadata/name": "e" * 64}, refused="metadata.name"),
        Case("namespace with _", {"metadata/namespace": "bad_ns"}, refused="metadata.namespace"),
        Case("label key with space", {"metadata/labels": {"a b": "c"}}, refused="metadata.labels"),
        Case(
            "300 KiB annotation",
            {"metadata/annotations": {"a": "x" * 300_000}},
            refused="annotations hold",
        ),
        Case("snake_case field", {"spec/max_failed_trial_count": 3}, refused="unknown field"),
        Case(
            "snake_case stage field",
            {f"{STAGE}/max_trial_count": 3},
            refused="max_trial_count: unknown field",
        ),
        Case("stage name upper case", {f"{STAGE}/name": "Stage1"}, refused="stages[0].name"),
        Case("stage name 31 characters", {f"{STAGE}/name": "s" * 31}, refused="stages[0].name"),
        Case(
            "two stages of one name",
            {
                "spec/stages": [
                    SPEC["spec"]["stages"][0],
                    {
                        **SPEC["spec"]["stages"][0],
                        "searchSpace": {
                            "segmentation.min_duration_off": {"type": "float", "low": 0, "high": 1}
                        },
                    },
                ]
            },
            refused="must be unique",
        ),
        Case(
            "one parameter in two stages",
            {
                "spec/stages": [
                    SPEC["spec"]["stages"][0],
                    {**SPEC["spec"]["stages"][0], "name": "again"},
                ]
            },
            refused="already tuned",
        ),
        Case(
            "17 stages",
            {
                "spec/stages": [
                    {
                        **SPEC["spec"]["stages"][0],
                        "name": f"s{i}",
                        "searchSpace": {
                            "segmentation.min_duration_off": {"type": "float", "low": 0, "high": 1}
                        },
                    }
                    for i in range(17)
                ]
            },
            refused="stages",
        ),
        Case("no stages", {"spec/stages": []}, refused="spec.stages"),
        Case("unknown top-level field", {"spec/extra": 1}, refused="unknown field"),
        Case("apiVersion v2", {"apiVersion": "diartune.io/v2"}, refused="apiVersion"),
        Case("kind Job", {"kind": "Job"}, refused="kind"),
        Case("spec missing", {"spec": DELETE}, refused="spec"),
        Case("spec a list", {"spec": [1, 2]}, refused="spec"),
        Case("data missing", {"spec/data": DELETE}, refused="spec.data"),
    ]


def _files() -> list[Case]:
    laughs = b"a: &a ['lol','lol']\nb: &b [*a,*a]\nc: &c [*b,*b]\nd: &d [*c,*c]\nspec: *d\n"
    return [
        Case(
            "duplicate YAML key",
            raw=b"apiVersion: diartune.io/v1alpha1\nkind: DiarizationTuning\nkind: Job\n",
            refused="duplicate key 'kind'",
        ),
        Case("billion laughs", raw=laughs, refused="anchors and aliases are not supported"),
        Case(
            "20,000-deep nesting",
            raw=b"a: " + b"[" * 20_000 + b"]" * 20_000,
            refused="nested deeper than 32 levels",
        ),
        Case("not UTF-8", raw=b"apiVersion: \xff\xfe\n", refused="not UTF-8 text"),
        Case("UTF-16", raw="apiVersion: x\n".encode("utf-16"), refused="not UTF-8 text"),
        Case(
            "50 MB comment",
            raw=b"# " + b"x" * (50 << 20) + b"\n" + json.dumps(SPEC).encode(),
            refused="expected at most 1048576",
        ),
        Case("empty file", raw=b"", refused="expected a DiarizationTuning mapping"),
        Case("a YAML list", raw=b"- 1\n- 2\n", refused="expected a DiarizationTuning mapping"),
        Case("binary garbage", raw=bytes(range(256)), refused="not UTF-8 text"),
        Case("tab indentation", raw=b"spec:\n\tdata: 1\n", refused="not valid YAML"),
        Case("unclosed bracket", raw=b"spec: [unclosed\n", refused="not valid YAML"),
        Case("a directory", kind="directory", refused="not a regular file"),
        Case("a FIFO", kind="fifo", refused="not a regular file"),
        Case("/dev/zero", kind="device", refused="not a regular file"),
        Case("a missing file", kind="missing", refused="no such file"),
    ]


def _edited(old: str, new: str) -> bytes:
    """The base spec's YAML with one piece of text replaced (what a document cannot say)."""
    text = Case("base").text().decode()
    assert old in text, old
    return text.replace(old, new, 1).encode()


def _beyond_our_corpus() -> list[Case]:
    """Issue 26's examples: YAML read differently, spaces SMAC refuses, characters and
    bucket names the spec promised to refuse."""
    return [
        Case(
            "complex mapping key",
            raw=_edited("kind: DiarizationTuning\n", "kind: DiarizationTuning\n? [a, b]\n: 1\n"),
            refused="a complex mapping key; expected a string",
        ),
        Case(
            "integer key",
            raw=_edited("  namespace: speech\n", "  namespace: speech\n  1: x\n"),
            refused="key 1: expected a string",
        ),
        Case(
            "sexagesimal maxTrialCount 1:30",
            raw=_edited("maxTrialCount: 20", "maxTrialCount: 1:30"),
            refused="maxTrialCount: Input should be a valid integer",
        ),
        Case(
            "unquoted yes",
            raw=_edited("  parallelTrialCount: 2\n", "  parallelTrialCount: 2\n  suspend: yes\n"),
            refused="unquoted 'yes' is a boolean to kubectl",
        ),
        Case(
            "unquoted n as a stage name",
            raw=_edited("    name: clustering", "    name: n"),
            refused="unquoted 'n' is a boolean to kubectl",
        ),
        Case(
            "merge key",
            raw=_edited("  namespace: speech\n", "  namespace: speech\n  <<: {labels: {}}\n"),
            refused="merge keys (<<) are not supported",
        ),
        Case("metadata.namspace", {"metadata/namspace": "speech"}, refused="metadata.namspace"),
        Case(
            "integer choices 5 and 5.0",
            {SIZE: {"type": "categorical", "choices": [5, 5.0]}},
            refused="searchSpace.clustering.min_cluster_size: refused by ConfigSpace",
        ),
        Case(
            "log bounds 1e-320 .. 1e-300",
            {THRESHOLD: {"type": "float", "low": 1e-320, "high": 1e-300, "log": True}},
            refused="searchSpace.clustering.threshold: refused by ConfigSpace",
        ),
        Case(
            "U+2028 in database, escaped",
            raw=_edited("database: s3://corpus/ems/database.yml", 'database: "./db\\u2028.yml"'),
            refused="data.database: control characters are not allowed (U+2028",
        ),
        Case(
            "U+0085 in database, escaped",
            raw=_edited("database: s3://corpus/ems/database.yml", 'database: "./db\\x85.yml"'),
            refused="data.database: control characters are not allowed (U+0085",
        ),
        Case(
            "U+0085 in the file",
            raw=_edited("database: s3://corpus/ems/database.yml", "database: ./db\u0085.yml"),
            refused="line 9: U+0085 is a line break to YAML 1.1 readers",
        ),
        Case(
            "right-to-left override in a model",
            {"spec/pipeline/segmentation": "./seg\u202emodel.ckpt"},
            refused="pipeline.segmentation: control characters",
        ),
        Case(
            "zero width space in warmStartFrom",
            {"spec/optimizer": {"warmStartFrom": ["runs/a\u200bb"]}},
            refused="warmStartFrom[0]: control characters",
        ),
        Case("bucket a..b", {"spec/data/database": "s3://a..b/db.yml"}, refused="two adjacent"),
        Case(
            "bucket 192.168.1.1",
            {"spec/artifacts": "s3://192.168.1.1/runs"},
            refused="the form of an IP address",
        ),
        Case(
            "bucket xn--bucket",
            {"spec/pipeline/embedding": "s3://xn--bucket/e.ckpt"},
            refused="reserved 'xn--'",
        ),
    ]


def _accepted() -> list[Case]:
    return [
        Case("the base spec"),
        Case(
            "hub ids and a token Secret",
            {
                "spec/pipeline/segmentation": "pyannote/segmentation-3.0",
                "spec/pipeline/tokenSecret": "hf-token",
            },
        ),
        Case("a relative checkpoint", {"spec/pipeline/segmentation": "models/segmentation.ckpt"}),
        Case(
            "local paths",
            {"spec/data/database": "./corpus/database.yml", "spec/artifacts": "/data/runs"},
        ),
        Case(
            "VBx with a PLDA",
            {
                "spec/pipeline/clustering": "VBxClustering",
                "spec/pipeline/plda": "./plda/",
                SPACE: {"clustering.Fa": {"type": "float", "low": 0.01, "high": 0.5}},
            },
        ),
        Case(
            "fine-tuning stage",
            {
                STAGE: {
                    "name": "seg",
                    "fineTune": {"maxEpochs": 5},
                    "searchSpace": {
                        "training.learning_rate": {
                            "type": "float",
                            "low": 1e-5,
                            "high": 1e-3,
                            "log": True,
                        }
                    },
                    "maxTrialCount": 8,
                }
            },
        ),
        Case("an int for a float bound", {f"{THRESHOLD}/high": 1}),
        Case(
            "a tolerations and node selector",
            {
                f"{TEMPLATE}/tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
                f"{TEMPLATE}/nodeSelector": {"nvidia.com/gpu.product": "A100"},
            },
        ),
        Case(
            "quoted yes and a YAML 1.1 date",
            raw=_edited(
                "  namespace: speech\n",
                "  namespace: speech\n  labels: {a: 'yes', b: 2001-12-14}\n",
            ),
        ),
        Case(
            "ObjectMeta fields",
            {"metadata/generateName": "ems-", "metadata/finalizers": ["example.com/keep"]},
        ),
        Case(
            "upper-bound objective", {"spec/objective": {"aggregate": "upperBound", "collar": 0.25}}
        ),
        Case(
            "labels and annotations",
            {
                "metadata/labels": {"team": "ems"},
                "metadata/annotations": {"example.com/owner": "jane"},
            },
        ),
    ]


CASES = [
    *_numbers(),
    *_choices(),
    *_kubernetes(),
    *_locations(),
    *_names_and_types(),
    *_files(),
    *_beyond_our_corpus(),
    *_accepted(),
]


def place(case: Case, folder: Path) -> Path:
    """Where the case's input is: a file with its bytes, or a directory, FIFO or device."""
    path = folder / "spec.yaml"
    if case.kind == "directory":
        path.mkdir()
    elif case.kind == "fifo":
        os.mkfifo(path)
    elif case.kind == "device":
        return Path("/dev/zero")
    elif case.kind == "file":
        path.write_bytes(case.text())
    return path


def judge(case: Case, folder: Path) -> tuple[int, str]:
    """What ``diartune validate`` answers: its exit code and what it printed on stderr."""
    from diartune.cli import main

    path = place(case, folder)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    return code, errors.getvalue()


def outcome(case: Case, code: int, message: str) -> str:
    """The table's word for what happened: refused cleanly, accepted, or wrongly so."""
    if case.refused is None:
        return "accepted" if code == 0 else f"wrongly refused: {message.strip()[:80]}"
    if code == 0:
        return "wrongly accepted"
    clean = code == 2 and case.refused in message and "Traceback" not in message
    return "refused cleanly" if clean else f"refused with a flawed message: {message[:80]}"


if __name__ == "__main__":  # print the table of docs/security.md
    with tempfile.TemporaryDirectory() as scratch:
        rows = ["| case | expected | outcome | first line of the message |", "|---|---|---|---|"]
        for index, case in enumerate(CASES):
            folder = Path(scratch) / str(index)
            folder.mkdir()
            code, message = judge(case, folder)
            first = message.strip().splitlines()[0] if message.strip() else ""
            first = first.replace(str(folder) + "/", "").replace("|", "\\|")[:110]
            expected = "refused" if case.refused else "accepted"
            rows.append(f"| {case.name} | {expected} | {outcome(case, code, message)} | {first} |")
    print("\n".join(rows))
