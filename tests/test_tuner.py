"""The SMAC tuner and the study of stages, with no Kubernetes and no trials: real SMAC."""

from __future__ import annotations

from typing import Any

import pytest

from diartune.params import KNOWN
from diartune.records import Components, TrialRecord
from diartune.spec import Optimizer, Spec, Stage, parse_tuning
from diartune.study import Study
from diartune.tuner import StageTuner

CLUSTERING = {
    "name": "clustering",
    "searchSpace": {
        "clustering.threshold": {"type": "float", "low": 0.3, "high": 1.3},
        "clustering.method": {"type": "categorical", "choices": ["average", "centroid"]},
        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20, "log": True},
    },
    "maxTrialCount": 12,
}


def objective(params: dict[str, Any]) -> float:
    """A known function standing in for DER in these unit tests."""
    return (float(params["clustering.threshold"]) - 0.9) ** 2 + 0.1 * (
        params["clustering.method"] != "average"
    )


def stage(**changes: Any) -> Stage:
    return Stage.model_validate({**CLUSTERING, **changes})


def test_first_configuration_is_pyannotes_default() -> None:
    first = StageTuner(stage(), Optimizer(seed=0, initial_design_size=4)).ask()
    assert first == {
        "clustering.method": KNOWN["clustering.method"].default,
        "clustering.min_cluster_size": KNOWN["clustering.min_cluster_size"].default,
        "clustering.threshold": KNOWN["clustering.threshold"].default,
    }


def test_default_outside_the_range_is_clipped_into_it() -> None:
    space = {"clustering.threshold": {"type": "float", "low": 0.8, "high": 1.3}}
    first = StageTuner(stage(searchSpace=space), Optimizer()).ask()
    assert first == {"clustering.threshold": 0.8}


def test_pending_asks_are_distinct() -> None:
    tuner = StageTuner(stage(), Optimizer(seed=1, initial_design_size=3))
    pending = [tuner.ask() for _ in range(8)]  # more than the initial design
    assert len({tuple(sorted(p.items())) for p in pending}) == 8
    for params in pending:
        assert isinstance(params["clustering.method"], str)  # no numpy scalars


def test_prepared_asks_are_the_asks_smac_would_have_made() -> None:
    """``prepare`` asks ahead, after the tells so far: the same trials, just earlier."""

    def trials(prepared: bool) -> list[dict[str, Any]]:
        tuner = StageTuner(stage(), Optimizer(seed=2, initial_design_size=2))
        first = [tuner.ask() for _ in range(3)]  # the default and the design: no model yet
        for params in first:
            tuner.tell(params, objective(params))
        if prepared:
            tuner.prepare(4)  # model-based: they depend on the tells above
        return first + [tuner.ask() for _ in range(6)]  # 4 prepared, then 2 asked

    plain, prepared = trials(False), trials(True)
    assert prepared == plain
    assert len({tuple(sorted(p.items())) for p in prepared}) == 9


def test_study_prepares_within_the_stage_and_plans_as_before() -> None:
    study = Study(spec())
    first = study.plan()
    study.prepare(100)  # one trial of the stage's 3 is left to start
    finish(study, first[0].name, 0.5)
    finish(study, first[1].name, 0.3)
    third = study.plan()
    assert [t.name for t in third] == ["segmentation-002"]
    assert third[0].params not in [t.params for t in first]
    assert study.plan() == []


def run(seed: int, count: int) -> list[dict[str, Any]]:
    tuner = StageTuner(stage(), Optimizer(seed=seed, initial_design_size=3))
    seen = []
    for _ in range(count):
        params = tuner.ask()
        tuner.tell(params, objective(params))
        seen.append(params)
    return seen


def test_same_seed_same_trials_other_seed_other_trials() -> None:
    assert run(0, 6) == run(0, 6)
    assert run(0, 6) != run(1, 6)


def test_restored_tuner_never_reruns_finished_trials() -> None:
    optimizer = Optimizer(seed=0, initial_design_size=4)
    first = StageTuner(stage(), optimizer)
    finished = []
    for _ in range(3):  # part of the initial design
        params = first.ask()
        finished.append((params, objective(params)))
    restored = StageTuner(stage(), optimizer, finished=finished)
    keys = {tuple(sorted(p.items())) for p, _ in finished}
    for _ in range(6):
        params = restored.ask()
        assert tuple(sorted(params.items())) not in keys
        restored.tell(params, objective(params))


def test_failed_trials_are_told_as_crashed_and_the_search_goes_on() -> None:
    tuner = StageTuner(stage(), Optimizer(seed=0, initial_design_size=2))
    for index in range(6):
        params = tuner.ask()
        tuner.tell(params, None if index % 2 else objective(params))
    assert tuner.ask()  # the surrogate fits despite crashes (finite crash cost)


def spec(**changes: Any) -> Spec:
    document = {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "t"},
        "spec": {
            "data": {"database": "db.yml", "protocol": "A.SpeakerDiarization.B"},
            "pipeline": {"segmentation": "seg.ckpt", "embedding": "emb.ckpt"},
            "stages": [
                {
                    "name": "segmentation",
                    "fineTune": {"maxEpochs": 1},
                    "searchSpace": {
                        "segmentation.min_duration_off": {"type": "float", "low": 0, "high": 1},
                    },
                    "maxTrialCount": 3,
                },
                {**CLUSTERING, "maxTrialCount": 4},
            ],
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": 2,
            "maxFailedTrialCount": 1,
            **changes,
        },
    }
    return parse_tuning(document).spec


def finish(study: Study, name: str, der: float | None) -> TrialRecord:
    record = study.running[name].record(
        state="Failed" if der is None else "Succeeded",
        der=der,
        components=None
        if der is None
        else Components(der=der, missed=0, false_alarm=0, confusion=der, total=1),
        checkpoint=None if der is None else f"s3://a/{name}/segmentation.ckpt",
    )
    study.record(record)
    return record


def test_stages_run_in_order_and_later_stages_start_from_the_best() -> None:
    study = Study(spec())
    first = study.plan()
    assert [t.name for t in first] == ["segmentation-000", "segmentation-001"]
    assert study.plan() == []  # both slots busy
    finish(study, "segmentation-000", 0.5)
    third = study.plan()
    assert [t.name for t in third] == ["segmentation-002"]
    finish(study, "segmentation-001", 0.3)
    assert study.plan() == []  # budget of the stage used up; clustering waits for the best
    finish(study, "segmentation-002", 0.4)
    clustering = study.plan()
    assert [t.stage for t in clustering] == ["clustering", "clustering"]
    best = study.best("segmentation")
    assert best is not None and best.name == "segmentation-001"
    for trial in clustering:
        assert trial.segmentation == "s3://a/segmentation-001/segmentation.ckpt"
        assert (
            trial.full_params["segmentation.min_duration_off"]
            == (best.full_params["segmentation.min_duration_off"])
        )
        assert trial.fine_tune is None


def test_rebuilt_study_continues_where_it_stopped() -> None:
    study = Study(spec())
    for trial in study.plan():
        finish(study, trial.name, 0.4)
    rebuilt = Study(spec(), records=study.records)
    names = [t.name for t in rebuilt.plan()]
    assert names == ["segmentation-002"]
    assert rebuilt.running["segmentation-002"].params not in [r.params for r in study.records]


def test_too_many_failures_stop_the_tuning() -> None:
    study = Study(spec())
    for trial in study.plan():
        finish(study, trial.name, None)
    assert study.failure is not None and "maxFailedTrialCount (1)" in study.failure
    assert study.plan() == []


def test_suspended_tuning_plans_nothing() -> None:
    assert Study(spec(suspend=True)).plan() == []


@pytest.mark.parametrize("slots", [1, 3])
def test_stage_budget_is_respected(slots: int) -> None:
    study = Study(spec(parallelTrialCount=slots))
    launched = 0
    while study.current_stage is not None:
        planned = study.plan()
        assert 0 < len(planned) <= slots
        launched += len(planned)
        for trial in planned:
            finish(study, trial.name, 0.2)
    assert launched == 3 + 4
    assert study.complete
