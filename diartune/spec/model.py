"""The one typed model of a DiarizationTuning resource.

It takes exactly the YAML that ``kubectl apply`` takes (``spec_file`` reads it). The CRD
schema is generated from these classes (``diartune crd``), so field names and descriptions
live here only.
"""

from __future__ import annotations

import math
import re
import reprlib
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from diartune.spec.params import check_parameter
from diartune.spec.types import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Annotations,
    BoundedInt,
    DnsLabel,
    Endpoint,
    EnvName,
    FiniteFloat,
    Image,
    LabelKey,
    LabelValue,
    Location,
    Model,
    ObjectName,
    PositiveFloat,
    Quantity,
    Region,
    ResourceName,
    SecretKey,
    Text,
)

API_VERSION = "diartune.io/v1alpha1"
Aggregate = Literal["total", "mean", "upperBound"]
KIND = "DiarizationTuning"


#: How a model validator separates the problems it reports (``format_errors`` splits them).
PROBLEMS = "\n"


class SpecError(ValueError):
    """A DiarizationTuning that does not validate; its message names each bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True
    )


def _cel(*rules: tuple[str, str]) -> ConfigDict:
    """The config that declares ``rules`` (CEL expression, message) on a model's JSON
    schema as ``x-kubernetes-validations``: the CRD's form of a cross-field validator,
    which ``diartune.operator.crd`` passes through to the API server."""
    found: list[JsonValue] = [{"rule": rule, "message": message} for rule, message in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": found})


class S3(_Model):
    """Where S3 URIs are served from."""

    endpoint: Endpoint | None = Field(
        None,
        description="S3 endpoint URL, e.g. https://minio.example:9000 (no credentials in it: "
        "they come from credentialsSecret). Default: AWS.",
    )
    region: Region | None = Field(None, description="S3 region name.")
    credentials_secret: ObjectName | None = Field(
        None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, given to trial "
        "pods on Kubernetes. Locally the AWS_* environment variables are used.",
    )


class Data(_Model):
    """The corpus: a pyannote.database configuration and protocol."""

    database: Location = Field(
        description="pyannote.database configuration (database.yml): a local path or s3:// "
        "URI. With S3, the files it references are fetched from the same prefix."
    )
    protocol: str = Field(
        description="Protocol name, e.g. EMS.SpeakerDiarization.Dispatch. Trials tune on its "
        "development subset, fine-tune on its train subset, and the winner is scored once on "
        "its test subset.",
        pattern=r"^[A-Za-z0-9_-]+\.SpeakerDiarization\.[A-Za-z0-9_-]+$",
        max_length=256,
    )
    s3: S3 | None = Field(None, description="S3 settings, needed for s3:// URIs.")


class Pipeline(_Model):
    """The pyannote SpeakerDiarization pipeline to tune."""

    segmentation: Model = Field(
        description="Segmentation model: a checkpoint (path or s3:// URI) or a Hugging Face "
        "id org/name. A relative path starts with ./ or names a file with its extension."
    )
    embedding: Model = Field(
        description="Speaker embedding model: a checkpoint (path or s3:// URI) or a Hugging "
        "Face id org/name."
    )
    clustering: Literal["AgglomerativeClustering", "VBxClustering"] = Field(
        "AgglomerativeClustering", description="Clustering method of the pipeline."
    )
    plda: Model | None = Field(
        None, description="PLDA (a folder, s3:// prefix or hub id); VBxClustering needs it."
    )
    token_secret: ObjectName | None = Field(
        None,
        description="Secret holding a Hugging Face token (key HF_TOKEN), only for hub ids.",
    )
    segmentation_batch_size: int = Field(32, ge=1, le=4096, description="Segmentation batch.")
    embedding_batch_size: int = Field(32, ge=1, le=4096, description="Embedding batch size.")

    model_config = _cel(
        (
            "!has(self.clustering) || self.clustering != 'VBxClustering' || "
            "(has(self.plda) && self.plda != '')",
            "VBxClustering needs a PLDA (local path, s3:// URI or hub id)",
        )
    )

    @model_validator(mode="after")
    def _vbx_needs_plda(self) -> Pipeline:
        if self.clustering == "VBxClustering" and not self.plda:
            raise ValueError("@plda: VBxClustering needs a PLDA (local path, s3:// URI or hub id)")
        return self


class Objective(_Model):
    """What is minimized."""

    metric: Literal["DiarizationErrorRate"] = Field(
        "DiarizationErrorRate", description="pyannote.metrics metric to minimize."
    )
    collar: float = Field(
        0.0, ge=0.0, le=10.0, allow_inf_nan=False, description="Forgiveness collar, seconds."
    )
    skip_overlap: bool = Field(False, description="Do not score overlapped speech.")
    aggregate: Aggregate = Field(
        "total",
        description="How per-file DERs make the minimized value: total = pyannote's DER over "
        "all files; mean = mean per-file DER; upperBound = upper end of the 90 % confidence "
        "interval of the mean per-file DER (as pyannote-audio optimize without "
        "--average-case).",
    )


class FineTune(_Model):
    """Fine-tune the segmentation model in each trial of a stage."""

    max_epochs: int = Field(10, ge=1, le=10_000, description="Epochs of fine-tuning per trial.")
    batches_per_epoch: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Cap on training batches per epoch (default: the whole set).",
    )
    precision: Literal["32", "16-mixed"] = Field(
        "32",
        description="Lightning's trainer precision: 32-bit, or 16-bit mixed precision on a "
        "GPU; on a CPU a trial always trains in 32-bit. (bf16-mixed is not offered: "
        "pyannote.audio 4.0's training step hands scipy a bfloat16 tensor and fails.)",
    )
    checkpoint_every_epochs: int = Field(
        1,
        ge=1,
        le=10_000,
        description="A trial saves its training state to its artifacts every this many "
        "epochs; a restarted pod resumes from the last one.",
    )


def _check_range(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be less than high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low > 0, got low = {low}")


# _check_range in CEL. The CRD merges the parameter types into one object, in which low
# and high are doubles (hence 0.0); a type's rules run only for that type.
_CHECK_RANGE = _cel(
    ("self.low < self.high", "low must be less than high"),
    ("!has(self.log) || !self.log || self.low > 0.0", "a log scale needs low > 0"),
)


class _Range(_Model):
    """What a float and an int parameter share: a range, checked here and by CEL."""

    low: float
    high: float
    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")

    model_config = _CHECK_RANGE

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        _check_range(self.low, self.high, self.log)
        return self


class FloatParameter(_Range):
    """A float parameter, uniform or log-uniform in [low, high] (finite, within +-1e6)."""

    type: Literal["float"]
    low: FiniteFloat = Field(description="Lowest value of the range.")
    high: FiniteFloat = Field(description="Highest value of the range, above low.")


class IntParameter(_Range):
    """An integer parameter in [low, high] (within +-1e6)."""

    type: Literal["int"]
    low: BoundedInt = Field(description="Lowest value of the range.")
    high: BoundedInt = Field(description="Highest value of the range, above low.")


Choice = Annotated[
    Annotated[str, StringConstraints(max_length=64)] | BoundedInt | FiniteFloat | bool,
    Field(union_mode="left_to_right"),
]


class CategoricalParameter(_Model):
    """A choice among values."""

    type: Literal["categorical"]
    choices: list[Choice] = Field(
        min_length=1, max_length=256, description="The values to choose from."
    )

    # No CEL rule: uniqueness is quadratic in CEL; the models check it wherever a spec is
    # read (diartune validate, the operator).
    @model_validator(mode="after")
    def _check_unique(self) -> CategoricalParameter:
        if len(set(map(str, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be unique, got {reprlib.repr(self.choices)}")
        return self


Parameter = Annotated[
    FloatParameter | IntParameter | CategoricalParameter, Field(discriminator="type")
]


BudgetKind = Literal["epochs", "files"]


class Budget(_Model):
    """A stage's multi-fidelity budget: what a trial's budget buys (optimizer.facade
    multiFidelity). Each bound defaults from the kind: epochs from fineTune.maxEpochs down
    to maxEpochs / eta**2; files from 100 % of the development files down to 100 / eta**2 %."""

    kind: BudgetKind | None = Field(
        None,
        description="epochs: a trial fine-tunes for its budget's number of epochs (stages "
        "with fineTune, the default for them); files: a trial scores its budget's percentage "
        "of the development files, a nested stratified subset (the default without fineTune).",
    )
    min_budget: PositiveFloat | None = Field(
        None, description="The smallest budget: epochs, or percent of the files."
    )
    max_budget: PositiveFloat | None = Field(
        None, description="The largest budget: epochs, or percent of the files (<= 100)."
    )


#: Trials a pod of a stage without fineTune runs in turn, unless the stage says otherwise.
DEFAULT_TRIALS_PER_POD = 4
#: At most this many: each trial's compact result shares one termination message (4 KiB).
MAX_TRIALS_PER_POD = 6


class Stage(_Model):
    """One stage of the tuning; each starts from the best configuration of those before it."""

    name: str = Field(
        pattern=DNS_LABEL,
        max_length=30,
        description="Unique in the tuning; its trials are named <stage>-<number>.",
    )
    fine_tune: FineTune | None = Field(
        None, description="Fine-tune the segmentation model in each trial (training.* params)."
    )
    search_space: dict[str, Parameter] = Field(
        min_length=1,
        max_length=32,
        description="Parameters to tune, by name: training.*, segmentation.*, clustering.*",
    )
    max_trial_count: int = Field(
        ge=1,
        le=100_000,
        description="Trials in this stage, failed ones included; with multiFidelity, each "
        "budget a configuration runs at is one trial.",
    )
    budget: Budget | None = Field(
        None, description="Multi-fidelity budget (optimizer.facade multiFidelity only)."
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(),
        description="Resources of this stage's trial containers, over the trialTemplate's "
        "and the chart's defaults for the stage's kind: one GPU with fineTune, CPU only "
        "without. Kubernetes only; evaluations do not take them.",
    )
    trials_per_pod: int | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS_PER_POD,
        description="Trials one pod runs in turn, importing pyannote once; each stays a "
        f"DiarizationTrial of its own. Default: 1 with fineTune, {DEFAULT_TRIALS_PER_POD} "
        "without. Kubernetes only (diartune tune forks every trial from one process).",
    )

    @property
    def pod_size(self) -> int:
        """How many of its trials one pod runs (``trialsPerPod`` or its default)."""
        if self.trials_per_pod is not None:
            return self.trials_per_pod
        return 1 if self.fine_tune is not None else DEFAULT_TRIALS_PER_POD

    @property
    def size(self) -> float:
        """How many configurations the search space holds (infinite with a float)."""
        size = 1.0
        for parameter in self.search_space.values():
            if isinstance(parameter, CategoricalParameter):
                size *= len(parameter.choices)
            elif isinstance(parameter, IntParameter):
                size *= parameter.high - parameter.low + 1
            else:
                return math.inf
        return size


class Optimizer(_Model):
    """The SMAC3 optimizer."""

    facade: Literal["hpo", "multiFidelity"] = Field(
        "hpo",
        description="SMAC facade: hpo = Sobol initial design, random forest, log EI, each "
        "trial at full cost; multiFidelity = the same surrogate with Hyperband or successive "
        "halving over each stage's budget (epochs or development files).",
    )
    intensifier: Literal["hyperband", "successiveHalving"] = Field(
        "hyperband", description="multiFidelity only: how budgets are scheduled."
    )
    eta: int = Field(
        3,
        ge=2,
        le=10,
        description="multiFidelity only: each rung keeps 1/eta of its configurations and "
        "gives them eta times the budget.",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Random seed: the same seed gives the same trials."
    )
    initial_design_size: int = Field(
        8,
        ge=0,
        le=256,
        description="Configurations per stage after pyannote's defaults, before the "
        "surrogate takes over: Sobol points (hpo), random ones (multiFidelity, as SMAC's "
        "facade).",
    )
    warm_start_from: list[Location] = Field(
        default_factory=list,
        max_length=8,
        description="Earlier tunings of the same problem whose successful trials SMAC is "
        "told before each stage's first ask (hpo facade only): output folders of diartune "
        "tune or s3:// artifacts prefixes locally, DiarizationTuning names of the same "
        "namespace in the operator. A stage imports the trials of the stage of the same "
        "name, which must search the same parameters; trials outside this search space "
        "are skipped. Imported trials do not count against maxTrialCount.",
    )


class Toleration(_Model):
    """A Kubernetes toleration."""

    key: LabelKey | None = Field(None, description="The taint key; empty: every key.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists, or Equal (the default) to value."
    )
    value: LabelValue | None = Field(None, description="The taint value, with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect; empty: every effect."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, le=365 * 24 * 3600, description="How long a NoExecute taint is tolerated."
    )


class SecretKeySelector(_Model):
    """A key of a Secret in the tuning's namespace."""

    name: ObjectName = Field(description="The Secret's name.")
    key: SecretKey = Field(description="The key whose value is used.")
    optional: bool | None = Field(None, description="Whether the Secret or key may be missing.")


class EnvVarSource(_Model):
    """Where an environment variable's value comes from: a Secret only."""

    secret_key_ref: SecretKeySelector


#: The trial's secret variables, set by diartune from spec.data.s3.credentialsSecret and
#: spec.pipeline.tokenSecret: no trialTemplate sets them, and a trial masks their values.
RESERVED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN")
_SECRET_NAME = re.compile(
    r"(secret|token|passw(or)?d|credential|api[-_]?key|private[-_]?key|access[-_]?key)",
    re.IGNORECASE,
)


class EnvVar(_Model):
    """An environment variable of the trial container: a value, or a Secret's key."""

    name: EnvName = Field(description="The variable's name.")
    value: Text | None = Field(None, description="Its value; never a secret (use valueFrom).")
    value_from: EnvVarSource | None = Field(None, description="A Secret's key as its value.")

    @model_validator(mode="after")
    def _check_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"{self.name}: give value or valueFrom, not both")
        if self.name in RESERVED_ENV or self.name.startswith("DIARTUNE_"):
            raise ValueError(
                f"{self.name}: set by diartune (from spec.data.s3.credentialsSecret or "
                "spec.pipeline.tokenSecret); expected another name"
            )
        if self.value and _SECRET_NAME.search(self.name):
            raise ValueError(
                f"{self.name}: a secret must not be written in the spec; put it in a Secret "
                "and use valueFrom.secretKeyRef"
            )
        return self


class Resources(_Model):
    """Kubernetes resource requests and limits of the trial container."""

    requests: dict[ResourceName, Quantity] = Field(
        default_factory=dict, max_length=16, description="What the scheduler reserves."
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=dict, max_length=16, description="The most the container may use."
    )


class TrialTemplate(_Model):
    """The Kubernetes parts of a trial pod; used by the operator, ignored locally. The
    pod's service account and security context come from the Helm chart, not from here."""

    image: Image = Field("ghcr.io/diartune/trial:0.1.0", description="Trial container image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="When the image is pulled."
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Resources of every trial container, over the chart's defaults for "
        "its kind: one GPU for a fine-tuning trial, CPU only for the others (stages "
        "without fineTune, evaluations). A stage's resources come over these.",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels trial pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints trial pods tolerate."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="More environment variables."
    )
    active_deadline_seconds: int = Field(
        6 * 3600, ge=1, le=30 * 24 * 3600, description="A trial running longer than this fails."
    )
    backoff_limit: int = Field(
        3,
        ge=0,
        le=20,
        description="Retries of a trial pod that crashed or lost its storage (exit 75), "
        "with Kubernetes' exponential backoff; the trial fails after the last one. Bad input "
        "(exit 65) and out-of-memory kills are not retried; pods lost to node disruption "
        "are retried without counting.",
    )


class Spec(_Model):
    """The desired tuning."""

    data: Data
    pipeline: Pipeline
    objective: Objective = Field(default_factory=Objective)
    stages: list[Stage] = Field(
        min_length=1, max_length=16, description="Run in order, each from the best before it."
    )
    optimizer: Optimizer = Field(default_factory=Optimizer)
    parallel_trial_count: int = Field(1, ge=1, le=1000, description="Trials running at once.")
    max_failed_trial_count: int = Field(
        3, ge=0, le=100_000, description="The tuning fails when more trials than this failed."
    )
    artifacts: Location | None = Field(
        None,
        description="Where trials write results, RTTMs, checkpoints and the shared cache "
        "(s3:// URI or local path). Artifacts go under <artifacts>/<namespace>/<tuning>/.",
    )
    suspend: bool = Field(False, description="Launch no new trials while true.")
    trial_template: TrialTemplate = Field(default_factory=TrialTemplate)

    @model_validator(mode="after")
    def _check_stages(self) -> Spec:
        problems: list[str] = []
        seen_stage: set[str] = set()
        seen_param: dict[str, str] = {}
        for index, stage in enumerate(self.stages):
            where = f"stages[{index}]"
            if stage.name in seen_stage:
                problems.append(f"@{where}.name: stage names must be unique: {stage.name!r}")
            seen_stage.add(stage.name)
            size = stage.size
            if self.optimizer.facade == "hpo" and size < stage.max_trial_count:
                problems.append(
                    f"@{where}.maxTrialCount: the search space holds only {size:.0f} "
                    f"configurations; expected at most {size:.0f} trials"
                )
            for name, parameter in stage.search_space.items():
                field = f"@{where}.searchSpace.{name}"
                problem = check_parameter(
                    name, parameter, self.pipeline.clustering, stage.fine_tune is not None
                )
                if problem:
                    problems.append(f"{field}: {problem}")
                if name in seen_param:
                    problems.append(f"{field}: already tuned in stage {seen_param[name]!r}")
                seen_param[name] = stage.name
            problems += [f"@{where}.budget{p}" for p in self._budget_problems(stage)]
        if problems:
            raise ValueError(PROBLEMS.join(problems))
        return self

    @model_validator(mode="after")
    def _check_warm_start(self) -> Spec:
        if self.optimizer.warm_start_from and self.optimizer.facade != "hpo":
            raise ValueError(
                "@optimizer.warmStartFrom: needs optimizer.facade hpo (multi-fidelity trials "
                "only compare within their own brackets)"
            )
        return self

    def _budget_problems(self, stage: Stage) -> list[str]:
        multi_fidelity = self.optimizer.facade == "multiFidelity"
        if stage.budget is not None and not multi_fidelity:
            return [": a budget needs optimizer.facade multiFidelity"]
        budget = self.budget(stage)
        if budget is None:
            return []
        problems = []
        if budget.kind == "epochs" and stage.fine_tune is None:
            problems.append(".kind: epochs needs fineTune in this stage; expected files")
        if budget.kind == "epochs" and "training.max_epochs" in stage.search_space:
            problems.append(".kind: epochs set training.max_epochs; do not tune it as well")
        if budget.kind == "files" and (budget.max_budget or 0) > 100:
            problems.append(f".maxBudget: expected at most 100 (%), got {budget.max_budget:g}")
        if (budget.min_budget or 0) > (budget.max_budget or 0):
            problems.append(
                f".minBudget: expected at most maxBudget ({budget.max_budget:g}), "
                f"got {budget.min_budget:g}"
            )
        return problems

    def budget(self, stage: Stage) -> Budget | None:
        """The stage's multi-fidelity budget with every default filled in, or None (hpo)."""
        if self.optimizer.facade != "multiFidelity":
            return None
        given = stage.budget or Budget()
        kind = given.kind or ("epochs" if stage.fine_tune else "files")
        largest = float(stage.fine_tune.max_epochs) if kind == "epochs" and stage.fine_tune else 100
        max_budget = given.max_budget or largest
        smallest = max_budget / self.optimizer.eta**2
        if kind == "epochs":
            smallest = min(max(1.0, smallest), max_budget)
        return Budget(kind=kind, min_budget=given.min_budget or smallest, max_budget=max_budget)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


#: The fields of Kubernetes' ObjectMeta that diartune does not read but keeps as they are.
OBJECT_META = frozenset(
    {
        "generateName", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
        "ownerReferences", "finalizers", "managedFields",
    }
)  # fmt: skip


class Metadata(BaseModel):
    """The part of Kubernetes' ObjectMeta that diartune reads; the rest of ObjectMeta is
    kept as is, and any other field is unknown (as ``kubectl apply --validate=strict``)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=63)
    namespace: DnsLabel = "default"
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    annotations: Annotations = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_unknown_fields(self) -> Metadata:
        unknown = sorted(set(self.model_extra or {}) - OBJECT_META)
        if unknown:
            raise ValueError(PROBLEMS.join(f"@{name}: unknown field" for name in unknown))
        return self


class DiarizationTuning(_Model):
    """A DiarizationTuning resource, as applied with kubectl."""

    api_version: Literal["diartune.io/v1alpha1"]
    kind: Literal["DiarizationTuning"]
    metadata: Metadata
    spec: Spec
    status: dict[str, Any] | None = Field(
        None,
        description="What the operator found: phase, trial counts, best trial, test DER and "
        "conditions; DERs are fractions, their derPercent strings are for people. Written by "
        "the operator only (diartune.operator.api.DiarizationTuningStatus).",
    )
