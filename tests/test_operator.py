"""The operator end to end on the real control plane of tests/cluster.py.

``diartune operator`` runs as a process with the token of the ServiceAccount that the
Helm chart installs (namespace mode), so the chart's RBAC is what it gets; trials of the
runner node (``runner-0``) really run (``diartune trial`` via tests/node_runner.py) on
ami-debug served by an S3 server, and trials on KWOK's fake GPU nodes just stay Running.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cluster import (
    FAKE_NODE_TOLERATION,
    Cluster,
    cluster_fixture,  # noqa: F401  (provides the session fixture "cluster")
)
from conftest import PROTOCOL, ROOT, VBX_SPACE, copy_ami, trained
from hub_cache import add_repository
from kubernetes import client
from node_runner import NodeRunner
from operator_run import Operator, install_chart
from prometheus_client.samples import Sample

pytestmark = pytest.mark.cluster

RUNNER_NODE = "runner-0"
CRDS = ROOT / "charts" / "diartune" / "crds"
GROUP, VERSION = "diartune.io", "v1alpha1"
TUNINGS, TRIALS = "diarizationtunings", "diarizationtrials"
LABEL_TUNING = "diartune.io/tuning"
CREDENTIALS = "s3-credentials"
EXTRA = "canary-extra"
HF_TOKEN = "hf-token"
HUB_EMBEDDING = "diartune-test/embedding"
TRIAL_TIMEOUT_S = 900
#: What the chart gives the container of a trial that only runs the pipeline: no GPU.
CHART_VALUES = yaml.safe_load((ROOT / "charts" / "diartune" / "values.yaml").read_text())
CPU_RESOURCES = CHART_VALUES["trialDefaults"]["cpuResources"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    """The chart's CRDs, installed and established."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        f"crd/{TUNINGS}.{GROUP}",
        f"crd/{TRIALS}.{GROUP}",
        "--timeout=60s",
    )


def canaries(namespace: str) -> dict[str, dict[str, str]]:
    """The Secrets of a test namespace, by name: values that must never show anywhere."""
    return {
        CREDENTIALS: {
            "AWS_ACCESS_KEY_ID": f"canary-{namespace}-key-id",
            "AWS_SECRET_ACCESS_KEY": f"canary-{namespace}-secret-key",
        },
        EXTRA: {"VALUE": f"canary-{namespace}-extra"},
        HF_TOKEN: {"HF_TOKEN": f"hf_canary{namespace.replace('-', '')}token"},
    }


def create_namespace(cluster: Cluster, real_credentials: dict[str, str] | None = None) -> str:
    """A fresh namespace that enforces Pod Security "restricted", with the tunings' Secrets:
    canary values (moto accepts any key), or ``real_credentials`` for the S3 Secret."""
    name = cluster.create_namespace(
        f"op-{uuid.uuid4().hex[:8]}", labels={"pod-security.kubernetes.io/enforce": "restricted"}
    )
    secrets = canaries(name)
    if real_credentials is not None:
        secrets[CREDENTIALS] = real_credentials
    for secret, values in secrets.items():
        data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
        client.CoreV1Api(cluster.api_client()).create_namespaced_secret(
            name, {"metadata": {"name": secret}, "data": data}
        )
    return name


@pytest.fixture
def namespace(cluster: Cluster, crds: None) -> Iterator[str]:
    """A namespace of ``create_namespace`` with canary Secrets, deleted afterwards."""
    name = create_namespace(cluster)
    yield name
    client.CoreV1Api(cluster.api_client()).delete_namespace(name)


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """The operator, watching ``namespace`` with the chart's RBAC, logging JSON lines; it
    must log no error."""
    kubeconfig = install_chart(cluster, namespace)
    log = tmp_path / "operator.log"
    running = Operator(cluster, namespace, log, kubeconfig, log_format="json")
    running.start()
    yield running
    running.stop()
    assert running.errors() == [], running.log.read_text("utf-8")[-5000:]


@pytest.fixture(scope="module")
def runner(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRunner]:
    """Runs the pods of ``runner-0``: ``diartune`` is this interpreter's ``-m diartune``,
    forked from a process that has imported the trial's modules."""
    cluster.add_runner_node(RUNNER_NODE)
    # Trials get their S3 credentials from the Secret only, through secretKeyRef.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["DIARTUNE_CACHE"] = str(tmp_path_factory.mktemp("trial-scratch"))
    executables = {"diartune": [sys.executable, "-m", "diartune"]}
    preload = ["diartune.cli", "diartune.trial.run"]
    with NodeRunner(
        cluster.api_client(), RUNNER_NODE, executables=executables, base_env=env, preload=preload
    ) as running:
        yield running
    assert running.errors == []


@pytest.fixture(scope="module")
def s3_data(
    s3_endpoint: str, models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """ami-debug (with and without a test subset) and the models, on the S3 server."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("corpus", "models", "artifacts"):
        s3.create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("corpora")
    for prefix, test_subset in (("ami", False), ("ami-test", True)):
        database = copy_ami(folder / prefix, test_subset=test_subset)
        for path in sorted(database.parent.iterdir()):
            s3.upload_file(str(path), "corpus", f"{prefix}/{path.name}")
    for path in models:
        s3.upload_file(str(path), "models", path.name)
    return {"endpoint": s3_endpoint}


@pytest.fixture(scope="module")
def hub_embedding(models: tuple[Path, Path]) -> Iterator[tuple[Path, str]]:
    """The offline embedding as a Hugging Face repository in a hub-layout cache folder,
    and its commit: what an air-gapped trial image holds at its HF_HUB_CACHE. Not under
    /tmp, which is the trial pod's emptyDir."""
    from diartune.storage import cache_root

    (cache_root() / "test-hub").mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(dir=cache_root() / "test-hub"))
    yield cache, add_repository(cache, HUB_EMBEDDING, {"pytorch_model.bin": models[1]})
    shutil.rmtree(cache)


@pytest.fixture(scope="module")
def gpu_pool(cluster: Cluster) -> dict[str, str]:
    """Two fake (KWOK) nodes with one GPU each, labelled pool=op: their pods never end."""
    cluster.add_gpu_nodes(2, gpus_per_node=1, prefix="op-gpu-", labels={"pool": "op"})
    return {"pool": "op"}


# --------------------------------------------------------------------------- helpers


def tuning_manifest(
    name: str,
    trials: int,
    parallel: int,
    node_selector: dict[str, str],
    endpoint: str = "http://127.0.0.1:1",
    corpus: str = "ami",
) -> dict[str, Any]:
    """A clustering-only tuning whose data, models and artifacts are on S3; its trials
    ask for the chart's default resources (no GPU)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DiarizationTuning",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "database": f"s3://corpus/{corpus}/database.yml",
                "protocol": PROTOCOL,
                "s3": {"endpoint": endpoint, "credentialsSecret": CREDENTIALS},
            },
            "pipeline": {
                "segmentation": "s3://models/segmentation.ckpt",
                "embedding": "s3://models/embedding.ckpt",
            },
            "stages": [
                {
                    "name": "clustering",
                    "searchSpace": {
                        "clustering.threshold": {"type": "float", "low": 0.05, "high": 1.2},
                        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 10},
                    },
                    "maxTrialCount": trials,
                }
            ],
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": parallel,
            "maxFailedTrialCount": 1,
            "artifacts": "s3://artifacts",
            "trialTemplate": {
                "image": "diartune-trial:test",
                "nodeSelector": node_selector,
                "tolerations": [FAKE_NODE_TOLERATION],
                "activeDeadlineSeconds": TRIAL_TIMEOUT_S,
                "env": [
                    {
                        "name": "EXTRA",
                        "valueFrom": {"secretKeyRef": {"name": EXTRA, "key": "VALUE"}},
                    }
                ],
            },
        },
    }


def runner_tuning(
    name: str, trials: int, parallel: int, s3_data: dict[str, str], corpus: str = "ami"
) -> dict[str, Any]:
    """A tuning whose trials really run, on the runner node, with data on the S3 server."""
    return tuning_manifest(
        name,
        trials=trials,
        parallel=parallel,
        node_selector={"kubernetes.io/hostname": RUNNER_NODE},
        endpoint=s3_data["endpoint"],
        corpus=corpus,
    )


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any], tmp_path: Path) -> None:
    """``kubectl apply -f`` the manifest, as a user would."""
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))


def custom(cluster: Cluster) -> client.CustomObjectsApi:
    """The custom-objects API of the cluster."""
    return client.CustomObjectsApi(cluster.api_client())


def get_tuning(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The tuning as stored."""
    return dict(
        custom(cluster).get_namespaced_custom_object(GROUP, VERSION, namespace, TUNINGS, name)
    )


def list_trials(cluster: Cluster, namespace: str, tuning: str) -> list[dict[str, Any]]:
    """The DiarizationTrials of a tuning."""
    listing = custom(cluster).list_namespaced_custom_object(
        GROUP, VERSION, namespace, TRIALS, label_selector=f"{LABEL_TUNING}={tuning}"
    )
    return list(listing["items"])


def list_jobs(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    """The namespace's Jobs."""
    return list(client.BatchV1Api(cluster.api_client()).list_namespaced_job(namespace).items)


def trials_of(job: client.V1Job) -> list[str]:
    """The trials a Job runs, in turn: those its diartune.io/trials annotation lists, else
    the one its label names."""
    listed = (job.metadata.annotations or {}).get("diartune.io/trials")
    return listed.split(",") if listed else [job.metadata.labels["diartune.io/trial"]]


def job_resources(job: client.V1Job) -> dict[str, dict[str, str]]:
    """The requests and limits of a Job's trial container."""
    [container] = job.spec.template.spec.containers
    return {"requests": container.resources.requests, "limits": container.resources.limits}


def list_pods(cluster: Cluster, namespace: str) -> list[client.V1Pod]:
    """The namespace's Job pods (not the chart's own operator pod, which stays Pending)."""
    api = client.CoreV1Api(cluster.api_client())
    pods = api.list_namespaced_pod(namespace, label_selector="batch.kubernetes.io/job-name")
    return list(pods.items)


def wait(what: str, check: Callable[[], Any], timeout: float, operator: Operator) -> Any:
    """Poll ``check()`` every half second until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert operator.process is None or operator.process.poll() is None, (
            "the operator died:\n" + operator.log.read_text("utf-8")[-5000:]
        )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}\n"
                + operator.log.read_text("utf-8")[-5000:]
            )
        time.sleep(0.5)


def phase_is(cluster: Cluster, namespace: str, name: str, *phases: str) -> Callable[[], Any]:
    """A check that the tuning's status reached one of ``phases`` (returns the status)."""

    def check() -> Any:
        status = get_tuning(cluster, namespace, name).get("status") or {}
        return status if status.get("phase") in phases else None

    return check


def finished(cluster: Cluster, namespace: str, name: str, operator: Operator) -> Any:
    """Wait until the tuning Succeeded or Failed (a trial's time at most); its status."""
    return wait(
        "phase Succeeded",
        phase_is(cluster, namespace, name, "Succeeded", "Failed"),
        TRIAL_TIMEOUT_S,
        operator,
    )


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition ``kind`` of a status."""
    return next(c for c in status["conditions"] if c["type"] == kind)


def events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """The reasons of the Events on tuning ``name``."""
    listing = client.CoreV1Api(cluster.api_client()).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [event.reason for event in listing.items]


def total(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` with these labels; None when there is none."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return sum(found) if found else None


def check_metrics(operator: Operator, namespace: str, tuning: str, status: dict[str, Any]) -> None:
    """The operator's /metrics say what the tuning's status says."""
    samples = operator.metrics()
    of = {"namespace": namespace, "tuning": tuning}
    search, evaluation = of | {"kind": "search"}, of | {"kind": "evaluation"}
    done, failed = status["trialsDone"], status["trialsFailed"]
    assert total(samples, "diartune_trials_launched_total", **search) == done
    assert total(samples, "diartune_trials_succeeded_total", **search) == done - failed
    assert total(samples, "diartune_trials_failed_total", **search) == failed
    assert total(samples, "diartune_trials_running", **of) == status["trialsRunning"]
    assert total(samples, "diartune_trials_succeeded_total", **evaluation) == 3
    assert total(samples, "diartune_best_der", **of) == status["bestDer"]
    assert total(samples, "diartune_test_der", **of) == status["testDer"]
    assert total(samples, "diartune_reconcile_errors_total", **of) == 0
    asks = total(samples, "diartune_smac_ask_seconds_count")
    assert asks is not None and asks >= done  # prepared asks may run ahead of launches
    assert total(samples, "diartune_leading") == 1


def check_json_log(operator: Operator, namespace: str, tuning: str) -> None:
    """Each line of the operator's log is a JSON object; those about a trial name it."""
    records = [json.loads(line) for line in operator.lines() if line.strip()]
    launched = [r for r in records if r["message"].endswith(": launched")]
    assert len(launched) == 3 + 3, launched  # the search trials and the evaluations
    for record in launched:
        assert (record["namespace"], record["tuning"]) == (namespace, tuning), record
        assert record["message"] == f"{namespace}/{tuning}: {record['trial']}: launched"
    assert any(r.get("trial") and "NewBest" in r["message"] for r in records)


def leaks(
    cluster: Cluster, namespace: str, s3: Any, operator: Operator, runner: NodeRunner
) -> list[str]:
    """Where a canary of the namespace's Secrets shows: annotations, statuses, events,
    Jobs, pods (specs and statuses), the operator's log, the trials' output, artifacts."""
    values = [value for secret in canaries(namespace).values() for value in secret.values()]
    places = {
        kind: cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
        for kind in ("dtune", "dtrial", "jobs", "pods", "events", "configmaps")
    }
    places["operator log"] = operator.log.read_text("utf-8")
    for pod in list_pods(cluster, namespace):
        places[f"output of {pod.metadata.name}"] = runner.log(namespace, pod.metadata.name)
    listing = s3.list_objects_v2(Bucket="artifacts", Prefix=f"{namespace}/")
    for item in listing.get("Contents", []):
        body = s3.get_object(Bucket="artifacts", Key=item["Key"])["Body"].read()
        places[item["Key"]] = body.decode("utf-8", errors="replace")
    return [
        f"{value} in {where}" for where, text in places.items() for value in values if value in text
    ]


# --------------------------------------------------------------------------- tests


def test_tuning_runs_real_trials_to_success(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    runner: NodeRunner,
    s3_data: dict[str, str],
    tmp_path: Path,
) -> None:
    """kubectl apply -> trials on the runner node -> Succeeded, with kubectl showing it."""
    started = time.monotonic()
    manifest = runner_tuning("ami", 3, 2, s3_data, corpus="ami-test")
    apply(cluster, namespace, manifest, tmp_path)
    status = finished(cluster, namespace, "ami", operator)
    print(f"tuning took {time.monotonic() - started:.0f} s", file=sys.stderr)
    assert status["phase"] == "Succeeded", status
    trials = [t for t in list_trials(cluster, namespace, "ami") if t["spec"]["number"] >= 0]
    assert len(trials) == 3
    assert all(t["status"]["state"] == "Succeeded" for t in trials), trials
    ders = {t["metadata"]["name"]: t["status"]["der"] for t in trials}
    assert status["bestDer"] == min(ders.values())
    assert ders[status["bestTrial"]["name"]] == status["bestDer"]
    assert (status["trialsDone"], status["trialsRunning"], status["progress"]) == (3, 0, "3/3")
    assert isinstance(status["testDer"], float)
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Running")["status"] == "False"
    check_metrics(operator, namespace, "ami", status)
    check_json_log(operator, namespace, "ami")
    # Its pods were forked (tests/fork_server.py), else each imports torch afresh.
    assert {p.name for p in runner.pods.values() if p.namespace == namespace} <= set(runner.forked)

    table = cluster.kubectl("get", "dtune", "-n", namespace).stdout
    [header, row] = table.splitlines()
    assert header.split() == [
        *("NAME", "PHASE", "STAGE", "TRIALS", "RUNNING", "FAILED"),
        *("BEST", "DER", "TEST", "DER", "AGE"),
    ]
    best, test = (f"{100 * status[key]:.2f} %" for key in ("bestDer", "testDer"))
    assert f"3/3 0 0 {best} {test}" in " ".join(row.split()), table
    trials_table = cluster.kubectl(
        "get", "dtrial", "-n", namespace, "-l", f"{LABEL_TUNING}=ami"
    ).stdout
    assert trials_table.count("Succeeded") == 3 + 3, trials_table  # trials and evaluations
    for trial in trials:
        line = next(x for x in trials_table.splitlines() if x.startswith(trial["metadata"]["name"]))
        assert f"{100 * trial['status']['der']:.2f} %" in line, trials_table
    described = cluster.kubectl("describe", "dtune", "ami", "-n", namespace).stdout
    assert "TuningSucceeded" in described and "Best Der" in described, described
    assert "Missed Speech Seconds" in described and "Der Percent" in described, described
    print(table, trials_table, described, sep="\n", file=sys.stderr)

    s3 = boto3.client("s3", endpoint_url=s3_data["endpoint"])
    keys = {
        item["Key"]
        for item in s3.list_objects_v2(Bucket="artifacts", Prefix=f"{namespace}/ami/")["Contents"]
    }
    for trial in trials:
        trial_name = trial["metadata"]["labels"]["diartune.io/trial"]
        assert f"{namespace}/ami/trials/{trial_name}/result.json" in keys
        assert trial["status"]["artifacts"] == f"s3://artifacts/{namespace}/ami/trials/{trial_name}"
    winner = status["bestTrial"]["name"].removeprefix("ami-")
    exported = f"{namespace}/ami/trials/{winner}-test/pipeline"
    assert f"{exported}/config.yaml" in keys, sorted(keys)
    assert status["pipeline"] == f"s3://artifacts/{exported}"
    # clustering-000 ran min_cluster_size 10 (pyannote's 12 is outside the range), so
    # the defaults were also scored on development by an evaluation of their own.
    evaluations = {f"ami-{winner}-test", "ami-defaults-test", "ami-defaults-development"}
    assert isinstance(status["defaultDer"], float) and isinstance(status["defaultTestDer"], float)

    created = list_jobs(cluster, namespace)
    jobs = {job.metadata.name for job in created}
    # A clustering stage runs several trials per pod by default (trialsPerPod), each
    # trial in one Job only; each evaluation runs alone.
    runs = {job.metadata.name: trials_of(job) for job in created}
    assert runs["ami-clustering-000"] == ["clustering-000", "clustering-001"], runs
    ran = sorted(trial for listed in runs.values() for trial in listed)
    assert ran == sorted([t["spec"]["name"] for t in trials] + [e[4:] for e in evaluations])
    assert evaluations <= jobs
    for job in created:  # clustering trials and evaluations: CPU and memory, no GPU
        assert job_resources(job) == CPU_RESOURCES, job.metadata.name
    pods = list_pods(cluster, namespace)
    per_job = sorted(pod.metadata.labels["job-name"] for pod in pods)
    assert per_job == sorted(jobs), per_job  # every Job ran exactly one pod
    assert {pod.spec.node_name for pod in pods} == {RUNNER_NODE}
    reasons = events(cluster, namespace, "ami")
    assert {"NewBest", "StageFinished", "Evaluating", "TuningSucceeded"} <= set(reasons), reasons
    assert leaks(cluster, namespace, s3, operator, runner) == []
    check_warm_start(cluster, namespace, operator, manifest, tmp_path)


def check_warm_start(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    earlier: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A tuning of the same problem imports the finished tuning's 3 trials (suspended, it
    runs none); a folder in warmStartFrom is refused, naming the field."""
    for name, source in (("again", earlier["metadata"]["name"]), ("folder", "runs/v1")):
        manifest = copy.deepcopy(earlier)
        manifest["metadata"]["name"] = name
        manifest["spec"]["suspend"] = True
        manifest["spec"]["optimizer"]["warmStartFrom"] = [source]
        apply(cluster, namespace, manifest, tmp_path)
    status = wait(
        "again suspended", phase_is(cluster, namespace, "again", "Suspended"), 60, operator
    )
    assert (status["trialsImported"], status["trialsDone"]) == (3, 0), status
    refused = wait("folder failed", phase_is(cluster, namespace, "folder", "Failed"), 60, operator)
    assert refused["message"].startswith("spec.optimizer.warmStartFrom[0]: 'runs/v1'"), refused


def test_vbx_tuning_with_a_hub_embedding_a_token_secret_and_a_plda_on_s3(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    runner: NodeRunner,
    s3_data: dict[str, str],
    hub_embedding: tuple[Path, str],
    offline_plda: Path,
    tmp_path: Path,
) -> None:
    """VBx's threshold, Fa and Fb tuned on the cluster: the embedding is a hub id read
    offline from the Hugging Face cache, the token comes from a Secret and shows nowhere,
    the PLDA is read from S3, and the exported pipeline carries it."""
    s3 = boto3.client("s3", endpoint_url=s3_data["endpoint"])
    for path in sorted(offline_plda.iterdir()):
        s3.upload_file(str(path), "models", f"plda/{path.name}")
    cache, commit = hub_embedding
    manifest = runner_tuning("vbx", 2, 2, s3_data, corpus="ami-test")
    spec = manifest["spec"]
    spec["pipeline"] |= {
        "embedding": f"{HUB_EMBEDDING}@{commit}",
        "clustering": "VBxClustering",
        "plda": "s3://models/plda",
        "tokenSecret": HF_TOKEN,
    }
    spec["stages"][0]["searchSpace"] = VBX_SPACE
    spec["optimizer"]["initialDesignSize"] = 1
    spec["trialTemplate"]["env"] += [
        {"name": "HF_HUB_CACHE", "value": str(cache)},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]
    apply(cluster, namespace, manifest, tmp_path)
    status = finished(cluster, namespace, "vbx", operator)
    trials = [t for t in list_trials(cluster, namespace, "vbx") if t["spec"]["number"] >= 0]
    assert status["phase"] == "Succeeded", [t["status"] for t in trials]
    assert len(trials) == 2 and all(t["status"]["state"] == "Succeeded" for t in trials)
    for trial in trials:  # each ran VBx with its own threshold, Fa and Fb
        assert set(VBX_SPACE) <= set(trial["spec"]["params"]), trial["spec"]
    assert set(VBX_SPACE) <= set(status["bestTrial"]["params"]), status["bestTrial"]
    assert isinstance(status["testDer"], float)

    winner = status["bestTrial"]["name"].removeprefix("vbx-")
    exported = f"{namespace}/vbx/trials/{winner}-test/pipeline"
    config = s3.get_object(Bucket="artifacts", Key=f"{exported}/config.yaml")["Body"].read()
    assert yaml.safe_load(config)["pipeline"]["params"]["clustering"] == "VBxClustering"
    for path in sorted(offline_plda.iterdir()):
        body = s3.get_object(Bucket="artifacts", Key=f"{exported}/plda/{path.name}")["Body"]
        assert body.read() == path.read_bytes()
    assert leaks(cluster, namespace, s3, operator, runner) == []


def test_an_evicted_fine_tuning_pod_resumes_from_its_last_epoch(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    runner: NodeRunner,
    s3_data: dict[str, str],
    tmp_path: Path,
) -> None:
    """A fine-tuning trial's pod evicted once it saved an epoch: the Job ignores the
    disruption, its next pod resumes from the state in S3 and trains only what was left."""
    manifest = runner_tuning("evicted", 1, 1, s3_data, corpus="ami-test")
    manifest["spec"]["stages"] = [
        {
            "name": "segmentation",
            "fineTune": {"maxEpochs": 4, "batchesPerEpoch": 20},
            "searchSpace": {
                "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}
            },
            "maxTrialCount": 1,
        }
    ]
    manifest["spec"]["optimizer"]["initialDesignSize"] = 0
    apply(cluster, namespace, manifest, tmp_path)
    s3 = boto3.client("s3", endpoint_url=s3_data["endpoint"])
    state = f"{namespace}/evicted/trials/segmentation-000/training/state.json"

    def saved_an_epoch() -> bool:
        listing = s3.list_objects_v2(Bucket="artifacts", Prefix=state)
        return bool(listing.get("KeyCount"))

    wait("a saved training state", saved_an_epoch, TRIAL_TIMEOUT_S, operator)
    saved = json.loads(s3.get_object(Bucket="artifacts", Key=state)["Body"].read())["epochs"]
    [first] = [p for p in list_pods(cluster, namespace) if p.status.phase == "Running"]
    core = client.CoreV1Api(cluster.api_client())
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=first.metadata.name, namespace=namespace)
    )
    core.create_namespaced_pod_eviction(first.metadata.name, namespace, eviction)

    status = finished(cluster, namespace, "evicted", operator)
    [trial] = [t for t in list_trials(cluster, namespace, "evicted") if t["spec"]["number"] >= 0]
    assert status["phase"] == "Succeeded", trial["status"]
    assert 1 <= saved < 4, saved
    job = trial["status"]["job"]
    [created] = [j for j in list_jobs(cluster, namespace) if j.metadata.name == job]
    gpu_resources = CHART_VALUES["trialDefaults"]["resources"]  # and one GPU, to fine-tune
    assert job_resources(created) == {
        "requests": gpu_resources["requests"],
        "limits": {**gpu_resources["limits"], "nvidia.com/gpu": "1"},
    }
    pods = [p for p in list_pods(cluster, namespace) if p.metadata.labels["job-name"] == job]
    [second] = [p for p in pods if p.metadata.name != first.metadata.name]  # its successor
    output = runner.log(namespace, second.metadata.name)
    assert "resuming after epoch" in output, output[-3000:]
    resumed = int(output.split("resuming after epoch ")[1].split()[0])
    assert resumed >= saved  # it may have saved more epochs before the eviction took effect
    checkpoint = trial["status"]["checkpoint"].removeprefix("s3://artifacts/")
    local = tmp_path / "segmentation.ckpt"
    s3.download_file("artifacts", checkpoint, str(local))
    epochs, steps = trained(local)
    assert epochs == 4 and 0 < steps <= 4 * 20


def test_gpu_capacity_is_respected_and_delete_cleans_up(
    cluster: Cluster, namespace: str, operator: Operator, gpu_pool: dict[str, str], tmp_path: Path
) -> None:
    """Two 1-GPU nodes, parallelTrialCount 4, a stage whose trials ask for a GPU: four
    Jobs, two pods bound, two Pending."""
    manifest = tuning_manifest("gpus", 6, 4, gpu_pool)
    manifest["spec"]["stages"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    manifest["spec"]["stages"][0]["trialsPerPod"] = 1  # a pod, and a GPU, per trial
    apply(cluster, namespace, manifest, tmp_path)

    def settled() -> bool:
        pods = list_pods(cluster, namespace)
        running = [p for p in pods if p.status.phase == "Running"]
        pending = [p for p in pods if p.status.phase == "Pending" and not p.spec.node_name]
        return len(list_jobs(cluster, namespace)) == 4 and len(running) == 2 and len(pending) == 2

    wait("2 running and 2 pending pods", settled, 120, operator)
    for job in list_jobs(cluster, namespace):
        assert job_resources(job)["limits"]["nvidia.com/gpu"] == "1", job.metadata.name

    def trial_states() -> list[str] | None:
        states = sorted(t["status"].get("state") for t in list_trials(cluster, namespace, "gpus"))
        return states if states == ["Pending", "Pending", "Running", "Running"] else None

    wait("2 Running and 2 Pending trials", trial_states, 60, operator)
    status = wait("status Running", phase_is(cluster, namespace, "gpus", "Running"), 30, operator)
    assert (status["trialsRunning"], status["trialsDone"], status["progress"]) == (4, 0, "0/6")
    assert status["stage"] == "clustering"

    cluster.kubectl("delete", "dtune", "gpus", "-n", namespace, "--wait=true")

    def cleaned_up() -> bool:
        return not (
            list_jobs(cluster, namespace)
            or list_trials(cluster, namespace, "gpus")
            or list_pods(cluster, namespace)
        )

    wait("Jobs, DiarizationTrials and pods garbage-collected", cleaned_up, 90, operator)


def test_spec_update_applies_mutable_fields_and_refuses_others(
    cluster: Cluster, namespace: str, operator: Operator, gpu_pool: dict[str, str], tmp_path: Path
) -> None:
    """A changed seed is refused with SpecRejected; a changed parallelTrialCount applies."""
    apply(cluster, namespace, tuning_manifest("upd", 5, 1, gpu_pool), tmp_path)
    wait("one Job", lambda: len(list_jobs(cluster, namespace)) == 1, 60, operator)
    wait("status Running", phase_is(cluster, namespace, "upd", "Running"), 30, operator)

    patch = {"spec": {"optimizer": {"seed": 7}, "parallelTrialCount": 2}}
    custom(cluster).patch_namespaced_custom_object(GROUP, VERSION, namespace, TUNINGS, "upd", patch)
    wait("a second Job", lambda: len(list_jobs(cluster, namespace)) == 2, 60, operator)

    def rejected() -> Any:
        status = get_tuning(cluster, namespace, "upd").get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == "SpecRejected"]
        return status if found and found[0]["status"] == "True" else None

    status = wait("SpecRejected", rejected, 30, operator)
    message = condition(status, "SpecRejected")["message"]
    assert "spec.optimizer.seed" in message and "parallelTrialCount" in message, message
    assert status["phase"] == "Running"
    assert (
        status["observedGeneration"]
        == get_tuning(cluster, namespace, "upd")["metadata"]["generation"]
    )
    assert "SpecRejected" in events(cluster, namespace, "upd")

    patch = {"spec": {"optimizer": {"seed": 0}}}
    custom(cluster).patch_namespaced_custom_object(GROUP, VERSION, namespace, TUNINGS, "upd", patch)

    def accepted() -> Any:
        status = get_tuning(cluster, namespace, "upd").get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == "SpecRejected"]
        return status if found and found[0]["status"] == "False" else None

    wait("SpecRejected False", accepted, 30, operator)
    assert len(list_jobs(cluster, namespace)) == 2


def test_operator_killed_mid_tuning_finishes_it_without_loss_or_duplicates(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    runner: NodeRunner,
    s3_data: dict[str, str],
    tmp_path: Path,
) -> None:
    """SIGKILL the operator while trials run; once restarted it finishes the tuning."""
    manifest = runner_tuning("restart", 5, 2, s3_data)
    apply(cluster, namespace, manifest, tmp_path)

    def one_done_and_jobs_running() -> bool:
        trials = list_trials(cluster, namespace, "restart")
        done = [t for t in trials if (t.get("status") or {}).get("state") == "Succeeded"]
        active = [j for j in list_jobs(cluster, namespace) if (j.status.active or 0) > 0]
        return len(done) >= 1 and len(active) >= 1

    wait("a finished trial and a running Job", one_done_and_jobs_running, TRIAL_TIMEOUT_S, operator)
    operator.kill()
    before = {job.metadata.name: job.metadata.uid for job in list_jobs(cluster, namespace)}
    time.sleep(2)
    operator.start()

    status = finished(cluster, namespace, "restart", operator)
    assert status["phase"] == "Succeeded", status
    trials = [t for t in list_trials(cluster, namespace, "restart") if t["spec"]["number"] >= 0]
    assert len(trials) == 5 and status["trialsDone"] == 5
    assert all(t["status"]["state"] == "Succeeded" for t in trials)
    params = [json.dumps(t["spec"]["params"], sort_keys=True) for t in trials]
    assert len(set(params)) == 5, params
    numbers = sorted(t["spec"]["number"] for t in trials)
    assert numbers == [0, 1, 2, 3, 4]

    jobs = {job.metadata.name: job.metadata.uid for job in list_jobs(cluster, namespace)}
    assert {name: jobs.get(name) for name in before} == before  # adopted, not relaunched
    # five trials, several per pod; the winner and the defaults on test and development
    ran = sorted(trial for job in list_jobs(cluster, namespace) for trial in trials_of(job))
    assert len(ran) == len(set(ran)) == 5 + 3, ran
    pods = list_pods(cluster, namespace)
    per_job = [pod.metadata.labels["job-name"] for pod in pods]
    assert sorted(per_job) == sorted(jobs), per_job  # every Job ran exactly one pod

    # ami has no test subset: the tuning succeeds with no test DER (null, so not stored),
    # and says why.
    assert status.get("testDer") is None
    assert condition(status, "Succeeded")["reason"] == "TestEvaluationFailed"
    assert "test" in condition(status, "Succeeded")["message"]


def test_a_tuning_author_gains_no_other_power(
    cluster: Cluster, namespace: str, operator: Operator, gpu_pool: dict[str, str], tmp_path: Path
) -> None:
    """Someone who may only create tunings cannot read a Secret, run as another service
    account or use an image the chart does not allow, through the operator."""
    rbac = client.RbacAuthorizationV1Api(cluster.api_client())
    rule = {"apiGroups": [GROUP], "resources": [TUNINGS], "verbs": ["create", "get", "list"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "author"}, "rules": [rule]})
    client.CoreV1Api(cluster.api_client()).create_namespaced_service_account(
        namespace, {"metadata": {"name": "author"}}
    )
    subject = {"kind": "ServiceAccount", "name": "author", "namespace": namespace}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "author"}
    rbac.create_namespaced_role_binding(
        namespace, {"metadata": {"name": "author"}, "roleRef": role_ref, "subjects": [subject]}
    )
    author = cluster.serviceaccount_kubeconfig(namespace, "author")
    env = {**cluster.env(), "KUBECONFIG": str(author)}
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"

    def as_author(*args: str, document: Any = None) -> subprocess.CompletedProcess[str]:
        text = yaml.safe_dump(document) if document is not None else None
        return subprocess.run(
            [kubectl, *args], env=env, input=text, capture_output=True, text=True, check=False
        )

    assert "forbidden" in as_author("get", "secret", CREDENTIALS, "-n", namespace).stderr
    escalating = tuning_manifest("escalate", 2, 1, gpu_pool)
    template = escalating["spec"]["trialTemplate"]
    template["image"] = "attacker.example/miner:latest"
    template["serviceAccountName"] = "ops-diartune"  # unknown to the CRD: pruned
    secret_ref = {"secretKeyRef": {"name": "ops-diartune-token", "key": "token"}}
    template["env"] = [{"name": "STOLEN", "valueFrom": secret_ref}]
    refused = as_author("apply", "-n", namespace, "-f", "-", document=escalating)
    assert 'unknown field "spec.trialTemplate.serviceAccountName"' in refused.stderr
    # Without kubectl's strict field validation the API server prunes the field instead.
    created = as_author(
        "apply", "--validate=false", "-n", namespace, "-f", "-", document=escalating
    )
    assert created.returncode == 0, created.stderr

    def refused() -> Any:
        status = get_tuning(cluster, namespace, "escalate").get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == "TrialTemplateInvalid"]
        return found[0]["message"] if found and found[0]["status"] == "True" else None

    message = wait("TrialTemplateInvalid", refused, 60, operator)
    assert "attacker.example/miner:latest" in message and "ops-diartune-token" in message
    assert list_jobs(cluster, namespace) == []
    stored = get_tuning(cluster, namespace, "escalate")["spec"]["trialTemplate"]
    assert "serviceAccountName" not in stored  # pruned by the CRD's structural schema

    allowed = tuning_manifest("allowed", 2, 1, gpu_pool)
    assert as_author("apply", "-n", namespace, "-f", "-", document=allowed).returncode == 0
    wait("a Job", lambda: list_jobs(cluster, namespace), 60, operator)
    [job] = list_jobs(cluster, namespace)
    assert job_resources(job) == CPU_RESOURCES  # a clustering trial asks for no GPU
    pod = job.spec.template.spec
    assert pod.service_account_name == "ops-diartune-trial"
    assert pod.automount_service_account_token is False
    assert pod.security_context.run_as_non_root is True
