"""Benchmark: the operator at scale on the simulated cluster (KWOK, 64 fake GPU nodes).

Two runs on one control plane (tests/cluster.py), each in its own namespace with its own
``diartune operator`` process holding the Helm chart's namespace-mode ServiceAccount:

- ``one``: one tuning, parallelTrialCount 100, 1,000 trials;
- ``many``: 10 tunings at once, 100 trials each, parallelTrialCount 10 each.

Trials are not run. The benchmark's stand-in workload sees each trial pod, computes a
synthetic DER from the configuration in the pod's command (``synthetic_der``, a known test
function) and annotates the pod so that KWOK completes it after a random duration, with
that result as its termination message (see tests/kwok-stages.yaml). Everything else is
the product: the operator, its SMAC tuner, its DiarizationTrials and Jobs, and the Job
controller. The product itself contains no fake objective.

Measured:
- latency from a trial's completion to its successor's Job: from the trial's Job turning
  Complete (and, for reference, from its pod turning Succeeded) to the next Job's
  creation, all seen by this process's watches; the i-th completion of a tuning is paired
  with its (parallelTrialCount + i)-th Job, since each completion frees one slot;
- SMAC ask+tell time against the number of finished trials, with the operator's tuner
  class (``StageTuner``) in process, ``parallel`` asks pending, as the operator drives it;
- the operator's peak RSS (VmHWM);
- API requests per trial: the apiserver's audit log, the operator's ServiceAccount only;
- the size of the tuning object (the largest version seen).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, machine, write_table

sys.path.insert(0, str(ROOT / "tests"))

from cluster import FAKE_NODE_TOLERATION, Cluster
from kubernetes import client
from operator_run import Operator, install_chart
from workload import SPACE, SyntheticWorkload, count_requests, synthetic_der, watch_forever

from diartune.operator.api import GROUP, LABEL_TRIAL, LABEL_TUNING, TUNING_PLURAL, VERSION

CRDS = ROOT / "charts" / "diartune" / "crds"
SERVICE_ACCOUNT = "ops-diartune"  # what install_chart's release "ops" creates


def is_search_trial(name: str) -> bool:
    """Search trials are named <stage>-<number>; the final evaluations are not."""
    return name.rsplit("-", 1)[-1].isdigit()


@dataclass(frozen=True)
class Run:
    """One scenario: ``tunings`` tunings at once, each ``trials`` trials, ``parallel`` wide."""

    name: str
    tunings: int
    trials: int
    parallel: int

    @property
    def namespace(self) -> str:
        """Where it runs."""
        return f"scale-{self.name}"


# --------------------------------------------------------------------------- SMAC alone


def measure_tuner(trials: int, parallel: int, seed: int = 0) -> list[dict[str, Any]]:
    """Seconds of each tell+ask, up to ``trials`` finished, with ``parallel`` pending."""
    from diartune.search.tuner import Observation, StageTuner
    from diartune.spec.model import Optimizer, Stage

    document = {"name": "pipeline", "searchSpace": SPACE, "maxTrialCount": trials + parallel}
    tuner = StageTuner(Stage.model_validate(document), Optimizer(seed=seed))
    pending = collections.deque(tuner.ask().params for _ in range(parallel))
    rows = []
    for finished in range(1, trials + 1):
        params = pending.popleft()
        start = time.perf_counter()
        tuner.tell(Observation(params, synthetic_der(params)))
        pending.append(tuner.ask().params)
        rows.append({"finished": finished, "seconds": time.perf_counter() - start})
    return rows


# --------------------------------------------------------------------------- the cluster


@dataclass
class Observations:
    """What the watches saw, in ``time.monotonic()`` seconds, per tuning."""

    pod_done: dict[str, dict[str, float]] = field(default_factory=dict)
    job_created: dict[str, dict[str, float]] = field(default_factory=dict)
    job_done: dict[str, dict[str, float]] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    object_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def _first(table: dict[str, dict[str, float]], tuning: str, trial: str) -> None:
        table.setdefault(tuning, {}).setdefault(trial, time.monotonic())

    def pod(self, _: str, pod: dict[str, Any]) -> None:
        """A pod changed: note when it succeeded."""
        labels = pod["metadata"].get("labels") or {}
        if LABEL_TUNING in labels and (pod.get("status") or {}).get("phase") == "Succeeded":
            self._first(self.pod_done, labels[LABEL_TUNING], labels[LABEL_TRIAL])

    def job(self, kind: str, job: dict[str, Any]) -> None:
        """A Job changed: note when it appeared and when it completed."""
        labels = job["metadata"].get("labels") or {}
        if LABEL_TUNING not in labels or kind == "DELETED":
            return
        tuning, trial = labels[LABEL_TUNING], labels[LABEL_TRIAL]
        self._first(self.job_created, tuning, trial)
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Complete" and condition["status"] == "True":
                self._first(self.job_done, tuning, trial)

    def tuning(self, _: str, tuning: dict[str, Any]) -> None:
        """A tuning changed: note its phase and its size."""
        self.object_bytes = max(self.object_bytes, len(json.dumps(tuning)))
        phase = (tuning.get("status") or {}).get("phase")
        if phase:
            self.phases[tuning["metadata"]["name"]] = phase


def tuning_manifest(name: str, trials: int, parallel: int, seed: int) -> dict[str, Any]:
    """A clustering-stage tuning whose trials go to the fake GPU pool."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DiarizationTuning",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "database": "s3://corpus/database.yml",
                "protocol": "Bench.SpeakerDiarization.Scale",
            },
            "pipeline": {
                "segmentation": "s3://models/segmentation.ckpt",
                "embedding": "s3://models/embedding.ckpt",
            },
            "stages": [{"name": "pipeline", "searchSpace": SPACE, "maxTrialCount": trials}],
            "optimizer": {"seed": seed},
            "parallelTrialCount": parallel,
            "artifacts": "s3://artifacts",
            "trialTemplate": {
                "image": "diartune-trial:bench",
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                "nodeSelector": {"pool": "scale"},
                "tolerations": [FAKE_NODE_TOLERATION],
            },
        },
    }


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def latencies(
    observed: Observations, parallel: int, start: dict[str, dict[str, float]]
) -> list[float]:
    """Seconds from each trial's completion (``start``) to its successor Job's creation."""
    values = []
    for tuning, created in observed.job_created.items():
        jobs = sorted(t for trial, t in created.items() if is_search_trial(trial))
        done = sorted(t for trial, t in start.get(tuning, {}).items() if is_search_trial(trial))
        values += [
            jobs[parallel + i] - done[i] for i in range(min(len(done), len(jobs) - parallel))
        ]
    return values


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, NaN if there is no value."""
    return float(np.percentile(values, q)) if values else float("nan")


def run_scenario(
    cluster: Cluster, run: Run, duration: tuple[float, float], output: Path, timeout: float
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run one scenario to the end; its figures and its latencies."""
    namespace = cluster.create_namespace(run.namespace)
    kubeconfig = install_chart(cluster, namespace)
    api = cluster.new_api_client()
    observed = Observations()
    workload = SyntheticWorkload(api, namespace, duration)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)
    stop = threading.Event()
    watches: list[tuple[Callable[..., Any], tuple[Any, ...], Callable[[str, dict[str, Any]], None]]]

    def pod(kind: str, raw: dict[str, Any]) -> None:
        observed.pod(kind, raw)
        workload.pod(kind, raw)

    watches = [
        (core.list_namespaced_pod, (namespace,), pod),
        (batch.list_namespaced_job, (namespace,), observed.job),
        (
            custom.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, TUNING_PLURAL),
            observed.tuning,
        ),
    ]

    def guarded(*args: Any) -> None:
        try:
            watch_forever(*args)
        except Exception as error:  # reported by the main loop
            observed.errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=guarded, args=(*w, stop), daemon=True) for w in watches]
    for thread in threads:
        thread.start()
    operator = Operator(cluster, namespace, output / f"operator-{run.name}.log", kubeconfig)
    operator.start()
    assert operator.process is not None
    names = [f"{run.name}-{index}" for index in range(run.tunings)]
    started = time.monotonic()
    for index, name in enumerate(names):
        manifest = tuning_manifest(name, run.trials, run.parallel, seed=index)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, TUNING_PLURAL, manifest)
    try:
        while not all(observed.phases.get(n) in ("Succeeded", "Failed") for n in names):
            if observed.errors or operator.process.poll() is not None:
                raise RuntimeError(f"{run.name}: {observed.errors or 'the operator died'}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{run.name}: not finished after {timeout} s: {observed.phases}")
            time.sleep(1)
        wall = time.monotonic() - started
        rss = peak_rss_mib(operator.process.pid)
    finally:
        operator.stop()
        stop.set()
    for thread in threads:
        thread.join(30)
    requests = count_requests(
        cluster.audit_log, f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    )
    (output / f"requests-{run.name}.json").write_text(json.dumps(requests.most_common(), indent=1))
    trials = run.tunings * run.trials
    from_job = latencies(observed, run.parallel, observed.job_done)
    from_pod = latencies(observed, run.parallel, observed.pod_done)
    row = {
        "run": run.name,
        "tunings": run.tunings,
        "trials": trials,
        "parallel": run.tunings * run.parallel,
        "succeeded": sum(phase == "Succeeded" for phase in observed.phases.values()),
        "wall_s": wall,
        "p50_s": percentile(from_job, 50),
        "p95_s": percentile(from_job, 95),
        "max_s": max(from_job, default=float("nan")),
        "p50_from_pod_s": percentile(from_pod, 50),
        "p95_from_pod_s": percentile(from_pod, 95),
        "operator_peak_rss_mib": rss,
        "api_requests_per_trial": sum(requests.values()) / trials,
        "tuning_object_max_kib": observed.object_bytes / 1024,
    }
    return row, {"from Job Complete": from_job, "from pod Succeeded": from_pod}


def plot(
    folder: Path, curves: dict[str, dict[str, list[float]]], tuner: list[dict[str, Any]]
) -> None:
    """Latency CDFs per run, and SMAC's ask+tell time against finished trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (run, kinds) in enumerate(curves.items()):
        for style, (kind, values) in zip(("-", ":"), kinds.items(), strict=True):
            ordered = np.sort(values)
            fraction = np.arange(1, len(ordered) + 1) / max(len(ordered), 1)
            left.plot(ordered, fraction, style, color=f"C{index}", label=f"{run}, {kind}")
    left.axvline(2.0, color="k", ls="--", lw=1, label="target p95 2 s")
    left.set_xlabel("completion -> successor Job (s)")
    left.set_ylabel("fraction of trials")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    finished = [row["finished"] for row in tuner]
    seconds = [row["seconds"] for row in tuner]
    right.scatter(finished, seconds, s=3, alpha=0.5, label="tell + ask")
    right.axhline(1.0, color="k", ls="--", lw=1, label="target 1 s")
    right.set_xlabel("finished trials")
    right.set_ylabel("SMAC tell + ask (s)")
    right.set_yscale("log")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(folder / "scale.png", dpi=110)
    plt.close(figure)


def arguments() -> argparse.Namespace:
    """The benchmark's options (the defaults are the issue's scenarios)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench-output")
    parser.add_argument("--nodes", type=int, default=64, help="fake GPU nodes")
    parser.add_argument("--gpus-per-node", type=int, default=2)
    parser.add_argument("--trials", type=int, default=1000, help="run 'one': its trials")
    parser.add_argument("--parallel", type=int, default=100, help="run 'one': its width")
    parser.add_argument("--tunings", type=int, default=10, help="run 'many': its tunings")
    parser.add_argument("--per-tuning", type=int, default=100, help="run 'many': trials each")
    parser.add_argument("--duration", default="20,40", help="trial seconds, 'low,high'")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    output = Path(args.output) / "scale"
    output.mkdir(parents=True, exist_ok=True)
    low, high = (float(x) for x in args.duration.split(","))
    runs = [
        Run("one", 1, args.trials, args.parallel),
        Run("many", args.tunings, args.per_tuning, max(1, args.parallel // args.tunings)),
    ]
    tuner = measure_tuner(args.trials, args.parallel)
    write_table(output, "tuner", tuner)
    rows, curves = [], {}
    with Cluster() as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        cluster.add_gpu_nodes(args.nodes, args.gpus_per_node, "scale-gpu-", {"pool": "scale"})
        for run in runs:
            row, curves[run.name] = run_scenario(cluster, run, (low, high), output, args.timeout)
            rows.append(row)
            print(row, flush=True)
    write_table(output, "scale", rows)
    plot(output, curves, tuner)
    last = [row["seconds"] for row in tuner[-100:]]
    print(
        "scale: "
        + "; ".join(
            f"{r['run']} ({r['tunings']} x {r['trials'] // r['tunings']} trials): completion -> "
            f"next Job p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s; RSS "
            f"{r['operator_peak_rss_mib']:.0f} MiB; "
            f"{r['api_requests_per_trial']:.1f} requests/trial; "
            f"tuning object {r['tuning_object_max_kib']:.1f} KiB"
            for r in rows
        )
        + f"; SMAC tell+ask at {len(tuner) - len(last)}-{len(tuner)} finished trials "
        f"({args.parallel} pending): mean {statistics.mean(last):.2f} s, median "
        f"{statistics.median(last):.2f} s, p95 {percentile(last, 95):.2f} s, max "
        f"{max(last):.2f} s; {machine()}"
    )


if __name__ == "__main__":
    main()
