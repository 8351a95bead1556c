"""The test control plane (tests/cluster.py) and node runner (tests/node_runner.py) work:
scheduling onto fake GPU nodes, GPU capacity, Jobs run for real, podFailurePolicy, GC."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    FAKE_DELAY,
    FAKE_EXIT_CODE,
    FAKE_MESSAGE,
    FAKE_NODE_TOLERATION,
    Cluster,
    cluster_fixture,  # noqa: F401  (provides the session fixture "cluster")
    watch_until,
)
from kubernetes import client
from node_runner import NodeRunner, on_host

pytestmark = pytest.mark.cluster

RUNNER_NODE = "runner-0"
#: Stands in for the ``diartune`` command: ``diartune fail CODE MESSAGE PATH``.
FAKE_DIARTUNE = (
    "import sys; _, code, message, path = sys.argv[1:]; "
    "open(path, 'w').write(message); sys.exit(int(code))"
)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) afterwards."""
    name = cluster.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield name
    client.CoreV1Api(cluster.api_client()).delete_namespace(name)


@pytest.fixture(scope="module")
def runner(cluster: Cluster) -> Iterator[NodeRunner]:
    """A node runner for ``runner-0``."""
    cluster.add_runner_node(RUNNER_NODE)
    executables = {"diartune": [sys.executable, "-c", FAKE_DIARTUNE]}
    with NodeRunner(cluster.api_client(), RUNNER_NODE, executables=executables) as running:
        yield running
    assert running.errors == []


def job_manifest(
    name: str,
    command: list[str] | None = None,
    node_selector: dict[str, str] | None = None,
    gpus: int = 1,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Job with one container requesting ``gpus`` GPUs, tolerating the fake-node taint."""
    container: dict[str, Any] = {
        "name": "trial",
        "image": "diartune:test",
        "command": command or ["sleep", "3600"],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [FAKE_NODE_TOLERATION],
                    "nodeSelector": node_selector or {},
                    "containers": [container],
                },
            },
            **spec,
        },
    }


def create_job(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    """Create ``manifest`` in ``namespace``."""
    client.BatchV1Api(cluster.api_client()).create_namespaced_job(namespace, manifest)


def job_pods(
    cluster: Cluster,
    namespace: str,
    predicate: Callable[[list[Any]], Any],
    timeout: float = 30,
) -> dict[str, Any]:
    """Watch the namespace's pods until ``predicate(list of pods)`` holds."""
    core = client.CoreV1Api(cluster.api_client())
    return watch_until(
        core.list_namespaced_pod,
        lambda pods: predicate(list(pods.values())),
        timeout,
        namespace=namespace,
    )


def job_condition(cluster: Cluster, namespace: str, name: str, timeout: float = 30) -> Any:
    """Wait for Job ``name`` to be Complete or Failed; return that condition."""

    def finished(job: Any) -> Any:
        conditions = (job.status and job.status.conditions) or []
        return next(
            (c for c in conditions if c.type in ("Complete", "Failed") and c.status == "True"),
            None,
        )

    batch = client.BatchV1Api(cluster.api_client())
    jobs = watch_until(
        batch.list_namespaced_job,
        lambda jobs: name in jobs and finished(jobs[name]) is not None,
        timeout,
        namespace=namespace,
    )
    return finished(jobs[name])


def terminated(pod: Any) -> Any:
    """The first container's terminated state (None while it has not terminated)."""
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def test_gpu_job_runs_on_a_fake_gpu_node(cluster: Cluster, namespace: str) -> None:
    """(a) A 1-GPU Job tolerating the KWOK taint is bound to a fake GPU node and goes Running."""
    nodes = cluster.add_gpu_nodes(1, gpus_per_node=8, prefix="a-gpu-", labels={"pool": "a"})
    create_job(cluster, namespace, job_manifest("gpu", node_selector={"pool": "a"}))
    pods = job_pods(cluster, namespace, lambda ps: any(p.status.phase == "Running" for p in ps))
    (pod,) = pods.values()
    assert pod.spec.node_name == nodes[0]
    assert pod.status.container_statuses[0].state.running is not None


def test_gpu_capacity_is_respected(cluster: Cluster, namespace: str) -> None:
    """(b) Two 1-GPU nodes, four 1-GPU Jobs: two pods are bound, two stay Unschedulable."""
    nodes = cluster.add_gpu_nodes(2, gpus_per_node=1, prefix="b-gpu-", labels={"pool": "b"})
    for index in range(4):
        create_job(cluster, namespace, job_manifest(f"gpu-{index}", node_selector={"pool": "b"}))

    def unschedulable(pod: Any) -> bool:
        return any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            for c in pod.status.conditions or []
        )

    def settled(pods: list[Any]) -> bool:
        running = [p for p in pods if p.status.phase == "Running"]
        return len(running) == 2 and sum(map(unschedulable, pods)) == 2

    pods = list(job_pods(cluster, namespace, settled).values())
    assert sorted(p.spec.node_name for p in pods if p.spec.node_name) == sorted(nodes)
    pending = [p for p in pods if p.status.phase == "Pending"]
    assert len(pending) == 2
    messages = [c.message for p in pending for c in p.status.conditions if c.type == "PodScheduled"]
    assert len(messages) == 2
    assert all("Insufficient nvidia.com/gpu" in message for message in messages)


def test_fake_node_pods_can_be_told_to_exit(cluster: Cluster, namespace: str) -> None:
    """KWOK ends pods on fake nodes with the exit code, message and delay of their annotations."""
    cluster.add_gpu_nodes(1, prefix="e-gpu-", labels={"pool": "e"})
    for name, code, delay in (("ok", "0", "0s"), ("bad", "3", "1s")):
        annotations = {
            FAKE_EXIT_CODE: code,
            FAKE_MESSAGE: f'{{"job": "{name}"}}',
            FAKE_DELAY: delay,
        }
        manifest = job_manifest(name, node_selector={"pool": "e"}, annotations=annotations)
        create_job(cluster, namespace, manifest)
    assert job_condition(cluster, namespace, "ok").type == "Complete"
    assert job_condition(cluster, namespace, "bad").type == "Failed"
    pods = job_pods(cluster, namespace, lambda ps: len(ps) == 2 and all(map(terminated, ps)))
    by_job = {p.metadata.labels["job-name"]: p for p in pods.values()}
    ok, bad = terminated(by_job["ok"]), terminated(by_job["bad"])
    assert (ok.exit_code, ok.reason, ok.message) == (0, "Completed", '{"job": "ok"}')
    assert (bad.exit_code, bad.reason, bad.message) == (3, "Error", '{"job": "bad"}')
    assert (bad.finished_at - by_job["bad"].status.start_time).total_seconds() >= 0.9


def test_runner_runs_a_job(cluster: Cluster, namespace: str, runner: NodeRunner) -> None:
    """(c) The node runner runs the pod's command with its env; the Job completes."""
    core = client.CoreV1Api(cluster.api_client())
    secret = {"metadata": {"name": "creds"}, "data": {"key": base64.b64encode(b"s3cr3t").decode()}}
    core.create_namespaced_secret(namespace, secret)
    script = 'printf \'{"der": 0.5, "who": "%s/%s", "k": "%s"}\' "$POD" "$NS" "$KEY" > $(OUT)'
    manifest = job_manifest("run", ["sh", "-c", script], {"kubernetes.io/hostname": RUNNER_NODE})
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "OUT", "value": "/dev/termination-log"},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    create_job(cluster, namespace, manifest)
    assert job_condition(cluster, namespace, "run").type == "Complete"
    (pod,) = job_pods(cluster, namespace, lambda ps: len(ps) == 1).values()
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (0, "Completed")
    expected = f'{{"der": 0.5, "who": "{pod.metadata.name}/{namespace}", "k": "s3cr3t"}}'
    assert state.message == expected
    assert pod.status.phase == "Succeeded"


def test_exit_code_fails_job_fast(cluster: Cluster, namespace: str, runner: NodeRunner) -> None:
    """(c) Exit code 65 with a FailJob podFailurePolicy fails the Job without retries."""
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [65]}}]}
    command = ["diartune", "fail", "65", "bad spec", "/dev/termination-log"]
    manifest = job_manifest(
        "bad",
        command,
        {"kubernetes.io/hostname": RUNNER_NODE},
        backoffLimit=6,
        podFailurePolicy=policy,
    )
    create_job(cluster, namespace, manifest)
    condition = job_condition(cluster, namespace, "bad")
    assert (condition.type, condition.reason) == ("Failed", "PodFailurePolicy")
    pods = job_pods(cluster, namespace, lambda ps: len(ps) >= 1)
    assert len(pods) == 1
    state = terminated(next(iter(pods.values())))
    assert (state.exit_code, state.reason, state.message) == (65, "Error", "bad spec")


def test_runner_kills_deleted_pods(cluster: Cluster, namespace: str, runner: NodeRunner) -> None:
    """Deleting a pod on the runner node kills its process and removes the pod."""
    core = client.CoreV1Api(cluster.api_client())
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {
            "nodeName": RUNNER_NODE,
            "tolerations": [FAKE_NODE_TOLERATION],
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": ["sh", "-c", "echo $$$$ > pid; exec sleep 60"],
                }
            ],
        },
    }
    uid = core.create_namespaced_pod(namespace, pod).metadata.uid
    job_pods(cluster, namespace, lambda ps: ps and ps[0].status.phase == "Running")
    pid_file = runner.pods[uid].workdir / "pid"
    pid = int(_wait_for_text(pid_file))
    core.delete_namespaced_pod("sleeper", namespace)
    job_pods(cluster, namespace, lambda ps: not ps)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


#: Imported by the fork server; reads PROBE_AT_IMPORT when imported, as torch reads its
#: variables.
PROBE_LIBRARY = "import os\nAT_IMPORT = os.environ.get('PROBE_AT_IMPORT')\n"
#: The pod's command, ``probe CODE SECONDS``: prints, writes its termination message, waits
#: for SECONDS (its pid in ./pid), exits with CODE.
PROBE = """import json, os, sys, time
print("probe starts", flush=True)
with open("pid", "w") as out:
    out.write(str(os.getpid()))
message = {
    "forked": "probe_library" in sys.modules,
    "extra": os.environ.get("EXTRA"),
    "at_import": __import__("probe_library").AT_IMPORT,
    "cwd": os.getcwd(),
    "leads_its_group": os.getpgrp() == os.getpid(),
}
with open(os.environ["OUT"], "w") as out:
    json.dump(message, out)
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[1]))
"""


def test_runner_forks_python_modules_from_a_preloaded_process(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A pod's ``python -m MODULE`` forked from a process that imported ``preload`` keeps
    its env, working dir, log, exit code and process group; one that changes a variable
    the imports read starts afresh; deleting a pod kills its forked process."""
    (tmp_path / "probe_library.py").write_text(PROBE_LIBRARY)
    (tmp_path / "probe.py").write_text(PROBE)
    node = cluster.add_runner_node("runner-forks")
    core = client.CoreV1Api(cluster.api_client())
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    executables = {"probe": [sys.executable, "-m", "probe"]}
    preload = ["probe_library"]
    with NodeRunner(
        cluster.api_client(), node, executables=executables, base_env=env, preload=preload
    ) as forks:

        def run(name: str, seconds: str, **env: str) -> Any:
            pod = {
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "tolerations": [FAKE_NODE_TOLERATION],
                    "containers": [
                        {
                            "name": "c",
                            "image": "x",
                            "command": ["probe", "3", seconds],
                            "env": [
                                {"name": "OUT", "value": "/dev/termination-log"},
                                *({"name": k, "value": v} for k, v in env.items()),
                            ],
                        }
                    ],
                },
            }
            return core.create_namespaced_pod(namespace, pod).metadata.uid

        run("forked", "0", EXTRA="x")
        run("fresh", "0", PROBE_AT_IMPORT="pod")
        pods = job_pods(cluster, namespace, lambda ps: len(ps) == 2 and all(map(terminated, ps)))
        states = {p.metadata.name: terminated(p) for p in pods.values()}
        assert {s.exit_code for s in states.values()} == {3}
        forked, fresh = (json.loads(states[n].message) for n in ("forked", "fresh"))
        workdirs = {p.metadata.name: forks.pods[p.metadata.uid].workdir for p in pods.values()}
        assert forked == {
            "forked": True,
            "extra": "x",
            "at_import": None,
            "cwd": str(workdirs["forked"]),
            "leads_its_group": True,
        }
        assert (fresh["forked"], fresh["at_import"], fresh["extra"]) == (False, "pod", None)
        assert forks.log(namespace, "forked") == "probe starts\n"
        assert forks.forked == ["forked"]

        uid = run("sleeper", "60")
        job_pods(
            cluster,
            namespace,
            lambda ps: any(p.metadata.uid == uid and p.status.phase == "Running" for p in ps),
        )
        pid = int(_wait_for_text(forks.pods[uid].workdir / "pid"))
        core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=0)
        job_pods(cluster, namespace, lambda ps: all(p.metadata.uid != uid for p in ps))
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, "the deleted pod's process still runs"
            time.sleep(0.05)
    assert forks.errors == []


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a forked pod's parent reaps it soon after it ends)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_text(path: Path, timeout: float = 10) -> str:
    """The content of ``path`` once the process has written it."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.05)
    return path.read_text().strip()


def test_background_deletion_removes_pods(cluster: Cluster, namespace: str) -> None:
    """(d) Deleting a Job with propagationPolicy=Background garbage-collects its pods."""
    cluster.add_gpu_nodes(1, prefix="d-gpu-", labels={"pool": "d"})
    create_job(cluster, namespace, job_manifest("gc", node_selector={"pool": "d"}, parallelism=2))
    job_pods(
        cluster, namespace, lambda ps: len(ps) == 2 and all(p.status.phase == "Running" for p in ps)
    )
    client.BatchV1Api(cluster.api_client()).delete_namespaced_job(
        "gc", namespace, propagation_policy="Background"
    )
    job_pods(cluster, namespace, lambda ps: not ps)


def test_serviceaccount_kubeconfig_has_only_its_rbac(cluster: Cluster, namespace: str) -> None:
    """A ServiceAccount kubeconfig (TokenRequest) is subject to RBAC, unlike the admin one."""
    core = client.CoreV1Api(cluster.api_client())
    rbac = client.RbacAuthorizationV1Api(cluster.api_client())
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "op"}})
    kubeconfig = cluster.serviceaccount_kubeconfig(namespace, "op")

    def can(verb: str, resource: str) -> bool:
        args = ["--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource]
        result = cluster.kubectl(*args, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    assert not can("list", "pods")
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "r"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "r"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
    assert can("list", "pods")
    assert not can("delete", "pods")
    pods = cluster.kubectl("--kubeconfig", str(kubeconfig), "get", "pods", "-o", "name")
    assert pods.stdout == ""


def test_a_path_the_runner_maps_is_not_mounted_again() -> None:
    """The termination log's host file lies under /tmp, where trial pods mount their
    scratch emptyDir: it must stay the runner's file, not move into the volume."""
    path_map = {"/dev/termination-log": "/tmp/runner/pod/termination-log"}
    mounts = {"/tmp": "/tmp/runner/pod/volumes/scratch"}
    assert on_host("/dev/termination-log", path_map, mounts) == "/tmp/runner/pod/termination-log"
    assert on_host("/tmp/cache", path_map, mounts) == "/tmp/runner/pod/volumes/scratch/cache"
