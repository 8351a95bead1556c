"""The fault scenarios: each runs one tuning under one kind of fault and returns its row.

Run by tests/test_faults.py (those that fit CI's time, with assertions) and by
bench/faults.py (all of them, for the table in docs/reliability.md). A row says what the
tuning did (``faults.Run.count``) plus what the scenario observed (``facts``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster import FAKE_HEARTBEAT, Cluster
from fault_proxy import Fault
from faults import Run, expected_der, start, tuning_manifest
from kubernetes import client, watch
from workload import Ending

from diartune.operator.api import GROUP, TRIAL_PLURAL, TUNING_PLURAL, VERSION
from diartune.operator.manifests import job_trials

JOBS = r"/apis/batch/v1/namespaces/[^/]+/jobs"
TRIALS = r"/apis/diartune\.io/v1alpha1/namespaces/[^/]+/diarizationtrials"
TUNINGS = r"/apis/diartune\.io/v1alpha1/namespaces/[^/]+/diarizationtunings"
Row = dict[str, Any]


@contextmanager
def scenario(cluster: Cluster, folder: Path, **options: Any) -> Iterator[Run]:
    """A started run, stopped afterwards; the operators' tracebacks are counted."""
    run, stop = start(cluster, folder, **options)
    try:
        yield run
    finally:
        stop.set()
        run.stop()


def tracebacks(run: Run) -> int:
    """Tracebacks in the operators' logs: transient faults must be warnings only."""
    return sum(
        operator.log.read_text("utf-8").count("Traceback")
        for operator in run.operators
        if operator.log.exists()
    )


def finish(run: Run, name: str, trials: int, **facts: Any) -> Row:
    """Wait for the tuning to end; its row."""
    run.finished(name)
    row = run.count(name, trials)
    row["tracebacks"] = tracebacks(run)
    row["facts"] = facts
    return row


def _kill(run: Run, index: int = 0) -> Callable[[], None]:
    def kill() -> None:
        process = run.operators[index].process
        if process is not None:
            process.kill()

    return kill


def api_errors(cluster: Cluster, folder: Path) -> Row:
    """5xx, 429 and 409 answers, a reset, a stalled request and expired watches."""
    with scenario(cluster, folder, proxy=True) as run:
        assert run.proxy is not None
        run.proxy.add(
            Fault("status", "POST", JOBS + r"$", status=500, skip=1),
            Fault("status", "POST", TRIALS + r"$", status=429, skip=2),
            Fault("status", "POST", TRIALS + r"$", status=409, skip=4),
            Fault("status", "PATCH", TRIALS + r"/[^/]+/status", status=500, times=2, skip=3),
            Fault("reset", "PATCH", TUNINGS + r"/[^/]+/status", skip=2),
            Fault("hang", "GET", r"/api/v1/namespaces/[^/]+/pods\?", seconds=40, skip=1),
            Fault("expire_watch", "GET", JOBS + r"\?.*watch=true", skip=1),
            Fault("expire_watch", "GET", TUNINGS + r"\?.*watch=true", skip=1),
        )
        run.apply(tuning_manifest("api"))
        row = finish(run, "api", 6)
        row["facts"] = {
            "faults_hit": {f"{f.action} {f.method} {f.path}": f.hits for f in run.proxy.faults}
        }
        return row


def crash_points(cluster: Cluster, folder: Path) -> Row:
    """The operator exits right after creating a trial, creating a Job, patching a trial's
    status, patching the tuning's status, recording a failed trial, creating an evaluation
    and recording an evaluation's result, once each."""

    def fate(trial: str, attempt: int) -> Ending | None:
        failed = trial.endswith("clustering-001")
        # Killed (137): a failure that fails its Job at once; bad input would fail the tuning.
        return Ending(137, reason="OOMKilled") if failed else None

    with scenario(cluster, folder, proxy=True, fate=fate) as run:
        assert run.proxy is not None
        for method, path, skip, payload in (
            ("PATCH", TRIALS + r"/[^/]+/status", 0, '"state": "Failed"'),
            ("POST", TRIALS + r"$", 0, '"number": -1'),
            ("PATCH", TRIALS + r"/[^/]+-test/status", 0, '"state": "Succeeded"'),
            ("POST", TRIALS + r"$", 1, ""),
            ("POST", JOBS + r"$", 2, ""),
            ("PATCH", TRIALS + r"/[^/]+/status", 5, ""),
            # An early one: after the last (Succeeded) the harness restarts no operator.
            ("PATCH", TUNINGS + r"/[^/]+/status", 1, ""),
        ):
            fault = Fault("after", method, path, skip=skip, then=_kill(run), payload=payload)
            run.proxy.add(fault)
        run.apply(tuning_manifest("crash"))
        row = finish(run, "crash", 6)
        row["facts"] = {
            "kills": {f"{f.method} {f.path} {f.payload}".strip(): f.hits for f in run.proxy.faults},
            "states": {t["spec"]["name"]: t["status"]["state"] for t in run.trials("crash")},
        }
        return row


def random_kills(cluster: Cluster, folder: Path, kills: int = 20, seed: int = 0) -> Row:
    """SIGKILL at ``kills`` random moments of one tuning."""
    chooser = random.Random(seed)
    with scenario(cluster, folder, duration=(4.0, 8.0)) as run:
        run.apply(tuning_manifest("kills", trials=16, parallel=3))
        done = 0
        while done < kills and run.phases.get("kills") not in ("Succeeded", "Failed"):
            run.wait("the operator to run", lambda: run.operators[0].process is not None)
            time.sleep(chooser.uniform(1.0, 12.0))
            process = run.operators[0].process
            if process is not None and process.poll() is None:
                process.kill()
                done += 1
            run.supervise()
        return finish(run, "kills", 16, kills=done)


def pod_fates(cluster: Cluster, folder: Path) -> Row:
    """Out of memory fails a trial at once; exit 75 is retried by its Job; a preempted pod
    is replaced without counting."""

    def fate(trial: str, attempt: int) -> Ending | None:
        if trial.endswith("clustering-001"):
            return Ending(137, reason="OOMKilled")
        if trial.endswith("clustering-002") and attempt == 1:
            return Ending(75, message='{"error": "S3 503: Slow Down"}')
        if trial.endswith("clustering-003") and attempt == 1:
            return Ending(0, seconds=60)  # long enough to be preempted
        return None

    with scenario(cluster, folder, fate=fate) as run:
        run.apply(tuning_manifest("fates"))
        pod = _running_pod(run, "clustering-003")
        core = client.CoreV1Api(cluster.api_client())
        eviction = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=run.namespace)
        )
        run.inject("fates", "clustering-003")
        core.create_namespaced_pod_eviction(pod.metadata.name, run.namespace, eviction)
        row = finish(run, "fates", 6)
        row["facts"] = {
            "states": {t["spec"]["name"]: t["status"] for t in run.trials("fates")},
            "attempts": dict(run.workload.attempts),
        }
        return row


def batch_killed(cluster: Cluster, folder: Path) -> Row:
    """A pod of four trials is SIGKILLed (exit 137, not a disruption) while it runs its
    third: the two it finished keep their results, the third fails as a one-trial pod
    killed so does (its Job fails at once), and the fourth, which never started, runs
    once in a Job of its own."""

    def fate(trial: str, attempt: int) -> Ending | None:
        first = trial.endswith("clustering-000") and attempt == 1
        return Ending(137, seconds=3, finished=2) if first else None

    with scenario(cluster, folder, fate=fate) as run:
        run.apply(tuning_manifest("killed", trials=8, parallel=4, trials_per_pod=4))
        row = finish(run, "killed", 8)
        row["facts"] = {
            "states": {t["spec"]["name"]: t["status"] for t in run.trials("killed")},
            "attempts": dict(run.workload.attempts),
            "reports": dict(run.workload.reports),
            "jobs": _jobs(run),
        }
        return row


def batch_evicted(cluster: Cluster, folder: Path) -> Row:
    """A pod of four trials is evicted after it finished two of them: its Job's next pod
    reports those two (their result.json) and runs the other two, once each."""

    def fate(trial: str, attempt: int) -> Ending | None:
        first = trial.endswith("clustering-000") and attempt == 1
        return Ending(0, seconds=60, finished=2) if first else None  # long enough to evict

    with scenario(cluster, folder, fate=fate) as run:
        run.apply(tuning_manifest("evicted", trials=8, parallel=4, trials_per_pod=4))
        pod = _running_pod(run, "clustering-000")
        core = client.CoreV1Api(cluster.api_client())
        eviction = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=run.namespace)
        )
        run.inject("evicted", *(f"clustering-00{number}" for number in range(4)))
        core.create_namespaced_pod_eviction(pod.metadata.name, run.namespace, eviction)
        row = finish(run, "evicted", 8)
        row["facts"] = {
            "states": {t["spec"]["name"]: t["status"] for t in run.trials("evicted")},
            "attempts": dict(run.workload.attempts),
            "reports": dict(run.workload.reports),
            "jobs": _jobs(run),
        }
        return row


def _jobs(run: Run) -> dict[str, list[str]]:
    """Each Job of the run's namespace, with the trials it runs."""
    batch = client.BatchV1Api(run.cluster.api_client())
    return {
        job.metadata.name: job_trials(batch.api_client.sanitize_for_serialization(job))
        for job in batch.list_namespaced_job(run.namespace).items
    }


def node_deleted(cluster: Cluster, folder: Path) -> Row:
    """The node of a running trial pod is deleted: the pod goes with it, and its Job
    starts another (a disruption, not a failure)."""

    def fate(trial: str, attempt: int) -> Ending | None:
        return Ending(0, seconds=60) if trial.endswith("clustering-002") and attempt == 1 else None

    with scenario(cluster, folder, fate=fate) as run:
        run.apply(tuning_manifest("node"))
        pod = _running_pod(run, "clustering-002")
        run.inject("node", "clustering-002")
        cluster.delete_nodes([pod.spec.node_name])
        row = finish(run, "node", 6, node=pod.spec.node_name)
        cluster.add_gpu_nodes(1, gpus_per_node=2, prefix="faults-gpu-", labels={"pool": "faults"})
        return row


UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


def node_not_ready(cluster: Cluster, folder: Path) -> Row:
    """The node of a running trial pod stops heartbeating and stays: the node lifecycle
    controller marks it NotReady (Unknown) and taints it unreachable, the taint eviction
    controller evicts the pod after its tolerationSeconds (10 s here, instead of the 300 s
    that DefaultTolerationSeconds adds), and its Job starts another pod on another node (a
    disruption, not a failure). The node's heartbeat resumes once the tuning has ended."""

    def fate(trial: str, attempt: int) -> Ending | None:
        slow = trial.endswith("clustering-002") and attempt == 1
        return Ending(0, seconds=600) if slow else None

    keys = (UNREACHABLE, NOT_READY)
    with scenario(cluster, folder, fate=fate, toleration_keys=keys) as run:
        manifest = tuning_manifest("notready")
        template = manifest["spec"]["trialTemplate"]
        template["tolerations"] = [
            *template["tolerations"],
            *(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}
                for key in keys
            ),
        ]
        # The node answers no more for about 75 s before the eviction: keep the Job's
        # deadline out of the way.
        template["activeDeadlineSeconds"] = 300
        run.apply(manifest)
        pod = _running_pod(run, "clustering-002")
        node, name = pod.spec.node_name, pod.metadata.name
        core = client.CoreV1Api(cluster.api_client())
        run.inject("notready", "clustering-002")
        core.patch_node(node, {"metadata": {"annotations": {FAKE_HEARTBEAT: "stopped"}}})
        injected = time.monotonic()
        try:
            last = _until_deleted(core, run.namespace, name, timeout=300)
            evicted_after = round(time.monotonic() - injected, 1)
            seen = core.read_node(node)
            row = finish(run, "notready", 6)
        finally:  # the node's heartbeat resumes: it is Ready again for later scenarios
            core.patch_node(node, {"metadata": {"annotations": {FAKE_HEARTBEAT: None}}})
        cluster.wait_nodes_ready([node], timeout=120)
        events = core.list_namespaced_event(
            run.namespace, field_selector=f"involvedObject.name={name}"
        )
        row["facts"] = {
            "node": node,
            "node_ready": next(
                (c.status for c in seen.status.conditions or [] if c.type == "Ready"), None
            ),
            "node_taints": sorted(f"{t.key}:{t.effect}" for t in seen.spec.taints or []),
            "evicted_after_s": evicted_after,
            "pod_phase": last.status.phase,
            "pod_conditions": {
                c.type: f"{c.status} {c.reason or ''}".strip() for c in last.status.conditions or []
            },
            "pod_events": sorted({event.reason for event in events.items}),
            "other_pods_on": sorted(
                {p.spec.node_name for p in _pods(run, "clustering-002") if p.metadata.name != name}
            ),
            "states": {t["spec"]["name"]: t["status"] for t in run.trials("notready")},
            "attempts": dict(run.workload.attempts),
        }
        return row


def image_pull_deadline(cluster: Cluster, folder: Path) -> Row:
    """A trial whose pod never starts (an image that cannot be pulled: ImagePullBackOff)
    is named in a warning event on the tuning, fails at its activeDeadlineSeconds with
    the reason in its message, and the tuning goes on."""

    def fate(trial: str, attempt: int) -> Ending | None:
        stuck = trial.endswith("clustering-001")
        return Ending(0, waiting="ImagePullBackOff") if stuck else None

    with scenario(cluster, folder, fate=fate) as run:
        manifest = tuning_manifest("deadline")
        manifest["spec"]["trialTemplate"]["activeDeadlineSeconds"] = 20
        run.apply(manifest)
        row = finish(run, "deadline", 6)
        row["facts"] = {
            "states": {t["spec"]["name"]: t["status"] for t in run.trials("deadline")},
            "events": _events(run, "deadline"),
        }
        return row


def hand_edits(cluster: Cluster, folder: Path) -> Row:
    """A deleted Job is created again; a garbled annotation is restored; a pod deleted
    while the operator was down runs again and reports the result it wrote."""

    def fate(trial: str, attempt: int) -> Ending | None:
        slow = trial.endswith(("clustering-000", "clustering-001")) and attempt == 1
        return Ending(0, seconds=30) if slow else None

    with scenario(cluster, folder, fate=fate) as run:
        run.apply(tuning_manifest("edits"))
        batch = client.BatchV1Api(cluster.api_client())
        core = client.CoreV1Api(cluster.api_client())
        run.wait("the first Jobs", lambda: len(batch.list_namespaced_job(run.namespace).items) >= 2)
        run.inject("edits", "clustering-000", "clustering-001")
        batch.delete_namespaced_job(
            "edits-clustering-000", run.namespace, propagation_policy="Background"
        )
        garbled = {"metadata": {"annotations": {"diartune.io/accepted-spec": "{not json"}}}
        run.custom.patch_namespaced_custom_object(
            GROUP, VERSION, run.namespace, TUNING_PLURAL, "edits", garbled
        )
        operator = run.operators[0]
        assert operator.process is not None
        operator.process.kill()  # down while clustering-001 finishes
        operator.process.wait()
        operator.process = None
        pod = run.wait("clustering-001 to finish", lambda: _pod(run, "clustering-001", "Succeeded"))
        core.delete_namespaced_pod(pod.metadata.name, run.namespace, grace_period_seconds=0)
        operator.start()
        row = finish(run, "edits", 6)
        events = core.list_namespaced_event(
            run.namespace, field_selector="involvedObject.name=edits"
        )
        annotation = run.tuning("edits")["metadata"]["annotations"]["diartune.io/accepted-spec"]
        row["facts"] = {
            "reports": dict(run.workload.reports),
            "attempts": dict(run.workload.attempts),
            "events": sorted({event.reason for event in events.items}),
            "annotation_restored": json.loads(annotation)["stages"][0]["name"] == "clustering",
        }
        return row


def trial_edits(cluster: Cluster, folder: Path) -> Row:
    """A running trial's DiarizationTrial is deleted: its Job goes with it and its slot to
    a new trial. Another running trial's status is patched to Succeeded by hand, then the
    operator restarts (gracefully, handing its Lease over, so that it loads the tuning
    while that trial's Job still runs): the trial still runs, and its Job's result is
    recorded."""

    def fate(trial: str, attempt: int) -> Ending | None:
        slow = trial.endswith(("clustering-000", "clustering-001")) and attempt == 1
        return Ending(0, seconds=30) if slow else None

    with scenario(cluster, folder, fate=fate) as run:
        run.apply(tuning_manifest("trials"))
        _running_pod(run, "clustering-000")
        _running_pod(run, "clustering-001")
        # The operator writes Running once the Job counts a ready pod, which may come after
        # the pod runs: a status forged before that write would be overwritten by it.
        run.wait(
            "clustering-001's status to say Running",
            lambda: (
                (_trial(run, "trials", "clustering-001").get("status") or {}).get("state")
                == "Running"
            ),
        )
        deleted = _trial(run, "trials", "clustering-000")["metadata"]["uid"]
        run.inject("trials", "clustering-000", "clustering-001")
        run.custom.delete_namespaced_custom_object(
            GROUP, VERSION, run.namespace, TRIAL_PLURAL, "trials-clustering-000"
        )
        run.wait(
            "a new clustering-000",
            lambda: (
                _trial(run, "trials", "clustering-000")["metadata"].get("uid")
                not in (None, deleted)
            ),
        )
        forged = {"status": {"state": "Succeeded", "der": 0.01}}
        run.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, run.namespace, TRIAL_PLURAL, "trials-clustering-001", forged
        )
        run.operators[0].stop()  # the restarted operator reads the forged status
        run.operators[0].start()
        row = finish(run, "trials", 6)
        patched = _trial(run, "trials", "clustering-001")
        request = run.workload.requests["trials/clustering-001"][-1]
        row["facts"] = {
            "patched_der": patched["status"]["der"],
            "expected_der": expected_der(request.params),
            "attempts": dict(run.workload.attempts),
            "events": _events(run, "trials"),
        }
        return row


def recreated_tuning(cluster: Cluster, folder: Path) -> Row:
    """A tuning deleted and at once created again under the same name starts afresh: the
    old tuning's trials (garbage-collected meanwhile) are never adopted."""
    with scenario(cluster, folder) as run:
        run.apply(tuning_manifest("again"))
        run.wait("a finished trial", lambda: _finished_trials(run, "again") >= 1)
        old = run.tuning("again")["metadata"]["uid"]
        run.custom.delete_namespaced_custom_object(
            GROUP, VERSION, run.namespace, TUNING_PLURAL, "again"
        )
        run.apply(tuning_manifest("again"))
        row = finish(run, "again", 6)
        owners = {
            ref["uid"]
            for trial in run.trials("again")
            for ref in trial["metadata"].get("ownerReferences", [])
        }
        row["facts"] = {"old_uid_owns_none": old not in owners}
        return row


def two_replicas(cluster: Cluster, folder: Path) -> Row:
    """Two operators at once; the one holding the Lease is killed mid-tuning."""
    with scenario(cluster, folder, replicas=2) as run:
        run.apply(tuning_manifest("pair", trials=8))
        run.wait("a finished trial", lambda: _finished_trials(run, "pair") >= 1)
        coordination = client.CoordinationV1Api(cluster.api_client())
        lease = coordination.read_namespaced_lease("diartune-operator", run.namespace)
        holder = str(lease.spec.holder_identity)
        leader = next(op for op in run.operators if op.process and holder == op.pod_name)
        assert leader.process is not None
        run.inject("pair")
        leader.process.kill()
        leader.process.wait()
        leader.process = None
        started = time.monotonic()
        row = finish(run, "pair", 8)
        row["facts"] = {"takeover_to_end_s": round(time.monotonic() - started, 1)}
        return row


def _pod(run: Run, trial: str, phase: str) -> Any:
    pods = client.CoreV1Api(run.cluster.api_client()).list_namespaced_pod(
        run.namespace, label_selector=f"diartune.io/trial={trial}"
    )
    return next((pod for pod in pods.items if pod.status.phase == phase), None)


def _pods(run: Run, trial: str) -> list[Any]:
    pods = client.CoreV1Api(run.cluster.api_client()).list_namespaced_pod(
        run.namespace, label_selector=f"diartune.io/trial={trial}"
    )
    return list(pods.items)


def _until_deleted(core: client.CoreV1Api, namespace: str, name: str, timeout: float) -> Any:
    """Watch a pod until it is deleted; its last state (its phase and conditions then)."""
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    while (remaining := deadline - time.monotonic()) > 0:
        stream = watch.Watch().stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=selector,
            timeout_seconds=max(1, int(remaining)),
        )
        for event in stream:
            if event["type"] == "DELETED":
                return event["object"]
    raise AssertionError(f"pod {name} was not deleted within {timeout:.0f} s")


def _running_pod(run: Run, trial: str) -> Any:
    return run.wait(f"{trial}'s pod to run", lambda: _pod(run, trial, "Running"))


def _trial(run: Run, tuning: str, trial: str) -> Any:
    """A tuning's DiarizationTrial named ``trial`` (its spec name), or an empty one."""
    found = (t for t in run.trials(tuning) if t["spec"]["name"] == trial)
    return next(found, {"metadata": {}})


def _events(run: Run, tuning: str) -> dict[str, list[str]]:
    """The messages of the events on a tuning, by reason."""
    core = client.CoreV1Api(run.cluster.api_client())
    events = core.list_namespaced_event(
        run.namespace, field_selector=f"involvedObject.name={tuning}"
    )
    found: dict[str, list[str]] = {}
    for event in events.items:
        found.setdefault(event.reason, []).append(event.message)
    return found


def _finished_trials(run: Run, tuning: str) -> int:
    return sum((t.get("status") or {}).get("state") == "Succeeded" for t in run.trials(tuning))


#: Every scenario, in the order of the published table.
SCENARIOS: dict[str, Callable[[Cluster, Path], Row]] = {
    "API errors, timeouts, expired watches": api_errors,
    "operator exits after each kind of write": crash_points,
    "operator SIGKILLed at 20 random moments": random_kills,
    "pod fates: OOMKilled, exit 75, preemption": pod_fates,
    "a pod of 4 trials SIGKILLed mid-batch": batch_killed,
    "a pod of 4 trials evicted mid-batch": batch_evicted,
    "node deleted under a running pod": node_deleted,
    "node NotReady under a running pod": node_not_ready,
    "pod never starts: ImagePullBackOff, activeDeadlineSeconds": image_pull_deadline,
    "hand edits: Job deleted, annotation garbled, pod lost": hand_edits,
    "trial edits: DiarizationTrial deleted, status forged": trial_edits,
    "tuning deleted and recreated at once": recreated_tuning,
    "two replicas, the leader killed": two_replicas,
}
