"""A stand-in for trial pods on KWOK's fake GPU nodes, and what the audit log says.

Trials are not run here. ``SyntheticWorkload`` sees each trial pod, computes a synthetic
DER from the configuration in its command (``synthetic_der``, a known test function) and
annotates the pod so that KWOK completes it after a while with that result as its
termination message (tests/kwok-stages.yaml). Like a real trial (``earlier_result`` in
diartune/trial/run.py), a pod whose very request already produced a result reports it at
once instead of working again. A pod of several trials (a stage's ``trialsPerPod``) ends
them in turn, their outcomes in one ``BatchReport``, as ``diartune trial`` does with several
requests. ``fate`` makes chosen pods end otherwise (out of memory, an infrastructure error,
killed mid-batch...). Everything else is the product: the operator, SMAC, the
DiarizationTrials, Jobs and the Job controller. Used by the fault suite and bench/scale.py.
"""

from __future__ import annotations

import collections
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import FAKE_DELAY, FAKE_EXIT_CODE, FAKE_MESSAGE, FAKE_REASON, FAKE_WAITING
from kubernetes import client, watch

from diartune.operator.api import LABEL_TRIAL, LABEL_TUNING
from diartune.records import BatchReport, Components, TrialOutcome, TrialRequest, TrialResult

METHODS = ["average", "centroid", "complete", "median", "single", "ward", "weighted"]
SPACE = {
    "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 1.0},
    "clustering.threshold": {"type": "float", "low": 0.0, "high": 2.0},
    "clustering.method": {"type": "categorical", "choices": METHODS},
    "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
}


def synthetic_der(params: dict[str, Any]) -> float:
    """A known test function of a configuration, in DER's range: smooth, one optimum."""
    threshold = float(params.get("clustering.threshold", 0.6))
    off = float(params.get("segmentation.min_duration_off", 0.0))
    size = int(params.get("clustering.min_cluster_size", 12))
    method = METHODS.index(str(params.get("clustering.method", "centroid")))
    return (
        0.18
        + 0.25 * (threshold - 0.8) ** 2
        + 0.3 * (off - 0.25) ** 2
        + 0.004 * abs(size - 6)
        + 0.01 * method
    )


@dataclass(frozen=True)
class Ending:
    """How a pod ends: its exit code, the reason its container reports, its message, and
    after how many seconds (None: the workload's random duration). Exit code 0 is a
    success with the synthetic result. With ``waiting`` (a reason such as
    ImagePullBackOff) the pod never starts, and never ends by itself."""

    exit_code: int
    reason: str = "Error"
    message: str = ""
    seconds: float | None = None
    waiting: str = ""
    #: A pod of several trials: how many of them end as it starts (their result.json
    #: written); the others end with the pod (exit 0), or the first of them was running
    #: when it ended otherwise and the rest never started. None: all end with the pod.
    finished: int | None = None


Fate = Callable[[str, int], Ending | None]  # (trial, attempt) -> an ending, or None: success


class SyntheticWorkload:
    """Ends each new trial pod, by annotating it for KWOK, as the trial would have."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        duration: tuple[float, float],
        fate: Fate | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.duration = duration
        self.fate = fate
        self.seen: set[str] = set()
        self.results: dict[str, dict[str, Any]] = {}  # by request digest: the artifacts
        #: By pod uid: the trials it ends when it succeeds, each with the result it
        #: writes (None: it reports an earlier one).
        self.working: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
        #: Pods that did the work, by trial and request digest: a trial of a tuning deleted
        #: and created again may run other parameters under the same name.
        self.runs: collections.Counter[tuple[str, str]] = collections.Counter()
        self.reports: collections.Counter[str] = collections.Counter()  # pods that reported
        self.attempts: collections.Counter[str] = collections.Counter()
        self.requests: dict[str, list[TrialRequest]] = {}
        self.lock = threading.Lock()

    def pod(self, kind: str, pod: dict[str, Any]) -> None:
        """Annotate a trial pod not seen yet with how and when it ends; count it once done."""
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if LABEL_TUNING not in labels:
            return
        with self.lock:
            if (pod.get("status") or {}).get("phase") == "Succeeded":
                self._done(meta["uid"])  # also from a DELETED event: its last state
                return
            if kind == "DELETED" or meta["uid"] in self.seen:
                return
            self.seen.add(meta["uid"])
            annotations = self._ending(pod, labels[LABEL_TUNING], labels[LABEL_TRIAL])
        try:
            self.core.patch_namespaced_pod(
                meta["name"], self.namespace, {"metadata": {"annotations": annotations}}
            )
        except client.ApiException as error:
            if error.status != 404:  # gone already: nothing to end
                raise

    def _done(self, uid: str) -> None:
        """A pod succeeded: its work is done (or its earlier result reported)."""
        for key, result in self.working.pop(uid, []):
            self._end(key, result)

    def _end(self, key: str, result: dict[str, Any] | None) -> None:
        """A trial ended: it wrote its result.json (a run), or reported an earlier one."""
        if result is None:
            self.reports[key] += 1
        else:
            self.results[result["requestDigest"]] = result  # its result.json, written last
            self.runs[key, result["requestDigest"]] += 1

    def duplicates(self, prefix: str = "") -> dict[str, int]:
        """Trials (``tuning/trial``, starting with ``prefix``) whose work was done more than
        once for the same request (the same parameters, models and data): the runs beyond
        the first. A trial that only reports its earlier result.json is not a run."""
        extra: collections.Counter[str] = collections.Counter()
        with self.lock:
            for (key, _), count in self.runs.items():
                if key.startswith(prefix) and count > 1:
                    extra[key] += count - 1
        return dict(extra)

    def _ending(self, pod: dict[str, Any], tuning: str, trial: str) -> dict[str, str]:
        command = pod["spec"]["containers"][0]["command"]
        requests = [
            TrialRequest.model_validate_json(command[index + 1])
            for index, arg in enumerate(command)
            if arg == "--request-json"
        ]
        if len(requests) > 1:
            return self._batch_ending(pod, tuning, requests)
        request = requests[0]
        key = f"{tuning}/{trial}"
        uid = pod["metadata"]["uid"]
        self.attempts[key] += 1
        self.requests.setdefault(key, []).append(request)
        earlier = self.results.get(request.digest)
        if earlier is not None:
            self.working[uid] = [(key, None)]
            return {FAKE_EXIT_CODE: "0", FAKE_DELAY: "0.5s", FAKE_MESSAGE: json.dumps(earlier)}
        seconds = random.Random(uid).uniform(*self.duration)
        ending = self.fate(key, self.attempts[key]) if self.fate else None
        if ending is not None and ending.waiting:
            return {FAKE_WAITING: ending.waiting}
        if ending is not None and ending.seconds is not None:
            seconds = ending.seconds
        if ending is not None and ending.exit_code != 0:
            return {
                FAKE_EXIT_CODE: str(ending.exit_code),
                FAKE_REASON: ending.reason,
                FAKE_DELAY: f"{seconds:.1f}s",
                FAKE_MESSAGE: ending.message,
            }
        result = _result(request)
        self.working[uid] = [(key, result)]
        return {
            FAKE_EXIT_CODE: "0",
            FAKE_DELAY: f"{seconds:.1f}s",
            FAKE_MESSAGE: json.dumps(result),
        }

    def _batch_ending(
        self, pod: dict[str, Any], tuning: str, requests: list[TrialRequest]
    ) -> dict[str, str]:
        """How a pod of several trials ends: each trial reports its earlier result or
        runs, in turn; ``fate`` (asked with the first trial's name) may end it early."""
        uid = pod["metadata"]["uid"]
        keys = [f"{tuning}/{request.name}" for request in requests]
        for key, request in zip(keys, requests, strict=True):
            self.attempts[key] += 1
            self.requests.setdefault(key, []).append(request)
        ending = self.fate(keys[0], self.attempts[keys[0]]) if self.fate else None
        ending = ending or Ending(0)
        seconds = random.Random(uid).uniform(*self.duration)
        seconds = seconds if ending.seconds is None else ending.seconds
        ended = [
            (key, None if request.digest in self.results else _result(request))
            for key, request in zip(keys, requests, strict=True)
        ]
        finished = len(requests) if ending.finished is None else ending.finished
        for key, result in ended[:finished]:  # done as the pod starts
            self._end(key, result)
        report = BatchReport()
        for (_, result), request in zip(ended, requests, strict=True):
            result = result or self.results[request.digest]
            report.trials[request.name] = TrialOutcome(result=TrialResult.model_validate(result))
        if ending.exit_code == 0:
            self.working[uid] = ended[finished:]
        else:  # killed while it ran the next trial: only those before it are reported
            report.trials = dict(list(report.trials.items())[:finished])
            report.running = requests[finished].name if finished < len(requests) else None
        return {
            FAKE_EXIT_CODE: str(ending.exit_code),
            FAKE_REASON: ending.reason,
            FAKE_DELAY: f"{seconds:.1f}s",
            FAKE_MESSAGE: report.message(),
        }


def _result(request: TrialRequest) -> dict[str, Any]:
    """The result.json a trial of ``request`` writes: its synthetic DER."""
    der = synthetic_der(request.params)
    return {
        "name": request.name,
        "der": der,
        "components": Components.of(*[100 * der / 3] * 3, 100.0).model_dump(by_alias=True),
        "artifacts": request.output,
        "requestDigest": request.digest,
    }


def watch_forever(
    list_function: Callable[..., Any],
    args: tuple[Any, ...],
    handle: Callable[[str, dict[str, Any]], None],
    stop: threading.Event,
) -> None:
    """Call ``handle(type, object)`` for every event until ``stop``; resumes after expiry."""
    version: str | None = None
    while not stop.is_set():
        stream = watch.Watch(return_type=object)
        try:
            for event in stream.stream(
                list_function,
                *args,
                resource_version=version,
                timeout_seconds=20,
                allow_watch_bookmarks=True,
            ):
                raw = event["raw_object"]
                if event["type"] == "ERROR":  # expired: start again from a fresh list
                    version = None
                    break
                version = raw["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    handle(event["type"], raw)
                if stop.is_set():
                    break
        except client.ApiException as error:
            if error.status != 410:
                raise
            version = None


def audit_events(audit_log: Path, user: str) -> list[dict[str, Any]]:
    """The completed requests ``user`` made, from the audit log."""
    events = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if event["user"]["username"] == user and event["stage"] == "ResponseComplete":
            events.append(event)
    return events


def count_requests(audit_log: Path, user: str) -> collections.Counter[str]:
    """The requests ``user`` made, as 'verb resource' counts."""
    counts: collections.Counter[str] = collections.Counter()
    for event in audit_events(audit_log, user):
        resource = event.get("objectRef", {}).get("resource", "")
        subresource = event.get("objectRef", {}).get("subresource")
        counts[f"{event['verb']} {resource}{'/' + subresource if subresource else ''}"] += 1
    return counts


def job_creation_events(audit_log: Path, user: str, namespace: str) -> list[dict[str, Any]]:
    """The audit events of ``user``'s successful creations of Jobs in ``namespace``."""
    return [
        event
        for event in audit_events(audit_log, user)
        if event["verb"] == "create"
        and event.get("objectRef", {}).get("resource") == "jobs"
        and event.get("objectRef", {}).get("namespace") == namespace
        and event.get("responseStatus", {}).get("code") == 201
    ]


def job_creations(audit_log: Path, user: str, namespace: str) -> collections.Counter[str]:
    """How many times ``user`` created each Job of ``namespace`` (successfully)."""
    events = job_creation_events(audit_log, user, namespace)
    return collections.Counter(event["objectRef"].get("name", "") for event in events)
