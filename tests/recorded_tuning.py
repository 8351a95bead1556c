"""A real tuning's records without running trials, kept as each driver keeps them.

The study is driven in memory with real SMAC, as ``test_study.py`` drives it; each
successful trial leaves the ``result.json`` that a trial writes (DER per file included)
where its request says, and the records are kept as ``diartune tune`` keeps them (an
output folder: ``spec.json``, ``trials.json``) or as the operator keeps them in S3
(``spec.json``, ``trials/<trial>/record.json``). Nothing here is hand-written JSON: every
document is the product's own model, written by the product's own functions.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from test_study import Launcher

from diartune.local.tuning import accepted_spec
from diartune.records import (
    RECORD_FILE,
    RESULT_FILE,
    Components,
    Trial,
    TrialOutcome,
    TrialRecord,
    TrialResult,
)
from diartune.results.artifacts import TRIALS
from diartune.results.report import ACCEPTED_SPEC, save_records
from diartune.search.study import Study
from diartune.spec.file import parse_tuning
from diartune.spec.model import DiarizationTuning, Spec
from diartune.storage import Storage, join

#: The development files whose DER each trial reports (one name is not ASCII).
FILES = ("ES2002a.Mix-Headset", "IS1009b.Mix-Headset", "trñ00")
#: The search trial that fails (a trial pod killed for memory, say).
FAILING = "clustering-002"

STAGES = [
    {
        "name": "segmentation",
        "fineTune": {"maxEpochs": 1},
        "searchSpace": {
            "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 0.5},
        },
        "maxTrialCount": 5,
    },
    {
        "name": "clustering",
        "searchSpace": {
            "clustering.threshold": {"type": "float", "low": 0.3, "high": 1.3},
            "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
            "clustering.method": {"type": "categorical", "choices": ["average", "centroid"]},
        },
        "maxTrialCount": 7,
    },
]


def tuning(name: str = "ami-tune") -> DiarizationTuning:
    """The DiarizationTuning these records come from."""
    spec: dict[str, Any] = {
        "data": {"database": "db.yml", "protocol": "AMI.SpeakerDiarization.mini"},
        "pipeline": {"segmentation": "seg.ckpt", "embedding": "emb.ckpt"},
        "stages": STAGES,
        "optimizer": {"seed": 0, "initialDesignSize": 2},
        "parallelTrialCount": 2,
    }
    document = {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": name, "namespace": "speech"},
        "spec": spec,
    }
    return parse_tuning(document)


def der_of(trial: Trial) -> float | None:
    """A known function of the parameters standing in for DER; None when the trial fails."""
    if trial.name == FAILING:
        return None
    params = trial.full_params
    rate = float(params.get("training.learning_rate", 1e-3))
    der = 0.25 + (float(params["clustering.threshold"]) - 0.9) ** 2
    der += 0.02 * abs(math.log10(rate) + 3) + 0.05 * float(params["segmentation.min_duration_off"])
    der += 0.03 * (params["clustering.method"] == "average")
    return round(der + 0.001 * int(params["clustering.min_cluster_size"]), 6)


class RecordingLauncher(Launcher):
    """A driver whose trials leave their result.json under ``root/trials/<trial>``."""

    def __init__(self, study: Study, storage: Storage, root: str) -> None:
        super().__init__(study, der_of)
        self.storage = storage
        self.root = root

    def outcome(self, trial: Trial) -> TrialOutcome:
        der = der_of(trial)
        if der is None:
            return TrialOutcome(error="exit code 137: out of memory", seconds=3.0)
        per_file = {
            uri: Components.of(1, 2, 60 * (der + offset) - 3, 60)
            for uri, offset in zip(FILES, (-0.05, 0.0, 0.05), strict=True)
        }
        artifacts = join(self.root, "trials", trial.name)
        fine_tuned = trial.stage == "segmentation" and not trial.is_evaluation
        result = TrialResult(
            name=trial.name,
            der=der,
            components=Components.of(3, 6, 180 * der - 9, 180),
            per_file=per_file,
            checkpoint=join(artifacts, "segmentation.ckpt") if fine_tuned else None,
            artifacts=artifacts,
            timings={"pipeline": 1.5},
        )
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / RESULT_FILE).write_text(result.model_dump_json(by_alias=True))
            self.storage.upload_tree(Path(folder), result.artifacts, last=RESULT_FILE)
        return TrialOutcome(result=result, seconds=2.0)


def local_tuning(folder: Path) -> Study:
    """A finished tuning in ``folder``, kept as ``diartune tune`` keeps it."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = accepted_spec(folder, tuning())
    study = RecordingLauncher(Study(spec), Storage(), str(folder.resolve())).run()
    save_records(folder, study.records)
    return study


def operator_tuning(storage: Storage, root: str) -> Study:
    """A finished tuning's artifacts under ``root`` (``s3://bucket/<namespace>/<tuning>``),
    kept as the operator keeps them."""
    spec = tuning().spec
    publish_spec(storage, root, spec)
    study = RecordingLauncher(Study(spec), storage, root).run()
    for record in study.records:
        publish_record(storage, root, record)
    return study


def publish_spec(storage: Storage, root: str, spec: Spec) -> str:
    """Write ``<root>/spec.json``: the spec a tuning follows, as ``diartune tune`` keeps it."""
    document = spec.model_dump(mode="json", by_alias=True)
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return _write_text(storage, text, join(root, ACCEPTED_SPEC))


def publish_record(storage: Storage, root: str, record: TrialRecord) -> str:
    """Write ``<root>/trials/<trial>/record.json``: a finished trial's durable record."""
    uri = join(root, TRIALS, record.name, RECORD_FILE)
    return _write_text(storage, record.model_dump_json(by_alias=True, indent=2), uri)


def _write_text(storage: Storage, text: str, uri: str) -> str:
    with tempfile.TemporaryDirectory(prefix="diartune-publish-") as folder:
        path = Path(folder) / Path(uri).name
        path.write_text(text, encoding="utf-8")
        return storage.upload(path, uri)
