"""The status of a DiarizationTuning: phase, counts, best trial, test DER and conditions.

It is rebuilt whole from the study's summary at every change and holds no per-trial
list, so its size does not grow with the number of trials (the DiarizationTrials keep
them). Conditions are set only through the named ``mark_*`` helpers, each with its
reason, as Katib's ``MarkExperimentStatus*`` do.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, get_args

from diartune.operator.api import MAX_MESSAGE, BestTrial, ConditionType, DiarizationTuningStatus
from diartune.records import TrialRecord
from diartune.search.summary import Phase, Summary


class Reason:
    """The reasons of the tuning's conditions."""

    CREATED = "TuningCreated"
    TRIALS_RUNNING = "TrialsRunning"
    EVALUATING = "Evaluating"
    IDLE = "NoTrialRunning"
    SUCCEEDED = "TuningSucceeded"
    TEST_EVALUATION_FAILED = "TestEvaluationFailed"
    TRIALS_FAILED = "TrialsFailed"
    INVALID_SPEC = "InvalidSpec"
    IMMUTABLE_FIELD = "ImmutableField"
    ACCEPTED = "SpecAccepted"
    REFUSED = "TrialPodRefused"
    TEMPLATE_ACCEPTED = "JobsCreated"
    EXHAUSTED = "AllConfigurationsTried"


CONDITION_TYPES: tuple[str, ...] = get_args(ConditionType)


def now() -> str:
    """The current time as Kubernetes writes it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Conditions:
    """The conditions of a tuning, one per type, keeping their last transition times."""

    generation: int = 0
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, status: dict[str, Any] | None, generation: int) -> Conditions:
        """The conditions found in a stored status."""
        found = (status or {}).get("conditions") or []
        return cls(generation, {item["type"]: dict(item) for item in found if item.get("type")})

    def _set(self, kind: str, status: bool, reason: str, message: str) -> None:
        value = "True" if status else "False"
        before = self.items.get(kind)
        changed = before is None or before.get("status") != value
        self.items[kind] = {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "lastTransitionTime": now() if changed else before["lastTransitionTime"],  # type: ignore[index]
            "observedGeneration": self.generation,
        }

    def mark_created(self) -> None:
        """The spec was accepted and trials are launched."""
        self._set("Created", True, Reason.CREATED, "trials are launched")

    def mark_running(self, summary: Summary) -> None:
        """Whether trials (or the test evaluation) run now, and how many."""
        if summary.running and summary.stage is None:
            self._set("Running", True, Reason.EVALUATING, "the winner runs on the test subset")
        elif summary.running:
            self._set("Running", True, Reason.TRIALS_RUNNING, summary.message or "")
        else:
            self._set("Running", False, Reason.IDLE, f"no trial running ({summary.phase})")

    def mark_finished(self, summary: Summary) -> None:
        """Succeeded or Failed, as the study's phase says."""
        message = summary.message or ""
        if summary.phase is Phase.SUCCEEDED:
            reason = Reason.TEST_EVALUATION_FAILED if summary.test_failed else Reason.SUCCEEDED
            self._set("Succeeded", True, reason, message)
            self.items.pop("Failed", None)
        elif summary.phase is Phase.FAILED:
            self._set("Failed", True, Reason.TRIALS_FAILED, message)
            self.items.pop("Succeeded", None)
        else:  # resumed, e.g. by a larger maxFailedTrialCount or maxTrialCount
            self.items.pop("Succeeded", None)
            self.items.pop("Failed", None)

    def mark_invalid(self, message: str) -> None:
        """The spec cannot run at all: the tuning fails at once."""
        self._set("SpecRejected", True, Reason.INVALID_SPEC, message)
        self._set("Failed", True, Reason.INVALID_SPEC, message)

    def mark_update(self, refused: str | None) -> None:
        """An update was refused (the previous spec is kept), or the spec is applied."""
        if refused:
            self._set("SpecRejected", True, Reason.IMMUTABLE_FIELD, refused)
        elif "SpecRejected" in self.items:
            self._set("SpecRejected", False, Reason.ACCEPTED, "the spec is applied")

    def mark_template(self, refused: str | None) -> None:
        """The trial pods cannot be made as the trialTemplate asks (the API server or the
        chart's trial policy refused it), or they can."""
        if refused:
            message = f"no trial is launched: {refused}; fix spec.trialTemplate"
            self._set("TrialTemplateInvalid", True, Reason.REFUSED, message)
        elif "TrialTemplateInvalid" in self.items:
            self._set("TrialTemplateInvalid", False, Reason.TEMPLATE_ACCEPTED, "Jobs are created")

    def mark_exhausted(self, stages: list[str]) -> None:
        """Stages that ended early because every configuration of their space was tried."""
        if stages:
            message = f"every configuration was tried in stage(s) {', '.join(stages)}"
            self._set("SearchSpaceExhausted", True, Reason.EXHAUSTED, message)

    def as_list(self) -> list[dict[str, Any]]:
        """The conditions in a stable order."""
        return [self.items[kind] for kind in CONDITION_TYPES if kind in self.items]


def tuning_status(
    summary: Summary, best: TrialRecord | None, best_name: str | None, conditions: Conditions
) -> dict[str, Any]:
    """The whole status of a tuning, bounded in size whatever its number of trials.

    Parameters
    ----------
    summary
        What the study found.
    best
        The best trial's record, if any.
    best_name
        The best trial's DiarizationTrial name.
    conditions
        The tuning's conditions.
    """
    status = DiarizationTuningStatus(
        phase=summary.phase,
        message=(summary.message or "")[:MAX_MESSAGE],
        stage=summary.stage,
        trials_done=summary.trials,
        trials_running=summary.running,
        trials_failed=summary.failed,
        trials_imported=summary.imported_trials or None,
        max_trials=summary.max_trials,
        progress=f"{summary.trials}/{summary.max_trials}",
        default_der=summary.default_der,
        best_der=summary.best_der,
        best_trial=_best_trial(best, best_name or best.name) if best else None,
        test_der=summary.test_der,
        test_components=summary.test_components,
        default_test_der=summary.default_test_der,
        development_gain=summary.development_gain,
        test_gain=summary.test_gain,
        pipeline=summary.pipeline,
        conditions=conditions.as_list(),
        observed_generation=conditions.generation,
    )
    return status.model_dump(mode="json", by_alias=True)


def refused_status(message: str, conditions: Conditions) -> dict[str, Any]:
    """What a tuning whose spec cannot run shows (the rest of its status is left as is)."""
    status = DiarizationTuningStatus(
        phase=Phase.FAILED,
        message=message[:MAX_MESSAGE],
        conditions=conditions.as_list(),
        observed_generation=conditions.generation,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _best_trial(record: TrialRecord, resource_name: str) -> BestTrial:
    return BestTrial(
        name=resource_name,
        stage=record.stage,
        der=record.der,
        components=record.components,
        params=record.full_params,
        artifacts=record.artifacts,
        checkpoint=record.checkpoint,
    )
