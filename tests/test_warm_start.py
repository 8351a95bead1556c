"""Warm start (``spec.optimizer.warmStartFrom``): an earlier tuning's successful trials are
told to SMAC before a stage's first ask, from an output folder or from S3, with real SMAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from recorded_tuning import FAILING, local_tuning, operator_tuning, tuning

from diartune.cli import main
from diartune.local.tuning import LocalTuning
from diartune.search.study import Study
from diartune.spec.file import parse_tuning
from diartune.spec.model import S3, DiarizationTuning, SpecError
from diartune.storage import Storage

BUCKET = "warm"


def again(*sources: str, **changes: Any) -> DiarizationTuning:
    """The recorded tuning's spec under another name, warm-started from ``sources``."""
    document = tuning("again").model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["optimizer"]["warmStartFrom"] = list(sources)
    for path, value in changes.items():  # "stages.1.searchSpace": {...}
        *parents, key = path.split(".")
        node = document["spec"]
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[key] = value
    return parse_tuning(document)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Study]:
    """A finished tuning's output folder, as diartune tune leaves it."""
    path = tmp_path_factory.mktemp("warm") / "earlier"
    return path, local_tuning(path)


def searched(study: Study) -> list[Any]:
    return [r for r in study.records if not r.is_evaluation and r.state == "Succeeded"]


def test_a_tuning_imports_the_successful_trials_of_an_earlier_one(
    earlier: tuple[Path, Study], tmp_path: Path
) -> None:
    folder, done = earlier
    successful = searched(done)
    assert FAILING in {r.name for r in done.records} - {r.name for r in successful}
    study = LocalTuning(again(str(folder)), tmp_path / "again").study
    summary = study.summary()
    assert summary.imported_trials == len(successful)
    assert summary.trials == 0  # imported trials are not this tuning's own
    assert summary.max_trials == 12
    imported = {tuple(sorted(r.params.items())) for r in successful}
    planned = study.plan()
    assert [t.stage for t in planned] == ["segmentation", "segmentation"]
    for trial in planned:  # SMAC knows them: none is run again
        assert tuple(sorted(trial.params.items())) not in imported
    report = study.summary()
    assert report.imported_trials == len(successful)


def test_trials_outside_the_new_search_space_are_skipped(
    earlier: tuple[Path, Study], tmp_path: Path
) -> None:
    folder, done = earlier
    narrow = {
        "clustering.threshold": {"type": "float", "low": 0.3, "high": 0.8},
        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
        "clustering.method": {"type": "categorical", "choices": ["average", "centroid"]},
    }
    study = LocalTuning(
        again(str(folder), **{"stages.1.searchSpace": narrow}), tmp_path / "again"
    ).study
    inside = [
        r
        for r in searched(done)
        if r.stage == "segmentation" or float(r.params["clustering.threshold"]) <= 0.8
    ]
    assert 0 < len(inside) < len(searched(done))
    assert study.warm.count == len(inside)
    assert study.warm.skipped == len(searched(done)) - len(inside)


def test_an_operator_tunings_s3_artifacts_warm_start_a_local_tuning(
    s3_endpoint: str, tmp_path: Path
) -> None:
    storage = Storage(S3(endpoint=s3_endpoint))
    storage.client.create_bucket(Bucket=BUCKET)
    root = f"s3://{BUCKET}/speech/earlier"
    done = operator_tuning(storage, root)
    warm = again(root, **{"data.s3": {"endpoint": s3_endpoint}})
    study = LocalTuning(warm, tmp_path / "again").study
    assert study.warm.count == len(searched(done))


def test_a_stage_that_searches_other_parameters_is_refused_by_name(
    earlier: tuple[Path, Study], tmp_path: Path, capsys: pytest.CaptureFixture[str], ami: Path
) -> None:
    folder, _ = earlier
    fewer = {"clustering.threshold": {"type": "float", "low": 0.3, "high": 1.3}}
    with pytest.raises(SpecError, match=r"warmStartFrom\[0\].*'clustering'.*clustering.method"):
        LocalTuning(again(str(folder), **{"stages.1.searchSpace": fewer}), tmp_path / "a")
    spec = tmp_path / "missing.yaml"
    document = again(str(tmp_path / "nowhere")).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )  # a corpus that passes the checks tune makes before reading earlier tunings
    document["spec"]["data"] = {"database": str(ami), "protocol": "Debug.SpeakerDiarization.Debug"}
    spec.write_text(yaml.safe_dump(document))
    assert main(["tune", str(spec), "--output", str(tmp_path / "b")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "warmStartFrom[0]" in line and "nowhere/trials.json: no such file" in line


def test_warm_start_needs_the_hpo_facade() -> None:
    with pytest.raises(SpecError, match=r"optimizer\.warmStartFrom: needs optimizer\.facade hpo"):
        again("earlier", **{"optimizer.facade": "multiFidelity"})
