"""The documents passed between the tuner, the executors and a trial.

- ``TrialRequest``: what one trial must do (the input of ``diartune trial``);
- ``TrialResult``: what it measured (its result JSON and result line);
- ``TrialRecord``: the durable record of a finished trial, from which a tuner is rebuilt.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from diartune.params import Value
from diartune.spec import Data, FineTune, Objective, Pipeline

# Exit codes of ``diartune trial`` (from sysexits.h): bad input is not worth retrying,
# an infrastructure failure may succeed elsewhere.
EXIT_BAD_INPUT = 65
EXIT_INFRASTRUCTURE = 75

RESULT_PREFIX = "DIARTUNE_RESULT "
ERROR_PREFIX = "DIARTUNE_ERROR "


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class TrialRequest(_Document):
    """One trial: fine-tune (optionally), run the pipeline on a subset, score it."""

    name: str
    stage: str
    data: Data
    pipeline: Pipeline
    objective: Objective = Field(default_factory=Objective)
    fine_tune: FineTune | None = None
    params: dict[str, Value] = Field(description="Pipeline and training parameters, full set.")
    tuned: list[str] = Field(default_factory=list, description="The params this stage tunes.")
    subset: Literal["development", "test"] = "development"
    output: str = Field(description="Where the trial writes its artifacts (path or s3:// URI).")
    cache: str | None = Field(None, description="Segmentation/embedding cache (path or s3://).")
    export: bool = Field(False, description="Also export the pipeline (YAML + checkpoints).")


class Components(_Document):
    """DER and its parts, in seconds except ``der``."""

    der: float | None
    missed: float
    false_alarm: float
    confusion: float
    total: float


class TrialResult(_Document):
    """What a successful trial measured."""

    name: str
    der: float
    components: Components
    per_file: dict[str, Components] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="The fine-tuned checkpoint, if any.")
    artifacts: str
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per phase.")

    def summary(self) -> dict[str, object]:
        """The small form: fits a Kubernetes termination message (4 KiB)."""
        return self.model_dump(by_alias=True, exclude={"per_file"})


class TrialRecord(_Document):
    """The durable record of a finished trial."""

    name: str
    stage: str
    number: int
    params: dict[str, Value] = Field(description="This stage's tuned parameters.")
    full_params: dict[str, Value] = Field(description="Every parameter the trial ran with.")
    segmentation: str = Field(description="The segmentation model the trial started from.")
    state: Literal["Succeeded", "Failed"]
    der: float | None = None
    components: Components | None = None
    checkpoint: str | None = None
    artifacts: str | None = None
    message: str | None = None
    bad_input: bool = False
    seconds: float | None = None
