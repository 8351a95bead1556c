"""The fault scenarios that fit CI's time: every trial exactly once, whatever fails.

Each runs a tuning on the real control plane (KWOK's fake GPU nodes end the trial pods,
see tests/workload.py), injects faults, and checks from the API server's audit log and
from what the pods did that no trial was lost or run twice and that the tuning finished
with the right counts, without a human. bench/faults.py runs more scenarios and
publishes the table (docs/reliability.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    Cluster,
    cluster_fixture,  # noqa: F401  (provides the session fixture "cluster")
)
from fault_proxy import Fault
from faults import POOL, Run, start, tuning_manifest
from kubernetes import client
from workload import Ending

from diartune.api import GROUP, TUNING_PLURAL, VERSION

pytestmark = pytest.mark.cluster

CRDS = Path(__file__).resolve().parent.parent / "charts" / "diartune" / "crds"
JOBS = r"/apis/batch/v1/namespaces/[^/]+/jobs"
TRIALS = r"/apis/diartune\.io/v1alpha1/namespaces/[^/]+/diarizationtrials"
TUNINGS = r"/apis/diartune\.io/v1alpha1/namespaces/[^/]+/diarizationtunings"


@pytest.fixture(scope="module")
def pool(cluster: Cluster) -> None:
    """The CRDs and three fake GPU nodes for the scenarios' trial pods."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.add_gpu_nodes(3, gpus_per_node=2, prefix="faults-gpu-", labels=POOL)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[tuple[Run, threading.Event]]]:
    """The scenario's runs, stopped afterwards; their operators must log no error."""
    started: list[tuple[Run, threading.Event]] = []
    yield started
    for run, stop in started:
        stop.set()
        run.stop()
    for run, _ in started:
        for operator in run.operators:  # transient faults are warnings, never tracebacks
            text = operator.log.read_text("utf-8") if operator.log.exists() else ""
            assert "Traceback" not in text, text[-5000:]


def exactly_once(row: dict[str, Any], trials: int, failed: int = 0) -> None:
    """The tuning finished every trial once, lost none, ran none twice."""
    assert row["phase"] == "Succeeded", row
    assert (row["trials"], row["lost"], row["duplicated"], row["failed"]) == (
        trials,
        0,
        0,
        failed,
    ), json.dumps(row)
    assert row["runs"] == trials - failed + row["evaluations"], json.dumps(row)


def test_api_errors_timeouts_and_expired_watches(
    cluster: Cluster, pool: None, tmp_path: Path, runs: list[tuple[Run, threading.Event]]
) -> None:
    run, stop = start(cluster, tmp_path, proxy=True)
    runs.append((run, stop))
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
    run.finished("api")
    row = run.count("api", 6)
    exactly_once(row, 6)
    assert row["job_creations"] == row["trials"] + row["evaluations"], row
    assert sum(f.hits for f in run.proxy.faults) >= 7, [(f.path, f.hits) for f in run.proxy.faults]


def test_operator_killed_right_after_each_kind_of_write(
    cluster: Cluster, pool: None, tmp_path: Path, runs: list[tuple[Run, threading.Event]]
) -> None:
    """Exit right after creating a trial, creating a Job, patching a trial's and the
    tuning's status: each time the restarted operator finishes without a repeat."""
    run, stop = start(cluster, tmp_path, proxy=True)
    runs.append((run, stop))
    assert run.proxy is not None

    def kill() -> None:
        process = run.operators[0].process
        if process is not None:
            process.kill()

    for method, path, skip in (
        ("POST", TRIALS + r"$", 1),
        ("POST", JOBS + r"$", 2),
        ("PATCH", TRIALS + r"/[^/]+/status", 5),
        ("PATCH", TUNINGS + r"/[^/]+/status", 4),
    ):
        run.proxy.add(Fault("after", method, path, skip=skip, then=kill))
    run.apply(tuning_manifest("crash"))
    run.finished("crash")
    row = run.count("crash", 6)
    exactly_once(row, 6)
    assert row["restarts"] == 4, row
    assert row["job_creations"] == row["trials"] + row["evaluations"], row


def test_pod_fates_out_of_memory_infrastructure_and_preemption(
    cluster: Cluster, pool: None, tmp_path: Path, runs: list[tuple[Run, threading.Event]]
) -> None:
    """Out of memory fails the trial at once; exit 75 is retried by its Job; a preempted
    pod is replaced without counting."""

    def fate(trial: str, attempt: int) -> Ending | None:
        if trial.endswith("clustering-001"):
            return Ending(137, reason="OOMKilled")
        if trial.endswith("clustering-002") and attempt == 1:
            return Ending(75, message='{"error": "S3 503: Slow Down"}')
        if trial.endswith("clustering-003") and attempt == 1:
            return Ending(0, seconds=60)  # long enough to be preempted
        return None

    run, stop = start(cluster, tmp_path, fate=fate)
    runs.append((run, stop))
    run.apply(tuning_manifest("fates"))
    core = client.CoreV1Api(cluster.api_client())

    def running_pod() -> Any:
        pods = core.list_namespaced_pod(
            run.namespace, label_selector="diartune.io/trial=clustering-003"
        ).items
        return next((p for p in pods if p.status.phase == "Running"), None)

    pod = run.wait("clustering-003's pod to run", running_pod)
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=run.namespace)
    )
    core.create_namespaced_pod_eviction(pod.metadata.name, run.namespace, eviction)
    status = run.finished("fates")
    row = run.count("fates", 6)
    exactly_once(row, 6, failed=1)
    trials = {t["spec"]["name"]: t["status"] for t in run.trials("fates")}
    assert trials["clustering-001"]["state"] == "Failed"
    assert trials["clustering-001"]["message"].startswith("out of memory (OOMKilled)")
    assert trials["clustering-002"]["state"] == trials["clustering-003"]["state"] == "Succeeded"
    assert run.workload.attempts["fates/clustering-001"] == 1  # not retried to the limit
    assert run.workload.attempts["fates/clustering-002"] == 2
    assert run.workload.attempts["fates/clustering-003"] == 2
    assert status["trialsFailed"] == 1


def test_hand_edits_and_a_pod_lost_before_its_result_was_read(
    cluster: Cluster, pool: None, tmp_path: Path, runs: list[tuple[Run, threading.Event]]
) -> None:
    """A deleted Job is created again; a garbled annotation is restored; a pod deleted
    while the operator was down is run again and reports the result it wrote."""

    def fate(trial: str, attempt: int) -> Ending | None:
        slow = trial.endswith(("clustering-000", "clustering-001")) and attempt == 1
        return Ending(0, seconds=30) if slow else None

    run, stop = start(cluster, tmp_path, fate=fate)
    runs.append((run, stop))
    run.apply(tuning_manifest("edits"))
    batch = client.BatchV1Api(cluster.api_client())
    core = client.CoreV1Api(cluster.api_client())
    run.wait("the first Jobs", lambda: len(batch.list_namespaced_job(run.namespace).items) >= 2)
    batch.delete_namespaced_job(
        "edits-clustering-000", run.namespace, propagation_policy="Background"
    )
    garbled = {"metadata": {"annotations": {"diartune.io/accepted-spec": "{not json"}}}
    run.custom.patch_namespaced_custom_object(
        GROUP, VERSION, run.namespace, TUNING_PLURAL, "edits", garbled
    )

    operator = run.operators[0]
    assert operator.process is not None
    operator.process.kill()  # down while clustering-001 finishes: no restart until told
    operator.process.wait()
    operator.process = None

    def finished_pod() -> Any:
        pods = core.list_namespaced_pod(
            run.namespace, label_selector="diartune.io/trial=clustering-001"
        ).items
        return next((p for p in pods if p.status.phase == "Succeeded"), None)

    pod = run.wait("clustering-001 to finish", finished_pod)
    core.delete_namespaced_pod(pod.metadata.name, run.namespace, grace_period_seconds=0)
    operator.start()
    run.finished("edits")
    row = run.count("edits", 6)
    exactly_once(row, 6)
    assert run.workload.reports["edits/clustering-001"] == 1  # reported, not run again
    assert run.workload.attempts["edits/clustering-000"] == 2  # its Job was deleted mid-run
    events = core.list_namespaced_event(run.namespace, field_selector="involvedObject.name=edits")
    assert "AcceptedSpecRestored" in {event.reason for event in events.items}
    annotation = run.tuning("edits")["metadata"]["annotations"]["diartune.io/accepted-spec"]
    assert json.loads(annotation)["stages"][0]["name"] == "clustering"


def test_two_replicas_act_one_at_a_time_and_the_standby_takes_over(
    cluster: Cluster, pool: None, tmp_path: Path, runs: list[tuple[Run, threading.Event]]
) -> None:
    run, stop = start(cluster, tmp_path, replicas=2)
    runs.append((run, stop))
    run.apply(tuning_manifest("pair", trials=8))
    run.wait(
        "a finished trial",
        lambda: any(
            (t.get("status") or {}).get("state") == "Succeeded" for t in run.trials("pair")
        ),
    )
    coordination = client.CoordinationV1Api(cluster.api_client())
    holder = coordination.read_namespaced_lease("diartune-operator", run.namespace).spec
    leader = next(
        op
        for op in run.operators
        if op.process and holder.holder_identity.endswith(str(op.process.pid))
    )
    assert leader.process is not None
    leader.process.kill()  # the standby takes over once the Lease expires
    leader.process.wait()
    leader.process = None
    started = time.monotonic()
    run.finished("pair")
    row = run.count("pair", 8)
    exactly_once(row, 8)
    assert row["job_creations"] == row["trials"] + row["evaluations"], row
    assert time.monotonic() - started < 300
