"""What a tuning found, in the same form for both drivers: its phase, its DERs with their
bootstrap intervals over files, and its gains over pyannote's defaults.

``Study.summary`` makes it; the local driver writes it (summary.json), the operator
publishes it as the tuning's status, ``diartune report`` renders it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from diartune.records import Components, Document, FileScores, TrialRecord
from diartune.search.statistics import compare, estimate
from diartune.spec.params import Value


class Phase(StrEnum):
    """Where a tuning stands."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Interval(Document):
    """A DER with its 95 % bootstrap confidence interval over the files it was scored on."""

    der: float
    low: float
    high: float
    files: int
    spread: float = Field(description="Standard deviation of the per-file DERs.")

    @classmethod
    def of(cls, scores: FileScores | None) -> Interval | None:
        """The interval of a trial's DER, when its per-file scores are known."""
        if scores is None or not scores.error:
            return None
        found = estimate(scores)
        return cls(
            der=found.value, low=found.low, high=found.high, files=found.files, spread=found.spread
        )


class Gain(Document):
    """How much lower the tuned DER is than the defaults' on the same files, and how sure."""

    gain: float = Field(description="Defaults' DER minus the tuned DER: positive is better.")
    low: float = Field(description="Low end of the gain's 95 % paired-bootstrap interval.")
    high: float = Field(description="High end of the gain's 95 % paired-bootstrap interval.")
    files: int = Field(description="Files both were scored on.")
    significant: bool = Field(description="Whether the interval excludes 0.")
    text: str = Field(description="The comparison, for people.")

    @classmethod
    def of(
        cls, tuned: TrialRecord | None, defaults: TrialRecord | None, subset: str
    ) -> Gain | None:
        """The paired comparison of two trials' DER, when both have per-file scores."""
        if tuned is None or defaults is None or tuned.scores is None or defaults.scores is None:
            return None
        if tuned.scores.files != defaults.scores.files:
            return None
        found = compare(tuned.scores, defaults.scores)
        return cls(
            gain=found.gain,
            low=found.low,
            high=found.high,
            files=found.files,
            significant=found.significant,
            text=found.describe(subset),
        )


class Summary(Document):
    """What a tuning found, in the same form for both drivers. DERs are pyannote's (total
    over the files); intervals and gains come from bootstraps over files (statistics)."""

    phase: Phase
    message: str | None
    stage: str | None
    trials: int
    running: int
    failed: int
    max_trials: int
    default_der: float | None
    best_der: float | None
    best_trial: str | None
    best_params: dict[str, Value] | None
    test_der: float | None
    test_failed: bool = Field(
        False, description="The winner's test evaluation failed: succeeded without a test DER."
    )
    test_components: Components | None
    default_test_der: float | None
    pipeline: str | None
    objective: str = Field(description="What the tuning minimized (spec.objective.aggregate).")
    imported_trials: int = Field(
        0, description="Trials of earlier tunings told to SMAC first (optimizer.warmStartFrom)."
    )
    best_objective: float | None = None
    best_interval: Interval | None = None
    default_interval: Interval | None = None
    test_interval: Interval | None = None
    default_test_interval: Interval | None = None
    development_gain: Gain | None = None
    test_gain: Gain | None = None
