"""The documents passed between the study, the drivers and a trial.

- ``Trial``: one trial the study planned: its place in the tuning and its parameters;
- ``TrialRequest``: a trial and what it needs to run (the input of ``diartune trial``);
- ``TrialResult``: what a successful trial measured (its result JSON and result line);
- ``TrialOutcome``: how a trial run ended, as a driver observed it (result or error);
- ``TrialRecord``: the durable record of a finished trial, from which a study is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from diartune.spec.model import Data, FineTune, Objective, Pipeline
from diartune.spec.params import Value, canonical

# Exit codes of ``diartune trial`` (from sysexits.h): bad input is not worth retrying,
# an infrastructure failure may succeed elsewhere.
EXIT_BAD_INPUT = 65
EXIT_INFRASTRUCTURE = 75

RESULT_PREFIX = "DIARTUNE_RESULT "
ERROR_PREFIX = "DIARTUNE_ERROR "
#: What a trial leaves in its artifacts: its result (written after everything else it
#: writes on success) and its own record (written last, on success or failure).
#: Names the trial's environment variables that come from Secrets, comma-separated: the
#: trial masks their values in every message it reports.
SECRET_VARIABLES_ENV = "DIARTUNE_SECRET_VARIABLES"
RESULT_FILE = "result.json"
RECORD_FILE = "record.json"
#: The fine-tuned segmentation model (a Lightning checkpoint with its training state).
CHECKPOINT_FILE = "segmentation.ckpt"

Subset = Literal["development", "test"]


class Document(BaseModel):
    """A JSON document of diartune's: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


def percent(fraction: float | None) -> str:
    """A fraction as people read it: ``32.12 %`` (``-`` when there is none)."""
    return "-" if fraction is None else f"{100 * fraction:.2f} %"


class Checkpoint(Document):
    """A checkpoint diartune made, and the SHA-256 it had when it was made: a trial checks
    it before unpickling the file."""

    uri: str
    sha256: str


class Components(Document):
    """DER and its parts as pyannote.metrics counts them: seconds of missed speech, false
    alarm and speaker confusion, over seconds of reference speech. The exact numbers are
    for machines; the ``*Percent`` strings (each part over the reference speech: they add
    up to the DER) are for people. Make one with ``Components.of``."""

    der: float | None = Field(
        description="Diarization error rate, a fraction (0.25 = 25 %): missed speech, false "
        "alarm and confusion over reference speech; none when there is no reference speech."
    )
    der_percent: str = Field(description="The DER as a percentage, e.g. 25.00 %.")
    missed_speech_seconds: float = Field(
        description="Reference speech the pipeline labelled as no speech, in seconds."
    )
    missed_speech_percent: str = Field(
        description="Missed speech as a percentage of the reference speech."
    )
    false_alarm_seconds: float = Field(
        description="Speech the pipeline found where the reference has none, in seconds."
    )
    false_alarm_percent: str = Field(
        description="False alarm as a percentage of the reference speech."
    )
    confusion_seconds: float = Field(
        description="Speech attributed to the wrong speaker, in seconds."
    )
    confusion_percent: str = Field(description="Confusion as a percentage of the reference speech.")
    reference_speech_seconds: float = Field(
        description="Speech in the reference, the DER's denominator, in seconds."
    )

    @classmethod
    def of(
        cls, missed_speech: float, false_alarm: float, confusion: float, reference_speech: float
    ) -> Components:
        """The DER and its parts, from seconds of each error and of reference speech."""

        def share(seconds: float) -> float | None:
            return seconds / reference_speech if reference_speech > 0 else None

        return cls(
            der=share(missed_speech + false_alarm + confusion),
            der_percent=percent(share(missed_speech + false_alarm + confusion)),
            missed_speech_seconds=missed_speech,
            missed_speech_percent=percent(share(missed_speech)),
            false_alarm_seconds=false_alarm,
            false_alarm_percent=percent(share(false_alarm)),
            confusion_seconds=confusion,
            confusion_percent=percent(share(confusion)),
            reference_speech_seconds=reference_speech,
        )

    @property
    def error_seconds(self) -> float:
        """Missed speech, false alarm and confusion, in seconds."""
        return self.missed_speech_seconds + self.false_alarm_seconds + self.confusion_seconds


class FileScores(Document):
    """Each file's errors and reference speech, in seconds, in the order of the sorted URIs;
    two trials scored on the same files pair file by file (``files`` says which)."""

    files: str = Field(description="SHA-256 of the sorted URIs, first 16 characters.")
    error: list[float] = Field(description="Missed, false alarm and confusion, per file.")
    total: list[float] = Field(description="Reference speech, per file.")

    @classmethod
    def of(cls, per_file: dict[str, Components]) -> FileScores:
        """The scores of per-file components."""
        uris = sorted(per_file)
        digest = hashlib.sha256("\n".join(uris).encode()).hexdigest()[:16]
        parts = [per_file[uri] for uri in uris]
        return cls(
            files=digest,
            error=[round(p.error_seconds, 3) for p in parts],
            total=[round(p.reference_speech_seconds, 3) for p in parts],
        )


class TrialResult(Document):
    """What a successful trial measured."""

    name: str
    der: float
    objective: float | None = Field(None, description="The DER aggregated as the spec asks.")
    components: Components
    per_file: dict[str, Components] = Field(default_factory=dict)
    scores: FileScores | None = Field(None, description="Per-file errors, for intervals.")
    checkpoint: str | None = Field(None, description="The fine-tuned checkpoint, if any.")
    checkpoint_sha256: str | None = Field(None, description="SHA-256 of the checkpoint.")
    artifacts: str
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per phase.")
    request_digest: str | None = Field(
        None, description="SHA-256 of the request that produced it (reruns reuse it)."
    )

    def summary(self, limit: int = 4000) -> dict[str, object]:
        """The small form, within ``limit`` bytes of JSON (a Kubernetes termination message
        holds 4 KiB): per-file components are left out, and per-file scores too when the
        subset has too many files for them."""
        summary = self.model_dump(mode="json", by_alias=True, exclude={"per_file"})
        if len(json.dumps(summary, ensure_ascii=False).encode()) > limit:
            summary.pop("scores")
        return summary


class TrialOutcome(Document):
    """How one run of a trial ended: its result, or why it has none."""

    result: TrialResult | None = None
    error: str | None = None
    bad_input: bool = False
    seconds: float | None = None


def _reported(text: str) -> dict[str, Any]:
    """The JSON document a trial reported in ``text``: its last result or error line, else
    ``text`` whole (a termination message: the same JSON without the prefix)."""
    lines = [line for line in text.splitlines() if line.startswith((RESULT_PREFIX, ERROR_PREFIX))]
    try:
        document = json.loads(lines[-1].partition(" ")[2] if lines else text)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def parse_trial_output(
    text: str, exit_code: int | None, seconds: float | None = None
) -> TrialOutcome:
    """How a trial process ended, from what it reported and its exit code: the one reading
    of a trial's output, for both drivers.

    Parameters
    ----------
    text
        Its output (``diartune tune``), or its termination message (the operator).
    exit_code
        Its exit code; None when it never ran to an end.
    seconds
        How long it ran.

    Returns
    -------
    outcome
        Its result when it exited with 0 and reported one; else its error, or why it has
        none (None when nothing tells: the driver knows better), and whether its input
        was bad (exit code ``EXIT_BAD_INPUT``, or the trial said so).
    """
    document = _reported(text)
    if exit_code == 0:
        try:
            return TrialOutcome(result=TrialResult.model_validate(document), seconds=seconds)
        except ValidationError:
            pass
    error = document.get("error")
    if error is None and exit_code:
        tail = " | ".join(text.strip().splitlines()[-3:])
        error = f"exit code {exit_code}: {tail}".rstrip(": ")
    return TrialOutcome(
        error=None if error is None else str(error),
        bad_input=exit_code == EXIT_BAD_INPUT or bool(document.get("badInput")),
        seconds=seconds,
    )


#: A Kubernetes termination message holds 4 KiB: what a trial pod reports stays within it.
MESSAGE_LIMIT = 4000


class BatchReport(Document):
    """What a pod that runs several trials in turn reports in its termination message,
    written again as each trial starts and ends: the outcome of each trial it finished, by
    name, and the trial it is running (None once it is through). A trial of its batch named
    in neither has not started."""

    trials: dict[str, TrialOutcome] = Field(default_factory=dict)
    running: str | None = None

    def message(self, limit: int = MESSAGE_LIMIT) -> str:
        """The report as JSON within ``limit`` bytes: each result in its compact form
        (per-file scores, then timings, left out where its share would not hold them), and
        the last outcomes left out if still too long: their trials run again and report
        the result.json they wrote, in a smaller batch."""
        share = limit // (len(self.trials) + 1)
        outcomes = {name: _compact(outcome, share) for name, outcome in self.trials.items()}
        while True:
            text = json.dumps({"trials": outcomes, "running": self.running}, ensure_ascii=False)
            if len(text.encode()) <= limit or not outcomes:
                return text
            outcomes.pop(list(outcomes)[-1])

    @classmethod
    def parse(cls, text: str) -> BatchReport:
        """The report in a termination message (empty when it holds none)."""
        try:
            return cls.model_validate_json(text or "{}")
        except ValidationError:
            return cls()


def _compact(outcome: TrialOutcome, limit: int) -> dict[str, Any]:
    """An outcome as JSON, its result with what the operator records of it: per-file
    scores only where they fit ``limit`` bytes, no timings or request digest (those stay in
    the trial's result.json)."""
    document = outcome.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"result"})
    if outcome.result is not None:
        result = outcome.result.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            exclude={"per_file", "timings", "request_digest"},
        )
        if len(json.dumps(result, ensure_ascii=False).encode()) > limit:
            result.pop("scores", None)
        document["result"] = result
    return document


class Trial(Document):
    """A trial of a tuning: what it runs, in which stage, on which subset."""

    name: str = Field(description="Unique in the tuning: <stage>-<number>, or an evaluation.")
    stage: str = Field(description="The stage whose search space it samples.")
    number: int = Field(description="Its number in the stage (-1 for an evaluation).")
    subset: Subset = Field(
        "development", description="Scored on: development (tuning) or test (evaluation)."
    )
    params: dict[str, Value] = Field(description="This stage's tuned parameters.")
    full_params: dict[str, Value] = Field(description="Every parameter the trial runs with.")
    segmentation: str = Field(description="The segmentation model the trial starts from.")
    segmentation_sha256: str | None = Field(
        None, description="Its SHA-256 when a trial of this tuning fine-tuned it (checked)."
    )
    export: bool = Field(False, description="Whether the trial exports the tuned pipeline.")
    budget: float | None = Field(
        None,
        description="Its multi-fidelity budget (epochs, or percent of the development "
        "files, as its stage says); None: the full cost (hpo facade, evaluations).",
    )

    @property
    def is_evaluation(self) -> bool:
        """Whether it is an evaluation (of the winner or the defaults), not a search trial."""
        return self.number < 0

    def record(self, outcome: TrialOutcome) -> TrialRecord:
        """The durable record of this trial once ``outcome`` is known."""
        identity = self.model_dump()
        result = outcome.result
        if result is None:
            return TrialRecord(
                **identity,
                state="Failed",
                message=outcome.error or "the trial left no result",
                bad_input=outcome.bad_input,
                seconds=outcome.seconds,
            )
        return TrialRecord(
            **identity,
            state="Succeeded",
            der=result.der,
            objective=objective_of(result),
            scores=result.scores,
            components=result.components,
            checkpoint=result.checkpoint,
            checkpoint_sha256=result.checkpoint_sha256,
            artifacts=result.artifacts,
            seconds=outcome.seconds,
        )


class TrialRequest(Document):
    """One trial to run: fine-tune (optionally), run the pipeline on a subset, score it.

    The input of ``diartune trial``; it carries the trial itself, so that the trial can
    write its own durable record beside its artifacts.
    """

    trial: Trial
    data: Data
    pipeline: Pipeline = Field(description="The pipeline, with the trial's segmentation.")
    objective: Objective = Field(default_factory=Objective)
    fine_tune: FineTune | None = Field(
        None, description="Fine-tuning settings; maxEpochs is the trial's epochs budget."
    )
    continue_from: Checkpoint | None = Field(
        None,
        description="The training state of the same configuration at a smaller epochs "
        "budget: training continues from it instead of from epoch 0.",
    )
    files: float | None = Field(
        None, description="Percent of the development files to score (a files budget)."
    )
    output: str = Field(description="Where the trial writes its artifacts (path or s3:// URI).")
    cache: str | None = Field(None, description="Segmentation/embedding cache (path or s3://).")

    @property
    def name(self) -> str:
        """The trial's name."""
        return self.trial.name

    @property
    def params(self) -> dict[str, Value]:
        """Every parameter the trial runs with."""
        return self.trial.full_params

    @property
    def tuned(self) -> list[str]:
        """The parameters its stage tunes."""
        return sorted(self.trial.params)

    @property
    def digest(self) -> str:
        """SHA-256 of the request, whatever the order of its keys (the API server sorts
        them) and whether its numbers came back as ``1`` or ``1.0``: the same request gives
        the same result."""
        document = canonical(self.model_dump(mode="json", by_alias=True))
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class TrialFacts(Document):
    """What is known of a trial once it has finished, but its state."""

    der: float | None = Field(None, description="DER of the trial, a fraction (0.25 = 25 %).")
    objective: float | None = Field(
        None, description="What the tuning minimizes: the DER aggregated as the spec asks."
    )
    scores: FileScores | None = Field(None, description="Per-file errors, for intervals.")
    components: Components | None = Field(
        None, description="DER and its parts, in seconds and percentages."
    )
    checkpoint: str | None = Field(None, description="The fine-tuned segmentation checkpoint.")
    checkpoint_sha256: str | None = Field(None, description="SHA-256 of the checkpoint.")
    artifacts: str | None = Field(None, description="Where the trial wrote its artifacts.")
    message: str | None = Field(None, description="Why the trial failed.")
    bad_input: bool = Field(False, description="It failed on input that no retry can fix.")
    seconds: float | None = Field(None, description="Wall time of the trial.")


class TrialRecord(TrialFacts, Trial):
    """The durable record of a finished trial."""

    state: Literal["Succeeded", "Failed"]


def objective_of(facts: TrialResult | TrialFacts) -> float | None:
    """What the tuning minimizes for a trial: its objective, else its DER (a result or a
    record that predates the objective)."""
    return facts.objective if facts.objective is not None else facts.der
