"""The Helm chart: lint-clean, what it renders in each RBAC mode, and (tests marked
``cluster``) what its RBAC allows once installed on a real API server (tests/cluster.py)."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import Cluster, cluster_fixture  # noqa: F401  (the session fixture "cluster")

from diartune.operator.settings import JobDefaults, job_defaults
from diartune.spec.model import TrialTemplate

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts/diartune"
CACHE = Path(os.environ.get("DIARTUNE_CACHE", Path.home() / ".cache/diartune"))
HELM = CACHE / "control-plane/bin/helm"
NAMESPACE_MODE = ("--set", "rbac.scope=namespace", "--set", "watchNamespaces={team-a,team-b}")

# (apiGroup, resource) -> verbs the operator gets in each namespace it watches.
NAMESPACED = {
    ("diartune.io", "diarizationtunings"): {"get", "list", "watch", "patch", "update"},
    ("diartune.io", "diarizationtunings/status"): {"get", "patch", "update"},
    ("diartune.io", "diarizationtunings/finalizers"): {"update"},
    ("diartune.io", "diarizationtrials"): {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    },
    ("diartune.io", "diarizationtrials/status"): {"get", "patch", "update"},
    ("diartune.io", "diarizationtrials/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm of scripts/build-control-plane.sh, built when missing."""
    if not os.access(HELM, os.X_OK):
        subprocess.run([str(ROOT / "scripts/build-control-plane.sh")], check=True)
    return HELM


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders, with the release in namespace ops."""
    done = run_helm(helm, "template", "dt", str(CHART), "--namespace", "ops", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


LEASES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of a kind, but the Role and RoleBinding of the Lease (``leader``)."""
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and not obj["metadata"]["name"].endswith("-leader")
    ]


def leader(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith("-leader")
    ]
    return found


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = of_kind(objects, "Deployment")
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return dict(found)


def env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container(objects)["env"]}


def permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.mark.parametrize("args", [(), NAMESPACE_MODE], ids=["cluster", "namespace"])
def test_lint_is_clean(helm: Path, args: tuple[str, ...]) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text("utf-8"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "diartune"
    assert chart["version"] == chart["appVersion"] == version
    assert chart["kubeVersion"] == ">=1.29.0-0"


def test_the_default_watches_the_release_namespace_only(helm: Path) -> None:
    objects = render(helm)
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    [role] = of_kind(objects, "Role")
    assert role["metadata"]["namespace"] == "ops" and permissions(role) == NAMESPACED
    assert container(objects)["args"][:2] == ["--namespace", "ops"]
    accounts = {a["metadata"]["name"]: a for a in of_kind(objects, "ServiceAccount")}
    trial = accounts["dt-diartune-trial"]
    assert trial["metadata"]["namespace"] == "ops"
    assert trial["automountServiceAccountToken"] is False
    assert env(objects)["DIARTUNE_TRIAL_SERVICE_ACCOUNT"] == "dt-diartune-trial"
    assert json.loads(env(objects)["DIARTUNE_TRIAL_POLICY"]) == {
        "allowedImages": [],
        "allowedSecrets": [],
        "allowedTolerationKeys": ["nvidia.com/gpu"],
        "allowedNodeSelectorKeys": [],
    }


def test_cluster_mode(helm: Path) -> None:
    objects = render(helm, "--set", "rbac.scope=cluster")
    assert sorted(obj["kind"] for obj in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    # All namespaces: trial pods run as each namespace's default account (no token).
    assert env(objects)["DIARTUNE_TRIAL_SERVICE_ACCOUNT"] == "default"
    [role] = of_kind(objects, "ClusterRole")
    assert permissions(role) == NAMESPACED  # kopf scans no namespaces or CRDs
    [binding] = of_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    [account] = of_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ops"}
    ]
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert container(objects)["args"] == [
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=plain",
        "--metrics-port=8081",
    ]


def test_namespace_mode_renders_roles_only(helm: Path) -> None:
    objects = render(helm, *NAMESPACE_MODE)
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    roles, bindings = of_kind(objects, "Role"), of_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert permissions(role) == NAMESPACED
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "ops"
    assert container(objects)["args"] == [
        "--namespace",
        "team-a",
        "--namespace",
        "team-b",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=plain",
        "--metrics-port=8081",
    ]


def test_cluster_rbac_may_watch_some_namespaces(helm: Path) -> None:
    objects = render(helm, "--set", "rbac.scope=cluster", "--set", "watchNamespaces={speech}")
    assert of_kind(objects, "ClusterRole") and not of_kind(objects, "Role")
    assert container(objects)["args"][:2] == ["--namespace", "speech"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--set", "rbac.scope=clusterwide"), "value must be one of 'cluster', 'namespace'"),
        (("--set", "watchNamespace={a}"), "additional properties 'watchNamespace' not allowed"),
        (("--set", "logFormat=yaml"), "value must be one of 'plain', 'json'"),
        (("--set", "metrics.port=80"), "at '/metrics/port': minimum: got 80, want 1,024"),
    ],
)
def test_bad_values_are_refused(helm: Path, args: tuple[str, ...], expected: str) -> None:
    done = run_helm(helm, "template", "dt", str(CHART), *args)
    assert done.returncode != 0
    assert expected in done.stderr


@pytest.mark.parametrize("args", [(), NAMESPACE_MODE], ids=["cluster", "namespace"])
def test_no_secrets_and_no_wildcards(helm: Path, args: tuple[str, ...]) -> None:
    roles = [obj for obj in render(helm, *args) if obj["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"]
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "pods/log" not in rule["resources"]
            assert not any("kopfpeering" in resource for resource in rule["resources"])
            assert "nonResourceURLs" not in rule


def test_rbac_can_be_left_out(helm: Path) -> None:
    objects = render(helm, "--set", "rbac.create=false")
    kinds = ["ServiceAccount", "ServiceAccount", "Service", "Deployment"]
    assert [obj["kind"] for obj in objects] == kinds


def test_metrics_have_a_port_a_service_and_an_optional_service_monitor(helm: Path) -> None:
    objects = render(helm)
    operator = container(objects)
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in operator["ports"]
    [service] = of_kind(objects, "Service")
    assert service["spec"]["selector"] == deployment(objects)["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not of_kind(objects, "ServiceMonitor")  # off by default: it needs its CRDs

    objects = render(
        helm,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prometheus",
    )
    [monitor] = of_kind(objects, "ServiceMonitor")
    [service] = of_kind(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]

    objects = render(helm, "--set", "metrics.enabled=false")
    assert not of_kind(objects, "Service") and not of_kind(objects, "ServiceMonitor")
    assert not any(arg.startswith("--metrics-port") for arg in container(objects)["args"])
    assert all(port["name"] != "metrics" for port in container(objects)["ports"])


def test_log_format(helm: Path) -> None:
    assert "--log-format=plain" in container(render(helm))["args"]
    assert "--log-format=json" in container(render(helm, "--set", "logFormat=json"))["args"]


def test_security_contexts(helm: Path) -> None:
    objects = render(helm)
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(objects)["securityContext"]
    assert context == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The root filesystem is read-only: /tmp is an emptyDir.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(objects)["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert "emptyDir" in volume


def test_replicas_take_turns_through_a_lease_in_their_own_namespace(helm: Path) -> None:
    objects = render(helm, *NAMESPACE_MODE, "--set", "replicaCount=2")
    spec = deployment(objects)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    role, binding = leader(objects, "Role"), leader(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ops"
    assert permissions(role) == LEASES
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    env = {var["name"]: var.get("valueFrom") for var in container(objects)["env"]}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_deployment_runs_the_operator(helm: Path) -> None:
    objects = render(helm, "--set", "image.operator.tag=1.2.3")
    assert deployment(objects)["spec"]["replicas"] == 1
    operator = container(objects)
    assert operator["image"] == "ghcr.io/diartune/operator:1.2.3"
    assert operator["command"] == ["diartune", "operator"]
    # The probe asks kopf's liveness endpoint, on the address the operator is told.
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in operator["ports"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator["args"]


def test_trial_defaults_reach_the_operator(helm: Path) -> None:
    objects = render(
        helm,
        "--set",
        "image.trial.tag=7.0",
        "--set",
        "image.trial.pullPolicy=Always",
        "--set",
        "trialDefaults.gpuResourceName=amd.com/gpu",
        "--set",
        "trialDefaults.nodeSelector.accelerator=mi300",
        "--set",
        "trialDefaults.tolerations[0].key=gpu",
        "--set",
        "trialDefaults.tolerations[0].operator=Exists",
        "--set",
        "trialDefaults.cpuNodeSelector.pool=cpu",
        "--set",
        "trialDefaults.cpuTolerations[0].key=spot",
        "--set",
        "trialDefaults.cpuResources.requests.cpu=500m",
        "--set",
        "trialDefaults.s3Endpoint=http://minio.storage:9000",
        "--set",
        "trialDefaults.artifacts=s3://runs/diartune",
        "--set",
        "logLevel=debug",
    )
    values = env(objects)
    assert values["DIARTUNE_TRIAL_IMAGE"] == "ghcr.io/diartune/trial:7.0"
    assert values["DIARTUNE_TRIAL_IMAGE_PULL_POLICY"] == "Always"
    assert values["DIARTUNE_GPU_RESOURCE"] == "amd.com/gpu"
    assert json.loads(values["DIARTUNE_TRIAL_NODE_SELECTOR"]) == {"accelerator": "mi300"}
    assert json.loads(values["DIARTUNE_TRIAL_TOLERATIONS"]) == [
        {"key": "gpu", "operator": "Exists"}
    ]
    cpu = job_defaults(values)
    assert (cpu.cpu_node_selector, cpu.cpu_tolerations) == ({"pool": "cpu"}, [{"key": "spot"}])
    assert cpu.cpu_requests == {"cpu": "500m", "memory": "4Gi"}
    assert values["DIARTUNE_S3_ENDPOINT"] == "http://minio.storage:9000"
    assert values["DIARTUNE_ARTIFACTS"] == "s3://runs/diartune"
    assert values["DIARTUNE_LOG_LEVEL"] == "debug"


def test_default_trial_image_is_the_specs(helm: Path) -> None:
    values = env(render(helm))
    assert values["DIARTUNE_TRIAL_IMAGE"] == TrialTemplate().image
    assert values["DIARTUNE_GPU_RESOURCE"] == "nvidia.com/gpu"
    assert json.loads(values["DIARTUNE_TRIAL_NODE_SELECTOR"]) == {}
    assert json.loads(values["DIARTUNE_TRIAL_TOLERATIONS"]) == []
    # The chart's trial resources are the operator's own defaults.
    found, expected = job_defaults(values), JobDefaults()
    assert (found.requests, found.limits) == (expected.requests, expected.limits)
    assert (found.cpu_requests, found.cpu_limits) == (expected.cpu_requests, expected.cpu_limits)
    assert (found.cpu_node_selector, found.cpu_tolerations) == ({}, [])


def test_chart_crds_are_installed_from_crds_dir() -> None:
    names = sorted(path.name for path in (CHART / "crds").glob("*.yaml"))
    assert names == ["diartune.io_diarizationtrials.yaml", "diartune.io_diarizationtunings.yaml"]
    assert not list((CHART / "templates").glob("*crd*"))


# --- On a real API server (tests/cluster.py) ---------------------------------------------

# (verb, resource, subresource) the operator must be allowed, and must not be, in a
# watched namespace.
ALLOWED = [
    ("watch", "diarizationtunings.diartune.io", ""),
    ("patch", "diarizationtunings.diartune.io", ""),
    ("update", "diarizationtunings.diartune.io", "status"),
    ("update", "diarizationtunings.diartune.io", "finalizers"),
    ("create", "diarizationtrials.diartune.io", ""),
    ("delete", "diarizationtrials.diartune.io", ""),
    ("patch", "diarizationtrials.diartune.io", "status"),
    ("create", "jobs.batch", ""),
    ("delete", "jobs.batch", ""),
    ("watch", "pods", ""),
    ("create", "events", ""),
    ("create", "events.events.k8s.io", ""),
]
DENIED = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("create", "pods", ""),
    ("get", "pods", "log"),
    ("create", "pods", "exec"),
    ("delete", "diarizationtunings.diartune.io", ""),
    ("create", "diarizationtunings.diartune.io", ""),
    ("update", "jobs.batch", ""),
    ("create", "configmaps", ""),
]


def can(cluster: Cluster, account: str, verb: str, resource: str, sub: str, *scope: str) -> bool:
    """What a SubjectAccessReview says (``kubectl auth can-i``) for the ServiceAccount."""
    args = ["auth", "can-i", verb, resource, f"--as={account}", *scope]
    done = cluster.kubectl(*args, *([f"--subresource={sub}"] if sub else []), check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.fixture
def release(cluster: Cluster, helm: Path) -> Iterator[Callable[..., str]]:
    """Installs the chart in a fresh namespace; returns its ServiceAccount's user name."""
    # The CRDs as in tests/test_crd.py (helm would skip them if present anyway).
    cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    suffix = uuid.uuid4().hex[:6]
    installed: list[tuple[str, str]] = []
    namespaces: list[str] = []

    def install(*args: str, watch: int = 0) -> str:
        namespace = cluster.create_namespace(f"ops-{suffix}")
        watched = [cluster.create_namespace(f"team-{i}-{suffix}") for i in range(watch)]
        namespaces.extend([namespace, *watched])
        name = f"dt{suffix}"
        more = ["--set", f"watchNamespaces={{{','.join(watched)}}}"] if watched else []
        done = subprocess.run(
            [str(helm), "install", name, str(CHART), "-n", namespace, "--skip-crds", *args, *more],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        installed.append((name, namespace))
        return f"system:serviceaccount:{namespace}:{name}-diartune"

    yield install
    for name, namespace in installed:
        subprocess.run(
            [str(helm), "uninstall", name, "-n", namespace, "--wait", "--timeout=60s"],
            env=cluster.env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.cluster
def test_namespace_rbac_on_the_api_server(cluster: Cluster, release: Callable[..., str]) -> None:
    account = release("--set", "rbac.scope=namespace", watch=2)
    namespace = account.split(":")[2]
    watched = [f"team-{i}-{namespace.removeprefix('ops-')}" for i in range(2)]
    for scope in watched:
        for verb, resource, sub in ALLOWED:
            assert can(cluster, account, verb, resource, sub, "-n", scope), (verb, resource, sub)
        for verb, resource, sub in DENIED:
            assert not can(cluster, account, verb, resource, sub, "-n", scope), (verb, resource)
    # Nothing outside the watched namespaces, nothing cluster-wide.
    assert not can(cluster, account, "create", "jobs.batch", "", "-n", namespace)
    assert not can(cluster, account, "list", "namespaces", "")
    assert not can(cluster, account, "watch", "customresourcedefinitions.apiextensions.k8s.io", "")


@pytest.mark.cluster
def test_cluster_rbac_on_the_api_server(cluster: Cluster, release: Callable[..., str]) -> None:
    account = release("--set", "rbac.scope=cluster")
    for verb, resource, sub in ALLOWED:
        assert can(cluster, account, verb, resource, sub, "-n", "default"), (verb, resource)
    for verb, resource, sub in DENIED:
        assert not can(cluster, account, verb, resource, sub, "-A"), (verb, resource, sub)
    # kopf's scanning is off: no namespaces, no CRDs, even cluster-wide.
    assert not can(cluster, account, "watch", "namespaces", "")
    assert not can(cluster, account, "list", "customresourcedefinitions.apiextensions.k8s.io", "")
