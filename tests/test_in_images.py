"""A user's first steps: images pushed to a registry, ``helm install``, ``kubectl apply``.

The images built from the Dockerfile are pushed to a CNCF distribution registry; the chart
is installed with that registry's repositories; the node runner (podman mode) runs the
chart's operator pod and the trial pods in the images it pulls by the references the
chart and the operator wrote; data, models and artifacts live in SeaweedFS's S3 gateway.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import yaml
from cluster import FAKE_NODE_TOLERATION, Cluster, cluster_fixture  # noqa: F401
from conftest import ROOT, copy_ami
from containers import PodmanRuntime, images_fixture, podman, skopeo  # noqa: F401
from kubernetes import client
from node_runner import NodeRunner
from operator_run import install_chart
from servers import registry
from test_operator import (  # noqa: F401  (fixtures "crds" and "namespace")
    apply,
    condition,
    crds,
    list_pods,
    list_trials,
    namespace,
    tuning_manifest,
)

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

RUNNER_NODE = "runner-0"
APP_VERSION = yaml.safe_load((ROOT / "charts/diartune/Chart.yaml").read_text())["appVersion"]
TUNING_TIMEOUT_S = 1800
T = TypeVar("T")


@pytest.fixture(scope="module")
def pushed(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry holding both images as ``<registry>/diartune/<target>:<appVersion>``."""
    with registry(tmp_path_factory.mktemp("registry")) as address:
        for target, image in images.items():
            started = time.monotonic()
            destination = f"{address}/diartune/{target}:{APP_VERSION}"
            # zstd at level 1: the trial image's 8 GB compress in a minute or two.
            skopeo(
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-compress-format=zstd",
                "--dest-compress-level=1",
                f"containers-storage:{image}",
                f"docker://{destination}",
            )
            print(f"pushed {target} in {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield address
        for target in images:  # the pulled names; the built images stay
            podman("rmi", "--ignore", f"{address}/diartune/{target}:{APP_VERSION}")


@pytest.fixture(scope="module")
def runner(cluster: Cluster, pushed: str) -> Iterator[NodeRunner]:
    """Runs the pods of ``runner-0`` in their images, pulled from the registry."""
    cluster.add_runner_node(RUNNER_NODE)
    podman_mode = PodmanRuntime(cluster.api_client(), insecure_registries=[pushed])
    with NodeRunner(cluster.api_client(), RUNNER_NODE, podman=podman_mode) as running:
        yield running
    assert running.errors == []


@pytest.fixture(scope="module")
def s3_data(
    seaweedfs_endpoint: str, models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """ami-debug with a test subset and the models on SeaweedFS; returns the endpoint."""
    s3 = boto3.client("s3", endpoint_url=seaweedfs_endpoint)
    for bucket in ("corpus", "models", "artifacts"):
        s3.create_bucket(Bucket=bucket)
    database = copy_ami(tmp_path_factory.mktemp("corpus") / "ami-test", test_subset=True)
    for path in sorted(database.parent.iterdir()):
        s3.upload_file(str(path), "corpus", f"ami-test/{path.name}")
    for path in models:
        s3.upload_file(str(path), "models", path.name)
    return seaweedfs_endpoint


def two_stage_manifest(endpoint: str) -> dict[str, Any]:
    """Fine-tuning (one epoch of two batches) then clustering; the trial image left to the chart."""
    manifest = tuning_manifest(
        "first",
        trials=2,
        parallel=2,
        node_selector={"kubernetes.io/hostname": RUNNER_NODE},
        endpoint=endpoint,
        corpus="ami-test",
    )
    spec = manifest["spec"]
    del spec["trialTemplate"]["image"]
    spec["stages"].insert(
        0,
        {
            "name": "segmentation",
            "fineTune": {"maxEpochs": 1, "batchesPerEpoch": 2},
            "searchSpace": {
                "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}
            },
            "maxTrialCount": 1,
        },
    )
    return manifest


def test_helm_install_and_kubectl_apply_run_the_operator_and_trials_in_the_images(
    cluster: Cluster,
    namespace: str,  # noqa: F811  (the fixture imported from test_operator)
    runner: NodeRunner,
    pushed: str,
    s3_data: str,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    on_runner = {"kubernetes.io/hostname": RUNNER_NODE}
    install_chart(
        cluster,
        namespace,
        values=[
            f"--set=image.operator.repository={pushed}/diartune/operator",
            "--set=image.operator.pullPolicy=Always",
            f"--set=image.trial.repository={pushed}/diartune/trial",
            f"--set-json=nodeSelector={json.dumps(on_runner)}",
            f"--set-json=tolerations={json.dumps([FAKE_NODE_TOLERATION])}",
        ],
    )
    core = client.CoreV1Api(cluster.api_client())

    def operator_pod() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator"
        )
        running = [pod for pod in pods.items if pod.status.phase == "Running"]
        return running[0] if running else None

    pod = wait_for(operator_pod, 300, "the chart's operator pod Running", runner, namespace)
    assert pod.spec.containers[0].image == f"{pushed}/diartune/operator:{APP_VERSION}"
    print(f"operator pod Running after {time.monotonic() - started:.0f} s", file=sys.stderr)

    apply(cluster, namespace, two_stage_manifest(s3_data), tmp_path)

    def finished() -> dict[str, Any] | None:
        tuning = client.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(
            "diartune.io", "v1alpha1", namespace, "diarizationtunings", "first"
        )
        status = tuning.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, TUNING_TIMEOUT_S, "the tuning to finish", runner, namespace)
    print(f"tuning finished after {time.monotonic() - started:.0f} s", file=sys.stderr)
    assert status["phase"] == "Succeeded", (
        status,
        runner.log(namespace, pod.metadata.name)[-5000:],
    )
    assert condition(status, "Succeeded")["status"] == "True"
    assert isinstance(status["testDer"], float)

    trials = [t for t in list_trials(cluster, namespace, "first") if t["spec"]["number"] >= 0]
    assert sorted(t["spec"]["stage"] for t in trials) == [
        "clustering",
        "clustering",
        "segmentation",
    ]
    assert all(t["status"]["state"] == "Succeeded" for t in trials), trials

    trial_image = f"{pushed}/diartune/trial:{APP_VERSION}"
    job_pods = list_pods(cluster, namespace)
    assert {p.spec.containers[0].image for p in job_pods} == {trial_image}
    assert {p.status.phase for p in job_pods} == {"Succeeded"}
    assert podman("image", "exists", trial_image, check=False).returncode == 0  # pulled
    assert "Traceback" not in runner.log(namespace, pod.metadata.name)

    s3 = boto3.client("s3", endpoint_url=s3_data)
    listing = s3.list_objects_v2(Bucket="artifacts", Prefix=f"{namespace}/first/")
    keys = {item["Key"] for item in listing["Contents"]}
    for trial in trials:
        name = trial["metadata"]["labels"]["diartune.io/trial"]
        assert f"{namespace}/first/trials/{name}/result.json" in keys, sorted(keys)
    assert status["pipeline"].startswith(f"s3://artifacts/{namespace}/first/")


def wait_for(
    check: Callable[[], T | None], timeout: float, what: str, runner: NodeRunner, in_namespace: str
) -> T:
    """Poll ``check()`` until it returns something truthy; fail on node runner errors.

    On a timeout, the message shows the pods of ``in_namespace`` and what each printed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert runner.errors == [], runner.errors
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}\n"
                + pods_report(runner, in_namespace)
            )
        time.sleep(1)


def pods_report(runner: NodeRunner, in_namespace: str) -> str:
    """Each pod of ``in_namespace``: its phase, node, container state and output."""
    pods = client.CoreV1Api(runner.core.api_client).list_namespaced_pod(in_namespace).items
    lines = []
    for pod in pods:
        statuses = [s.state.to_dict() for s in pod.status.container_statuses or []]
        lines.append(f"{pod.metadata.name} {pod.status.phase} on {pod.spec.node_name}: {statuses}")
        lines.append(runner.log(in_namespace, pod.metadata.name)[-3000:])
    return "\n".join(lines)
