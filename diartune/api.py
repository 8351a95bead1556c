"""The Kubernetes API of diartune: group, version, kinds, plurals, labels, and the
DiarizationTrial's spec and status (the DiarizationTuning's is ``diartune.spec``).

Both CRDs are generated from these models (``diartune crd``); the operator builds and
reads DiarizationTrials with them, so their fields are written here only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diartune.records import Trial, TrialFacts, TrialRecord
from diartune.spec import API_VERSION, KIND

GROUP, VERSION = API_VERSION.split("/")
TUNING_KIND = KIND
TRIAL_KIND = "DiarizationTrial"
TUNING_PLURAL = "diarizationtunings"
TRIAL_PLURAL = "diarizationtrials"

LABEL_TUNING = f"{GROUP}/tuning"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_STAGE = f"{GROUP}/stage"

#: Longest message diartune writes into a status or condition (bounded resources).
MAX_MESSAGE = 1024

TrialState = Literal["Pending", "Running", "Succeeded", "Failed"]


class DiarizationTrialSpec(Trial):
    """What the trial runs: its place in the tuning and its parameters."""

    tuning: str = Field(description="The DiarizationTuning this trial belongs to.")

    def trial(self) -> Trial:
        """The trial, without the name of its tuning."""
        return Trial.model_validate(self.model_dump(exclude={"tuning"}))


class DiarizationTrialStatus(TrialFacts):
    """What the trial measured; written by the operator only."""

    state: TrialState | None = Field(
        None, description="Pending, Running, then Succeeded or Failed."
    )
    job: str | None = Field(None, description="The Job that runs the trial.")

    @classmethod
    def of(cls, record: TrialRecord) -> DiarizationTrialStatus:
        """The status of a finished trial."""
        return cls.model_validate(record.model_dump(include=set(cls.model_fields)))

    def record(self, trial: Trial) -> TrialRecord | None:
        """The record of ``trial`` once this status says it finished, else None."""
        if self.state not in ("Succeeded", "Failed"):
            return None
        facts = self.model_dump(exclude={"job"})
        return TrialRecord.model_validate(trial.model_dump() | facts)
