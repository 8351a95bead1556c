"""The SMAC tuner and the study of stages, with no Kubernetes and no trials: real SMAC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from smac.model.random_forest import RandomForest

from diartune.search.tuner import Observation, SpaceExhausted, StageTuner
from diartune.spec.model import Budget, Optimizer, Stage
from diartune.spec.params import KNOWN

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
    assert first.budget is None
    assert first.params == {
        "clustering.method": KNOWN["clustering.method"].default,
        "clustering.min_cluster_size": KNOWN["clustering.min_cluster_size"].default,
        "clustering.threshold": KNOWN["clustering.threshold"].default,
    }


def test_default_outside_the_range_is_clipped_into_it() -> None:
    space = {"clustering.threshold": {"type": "float", "low": 0.8, "high": 1.3}}
    first = StageTuner(stage(searchSpace=space), Optimizer()).ask().params
    assert first == {"clustering.threshold": 0.8}


def test_pending_asks_are_distinct() -> None:
    tuner = StageTuner(stage(), Optimizer(seed=1, initial_design_size=3))
    pending = [tuner.ask().params for _ in range(8)]  # more than the initial design
    assert len({tuple(sorted(p.items())) for p in pending}) == 8
    for params in pending:
        assert isinstance(params["clustering.method"], str)  # no numpy scalars


def test_prepared_asks_are_the_asks_smac_would_have_made() -> None:
    """``prepare`` asks ahead, after the tells so far: the same trials, just earlier."""

    def trials(prepared: bool) -> list[dict[str, Any]]:
        tuner = StageTuner(stage(), Optimizer(seed=2, initial_design_size=2))
        first = [tuner.ask().params for _ in range(3)]  # the default and the design: no model
        for params in first:
            tuner.tell(Observation(params, objective(params)))
        if prepared:
            tuner.prepare(4)  # model-based: they depend on the tells above
        return first + [tuner.ask().params for _ in range(6)]  # 4 prepared, then 2 asked

    plain, prepared = trials(False), trials(True)
    assert prepared == plain
    assert len({tuple(sorted(p.items())) for p in prepared}) == 9


def run(seed: int, count: int) -> list[dict[str, Any]]:
    tuner = StageTuner(stage(), Optimizer(seed=seed, initial_design_size=3))
    seen = []
    for _ in range(count):
        params = tuner.ask().params
        tuner.tell(Observation(params, objective(params)))
        seen.append(params)
    return seen


def test_same_seed_same_trials_other_seed_other_trials() -> None:
    assert run(0, 6) == run(0, 6)
    assert run(0, 6) != run(1, 6)


def test_the_same_seed_gives_the_same_trials_in_another_process() -> None:
    """Whatever Python's string hashing (PYTHONHASHSEED differs per process by default):
    SMAC's local search dropped duplicate start points through a set."""
    script = "from test_tuner import run; print(run(0, 12))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=Path(__file__).parent,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1, outputs


def test_restored_tuner_never_reruns_finished_trials() -> None:
    optimizer = Optimizer(seed=0, initial_design_size=4)
    first = StageTuner(stage(), optimizer)
    finished = []
    for _ in range(3):  # part of the initial design
        params = first.ask().params
        finished.append(Observation(params, objective(params)))
    restored = StageTuner(stage(), optimizer, finished=finished)
    keys = {tuple(sorted(o.params.items())) for o in finished}
    for _ in range(6):
        params = restored.ask().params
        assert tuple(sorted(params.items())) not in keys
        restored.tell(Observation(params, objective(params)))


def test_failed_trials_are_told_as_crashed_and_the_search_goes_on() -> None:
    tuner = StageTuner(stage(), Optimizer(seed=0, initial_design_size=2))
    for index in range(6):
        params = tuner.ask().params
        tuner.tell(Observation(params, None if index % 2 else objective(params)))
    assert tuner.ask()  # the surrogate fits despite crashes (finite crash cost)


def test_a_finite_space_is_exhausted_without_repeats() -> None:
    space = {
        "clustering.method": {"type": "categorical", "choices": ["average", "centroid"]},
        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 3},
    }
    tuner = StageTuner(stage(searchSpace=space), Optimizer(seed=0, initial_design_size=2))
    seen = []
    for _ in range(6):
        params = tuner.ask().params
        tuner.tell(Observation(params, objective({**params, "clustering.threshold": 0.9})))
        seen.append(tuple(sorted(params.items())))
    assert len(set(seen)) == 6
    with pytest.raises(SpaceExhausted, match="all 6 configurations"):
        tuner.ask()
    tuner.prepare(4)  # nothing left to prepare: no error


def test_the_facade_keeps_smacs_model_and_makes_it_faster() -> None:
    tuner = StageTuner(stage(), Optimizer())
    forest = tuner._smac._model
    assert isinstance(forest, RandomForest)
    options = forest._rf_opts
    assert (options["n_jobs"], options["max_leaf_nodes"]) == (1, None)
    assert (forest._log_y, options["n_estimators"], options["bootstrap"]) == (True, 10, True)


@pytest.mark.parametrize("clustering", ["AgglomerativeClustering", "VBxClustering"])
def test_known_defaults_are_pyannotes(clustering: str) -> None:
    """params.KNOWN restates pyannote's defaults: check them against pyannote itself.

    pyannote 4.0's ``default_parameters()`` gives VBx's (whatever the clustering); for
    agglomerative clustering it gives no method or min_cluster_size, which diartune
    takes from pyannote 3.1 (docs/spec.md).
    """
    from pyannote.audio.pipelines import SpeakerDiarization

    from diartune.spec.params import pipeline_defaults

    theirs = {
        f"{group}.{name}": value
        for group, values in SpeakerDiarization.default_parameters(None).items()  # type: ignore[arg-type]
        for name, value in values.items()
    }
    ours = pipeline_defaults(clustering)
    shared = set(theirs) & set(ours)
    assert {"segmentation.min_duration_off", "clustering.threshold"} <= shared
    if clustering == "VBxClustering":
        assert shared == set(theirs)
    assert {name: ours[name] for name in shared} == {name: theirs[name] for name in shared}


MULTI_FIDELITY = Optimizer(facade="multiFidelity", eta=3, seed=0, initial_design_size=4)
BUDGET = Budget(kind="files", min_budget=100 / 9, max_budget=100)


def fidelity_objective(params: dict[str, Any], budget: float | None) -> float:
    """The objective, noisier at a small budget (as a DER on fewer files)."""
    assert budget is not None
    return objective(params) + 0.05 * (100 - budget) / 100


def test_multi_fidelity_promotes_the_best_to_larger_budgets() -> None:
    """Hyperband's first bracket: configurations at 11 %, the best third of them at 33 %,
    the best of those at 100 %; a promoted configuration is one that ran before."""
    tuner = StageTuner(stage(maxTrialCount=40), MULTI_FIDELITY, BUDGET)
    asked = []
    while not asked or asked[-1][0] < 100:
        proposal = tuner.ask()
        assert proposal.budget is not None
        asked.append((round(proposal.budget, 1), proposal.params))
        cost = fidelity_objective(proposal.params, proposal.budget)
        tuner.tell(Observation(proposal.params, cost, proposal.budget))
    first = [params for budget, params in asked if budget == 11.1]
    second = [params for budget, params in asked if budget == 33.3]
    assert [budget for budget, _ in asked] == [11.1] * len(first) + [33.3] * len(second) + [100]
    assert len(first) >= 8 and len(second) == 3  # Hyperband plans 9, 3, 1 for eta = 3
    assert sorted(second, key=objective) == sorted(first, key=objective)[: len(second)]
    assert asked[-1][1] == min(second, key=objective)


def test_multi_fidelity_never_asks_ahead_and_restores_without_reruns() -> None:
    first = StageTuner(stage(maxTrialCount=40), MULTI_FIDELITY, BUDGET)
    first.prepare(4)
    assert not first._ready  # a rung waits for its tells
    done = []
    for _ in range(10):
        proposal = first.ask()
        cost = fidelity_objective(proposal.params, proposal.budget)
        done.append(Observation(proposal.params, cost, proposal.budget))
        first.tell(done[-1])
    restored = StageTuner(stage(maxTrialCount=40), MULTI_FIDELITY, BUDGET, finished=done)
    keys = {(tuple(sorted(o.params.items())), o.budget) for o in done}
    for _ in range(6):
        proposal = restored.ask()
        assert (tuple(sorted(proposal.params.items())), proposal.budget) not in keys
        cost = fidelity_objective(proposal.params, proposal.budget)
        restored.tell(Observation(proposal.params, cost, proposal.budget))


def test_successive_halving_is_the_other_intensifier() -> None:
    optimizer = MULTI_FIDELITY.model_copy(update={"intensifier": "successiveHalving"})
    tuner = StageTuner(stage(maxTrialCount=40), optimizer, BUDGET)
    assert type(tuner._smac._intensifier).__name__ == "SuccessiveHalving"
    assert tuner.ask().budget == pytest.approx(100 / 9)
