"""The Kubernetes API of diartune: group, version, kinds, plurals, labels, the
DiarizationTrial's spec and status, and the DiarizationTuning's status (its spec is
``diartune.spec.model``).

Both CRDs are generated from these models (``diartune crd``); the operator builds and
reads the resources with them, so their fields are written here only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diartune.records import Components, Document, Trial, TrialFacts, TrialRecord
from diartune.search.summary import Gain, Phase
from diartune.spec.model import API_VERSION, KIND
from diartune.spec.params import Value

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
#: The conditions of a DiarizationTuning, in the order its status lists them.
ConditionType = Literal[
    "Created",
    "Running",
    "Succeeded",
    "Failed",
    "SpecRejected",
    "TrialTemplateInvalid",
    "SearchSpaceExhausted",
]


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


class Condition(Document):
    """One condition of a DiarizationTuning, as Kubernetes writes conditions."""

    type: ConditionType = Field(description="What the condition is about.")
    status: Literal["True", "False"] = Field(description="Whether it holds now.")
    reason: str = Field(description="Why, in one CamelCase word.")
    message: str = Field(max_length=MAX_MESSAGE, description="Why, for people.")
    last_transition_time: str = Field(description="When its status last changed (RFC 3339).")
    observed_generation: int = Field(description="The spec's generation it was set for.")


class BestTrial(Document):
    """The search trial with the lowest objective so far."""

    name: str = Field(description="Its DiarizationTrial.")
    stage: str = Field(description="The stage it belongs to.")
    der: float | None = Field(description="Its DER on development, a fraction (0.25 = 25 %).")
    components: Components | None = Field(
        description="Its DER and the DER's parts, in seconds and percentages."
    )
    params: dict[str, Value] = Field(description="Every parameter it ran with.")
    artifacts: str | None = Field(description="Where it wrote its artifacts.")
    checkpoint: str | None = Field(description="Its fine-tuned segmentation checkpoint, if any.")


class DiarizationTuningStatus(Document):
    """What the operator found: where the tuning stands, its best trial, its test DER and
    its conditions; DERs are fractions, their ``derPercent`` strings are for people.
    Written by the operator only; its size does not grow with the number of trials."""

    phase: Phase | None = Field(
        None, description="Pending, Running, Suspended, then Succeeded or Failed."
    )
    message: str | None = Field(
        None, max_length=MAX_MESSAGE, description="Where the tuning stands, in one line."
    )
    stage: str | None = Field(None, description="The stage running now; none once all are done.")
    trials_done: int | None = Field(
        None, description="Search trials finished, failed ones included."
    )
    trials_running: int | None = Field(
        None, description="Trials running now, evaluations included."
    )
    trials_failed: int | None = Field(None, description="Search trials that failed.")
    trials_imported: int | None = Field(
        None, description="Trials of earlier tunings told to SMAC first (warmStartFrom)."
    )
    max_trials: int | None = Field(
        None, description="Search trials of all stages: their maxTrialCount."
    )
    progress: str | None = Field(None, description="trialsDone/maxTrials, e.g. 3/10.")
    default_der: float | None = Field(
        None, description="DER of pyannote's default parameters on development, a fraction."
    )
    best_der: float | None = Field(
        None, description="The best trial's DER on development, a fraction."
    )
    best_trial: BestTrial | None = Field(None, description="The best search trial so far.")
    test_der: float | None = Field(
        None,
        description="The tuned pipeline's DER on the test subset (evaluated once), a fraction.",
    )
    test_components: Components | None = Field(
        None,
        description="The tuned pipeline's DER on test and its parts, in seconds and percentages.",
    )
    default_test_der: float | None = Field(
        None, description="DER of pyannote's default parameters on the test subset, a fraction."
    )
    development_gain: Gain | None = Field(
        None, description="How much lower the tuned DER is than the defaults' on development."
    )
    test_gain: Gain | None = Field(
        None, description="How much lower the tuned DER is than the defaults' on test."
    )
    pipeline: str | None = Field(
        None, description="The tuned pipeline, exported by the winner's test evaluation."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Created, Running, Succeeded, Failed and why."
    )
    observed_generation: int | None = Field(
        None, description="The spec's generation this status was written for."
    )
