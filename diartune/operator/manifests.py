"""Trials as Kubernetes resources: the manifests of DiarizationTrials and Jobs, and outcomes.

Each trial is a DiarizationTrial (its durable record: the trial, then its state and DER)
run by a batch/v1 Job of the same name, or by the Job named after the first of a group of
its stage's trials that one pod runs in turn (``trialsPerPod``). The Job's container
writes its small result JSON (for a group, a ``BatchReport``) to its termination message,
which the operator reads from the Job's pod when the Job finishes: no sidecar, no log
scraping.

Everything here works on plain dicts (the JSON of Kubernetes objects, camelCase), so
it needs no API server and is unit-tested without a cluster.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import kopf
from kubernetes.utils import parse_quantity

from diartune.operator.api import (
    GROUP,
    LABEL_STAGE,
    LABEL_TRIAL,
    LABEL_TUNING,
    MAX_MESSAGE,
    TRIAL_KIND,
    VERSION,
    DiarizationTrialSpec,
    DiarizationTrialStatus,
)
from diartune.operator.settings import JobDefaults, apply_template
from diartune.records import (
    EXIT_BAD_INPUT,
    SECRET_VARIABLES_ENV,
    BatchReport,
    Trial,
    TrialOutcome,
    TrialRecord,
    TrialRequest,
    parse_trial_output,
)
from diartune.spec.model import S3, Spec
from diartune.storage import join

CONTAINER = "trial"
EXIT_KILLED = 137  # SIGKILL: out of memory, when no disruption condition explains it
TERMINATION_LOG = "/dev/termination-log"
MAX_NAME = 63  # a Job's name is also the value of its pods' job-name label
#: On a Job of several trials: their names, comma-separated, in the order its pod runs them.
TRIALS_ANNOTATION = f"{GROUP}/trials"

Manifest = dict[str, Any]


def resource_name(tuning: str, trial: str) -> str:
    """``<tuning>-<trial>``, shortened with a hash when over 63 characters."""
    name = f"{tuning}-{trial}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(trial) - len(digest) - 2
    return f"{tuning[:keep].rstrip('-')}-{digest}-{trial}"


def artifacts_root(spec: Spec, defaults: JobDefaults, namespace: str, tuning: str) -> str | None:
    """``<artifacts>/<namespace>/<tuning>``, or None when no artifacts location is set.

    Parameters
    ----------
    spec
        The tuning's spec (``spec.artifacts`` wins).
    defaults
        The chart's trial defaults (``trialDefaults.artifacts``).
    namespace, tuning
        Where the tuning lives and its name.
    """
    base = spec.artifacts or defaults.artifacts
    return join(base, namespace, tuning) if base else None


def labels(tuning: str, trial: Trial) -> dict[str, str]:
    """The labels of a trial's resources (DiarizationTrial, Job and pod)."""
    return {LABEL_TUNING: tuning, LABEL_TRIAL: trial.name, LABEL_STAGE: trial.stage}


# -- DiarizationTrial -----------------------------------------------------------------


def trial_manifest(tuning: Manifest, trial: Trial) -> Manifest:
    """The DiarizationTrial of ``trial``, owned by the tuning ``tuning`` (its body)."""
    meta = tuning["metadata"]
    spec = DiarizationTrialSpec(tuning=meta["name"], **trial.model_dump())
    manifest: Manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": TRIAL_KIND,
        "metadata": {
            "name": resource_name(meta["name"], trial.name),
            "namespace": meta["namespace"],
            "labels": labels(meta["name"], trial),
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    owner: Any = tuning
    kopf.append_owner_reference(manifest, owner=kopf.Body(owner))
    return manifest


def trial_of(resource: Manifest) -> Trial:
    """The trial a DiarizationTrial runs."""
    return DiarizationTrialSpec.model_validate(resource["spec"]).trial()


def trial_status(resource: Manifest) -> DiarizationTrialStatus:
    """A DiarizationTrial's status (empty while the operator has written none)."""
    return DiarizationTrialStatus.model_validate(resource.get("status") or {})


def record_status(record: TrialRecord) -> Manifest:
    """The status of a finished DiarizationTrial, its message bounded."""
    status = DiarizationTrialStatus.of(record)
    if status.message:
        status.message = status.message[:MAX_MESSAGE]
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


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
    secret = [var["name"] for var in env if "valueFrom" in var]
    if secret:
        env.append({"name": SECRET_VARIABLES_ENV, "value": ",".join(secret)})
    return env


#: Where a trial may write: its root filesystem is read-only.
SCRATCH = "/tmp"
_HARDENED = {
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _resources(spec: Spec, request: TrialRequest, defaults: JobDefaults) -> Manifest:
    """The trial container's resources: the chart's defaults for its kind of work (one GPU
    to fine-tune, CPU and memory only to run the pipeline), then the trialTemplate's, then
    its stage's (a search trial's; an evaluation has no stage of its own).

    A layer that names a resource sets both its request and its limit: what it leaves out
    of the two is dropped from the layers below, so that a request raised above the chart's
    limit (16Gi of memory over a default limit of 8Gi) never makes a Job the API server
    refuses."""
    fine_tunes = request.fine_tune is not None
    base = defaults if fine_tunes else defaults.without_gpu()
    gpu = {defaults.gpu_resource: "1"} if fine_tunes else {}
    merged: dict[str, dict[str, str | int]] = {
        "requests": {**base.requests},
        "limits": {**base.limits, **gpu},
    }
    given = [spec.trial_template.resources]
    if not request.trial.is_evaluation:
        given.append(spec.stage(request.trial.stage).resources)
    for resources in given:
        for name in {*resources.requests, *resources.limits}:
            merged["requests"].pop(name, None)
            merged["limits"].pop(name, None)
        merged["requests"].update(resources.requests)
        merged["limits"].update(resources.limits)
    return {
        kind: {name: str(value) for name, value in amounts.items()}
        for kind, amounts in merged.items()
        if amounts
    }


def _requests_gpu(resources: Manifest, gpu_resource: str) -> bool:
    """Whether a container's resources ask for at least one GPU."""
    amounts = {**resources.get("requests", {}), **resources.get("limits", {})}
    return parse_quantity(amounts.get(gpu_resource, 0)) > 0


def _pod_spec(
    spec: Spec, defaults: JobDefaults, command: list[str], resources: Manifest
) -> Manifest:
    template = spec.trial_template
    given = template.model_fields_set
    applied = apply_template(template, defaults)
    tolerations = [
        t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in template.tolerations
    ]
    container: Manifest = {
        "name": CONTAINER,
        "image": applied.image,
        "imagePullPolicy": applied.image_pull_policy,
        "command": command,
        "env": [
            {"name": "HOME", "value": SCRATCH},
            {"name": "DIARTUNE_CACHE", "value": f"{SCRATCH}/diartune"},
            *_env(spec),
        ],
        "resources": resources,
        "securityContext": {**_HARDENED, "runAsUser": defaults.run_as_user},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "restartPolicy": "Never",
        "serviceAccountName": defaults.service_account,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": defaults.run_as_user,
            "runAsGroup": defaults.run_as_user,
            "fsGroup": defaults.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": defaults.scratch_size}}],
        "nodeSelector": {**(defaults.node_selector or {}), **template.node_selector},
        "tolerations": tolerations if "tolerations" in given else list(defaults.tolerations or []),
    }


def trial_command(requests: list[TrialRequest]) -> list[str]:
    """The container command of a pod's trials: exactly what ``diartune trial`` takes (one
    ``--request-json`` per trial, run in turn)."""
    given = [
        arg
        for request in requests
        for arg in ("--request-json", request.model_dump_json(by_alias=True))
    ]
    return ["diartune", "trial", *given, "--termination-log", TERMINATION_LOG]


def job_trials(job: Manifest) -> list[str]:
    """The trials a Job runs, in turn: those its annotation lists (a Job of several
    trials), else the one its label names."""
    meta = job["metadata"]
    listed = (meta.get("annotations") or {}).get(TRIALS_ANNOTATION)
    if listed:
        return listed.split(",")
    trial = (meta.get("labels") or {}).get(LABEL_TRIAL)
    return [trial] if trial else []


def job_manifest(
    trial_resource: Manifest,
    tuning: str,
    spec: Spec,
    requests: list[TrialRequest],
    defaults: JobDefaults,
) -> Manifest:
    """The Job that runs ``requests`` in turn in one pod, named like the DiarizationTrial
    of the first and owned by it; a Job of several trials lists them in an annotation.

    Parameters
    ----------
    trial_resource
        The first trial's DiarizationTrial as stored (its name, labels and UID are used).
    tuning
        The tuning's name.
    spec
        The tuning's spec: its trialTemplate shapes the pod.
    requests
        What the trials run (its container command), of one stage (or one evaluation).
    defaults
        The chart's trial defaults, for what the trialTemplate leaves out.
    """
    meta = trial_resource["metadata"]
    job_labels = dict(meta["labels"])
    command = trial_command([with_s3_default(request, defaults) for request in requests])
    resources = _resources(spec, requests[0], defaults)
    # A pod without a GPU goes where the chart places CPU work, not to the GPU nodes.
    gpu = _requests_gpu(resources, defaults.gpu_resource)
    pod_defaults = defaults if gpu else defaults.without_gpu()
    manifest: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": job_labels},
        "spec": {
            "backoffLimit": spec.trial_template.backoff_limit,
            "activeDeadlineSeconds": spec.trial_template.active_deadline_seconds,
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
                    # Killed for memory: the same configuration would be killed again.
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_KILLED],
                        },
                    },
                    # Anything else (75: storage, a crash) is retried with backoff.
                ]
            },
            "template": {
                "metadata": {"labels": job_labels},
                "spec": _pod_spec(spec, pod_defaults, command, resources),
            },
        },
    }
    if len(requests) > 1:
        listed = ",".join(request.name for request in requests)
        manifest["metadata"]["annotations"] = {TRIALS_ANNOTATION: listed}
    owner: Any = trial_resource
    kopf.append_owner_reference(manifest, owner=kopf.Body(owner))
    return manifest


# -- outcomes ---------------------------------------------------------------------------


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


def result_lost(job: Manifest, pods: list[Manifest]) -> bool:
    """Whether the Job succeeded but the pod that succeeded, and the result in its
    termination message, are gone (deleted, evicted, garbage-collected): pods of its failed
    attempts may remain. Running the trial again makes it report the result.json it wrote."""
    complete = (finished_condition(job) or {}).get("type") == "Complete"
    return complete and not any((_terminated(pod) or {}).get("exitCode") == 0 for pod in pods)


#: Container waiting reasons that keep a trial pod from starting until its Job's deadline.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
    }
)


def pod_waiting(pod: Manifest) -> str | None:
    """Why a pod's trial container cannot start ("<reason>: <message>", the message naming
    the image for a pull), or None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if status.get("name") == CONTAINER and waiting.get("reason") in STUCK_REASONS:
            return f"{waiting['reason']}: {waiting.get('message') or status.get('image')}"
    return None


def job_outcome(job: Manifest, pods: list[Manifest], waited: str | None = None) -> TrialOutcome:
    """The outcome of a finished Job: its result on success, else why it failed.

    ``waited``: why its pod could not start, as ``pod_waiting`` saw it earlier (the Job
    controller deletes the pods of a Job past its deadline, and their state with them).
    """
    condition = finished_condition(job) or {}
    status = job.get("status") or {}
    start = _time(status.get("startTime"))
    end = _time(status.get("completionTime") or condition.get("lastTransitionTime"))
    seconds = round((end - start).total_seconds(), 2) if start and end else None
    state = _last_terminated(pods) or {}
    reported = parse_trial_output(state.get("message") or "", state.get("exitCode"), seconds)
    if condition.get("type") == "Complete" and reported.result is not None:
        return reported
    error = _failure(job, pods, state, reported.error, waited)
    return reported.model_copy(update={"result": None, "error": error[:MAX_MESSAGE]})


def _failure(
    job: Manifest, pods: list[Manifest], state: Manifest, reported: str | None, waited: str | None
) -> str:
    """Why a Job's trial has no result: out of memory, what the trial reported, or why the
    Job failed (with why its pod could not start, if it could not)."""
    condition = finished_condition(job) or {}
    if state.get("exitCode") == EXIT_KILLED and state.get("reason") == "OOMKilled":
        error = (
            "out of memory (OOMKilled): raise spec.trialTemplate.resources.limits.memory "
            "or lower training.batch_size"
        )
    elif reported is not None:
        error = reported
    elif condition.get("type") == "Failed":
        error = f"{condition.get('reason')}: {condition.get('message')}"
        waiting = next(filter(None, map(pod_waiting, pods)), waited)
        if waiting:
            error += f"; its pod could not start: {waiting}"
    else:
        error = "the trial left no result in its termination message"
    return error


def job_outcomes(
    job: Manifest, pods: list[Manifest], waited: str | None = None
) -> dict[str, TrialOutcome]:
    """The outcome of each trial of a finished Job that has one; a trial left out did not
    run to its end, and runs again (its pod was killed before it, or its result did not fit
    the termination message).

    A Job of one trial: ``job_outcome``. A Job of several: what its pod reported (a
    ``BatchReport``); when the Job failed, the trial its pod was running takes the Job's
    failure (out of memory, its deadline), and when no trial started at all (the pod never
    ran), every trial does.
    """
    names = job_trials(job)
    if TRIALS_ANNOTATION not in (job["metadata"].get("annotations") or {}):
        return {name: job_outcome(job, pods, waited) for name in names}
    state = _last_terminated(pods) or {}
    message = state.get("message") or ""
    report = BatchReport.parse(message)
    outcomes = {name: outcome for name, outcome in report.trials.items() if name in names}
    if (finished_condition(job) or {}).get("type") == "Failed":
        started = bool(report.trials) or report.running is not None
        failed = [report.running] if report.running in names else [] if started else names
        # A pod that never reached its first trial may have said why (its log's tail).
        said = None if started else parse_trial_output(message, state.get("exitCode")).error
        error = _failure(job, pods, state, said, waited)[:MAX_MESSAGE]
        outcomes.update((name, TrialOutcome(error=error)) for name in failed)
    return outcomes
