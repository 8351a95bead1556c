"""The study's decisions, driven the way both drivers drive it, with real SMAC.

``Launcher`` stands in for a driver (local processes or Kubernetes Jobs): it launches
what the study plans, stops what it says to stop, and hands each trial's outcome back.
Outcomes come from a known function of the configuration, so every decision of the
loop (stages, budgets, failures, suspend, exhaustion, the test evaluation, resume) is
checked once here for both drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from diartune.operator.status import Conditions
from diartune.records import (
    Components,
    FileScores,
    Trial,
    TrialOutcome,
    TrialRecord,
    TrialResult,
)
from diartune.search.study import DEFAULTS, STOPPED, Phase, Study
from diartune.spec.file import parse_tuning
from diartune.spec.model import Budget, Spec, SpecError
from diartune.spec.params import pipeline_defaults, with_defaults

CLUSTERING = {
    "name": "clustering",
    "searchSpace": {
        "clustering.threshold": {"type": "float", "low": 0.3, "high": 1.3},
        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
    },
    "maxTrialCount": 4,
}
SEGMENTATION = {
    "name": "segmentation",
    "fineTune": {"maxEpochs": 1},
    "searchSpace": {"segmentation.min_duration_off": {"type": "float", "low": 0, "high": 1}},
    "maxTrialCount": 3,
}


def spec(*stages: dict[str, Any], **changes: Any) -> Spec:
    document = {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "t"},
        "spec": {
            "data": {"database": "db.yml", "protocol": "A.SpeakerDiarization.B"},
            "pipeline": {"segmentation": "seg.ckpt", "embedding": "emb.ckpt"},
            "stages": list(stages or (SEGMENTATION, CLUSTERING)),
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": 2,
            "maxFailedTrialCount": 1,
            **changes,
        },
    }
    return parse_tuning(document).spec


def der_of(trial: Trial) -> float | None:
    """A known function standing in for DER: best near threshold 0.9."""
    threshold = float(trial.full_params.get("clustering.threshold", 0.6))
    return round(0.2 + (threshold - 0.9) ** 2, 6)


class Launcher:
    """A driver in memory: launches what the study plans and reports outcomes."""

    def __init__(self, study: Study, der: Callable[[Trial], float | None] = der_of) -> None:
        self.study = study
        self.der = der
        self.launched: list[Trial] = []
        self.stopped: list[str] = []

    def outcome(self, trial: Trial) -> TrialOutcome:
        der = self.der(trial)
        if der is None:
            return TrialOutcome(error="exit code 75: boom")
        components = Components.of(0, 0, der, 1)
        # 16 files of 30 s whose difficulty varies the same way for every configuration.
        difficulty = [0.625 + 0.05 * index for index in range(16)]  # mean 1: DER stays der
        scores = FileScores(
            files="sixteen",
            error=[der * 30 * factor for factor in difficulty],
            total=[30.0] * 16,
        )
        checkpoint = (
            f"s3://a/{trial.name}/segmentation.ckpt" if trial.stage == "segmentation" else None
        )
        result = TrialResult(
            name=trial.name,
            der=der,
            scores=scores,
            components=components,
            checkpoint=None if trial.is_evaluation else checkpoint,
            checkpoint_sha256=None if trial.is_evaluation or not checkpoint else "f" * 64,
            artifacts=f"s3://a/trials/{trial.name}",
        )
        return TrialOutcome(result=result, seconds=1.0)

    def step(self) -> list[Trial]:
        """What a driver does on each wake-up: stop, launch."""
        self.stopped += [trial.name for trial in self.study.stop()]
        planned = self.study.plan()
        self.launched += planned
        return planned

    def finish(self, name: str) -> TrialRecord:
        record = self.study.running[name].record(self.outcome(self.study.running[name]))
        self.study.record(record)
        return record

    def run(self) -> Study:
        """Until nothing runs and nothing is planned, finishing the oldest trial first."""
        while True:
            self.step()
            if not self.study.running:
                return self.study
            self.finish(next(iter(self.study.running)))


def test_stages_run_in_order_and_later_stages_start_from_the_best() -> None:
    study = Study(spec(), root="s3://r")
    launcher = Launcher(study, lambda t: {"segmentation-001": 0.3}.get(t.name, 0.5))
    assert [t.name for t in launcher.step()] == ["segmentation-000", "segmentation-001"]
    assert launcher.step() == []  # both slots busy
    launcher.finish("segmentation-000")
    assert [t.name for t in launcher.step()] == ["segmentation-002"]
    launcher.finish("segmentation-001")
    assert launcher.step() == []  # the stage's budget is used up; clustering waits for its best
    launcher.finish("segmentation-002")
    clustering = launcher.step()
    assert [t.stage for t in clustering] == ["clustering", "clustering"]
    best = study.best("segmentation")
    assert best is not None and best.name == "segmentation-001"
    for trial in clustering:
        # From the root the driver chose, whatever the record says; with its digest.
        assert trial.segmentation == "s3://r/trials/segmentation-001/segmentation.ckpt"
        assert trial.segmentation_sha256 == "f" * 64
        assert (
            trial.full_params["segmentation.min_duration_off"]
            == (best.full_params["segmentation.min_duration_off"])
        )
        assert study.request(trial).fine_tune is None
    for trial in launcher.launched:  # every parameter, so the trial adds no default of its own
        assert with_defaults(study.spec.pipeline.clustering, trial.full_params) == (
            trial.full_params
        )
        assert trial.full_params.keys() == pipeline_defaults("AgglomerativeClustering").keys()
    first = study.request(launcher.launched[0])
    assert first.fine_tune is not None and first.output == "s3://r/trials/segmentation-000"


def test_the_winner_and_the_defaults_are_evaluated_once_on_test() -> None:
    study = Launcher(Study(spec(CLUSTERING))).run()
    assert study.phase is Phase.SUCCEEDED
    evaluations = [r for r in study.records if r.is_evaluation]
    best = study.best()
    assert best is not None
    assert sorted(r.name for r in evaluations) == sorted([f"{best.name}-test", "defaults-test"])
    winner = study.evaluation(f"{best.name}-test")
    assert winner is not None and winner.export and winner.subset == "test"
    assert winner.full_params == best.full_params
    # The first trial of a stage without fine-tuning ran pyannote's defaults: it is the
    # development baseline, so no extra evaluation ran for it.
    default = study.default_record()
    assert default is not None and default.name == "clustering-000"
    summary = study.summary()
    assert (summary.trials, summary.failed, summary.running) == (4, 0, 0)
    assert summary.best_der == best.der and summary.default_der == default.der
    assert summary.test_der == winner.der
    assert summary.pipeline == f"s3://a/trials/{best.name}-test/pipeline"
    assert summary.default_test_der == der_of(study.defaults())
    assert Launcher(study).step() == []  # nothing left to do, ever


def test_the_defaults_get_their_own_development_run_when_no_trial_ran_them() -> None:
    """With fine-tuning in the first stage, no search trial ran pyannote's defaults."""
    study = Launcher(Study(spec(SEGMENTATION))).run()
    assert study.phase is Phase.SUCCEEDED
    default = study.default_record()
    assert default is not None and default.name == f"{DEFAULTS}-development"
    assert default.segmentation == "seg.ckpt"  # the spec's own model, not fine-tuned
    best = study.best()
    assert best is not None
    winner = study.evaluation(f"{best.name}-test")
    assert winner is not None and winner.segmentation == best.checkpoint


def test_a_failed_test_evaluation_still_succeeds_and_says_why() -> None:
    launcher = Launcher(Study(spec(CLUSTERING)), lambda t: None if t.subset == "test" else 0.3)
    study = launcher.run()
    assert study.phase is Phase.SUCCEEDED
    assert study.message.startswith("test evaluation failed: exit code 75")
    summary = study.summary()
    assert summary.test_der is None and summary.test_failed
    # The condition's reason comes with the summary, whatever its message says.
    conditions = Conditions()
    conditions.mark_finished(summary.model_copy(update={"message": "tuned, untested"}))
    assert conditions.items["Succeeded"]["reason"] == "TestEvaluationFailed"
    assert study.failed_count == 0  # evaluations do not count against maxFailedTrialCount


def test_too_many_failures_stop_the_running_trials_and_more_allowed_failures_resume() -> None:
    study = Study(spec(CLUSTERING, parallelTrialCount=3))
    launcher = Launcher(study, lambda t: None if t.number in (0, 1) else 0.3)
    launcher.step()
    launcher.finish("clustering-000")
    assert study.phase is Phase.RUNNING
    launcher.finish("clustering-001")
    assert study.phase is Phase.FAILED
    assert "2 trials failed, more than maxFailedTrialCount (1)" in study.message
    assert study.plan() == []
    launcher.step()
    assert launcher.stopped == ["clustering-002"] and not study.running
    stopped = study.records[-1]
    assert (stopped.name, stopped.state, stopped.message) == ("clustering-002", "Failed", STOPPED)
    assert study.failed_count == 3  # the stopped trial counts, before and after a restart

    rebuilt = Study(spec(CLUSTERING, parallelTrialCount=3, maxFailedTrialCount=3), study.records)
    assert rebuilt.phase is Phase.PENDING
    assert Launcher(rebuilt, lambda t: 0.3).run().phase is Phase.SUCCEEDED


def test_a_trial_failed_on_bad_input_fails_the_tuning_at_once_naming_the_file() -> None:
    """However many failures maxFailedTrialCount allows: the next trial reads the same
    input, so a tuning whose every trial fails this way would only spend its budget."""
    study = Study(spec(CLUSTERING, parallelTrialCount=2, maxFailedTrialCount=100))
    launcher = Launcher(study)
    launcher.step()
    running = study.running["clustering-000"]
    error = "dev.rttm:3: 11 fields; expected at most 10"
    study.record(running.record(TrialOutcome(error=error, bad_input=True)))
    assert study.phase is Phase.FAILED
    assert study.message == (
        f"trial clustering-000 failed on bad input, which no retry fixes: {error}"
    )
    launcher.step()
    assert launcher.stopped == ["clustering-001"] and study.plan() == []
    assert len(launcher.launched) == 2
    # The same holds for a study rebuilt from the records (a restarted driver).
    assert Study(study.spec, study.records).phase is Phase.FAILED


def test_a_failed_tuning_resumed_in_place_gives_no_stopped_trials_number_again() -> None:
    study = Study(spec(CLUSTERING, parallelTrialCount=3))
    launcher = Launcher(study, lambda t: None if t.number in (0, 1) else 0.3)
    launcher.step()
    launcher.finish("clustering-000")
    launcher.finish("clustering-001")
    launcher.step()
    assert launcher.stopped == ["clustering-002"]

    study.spec = spec(CLUSTERING, parallelTrialCount=3, maxFailedTrialCount=3)
    assert launcher.run().phase is Phase.SUCCEEDED
    search = [t.name for t in launcher.launched if not t.is_evaluation]
    assert len(search) == len(set(search)), search  # clustering-002 ran once, and was stopped
    assert [r.state for r in study.records if r.name == "clustering-002"] == ["Failed"]


def test_a_suspended_tuning_launches_nothing_until_resumed() -> None:
    study = Study(spec(CLUSTERING, suspend=True))
    launcher = Launcher(study)
    assert launcher.run().phase is Phase.SUSPENDED and launcher.launched == []
    study.spec = spec(CLUSTERING)
    assert launcher.run().phase is Phase.SUCCEEDED
    assert len([t for t in launcher.launched if not t.is_evaluation]) == 4


def test_suspending_lets_running_trials_finish() -> None:
    study = Study(spec(CLUSTERING))
    launcher = Launcher(study)
    launcher.step()
    study.spec = spec(CLUSTERING, suspend=True)
    assert study.phase is Phase.SUSPENDED and len(study.running) == 2
    launcher.run()
    assert len(study.records) == 2 and study.phase is Phase.SUSPENDED


def test_an_exhausted_space_ends_its_stage_early_and_the_next_goes_on() -> None:
    small = {
        "name": "method",
        "searchSpace": {
            "clustering.method": {"type": "categorical", "choices": ["average", "centroid"]},
        },
        "maxTrialCount": 2,
    }
    valid = spec(small, CLUSTERING)
    # Validation refuses more trials than the space holds; a study never relies on it.
    too_many = valid.stages[0].model_copy(update={"max_trial_count": 5})
    study = Study(valid.model_copy(update={"stages": [too_many, valid.stages[1]]}))
    study = Launcher(study).run()
    assert study.exhausted == ["method"]
    assert len(study.finished("method")) == 2
    assert len(study.finished("clustering")) == 4
    assert study.phase is Phase.SUCCEEDED


def test_a_rebuilt_study_continues_where_it_stopped() -> None:
    study = Study(spec())
    launcher = Launcher(study)
    launcher.step()
    for name in list(study.running):
        launcher.finish(name)
    rebuilt = Study(spec(), records=study.records)
    planned = rebuilt.plan()
    assert [t.name for t in planned] == ["segmentation-002"]
    assert planned[0].params not in [r.params for r in study.records]


def test_a_rebuilt_study_adopts_running_trials_and_never_reruns_them() -> None:
    study = Study(spec(CLUSTERING))
    running = study.plan()
    rebuilt = Study(spec(CLUSTERING), running=running)
    assert [t.name for t in rebuilt.plan()] == []  # both slots are the adopted trials
    launcher = Launcher(rebuilt)
    launcher.finish(running[0].name)
    planned = launcher.step()
    assert [t.name for t in planned] == ["clustering-002"]
    assert planned[0].params not in [t.params for t in running]


@pytest.mark.parametrize("slots", [1, 3])
def test_each_stage_keeps_to_its_budget(slots: int) -> None:
    launcher = Launcher(Study(spec(parallelTrialCount=slots)))
    while launcher.study.searching:
        planned = launcher.step()
        assert 0 < len(planned) <= slots
        for trial in planned:
            launcher.finish(trial.name)
    assert len(launcher.launched) == 3 + 4
    assert launcher.run().phase is Phase.SUCCEEDED


def test_asking_ahead_stays_within_the_stage() -> None:
    study = Study(spec())
    launcher = Launcher(study)
    first = launcher.step()
    study.prepare(100)  # one trial of the stage's 3 is left to start
    for trial in first:
        launcher.finish(trial.name)
    third = launcher.step()
    assert [t.name for t in third] == ["segmentation-002"]
    assert third[0].params not in [t.params for t in first]
    assert study.plan() == []


def test_the_summary_says_how_sure_the_gain_over_the_defaults_is() -> None:
    study = Launcher(Study(spec(CLUSTERING))).run()
    summary = study.summary()
    assert summary.test_gain is not None and summary.development_gain is not None
    gain = summary.test_gain
    assert gain.files == 16 and gain.low <= gain.gain <= gain.high
    assert gain.gain == pytest.approx((summary.default_test_der or 0) - (summary.test_der or 0))
    assert gain.significant  # the same files, uniformly better
    assert study.message == gain.text and "significantly better" in gain.text
    assert summary.best_interval is not None and summary.best_interval.files == 16
    assert summary.best_interval.low <= (summary.best_der or 0) <= summary.best_interval.high
    assert [subset for subset, _, _ in study.compared()] == ["development", "test"]


def test_the_objective_can_be_the_mean_or_the_upper_bound_of_per_file_ders() -> None:
    study = Study(spec(CLUSTERING, objective={"aggregate": "upperBound"}))
    assert study.summary().objective == "upperBound"


FINE_TUNING = {
    "name": "segmentation",
    "fineTune": {"maxEpochs": 9},
    "searchSpace": {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
    "maxTrialCount": 13,
}
MULTI_FIDELITY = {"facade": "multiFidelity", "eta": 3, "seed": 0, "initialDesignSize": 2}


def test_an_epochs_budget_continues_from_the_same_configuration_at_a_smaller_one() -> None:
    """Hyperband over 1, 3 and 9 epochs: a promoted configuration trains only the extra
    epochs, from the checkpoint it wrote at the smaller budget (under the driver's root)."""
    study = Study(spec(FINE_TUNING, optimizer=MULTI_FIDELITY, parallelTrialCount=1), root="s3://r")
    launcher = Launcher(study, lambda t: 0.5 - float(t.params.get("training.learning_rate", 0)))
    launcher.run()
    searched = [r for r in study.records if not r.is_evaluation]
    assert {r.budget for r in searched} == {1.0, 3.0, 9.0}
    assert len(searched) == 13
    for record in searched:
        request = study.request(record)
        assert request.fine_tune is not None
        assert request.fine_tune.max_epochs == round(record.budget or 0)
        smaller = [
            r
            for r in searched
            if r.params == record.params and (r.budget or 0) < (record.budget or 0)
        ]
        if not smaller:
            assert request.continue_from is None
            continue
        source = max(smaller, key=lambda r: r.budget or 0)
        assert request.continue_from is not None
        assert request.continue_from.uri == f"s3://r/trials/{source.name}/segmentation.ckpt"
    assert study.summary().phase is Phase.SUCCEEDED


def files_budget_study(slots: int, trials: int) -> Study:
    clustering = {**CLUSTERING, "maxTrialCount": trials}
    study = Study(spec(clustering, optimizer=MULTI_FIDELITY, parallelTrialCount=slots), root="r")

    def der(trial: Trial) -> float | None:
        # A small subset flatters: its DER is lower than the full set's.
        return (der_of(trial) or 0) * (trial.budget or 100) / 100

    return Launcher(study, der).run()


def test_a_files_budget_scores_subsets_and_only_full_scores_can_win() -> None:
    """Clustering over 11 %, 33 % and 100 % of the development files: a trial's request
    says its share; the best is chosen among trials scored on every file."""
    study = files_budget_study(slots=1, trials=13)
    budgets = {round(r.budget or 0, 1) for r in study.records if not r.is_evaluation}
    assert budgets == {11.1, 33.3, 100.0}
    for record in study.records:
        assert study.request(record).files == (record.budget if record.budget else None)
        assert study.request(record).fine_tune is None
    best = study.best()
    assert best is not None and best.budget == 100
    test = study.evaluation(f"{best.name}-test")
    assert test is not None and test.budget is None


def test_without_a_full_score_the_best_is_among_the_largest_budget_reached() -> None:
    """Parallel slots open new brackets while rungs wait: 12 trials may end before any
    configuration reached every file. The winner then comes from the largest budget
    reached (the same files for all), never from a smaller, flattering subset."""
    study = files_budget_study(slots=2, trials=12)
    searched = [r for r in study.records if not r.is_evaluation]
    assert {round(r.budget or 0, 1) for r in searched} == {11.1, 33.3}
    assert min(searched, key=lambda r: r.der or 0).budget == pytest.approx(100 / 9)  # flatters
    best = study.best()
    assert best is not None and best.budget == pytest.approx(100 / 3)
    assert study.phase is Phase.SUCCEEDED


def test_budgets_are_checked_against_the_facade_and_the_stage() -> None:
    def problems(stage: dict[str, Any], facade: str = "multiFidelity") -> str:
        with pytest.raises(SpecError) as error:
            spec(stage, optimizer={"facade": facade})
        return str(error.value)

    hpo = problems({**CLUSTERING, "budget": {"kind": "files"}}, facade="hpo")
    assert "budget: a budget needs optimizer.facade multiFidelity" in hpo
    assert "epochs needs fineTune" in problems({**CLUSTERING, "budget": {"kind": "epochs"}})
    assert "expected at most 100" in problems({**CLUSTERING, "budget": {"maxBudget": 200}})
    assert "expected at most maxBudget" in problems(
        {**FINE_TUNING, "budget": {"minBudget": 20, "maxBudget": 10}}
    )
    tuned = {
        **FINE_TUNING["searchSpace"],
        "training.max_epochs": {"type": "int", "low": 1, "high": 5},
    }  # type: ignore[dict-item]
    assert "do not tune it as well" in problems({**FINE_TUNING, "searchSpace": tuned})
    defaults = spec(FINE_TUNING, CLUSTERING, optimizer={"facade": "multiFidelity", "eta": 3})
    epochs, files = (defaults.budget(stage) for stage in defaults.stages)
    assert epochs == Budget(kind="epochs", min_budget=1, max_budget=9)
    assert files == Budget(kind="files", min_budget=100 / 9, max_budget=100)
