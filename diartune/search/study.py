"""Every decision of a tuning's loop, rebuilt from trial records at any time.

The study decides which trials run next: it asks the current stage's tuner, keeps each
stage within its budget, starts a stage from the best configuration of those before it,
ends a stage early when its search space is exhausted, fails the tuning when too many
trials failed, holds back while suspended and, once every stage is done, evaluates the
winner and pyannote's defaults once on the test subset. Its phase follows from its
records alone, so a rebuilt study is in the same phase as the one that wrote them.

Drivers (``diartune tune``'s local processes, the operator's Jobs) only launch what
``plan`` returns, stop what ``stop`` returns, and hand each finished trial back to
``record``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

from diartune.records import (
    CHECKPOINT_FILE,
    Checkpoint,
    Subset,
    Trial,
    TrialOutcome,
    TrialRecord,
    TrialRequest,
    objective_of,
)
from diartune.search.summary import Gain, Interval, Phase, Summary
from diartune.search.tuner import Observation, Proposal, SpaceExhausted, StageTuner
from diartune.search.warm_start import WarmStart
from diartune.spec.model import Budget, Spec, Stage
from diartune.spec.params import Value, canonical, pipeline_defaults, with_defaults
from diartune.storage import join

#: Why a trial that was running when its tuning failed has no result.
STOPPED = "stopped: the tuning failed"

#: The name of the evaluations of pyannote's default parameters (``defaults-test``, ...).
DEFAULTS = "defaults"


def _succeeded(record: TrialRecord | None) -> TrialRecord | None:
    return record if record is not None and record.state == "Succeeded" else None


def _failed(record: TrialRecord | None) -> TypeGuard[TrialRecord]:
    return record is not None and record.state == "Failed"


def evaluation_name(source: str, subset: str) -> str:
    """``<source>-<subset>``: never the name of a search trial, which ends in digits."""
    return f"{source}-{subset}"


class Study:
    """The stages of one tuning, their trials and tuners, and the final evaluations."""

    def __init__(
        self,
        spec: Spec,
        records: Iterable[TrialRecord] = (),
        running: Iterable[Trial] = (),
        root: str | None = None,
        warm: WarmStart | None = None,
    ) -> None:
        """``root``: where the driver puts trial artifacts (``<root>/trials/<name>``); a
        checkpoint is then always taken from there, never from where a record says it is
        (a record is the trial's word, a status anyone with patch rights may edit). None
        for a study that only reads finished records (reports). ``warm``: trials of
        earlier tunings, told to each stage's tuner first (``diartune.search.warm_start``)."""
        self.spec = spec
        self.root = root
        self.warm = warm or WarmStart()
        self.records: list[TrialRecord] = list(records)
        self.running: dict[str, Trial] = {trial.name: trial for trial in running}
        self._tuners: dict[str, StageTuner] = {}
        self._exhausted: set[str] = set()
        self._statistics: dict[tuple[str, ...], Interval | Gain | None] = {}

    # -- the search -------------------------------------------------------------------

    def finished(self, stage: str) -> list[TrialRecord]:
        """The finished search trials of ``stage``."""
        return [r for r in self.records if r.stage == stage and not r.is_evaluation]

    @property
    def failed_count(self) -> int:
        """Search trials that failed, in all stages."""
        return sum(r.state == "Failed" for r in self.records if not r.is_evaluation)

    def stage_done(self, stage: Stage) -> bool:
        """Whether ``stage`` launches no more trials: budget used up, or space exhausted."""
        return (
            len(self.finished(stage.name)) >= stage.max_trial_count or stage.name in self._exhausted
        )

    def stage_complete(self, stage: Stage) -> bool:
        """Whether ``stage`` launches no more trials and all of its trials finished."""
        running = any(t.stage == stage.name for t in self.running.values())
        return self.stage_done(stage) and not running

    @property
    def current_stage(self) -> Stage | None:
        """The first stage with trials left to launch or finish, or None when all are done."""
        return next((s for s in self.spec.stages if not self.stage_complete(s)), None)

    @property
    def exhausted(self) -> list[str]:
        """Stages that ended early because every configuration of their space was tried."""
        return [stage.name for stage in self.spec.stages if stage.name in self._exhausted]

    def best(self, stage: str | None = None) -> TrialRecord | None:
        """The successful search trial with the lowest objective, in ``stage`` or overall.

        With a files budget, only trials scored on the same files compare: those at the
        largest budget any trial of the stage reached (all files once one got there).
        An epochs budget scores every trial on all files: a shorter training is a model
        like any other.
        """
        stages = [self.spec.stage(stage)] if stage else self.spec.stages
        candidates = [record for each in stages for record in self._comparable(each)]
        return min(candidates, key=lambda r: objective_of(r) or 0.0, default=None)

    def _comparable(self, stage: Stage) -> list[TrialRecord]:
        """The successful search trials of ``stage`` whose objectives compare."""
        succeeded = [
            r
            for r in self.finished(stage.name)
            if r.state == "Succeeded" and objective_of(r) is not None
        ]
        if _kind(self.spec.budget(stage)) != "files" or not succeeded:
            return succeeded
        largest = max(r.budget or 0.0 for r in succeeded)
        return [r for r in succeeded if r.budget == largest]

    @property
    def failure(self) -> str | None:
        """Why the tuning cannot go on, or None.

        A search trial that failed on bad input fails the tuning at once, whatever
        maxFailedTrialCount allows: the input is the same for every trial, so no other
        trial can do better, and its message names the file or field at fault.
        """
        searched = (r for r in self.records if not r.is_evaluation)
        bad = next((r for r in searched if _failed(r) and r.bad_input), None)
        if bad is not None:
            return f"trial {bad.name} failed on bad input, which no retry fixes: {bad.message}"
        if self.failed_count > self.spec.max_failed_trial_count:
            return (
                f"{self.failed_count} trials failed, more than maxFailedTrialCount "
                f"({self.spec.max_failed_trial_count})"
            )
        for stage in self.spec.stages:
            if self.stage_complete(stage) and self.best(stage.name) is None:
                return f"stage {stage.name!r} finished with no successful trial"
        return None

    # -- the evaluations --------------------------------------------------------------

    def defaults(self) -> Trial:
        """pyannote's default parameters with the spec's own models, not fine-tuned."""
        return Trial(
            name=DEFAULTS,
            stage=self.spec.stages[0].name,
            number=-1,
            params={},
            full_params=pipeline_defaults(self.spec.pipeline.clustering),
            segmentation=self.spec.pipeline.segmentation,
        )

    def _searched_defaults(self) -> TrialRecord | None:
        """A search trial that ran exactly the defaults (as the first trial of a stage
        without fine-tuning does when its ranges hold pyannote's defaults)."""
        defaults = self.defaults()
        for record in self.records:
            stage = None if record.is_evaluation else self.spec.stage(record.stage)
            if (
                stage is not None
                and stage.fine_tune is None
                and record.full_params == defaults.full_params
                and record.segmentation == defaults.segmentation
            ):
                return record
        return None

    def default_record(self) -> TrialRecord | None:
        """The defaults scored on development: by a search trial, else by an evaluation."""
        return self._searched_defaults() or self.evaluation(
            evaluation_name(DEFAULTS, "development")
        )

    def evaluation(self, name: str) -> TrialRecord | None:
        """The record of the evaluation ``name``, once it has finished."""
        return next((r for r in self.records if r.name == name and r.is_evaluation), None)

    def evaluations(self) -> list[Trial]:
        """The evaluations a finished search calls for: the winner and the defaults on
        the test subset (the winner exports the tuned pipeline), and the defaults on
        development when no search trial ran them."""
        best = self.best()
        if best is None:
            return []
        segmentation, digest = self._model_of(best)
        winner = Trial.model_validate(
            best.model_dump(include=set(Trial.model_fields))
            | {"segmentation": segmentation, "segmentation_sha256": digest, "budget": None}
        )
        wanted = [
            _evaluate(winner, "test", export=True),
            _evaluate(self.defaults(), "test"),
        ]
        if self._searched_defaults() is None:
            wanted.append(_evaluate(self.defaults(), "development"))
        return wanted

    # -- the phase --------------------------------------------------------------------

    @property
    def searching(self) -> bool:
        """Whether search trials are left to launch or finish."""
        return self.current_stage is not None

    @property
    def phase(self) -> Phase:
        """Where the tuning stands, from its records and running trials alone."""
        if self.failure:
            return Phase.FAILED
        if not self.searching and all(self.evaluation(t.name) for t in self.evaluations()):
            return Phase.SUCCEEDED
        if self.spec.suspend:
            return Phase.SUSPENDED
        return Phase.RUNNING if self.running else Phase.PENDING

    @property
    def message(self) -> str:
        """One line on where the tuning stands, for people."""
        phase = self.phase
        if phase is Phase.FAILED:
            return str(self.failure)
        if phase is Phase.SUCCEEDED:
            best = self.best()
            test = self.evaluation(evaluation_name(best.name, "test")) if best else None
            if _failed(test):
                return f"test evaluation failed: {test.message}"
            default_test = _succeeded(self.evaluation(evaluation_name(DEFAULTS, "test")))
            gain = self._gain(test, default_test, "test") or self._gain(
                best, self.default_record(), "development"
            )
            return gain.text if gain else "tuned and evaluated on the test subset"
        if phase is Phase.SUSPENDED:
            return f"suspended: no new trials ({len(self.running)} still running)"
        stage = self.current_stage
        where = f"stage {stage.name}" if stage else "the test evaluation"
        return f"{len(self.running)} trials running in {where}"

    # -- decisions --------------------------------------------------------------------

    def plan(self) -> list[Trial]:
        """The trials to launch now, for the free slots of parallelTrialCount.

        Search trials of the current stage, or the evaluations once every stage is done;
        none while the tuning failed, is suspended, or a stage waits for the last trials
        of the one before it (it needs its best).
        """
        if self.phase in (Phase.FAILED, Phase.SUCCEEDED, Phase.SUSPENDED):
            return []
        free = self.spec.parallel_trial_count - len(self.running)
        stage = self.current_stage
        if stage is None:
            wanted = [
                trial
                for trial in self.evaluations()
                if self.evaluation(trial.name) is None and trial.name not in self.running
            ]
            return self._start(wanted[: max(free, 0)])
        if any(trial.stage != stage.name for trial in self.running.values()):
            return []
        launched = len(self.finished(stage.name)) + len(self.running)
        planned: list[Trial] = []
        for _ in range(min(free, stage.max_trial_count - launched)):
            try:
                planned += self._start([self._next(stage)])
            except SpaceExhausted:
                self._exhausted.add(stage.name)
                break
        return planned

    def _start(self, trials: list[Trial]) -> list[Trial]:
        self.running.update((trial.name, trial) for trial in trials)
        return trials

    def _next(self, stage: Stage) -> Trial:
        base, segmentation, digest = self._starting_point(stage)
        taken = {r.number for r in self.finished(stage.name)}
        taken |= {t.number for t in self.running.values() if t.stage == stage.name}
        number = next(n for n in range(len(taken) + 1) if n not in taken)
        proposal = self._tuner(stage).ask()
        return Trial(
            name=f"{stage.name}-{number:03d}",
            stage=stage.name,
            number=number,
            params=proposal.params,
            full_params={**base, **proposal.params},
            segmentation=segmentation,
            segmentation_sha256=digest,
            budget=proposal.budget,
        )

    def prepare(self, count: int) -> None:
        """Ask the current stage's tuner ahead for up to ``count`` of its next trials.

        Meant for a worker thread while ``plan`` and ``record`` go on: it only reads
        counts, and the tuner serializes its own SMAC calls.
        """
        stage = self.current_stage
        tuner = self._tuners.get(stage.name) if stage else None
        if stage is None or tuner is None:
            return
        left = stage.max_trial_count - len(self.finished(stage.name)) - len(self.running)
        tuner.prepare(min(count, left))

    def record(self, record: TrialRecord) -> None:
        """Take the record of a finished trial (or evaluation)."""
        self.running.pop(record.name, None)
        self.records.append(record)
        tuner = self._tuners.get(record.stage)
        if tuner is not None and not record.is_evaluation:
            tuner.tell(_observation(record))

    def stop(self) -> list[TrialRecord]:
        """Stop the running trials now (the tuning failed): each is recorded as Failed
        (``STOPPED``), as a restarted driver reads it back, so that a tuning resumed by a
        larger maxFailedTrialCount never gives its number to another trial."""
        if self.phase is not Phase.FAILED:
            return []
        stopped = [trial.record(TrialOutcome(error=STOPPED)) for trial in self.running.values()]
        for record in stopped:
            self.record(record)
        return stopped

    def forget(self, name: str) -> None:
        """Drop a running trial that will never report (it was interrupted)."""
        self.running.pop(name, None)

    # -- what it found ----------------------------------------------------------------

    def summary(self) -> Summary:
        """The numbers a tuning reports, development and test, at any time."""
        best = self.best()
        default = self.default_record()
        test = self.evaluation(evaluation_name(best.name, "test")) if best else None
        default_test = self.evaluation(evaluation_name(DEFAULTS, "test"))
        current = self.current_stage
        return Summary(
            phase=self.phase,
            message=self.message,
            stage=current.name if current else None,
            trials=sum(not r.is_evaluation for r in self.records),
            running=len(self.running),
            failed=self.failed_count,
            max_trials=sum(stage.max_trial_count for stage in self.spec.stages),
            default_der=default.der if default else None,
            best_der=best.der if best else None,
            best_trial=best.name if best else None,
            best_params=best.full_params if best else None,
            test_der=test.der if test else None,
            test_failed=_failed(test),
            test_components=test.components if test else None,
            default_test_der=default_test.der if default_test else None,
            pipeline=join(test.artifacts, "pipeline") if test and test.artifacts else None,
            objective=self.spec.objective.aggregate,
            imported_trials=self.warm.count,
            best_objective=objective_of(best) if best else None,
            best_interval=self._interval(best),
            default_interval=self._interval(default),
            test_interval=self._interval(test),
            default_test_interval=self._interval(default_test),
            development_gain=self._gain(best, default, "development"),
            test_gain=self._gain(_succeeded(test), _succeeded(default_test), "test"),
        )

    def compared(self) -> list[tuple[str, TrialRecord, TrialRecord]]:
        """(subset, tuned, defaults) for each subset where both were scored file by file."""
        best = self.best()
        if best is None:
            return []
        pairs = [
            ("development", best, self.default_record()),
            (
                "test",
                self.evaluation(evaluation_name(best.name, "test")),
                self.evaluation(evaluation_name(DEFAULTS, "test")),
            ),
        ]
        found = []
        for subset, tuned, defaults in pairs:
            tuned, defaults = _succeeded(tuned), _succeeded(defaults)
            if tuned and defaults and tuned.scores and defaults.scores:
                found.append((subset, tuned, defaults))
        return found

    def _interval(self, record: TrialRecord | None) -> Interval | None:
        """A record's interval, computed once (records do not change)."""
        if record is None:
            return None
        key = ("interval", record.name)
        if key not in self._statistics:
            self._statistics[key] = Interval.of(record.scores)
        return self._statistics[key]  # type: ignore[return-value]

    def _gain(
        self, tuned: TrialRecord | None, defaults: TrialRecord | None, subset: str
    ) -> Gain | None:
        """The comparison of two records, computed once."""
        if tuned is None or defaults is None:
            return None
        key = ("gain", tuned.name, defaults.name)
        if key not in self._statistics:
            self._statistics[key] = Gain.of(tuned, defaults, subset)
        return self._statistics[key]  # type: ignore[return-value]

    # -- helpers ----------------------------------------------------------------------

    def _tuner(self, stage: Stage) -> StageTuner:
        if stage.name not in self._tuners:
            imported = self.warm.imported.get(stage.name, [])
            # Imported trials stand in for as many points of the initial design.
            size = max(0, self.spec.optimizer.initial_design_size - len(imported))
            self._tuners[stage.name] = StageTuner(
                stage,
                self.spec.optimizer.model_copy(update={"initial_design_size": size}),
                self.spec.budget(stage),
                finished=[_observation(r) for r in [*imported, *self.finished(stage.name)]],
                pending=[
                    Proposal(t.params, t.budget)
                    for t in self.running.values()
                    if t.stage == stage.name
                ],
            )
        return self._tuners[stage.name]

    def _starting_point(self, stage: Stage) -> tuple[dict[str, Value], str, str | None]:
        """Parameters and segmentation model (with its SHA-256 when diartune made it) a
        stage starts from: the earlier stages' best."""
        params: dict[str, Value] = {}
        segmentation, digest = self.spec.pipeline.segmentation, None
        for earlier in self.spec.stages:
            if earlier.name == stage.name:
                break
            best = self.best(earlier.name)
            assert best is not None, f"stage {earlier.name!r} has no successful trial"
            params.update(best.full_params)
            segmentation, digest = self._model_of(best)
        return with_defaults(self.spec.pipeline.clustering, params), segmentation, digest

    def _checkpoint(self, record: TrialRecord) -> Checkpoint | None:
        """The checkpoint ``record``'s trial fine-tuned, at the place the driver chose."""
        if record.checkpoint is None or record.checkpoint_sha256 is None:
            return None
        uri = record.checkpoint
        if self.root is not None:
            uri = join(self.root, "trials", record.name, CHECKPOINT_FILE)
        return Checkpoint(uri=uri, sha256=record.checkpoint_sha256)

    def _model_of(self, record: TrialRecord) -> tuple[str, str | None]:
        """The segmentation model a trial ended with, and its SHA-256 when diartune made it."""
        checkpoint = self._checkpoint(record)
        if checkpoint is None:
            return record.segmentation, record.segmentation_sha256
        return checkpoint.uri, checkpoint.sha256

    def _continuation(self, trial: Trial) -> Checkpoint | None:
        """The training state of ``trial``'s configuration at the largest smaller epochs
        budget, to continue from (Hyperband promoted it)."""
        earlier = [
            r
            for r in self.finished(trial.stage)
            if r.state == "Succeeded"
            and r.budget is not None
            and trial.budget is not None
            and r.budget < trial.budget
            and canonical(r.params) == canonical(trial.params)
        ]
        best = max(earlier, key=lambda r: r.budget or 0.0, default=None)
        return self._checkpoint(best) if best is not None else None

    def request(self, trial: Trial) -> TrialRequest:
        """The request that runs ``trial``, with artifacts under ``<root>/trials/<name>``."""
        assert self.root is not None, "a study that launches trials knows their root"
        stage = None if trial.is_evaluation else self.spec.stage(trial.stage)
        budget = self.spec.budget(stage) if stage else None
        fine_tune = stage.fine_tune if stage else None
        continue_from = None
        if fine_tune is not None and _kind(budget) == "epochs":
            fine_tune = fine_tune.model_copy(update={"max_epochs": epochs(trial.budget)})
            continue_from = self._continuation(trial)
        return TrialRequest(
            trial=trial,
            data=self.spec.data,
            pipeline=self.spec.pipeline.model_copy(update={"segmentation": trial.segmentation}),
            objective=self.spec.objective,
            fine_tune=fine_tune,
            continue_from=continue_from,
            files=trial.budget if _kind(budget) == "files" else None,
            output=join(self.root, "trials", trial.name),
            cache=join(self.root, "cache"),
        )


def _evaluate(trial: Trial, subset: Subset, export: bool = False) -> Trial:
    """An evaluation of ``trial``'s configuration and model on ``subset``."""
    return trial.model_copy(
        update={
            "name": evaluation_name(trial.name, subset),
            "number": -1,
            "subset": subset,
            "export": export,
        }
    )


def _observation(record: TrialRecord) -> Observation:
    """A finished search trial as its stage's tuner is told it."""
    cost = objective_of(record) if record.state == "Succeeded" else None
    return Observation(record.params, cost, record.budget)


def _kind(budget: Budget | None) -> str | None:
    return budget.kind if budget else None


def epochs(budget: float | None) -> int:
    """The epochs an epochs budget buys (SMAC's budgets are real numbers)."""
    assert budget is not None
    return max(1, round(budget))
