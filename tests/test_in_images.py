"""A user's first steps: images in a registry, ``helm install``, ``kubectl apply``.

The operator image built from the Dockerfile is pushed to a CNCF distribution registry,
and the trial image is named as if it came from there; the chart is installed with that
registry's repositories; the node runner (podman mode) runs the chart's operator pod and
the trial pods in their images, by the references the chart and the operator wrote (the
operator's pulled from the registry); data, models and artifacts live in SeaweedFS's S3
gateway.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import yaml
from cluster import FAKE_NODE_TOLERATION, Cluster, cluster_fixture  # noqa: F401
from conftest import ROOT, S3_CREDENTIALS, copy_ami
from containers import PodmanRuntime, images_fixture, podman, skopeo  # noqa: F401
from kubernetes import client, watch
from node_runner import NodeRunner
from operator_run import install_chart
from servers import registry
from test_operator import (  # noqa: F401  (fixture "crds")
    apply,
    condition,
    crds,
    create_namespace,
    list_pods,
    list_trials,
    tuning_manifest,
)

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

RUNNER_NODE = "runner-0"
APP_VERSION = yaml.safe_load((ROOT / "charts/diartune/Chart.yaml").read_text())["appVersion"]
TUNING_TIMEOUT_S = 1800
T = TypeVar("T")


@pytest.fixture
def namespace(cluster: Cluster, crds: None) -> Iterator[str]:  # noqa: F811
    """A namespace like test_operator's, with SeaweedFS's credentials (it checks them)."""
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    name = create_namespace(cluster, {key: S3_CREDENTIALS[key] for key in keys})
    yield name
    client.CoreV1Api(cluster.api_client()).delete_namespace(name)


@pytest.fixture(scope="module")
def pushed(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry; both images are named ``<registry>/diartune/<target>:<appVersion>``.

    The operator image is pushed there, and its pod pulls it (``pullPolicy: Always``). The
    trial image is only tagged with that name, as on a node that pulled it before: copying
    its 8.5 GB through the registry took 150 s and 8.5 GB of disk, and pulling is the
    operator's case again.
    """
    folder = tmp_path_factory.mktemp("registry")
    with registry(folder) as address:
        started = time.monotonic()
        # Uncompressed layers: their digests are the built layers' own, so pulling them
        # back reuses the layers in storage.
        skopeo(
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-decompress",
            f"containers-storage:{images['operator']}",
            f"docker://{address}/diartune/operator:{APP_VERSION}",
        )
        print(f"pushed the operator image in {time.monotonic() - started:.0f} s", file=sys.stderr)
        podman("tag", images["trial"], f"{address}/diartune/trial:{APP_VERSION}")
        yield address
        for target in images:
            podman("rmi", "--ignore", f"{address}/diartune/{target}:{APP_VERSION}")
    shutil.rmtree(folder)  # 9 GB that pytest would otherwise keep for three runs


@pytest.fixture(scope="module")
def runner(cluster: Cluster, pushed: str) -> Iterator[NodeRunner]:
    """Runs the pods of ``runner-0`` in their images, pulling them from the registry."""
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


def runner_manifest(name: str, trials: int, parallel: int, endpoint: str) -> dict[str, Any]:
    """A clustering tuning on the runner node and the S3 data; the trial image left to the
    chart."""
    manifest = tuning_manifest(
        name,
        trials=trials,
        parallel=parallel,
        node_selector={"kubernetes.io/hostname": RUNNER_NODE},
        endpoint=endpoint,
        corpus="ami-test",
    )
    del manifest["spec"]["trialTemplate"]["image"]
    return manifest


def two_stage_manifest(endpoint: str) -> dict[str, Any]:
    """Fine-tuning (one epoch of two batches), then clustering."""
    manifest = runner_manifest("first", trials=2, parallel=2, endpoint=endpoint)
    spec = manifest["spec"]
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
    namespace: str,
    runner: NodeRunner,
    pushed: str,
    s3_data: str,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    pod = install_and_start_the_operator(cluster, namespace, runner, pushed)
    print(f"operator pod Running after {time.monotonic() - started:.0f} s", file=sys.stderr)

    apply(cluster, namespace, two_stage_manifest(s3_data), tmp_path)
    finished = functools.partial(tuning_status, cluster, namespace, "first", final=True)
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
    assert "Traceback" not in runner.log(namespace, pod.metadata.name)

    s3 = boto3.client("s3", endpoint_url=s3_data)
    listing = s3.list_objects_v2(Bucket="artifacts", Prefix=f"{namespace}/first/")
    keys = {item["Key"] for item in listing["Contents"]}
    for trial in trials:
        name = trial["metadata"]["labels"]["diartune.io/trial"]
        assert f"{namespace}/first/trials/{name}/result.json" in keys, sorted(keys)
    assert status["pipeline"].startswith(f"s3://artifacts/{namespace}/first/")


def test_a_trial_image_that_cannot_be_pulled_stays_in_image_pull_back_off_until_its_deadline(
    cluster: Cluster,
    namespace: str,
    runner: NodeRunner,
    pushed: str,
    s3_data: str,
    tmp_path: Path,
) -> None:
    """A trial image tag the registry does not have (a typo in the chart's values): the trial
    pod stays Pending in ImagePullBackOff, as on a real node, until the Job's
    activeDeadlineSeconds fails the trial, whose message says why its pod could not start;
    the tuning then stops at maxFailedTrialCount."""
    install_and_start_the_operator(
        cluster, namespace, runner, pushed, "image.trial.tag=no-such-tag"
    )
    manifest = runner_manifest("wrong-tag", trials=1, parallel=1, endpoint=s3_data)
    spec = manifest["spec"]
    spec["trialTemplate"]["activeDeadlineSeconds"] = 20
    spec["maxFailedTrialCount"] = 0
    core = client.CoreV1Api(cluster.api_client())
    since = core.list_namespaced_pod(namespace).metadata.resource_version
    apply(cluster, namespace, manifest, tmp_path)
    finished = functools.partial(tuning_status, cluster, namespace, "wrong-tag", final=True)
    status = wait_for(finished, 300, "the tuning to stop", runner, namespace)
    assert status["phase"] == "Failed", status
    [trial] = list_trials(cluster, namespace, "wrong-tag")
    assert trial["status"]["state"] == "Failed"
    message = trial["status"]["message"]
    assert message.startswith("DeadlineExceeded"), trial["status"]
    # The Job controller deleted the pod at the deadline; the operator kept why it waited.
    assert "; its pod could not start: " in message, message
    assert f"{pushed}/diartune/trial:no-such-tag" in message, message
    # Every status the pod had, replayed from the API server's watch cache: the waiting
    # states are seen whatever the timing of this test.
    waiting = [
        state.waiting
        for event in watch.Watch().stream(
            core.list_namespaced_pod, namespace, resource_version=since, timeout_seconds=5
        )
        for container in event["object"].status.container_statuses or []
        if (state := container.state).waiting is not None
    ]
    assert [w.reason for w in waiting][:2] == ["ErrImagePull", "ImagePullBackOff"], waiting
    assert all(f"{pushed}/diartune/trial:no-such-tag" in w.message for w in waiting)


def install_and_start_the_operator(
    cluster: Cluster, namespace: str, runner: NodeRunner, pushed: str, *values: str
) -> client.V1Pod:
    """``helm install`` with the images of ``pushed`` (and ``--set`` ``values``), the pods on
    the runner node; the chart's operator pod once it is Running in its image."""
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
            *(f"--set={value}" for value in values),
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
    return pod


def tuning_status(
    cluster: Cluster, namespace: str, name: str, final: bool = False
) -> dict[str, Any] | None:
    """The tuning's status; with ``final``, None until it Succeeded or Failed."""
    tuning = client.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(
        "diartune.io", "v1alpha1", namespace, "diarizationtunings", name
    )
    status = tuning.get("status") or {}
    return status if not final or status.get("phase") in ("Succeeded", "Failed") else None


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
