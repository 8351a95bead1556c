"""Trials as Kubernetes resources: the manifests of DiarizationTrials and Jobs, and results.

Each trial is a DiarizationTrial (its durable record: parameters, then state and DER)
and a batch/v1 Job of the same name that runs ``diartune trial``. The Job's container
writes its small result JSON to its termination message, which the operator reads
from the Job's pod when the Job finishes: no sidecar, no log scraping.

Everything here works on plain dicts (the JSON of Kubernetes objects, camelCase), so
it needs no Kubernetes client and is unit-tested without a cluster.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from diartune.crd import GROUP, TRIAL_KIND, VERSION
from diartune.records import EXIT_BAD_INPUT, Components, TrialRecord, TrialRequest
from diartune.spec import S3, Spec
from diartune.storage import join
from diartune.study import PlannedTrial

LABEL_TUNING = f"{GROUP}/tuning"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_STAGE = f"{GROUP}/stage"
TRIAL_PLURAL = "diarizationtrials"
TUNING_PLURAL = "diarizationtunings"
EVALUATION = "test-evaluation"
CONTAINER = "trial"
TERMINATION_LOG = "/dev/termination-log"
MAX_NAME = 63  # a Job's name is also the value of its pods' job-name label
MAX_MESSAGE = 1024

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The object a resource belongs to (garbage-collected with it)."""

    api_version: str
    kind: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Manifest) -> Owner:
        """The owner reference target for a Kubernetes object."""
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["name"], meta["uid"])

    def reference(self) -> Manifest:
        """An ownerReference to this object, as its controller."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class JobDefaults:
    """Cluster-wide defaults of trial Jobs that a tuning's trialTemplate overrides."""

    image: str | None = None
    image_pull_policy: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] | None = None
    tolerations: list[Manifest] | None = None
    s3_endpoint: str | None = None
    artifacts: str | None = None
    ttl_seconds: int = 3600


def resource_name(tuning: str, trial: str) -> str:
    """``<tuning>-<trial>``, shortened with a hash when over 63 characters."""
    name = f"{tuning}-{trial}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(trial) - len(digest) - 2
    return f"{tuning[:keep].rstrip('-')}-{digest}-{trial}"


def artifacts_root(spec: Spec, defaults: JobDefaults, namespace: str, tuning: str) -> str | None:
    """``<artifacts>/<namespace>/<tuning>``, or None when no artifacts location is set."""
    base = spec.artifacts or defaults.artifacts
    return join(base, namespace, tuning) if base else None


def labels(tuning: str, trial: str, stage: str) -> dict[str, str]:
    """The labels of a trial's resources (DiarizationTrial, Job and pod)."""
    return {LABEL_TUNING: tuning, LABEL_TRIAL: trial, LABEL_STAGE: stage}


# -- DiarizationTrial -----------------------------------------------------------------


def trial_manifest(owner: Owner, namespace: str, trial: PlannedTrial) -> Manifest:
    """The DiarizationTrial of ``trial``, owned by its tuning."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": TRIAL_KIND,
        "metadata": {
            "name": resource_name(owner.name, trial.name),
            "namespace": namespace,
            "labels": labels(owner.name, trial.name, trial.stage),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "tuning": owner.name,
            "stage": trial.stage,
            "number": trial.number,
            "params": trial.params,
            "fullParams": trial.full_params,
            "segmentation": trial.segmentation,
        },
    }


def planned_trial(resource: Manifest, spec: Spec) -> PlannedTrial:
    """The trial a DiarizationTrial describes (its stage's fineTune comes from the spec)."""
    trial = resource["spec"]
    return PlannedTrial(
        name=resource["metadata"]["labels"][LABEL_TRIAL],
        stage=trial["stage"],
        number=trial["number"],
        params=trial["params"],
        full_params=trial["fullParams"],
        segmentation=trial["segmentation"],
        fine_tune=spec.stage(trial["stage"]).fine_tune,
    )


def trial_record_of(resource: Manifest, spec: Spec) -> TrialRecord | None:
    """The record of a finished DiarizationTrial (None while it has not finished)."""
    status = resource.get("status") or {}
    if status.get("state") not in ("Succeeded", "Failed"):
        return None
    components = status.get("components")
    return planned_trial(resource, spec).record(
        state=status["state"],
        der=status.get("der"),
        components=Components.model_validate(components) if components else None,
        checkpoint=status.get("checkpoint"),
        artifacts=status.get("artifacts"),
        message=status.get("message"),
        bad_input=bool(status.get("badInput")),
        seconds=status.get("seconds"),
    )


def trial_status(record: TrialRecord) -> Manifest:
    """The status of a finished DiarizationTrial."""
    status = record.model_dump(
        mode="json",
        by_alias=True,
        include={
            "state",
            "der",
            "components",
            "checkpoint",
            "artifacts",
            "message",
            "bad_input",
            "seconds",
        },
    )
    if status["message"]:
        status["message"] = status["message"][:MAX_MESSAGE]
    return dict(status)


# -- Job --------------------------------------------------------------------------------


def with_s3_default(request: TrialRequest, defaults: JobDefaults) -> TrialRequest:
    """The request with the cluster's default S3 endpoint when the spec names none."""
    s3 = request.data.s3 or S3()
    if s3.endpoint or not defaults.s3_endpoint:
        return request
    data = request.data.model_copy(
        update={"s3": s3.model_copy(update={"endpoint": defaults.s3_endpoint})}
    )
    return request.model_copy(update={"data": data})


def _secret_env(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _env(spec: Spec) -> list[Manifest]:
    """Credentials and token by secretKeyRef (never read here), then the template's env."""
    env: list[Manifest] = []
    s3 = spec.data.s3
    if s3 is not None and s3.credentials_secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(_secret_env(key, s3.credentials_secret, key))
    if spec.pipeline.token_secret:
        env.append(_secret_env("HF_TOKEN", spec.pipeline.token_secret, "HF_TOKEN"))
    for var in spec.trial_template.env:
        env.append(var.model_dump(mode="json", by_alias=True, exclude_none=True))
    return env


def _pod_spec(spec: Spec, defaults: JobDefaults, command: list[str]) -> Manifest:
    template = spec.trial_template
    given = template.model_fields_set
    resources = template.resources.model_dump(mode="json", by_alias=True)
    if "resources" not in given:
        resources = {"requests": {}, "limits": {defaults.gpu_resource: 1}}
    quantities = {
        kind: {name: str(value) for name, value in amounts.items()}
        for kind, amounts in resources.items()
        if amounts
    }
    tolerations = [
        t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in template.tolerations
    ]
    container: Manifest = {
        "name": CONTAINER,
        "image": template.image if "image" in given else defaults.image or template.image,
        "imagePullPolicy": (
            template.image_pull_policy
            if "image_pull_policy" in given
            else defaults.image_pull_policy or template.image_pull_policy
        ),
        "command": command,
        "env": _env(spec),
        "resources": quantities,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: Manifest = {
        "restartPolicy": "Never",
        "containers": [container],
        "nodeSelector": {**(defaults.node_selector or {}), **template.node_selector},
        "tolerations": tolerations if "tolerations" in given else list(defaults.tolerations or []),
    }
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    return pod


def trial_command(request: TrialRequest) -> list[str]:
    """The container command of a trial: exactly what ``diartune trial`` takes."""
    return [
        "diartune",
        "trial",
        "--request-json",
        request.model_dump_json(by_alias=True),
        "--termination-log",
        TERMINATION_LOG,
    ]


def job_manifest(
    owner: Owner,
    namespace: str,
    tuning: str,
    spec: Spec,
    request: TrialRequest,
    defaults: JobDefaults,
) -> Manifest:
    """The Job that runs ``request``, named like its DiarizationTrial and owned by ``owner``."""
    name = resource_name(tuning, request.name)
    trial_labels = labels(tuning, request.name, request.stage)
    command = trial_command(with_s3_default(request, defaults))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": trial_labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": spec.trial_template.backoff_limit,
            "activeDeadlineSeconds": spec.trial_template.active_deadline_seconds,
            "ttlSecondsAfterFinished": defaults.ttl_seconds,
            "podFailurePolicy": {
                "rules": [
                    # Bad input: no retry can help.
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_BAD_INPUT],
                        },
                    },
                    # A pod lost to node disruption (preemption, drain) is retried for free.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": trial_labels},
                "spec": _pod_spec(spec, defaults, command),
            },
        },
    }


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    """How a finished trial Job ended, from its condition and its pod's termination."""

    result: dict[str, Any] | None
    error: str | None
    bad_input: bool
    seconds: float | None


def finished_condition(job: Manifest) -> Manifest | None:
    """The Job's Complete or Failed condition once it has finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return dict(condition)
    return None


def _time(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _terminated(pod: Manifest) -> Manifest | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return (status.get("state") or {}).get("terminated")
    return None


def _last_terminated(pods: list[Manifest]) -> Manifest | None:
    """The termination of the pod that ended the Job: a success, else the latest one."""
    ended = [(pod, state) for pod in pods if (state := _terminated(pod)) is not None]
    successes = [state for _, state in ended if state.get("exitCode") == 0]
    if successes:
        return successes[0]
    ended.sort(key=lambda item: item[0]["metadata"].get("creationTimestamp") or "")
    return ended[-1][1] if ended else None


def _parse_message(message: str) -> dict[str, Any] | None:
    try:
        document = json.loads(message)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def job_outcome(job: Manifest, pods: list[Manifest]) -> JobOutcome:
    """The outcome of a finished Job: the result JSON on success, else why it failed."""
    condition = finished_condition(job) or {}
    status = job.get("status") or {}
    start = _time(status.get("startTime"))
    end = _time(status.get("completionTime") or condition.get("lastTransitionTime"))
    seconds = round((end - start).total_seconds(), 2) if start and end else None
    state = _last_terminated(pods) or {}
    code = state.get("exitCode")
    message = (state.get("message") or "").strip()
    document = _parse_message(message) or {}
    if condition.get("type") == "Complete" and code == 0 and "der" in document:
        return JobOutcome(document, None, False, seconds)
    bad_input = code == EXIT_BAD_INPUT or bool(document.get("badInput"))
    if "error" in document:
        error = str(document["error"])
    elif code is not None and code != 0:
        error = f"exit code {code}: {message[-MAX_MESSAGE // 2 :]}".rstrip(": ")
    elif condition.get("type") == "Failed":
        error = f"{condition.get('reason')}: {condition.get('message')}"
    else:
        error = "the trial left no result in its termination message"
    return JobOutcome(None, error[:MAX_MESSAGE], bad_input, seconds)
