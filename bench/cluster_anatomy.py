"""Benchmark: a cached clustering trial on the test cluster, from its Job's creation to its
recorded result, phase by phase.

The operator (``diartune operator`` with the Helm chart's namespace-mode ServiceAccount,
tests/operator_run.py) runs one clustering tuning on the test control plane
(tests/cluster.py), one pod at a time. Its trial pods really run on the runner node
(tests/node_runner.py), each as a fresh process as in a trial image, with ami-debug and
the models on a SeaweedFS S3 server (tests/servers.py). The first trial fills the feature
cache on S3; each later pod runs cached clustering trials. From this process's watches on
Jobs, pods and DiarizationTrials, and from the trial process (``diartune`` runs through
``PROBE``, which notes when the interpreter started, when the imports were done and when
the trial returned), the seconds of each phase of each later Job:

- ``to_pod``: the Job's creation to its pod's (the Job controller);
- ``scheduling``: the pod's creation to its binding to the node (the scheduler);
- ``to_process``: binding to the interpreter's start (the node, with its pod-start work);
- ``imports``: the interpreter's start to ``diartune.trial.run`` imported;
- ``work``: the trial(s) (``data``, ``models``, ``clustering``, ``scoring`` of the
  trials' own timings are summed in their columns);
- ``exit``: the trial's return to the pod's Succeeded (interpreter exit, the node's report);
- ``recording``: the pod's Succeeded to the last of its trials recorded by the operator
  (the Job's completion, the operator's watch, its status write).

``per_trial`` is ``total`` over the trials the pod ran; ``--trials-per-pod`` sets the
stage's ``trialsPerPod`` (default 1: one trial per pod).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from common import ROOT, machine, write_table

sys.path.insert(0, str(ROOT / "tests"))

from cluster import FAKE_NODE_TOLERATION, Cluster
from conftest import PROTOCOL, copy_ami
from kubernetes import client
from node_runner import NodeRunner
from operator_run import Operator, install_chart
from servers import seaweedfs
from workload import watch_forever

from diartune.operator.api import GROUP, LABEL_TRIAL, TRIAL_PLURAL, TUNING_PLURAL, VERSION

CRDS = ROOT / "charts" / "diartune" / "crds"
RUNNER_NODE = "runner-0"
#: The throwaway S3 server's credentials, made afresh for each run.
KEY, SECRET = secrets.token_hex(8), secrets.token_hex(16)
#: Runs ``diartune ARGS`` as ``python -m diartune`` would, noting three moments in
#: ./anatomy.json (wall clock: the same clock as this process's).
PROBE = """import json, sys, time
started = time.time()
import diartune.cli, diartune.trial.run
imported = time.time()
code = diartune.cli.main(sys.argv[1:])
with open("anatomy.json", "w") as out:
    json.dump({"started": started, "imported": imported, "returned": time.time()}, out)
sys.exit(code)
"""
PHASES = ["to_pod", "scheduling", "to_process", "imports", "work", "exit", "recording"]
WORK = ["data", "models", "clustering", "scoring"]


class Seen:
    """When this process saw each Job, pod and trial event (wall clock), by name."""

    def __init__(self) -> None:
        self.jobs: dict[str, float] = {}
        self.trials_of: dict[str, list[str]] = {}
        self.pod_created: dict[str, float] = {}
        self.pod_bound: dict[str, float] = {}
        self.pod_done: dict[str, float] = {}
        self.pod_of: dict[str, str] = {}
        self.recorded: dict[str, float] = {}
        self.search: set[str] = set()

    def job(self, kind: str, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        if kind == "ADDED" and meta["name"] not in self.jobs:
            self.jobs[meta["name"]] = time.time()
            listed = (meta.get("annotations") or {}).get(f"{GROUP}/trials")
            self.trials_of[meta["name"]] = (
                listed.split(",") if listed else [meta["labels"][LABEL_TRIAL]]
            )

    def pod(self, kind: str, pod: dict[str, Any]) -> None:
        job = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
        if job is None or (job in self.pod_of and self.pod_of[job] != pod["metadata"]["name"]):
            return  # not a trial pod, or not its Job's first pod
        now = time.time()
        self.pod_of[job] = pod["metadata"]["name"]
        self.pod_created.setdefault(job, now)
        if pod["spec"].get("nodeName"):
            self.pod_bound.setdefault(job, now)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.pod_done.setdefault(job, now)

    def trial(self, kind: str, trial: dict[str, Any]) -> None:
        name = trial["spec"]["name"]
        if trial["spec"]["number"] >= 0:
            self.search.add(name)
        if (trial.get("status") or {}).get("state") in ("Succeeded", "Failed"):
            self.recorded.setdefault(name, time.time())


def tuning_manifest(name: str, trials: int, endpoint: str, trials_per_pod: int) -> dict[str, Any]:
    """A clustering tuning of ``trials`` trials on the runner node, one pod at a time."""
    space = {
        "clustering.threshold": {"type": "float", "low": 0.05, "high": 1.2},
        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 10},
    }
    stage = {"name": "clustering", "searchSpace": space, "maxTrialCount": trials}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DiarizationTuning",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "database": "s3://corpus/ami/database.yml",
                "protocol": PROTOCOL,
                "s3": {"endpoint": endpoint, "credentialsSecret": "s3-credentials"},
            },
            "pipeline": {
                "segmentation": "s3://models/segmentation.ckpt",
                "embedding": "s3://models/embedding.ckpt",
            },
            "stages": [{**stage, "trialsPerPod": trials_per_pod}],
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": trials_per_pod,  # one pod at a time
            "artifacts": "s3://artifacts",
            "trialTemplate": {
                "image": "diartune-trial:bench",
                "nodeSelector": {"kubernetes.io/hostname": RUNNER_NODE},
                "tolerations": [FAKE_NODE_TOLERATION],
            },
        },
    }


def upload(endpoint: str, folder: Path) -> None:
    """ami-debug (train annotations fixed) and small offline models, on the S3 server."""
    from diartune.spec.model import Data
    from diartune.storage import cache_root
    from diartune.trial.bootstrap import make_models

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    for bucket in ("corpus", "models", "artifacts"):
        s3.create_bucket(Bucket=bucket)
    database = copy_ami(folder / "ami")
    for path in sorted(database.parent.iterdir()):
        s3.upload_file(str(path), "corpus", f"ami/{path.name}")
    data = Data(database=str(database), protocol=PROTOCOL)
    for path in make_models(data, cache_root() / "bench-models" / "cluster-anatomy", 2, 10):
        s3.upload_file(str(path), "models", path.name)


def job_row(
    job: str, seen: Seen, runner: NodeRunner, namespace: str, pod_dir: Path
) -> dict[str, Any]:
    """The phases of one Job's pod, in seconds."""
    moments = json.loads((pod_dir / "anatomy.json").read_text())
    trials = seen.trials_of[job]
    recorded = max(seen.recorded[t] for t in trials)
    results = [
        json.loads(line.removeprefix("DIARTUNE_RESULT "))
        for line in runner.log(namespace, seen.pod_of[job]).splitlines()
        if line.startswith("DIARTUNE_RESULT ")
    ]
    row: dict[str, Any] = {"job": job, "trials": len(trials)}
    row["to_pod"] = seen.pod_created[job] - seen.jobs[job]
    row["scheduling"] = seen.pod_bound[job] - seen.pod_created[job]
    row["to_process"] = moments["started"] - seen.pod_bound[job]
    row["imports"] = moments["imported"] - moments["started"]
    row["work"] = moments["returned"] - moments["imported"]
    row["exit"] = seen.pod_done[job] - moments["returned"]
    row["recording"] = recorded - seen.pod_done[job]
    row["total"] = recorded - seen.jobs[job]
    row["per_trial"] = row["total"] / len(trials)
    for phase in WORK:
        row[phase] = sum(result["timings"].get(phase, 0.0) for result in results)
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def measure(cluster: Cluster, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """Run the tuning; one row per Job of cached search trials."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.add_runner_node(RUNNER_NODE)
    namespace = cluster.create_namespace("cluster-anatomy")
    credentials = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in credentials.items()}
    api = cluster.new_api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s3-credentials"}, "data": data})
    seen, stop = Seen(), threading.Event()
    custom = client.CustomObjectsApi(api)
    watches = [
        (client.BatchV1Api(api).list_namespaced_job, (namespace,), seen.job),
        (core.list_namespaced_pod, (namespace,), seen.pod),
        (
            custom.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, TRIAL_PLURAL),
            seen.trial,
        ),
    ]
    for watched in watches:
        threading.Thread(target=watch_forever, args=(*watched, stop), daemon=True).start()
    with seaweedfs(scratch / "s3", KEY, SECRET) as endpoint:
        upload(endpoint, scratch)
        # Trials get their S3 credentials from the Secret only, as in tests/test_operator.py.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        executables = {"diartune": [sys.executable, "-c", PROBE]}
        with NodeRunner(api, RUNNER_NODE, executables=executables, base_env=env) as runner:
            kubeconfig = install_chart(cluster, namespace)
            operator = Operator(cluster, namespace, scratch / "operator.log", kubeconfig)
            operator.start()
            try:
                manifest = tuning_manifest("anatomy", args.trials, endpoint, args.trials_per_pod)
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, TUNING_PLURAL, manifest
                )
                deadline = time.monotonic() + args.timeout
                while len(seen.search) < args.trials or not seen.search <= set(seen.recorded):
                    if time.monotonic() > deadline or runner.errors:
                        raise TimeoutError(f"trials not all recorded: {runner.errors}")
                    time.sleep(1)
                time.sleep(2)  # the last pod's events
                cached = sorted(seen.jobs, key=seen.jobs.__getitem__)
                cached = [j for j in cached if set(seen.trials_of[j]) <= seen.search][1:]
                dirs = {p.name: p.workdir for p in runner.pods.values()}
                return [
                    job_row(job, seen, runner, namespace, dirs[seen.pod_of[job]]) for job in cached
                ]
            finally:
                operator.stop()
                stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench-output")
    parser.add_argument("--trials", type=int, default=5, help="search trials (the 1st fills)")
    parser.add_argument("--trials-per-pod", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, Cluster() as cluster:
        rows = measure(cluster, args, Path(scratch))
    for row in rows:
        print(row, flush=True)
    write_table(Path(args.output) / "cluster-anatomy", "cluster-anatomy", rows)
    medians = {k: statistics.median(r[k] for r in rows) for k in [*PHASES, *WORK, "per_trial"]}
    print(
        f"cluster anatomy ({args.trials_per_pod} trial(s) per pod, medians of {len(rows)} "
        f"Jobs of cached clustering trials): {medians['per_trial']:.1f} s per trial from its "
        "Job's creation to its recorded result = "
        + ", ".join(f"{p} {medians[p]:.2f}" for p in PHASES)
        + " (work: "
        + ", ".join(f"{p} {medians[p]:.2f}" for p in WORK)
        + f"); {machine()}"
    )


if __name__ == "__main__":
    main()
