"""A tuning's progress through its stages, rebuilt from trial records at any time.

The study decides which trials to run next: it asks the current stage's tuner,
keeps each stage within its budget, starts a stage from the best configuration of
those before it, and stops when too many trials failed. Executors (local processes,
Kubernetes Jobs) run what it plans and hand back records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diartune.params import Value, pipeline_defaults
from diartune.records import Components, TrialRecord, TrialRequest
from diartune.spec import FineTune, Spec, Stage
from diartune.storage import join
from diartune.tuner import StageTuner


@dataclass(frozen=True)
class PlannedTrial:
    """A trial to launch."""

    name: str
    stage: str
    number: int
    params: dict[str, Value]
    full_params: dict[str, Value]
    segmentation: str
    fine_tune: FineTune | None

    def record(self, **outcome: Any) -> TrialRecord:
        """This trial's record, with its outcome (``state``, ``der``, ``message``...)."""
        return TrialRecord(
            name=self.name,
            stage=self.stage,
            number=self.number,
            params=self.params,
            full_params=self.full_params,
            segmentation=self.segmentation,
            **outcome,
        )


class Study:
    """The stages of one tuning, their trials and their tuners."""

    def __init__(
        self,
        spec: Spec,
        records: list[TrialRecord] = (),  # type: ignore[assignment]
        running: list[PlannedTrial] = (),  # type: ignore[assignment]
    ) -> None:
        self.spec = spec
        self.records: list[TrialRecord] = list(records)
        self.running: dict[str, PlannedTrial] = {trial.name: trial for trial in running}
        self._tuners: dict[str, StageTuner] = {}

    # -- progress ---------------------------------------------------------------

    def finished(self, stage: str) -> list[TrialRecord]:
        """The finished trials of ``stage``."""
        return [record for record in self.records if record.stage == stage]

    @property
    def failed_count(self) -> int:
        """Trials that failed, in all stages."""
        return sum(record.state == "Failed" for record in self.records)

    @property
    def current_stage(self) -> Stage | None:
        """The first stage with trials left to finish, or None when all are done."""
        for stage in self.spec.stages:
            if len(self.finished(stage.name)) < stage.max_trial_count:
                return stage
        return None

    @property
    def failure(self) -> str | None:
        """Why the tuning cannot go on, or None."""
        if self.failed_count > self.spec.max_failed_trial_count:
            return (
                f"{self.failed_count} trials failed, more than maxFailedTrialCount "
                f"({self.spec.max_failed_trial_count})"
            )
        for stage in self.spec.stages:
            done = self.finished(stage.name)
            if len(done) >= stage.max_trial_count and self.best(stage.name) is None:
                return f"stage {stage.name!r} finished with no successful trial"
        return None

    @property
    def complete(self) -> bool:
        """All stages have finished all their trials."""
        return self.current_stage is None and not self.running

    def best(self, stage: str | None = None) -> TrialRecord | None:
        """The successful trial with the lowest DER, in ``stage`` or overall."""
        candidates = [
            record
            for record in self.records
            if record.state == "Succeeded"
            and record.der is not None
            and (stage is None or record.stage == stage)
        ]
        return min(candidates, key=lambda record: record.der or 0.0, default=None)

    # -- planning ---------------------------------------------------------------

    def plan(self) -> list[PlannedTrial]:
        """New trials of the current stage for the free slots of parallelTrialCount.

        None while the tuning cannot go on, is suspended, or waits for an earlier
        stage's last trials.
        """
        stage = self.current_stage
        if stage is None or self.failure or self.spec.suspend:
            return []
        if any(trial.stage != stage.name for trial in self.running.values()):
            return []  # an earlier stage is still finishing: its best is not known yet
        started = len(self.finished(stage.name)) + len(self.running)
        free_slots = self.spec.parallel_trial_count - len(self.running)
        count = min(free_slots, stage.max_trial_count - started)
        base, segmentation = self._starting_point(stage)
        tuner = self._tuner(stage)
        planned = []
        numbers = {r.number for r in self.finished(stage.name)} | {
            t.number for t in self.running.values()
        }
        number = 0
        for _ in range(max(count, 0)):
            while number in numbers:
                number += 1
            numbers.add(number)
            params = tuner.ask()
            trial = PlannedTrial(
                name=f"{stage.name}-{number:03d}",
                stage=stage.name,
                number=number,
                params=params,
                full_params={**base, **params},
                segmentation=segmentation,
                fine_tune=stage.fine_tune,
            )
            self.running[trial.name] = trial
            planned.append(trial)
        return planned

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
        """Take the record of a finished trial."""
        self.running.pop(record.name, None)
        self.records.append(record)
        tuner = self._tuners.get(record.stage)
        if tuner is not None:
            tuner.tell(record.params, record.der if record.state == "Succeeded" else None)

    def forget(self, name: str) -> None:
        """Drop a running trial that will never report (it was interrupted)."""
        self.running.pop(name, None)

    def _tuner(self, stage: Stage) -> StageTuner:
        if stage.name not in self._tuners:
            finished = [
                (r.params, r.der if r.state == "Succeeded" else None)
                for r in self.finished(stage.name)
            ]
            pending = [t.params for t in self.running.values() if t.stage == stage.name]
            self._tuners[stage.name] = StageTuner(stage, self.spec.optimizer, finished, pending)
        return self._tuners[stage.name]

    def _starting_point(self, stage: Stage) -> tuple[dict[str, Value], str]:
        """Parameters and segmentation model a stage starts from: the earlier stages' best."""
        params: dict[str, Value] = pipeline_defaults(self.spec.pipeline.clustering)
        segmentation = self.spec.pipeline.segmentation
        for earlier in self.spec.stages:
            if earlier.name == stage.name:
                break
            best = self.best(earlier.name)
            assert best is not None, f"stage {earlier.name!r} has no successful trial"
            params.update(best.full_params)
            segmentation = best.checkpoint or best.segmentation
        return params, segmentation


def trial_request(spec: Spec, trial: PlannedTrial, root: str) -> TrialRequest:
    """The request that runs ``trial``, with artifacts under ``root/trials/<name>``."""
    return TrialRequest(
        name=trial.name,
        stage=trial.stage,
        data=spec.data,
        pipeline=spec.pipeline.model_copy(update={"segmentation": trial.segmentation}),
        objective=spec.objective,
        fine_tune=trial.fine_tune,
        params=trial.full_params,
        tuned=sorted(trial.params),
        output=join(root, "trials", trial.name),
        cache=join(root, "cache"),
    )


def evaluation_request(
    spec: Spec, record: TrialRecord, name: str, root: str, export: bool
) -> TrialRequest:
    """One scoring of ``record``'s configuration on the test subset (no fine-tuning, no
    cache); with ``export``, the trial also exports the pipeline."""
    trial = PlannedTrial(
        name=name,
        stage=record.stage,
        number=-1,
        params=record.params,
        full_params=record.full_params,
        segmentation=record.checkpoint or record.segmentation,
        fine_tune=None,
    )
    return trial_request(spec, trial, root).model_copy(
        update={"subset": "test", "export": export, "cache": None}
    )


def trial_record(
    trial: PlannedTrial,
    result: dict[str, Any] | None,
    error: str | None,
    bad_input: bool,
    seconds: float | None,
) -> TrialRecord:
    """The record of ``trial`` from its result line (or its error)."""
    if result is None:
        return trial.record(
            state="Failed", message=error or "no result", bad_input=bad_input, seconds=seconds
        )
    return trial.record(
        state="Succeeded",
        der=result["der"],
        components=Components.model_validate(result["components"]),
        checkpoint=result.get("checkpoint"),
        artifacts=result.get("artifacts"),
        seconds=seconds,
    )
