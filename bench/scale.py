"""Benchmark: the operator at scale on the simulated cluster (KWOK's fake GPU nodes).

Runs on one control plane (tests/cluster.py), each in its own namespace with its own
``diartune operator`` process(es) holding the Helm chart's namespace-mode ServiceAccount.
All share ``--tunings`` x ``--per-tuning`` trials and ``--parallel`` trials at once:

- ``replicas`` (the default): the tunings at once, ``parallel / tunings`` wide each, under
  two operator replicas (distinct pod names, leader election by the Lease). Once
  ``--kill-at`` of the trials have finished, the replica holding the Lease is SIGKILLed
  and a new pod (a new name, as the Deployment's replacement) starts beside the standby;
  the standby takes over once the Lease expires (15 s);
- ``many``: the same under one operator, nothing killed;
- ``one``: all the trials in one tuning, ``parallel`` wide, one operator.

The defaults are issue 28's scale: 100 tunings x 100 trials, 500 at once, on 256 nodes of
2 GPUs. The earlier figures (1,000 trials, 100 at once, 64 nodes) are
``--runs one,many --tunings 10 --per-tuning 100 --parallel 100 --nodes 64``.

Trials per pod: the stage's ``trialsPerPod`` is ``--trials-per-pod``, 1 by default (the
product's default is 4). With 1, every trial is a Job of its own, so the latency below
is per trial (each completion frees one slot, for one successor Job) and the run makes
the most Jobs, pods and API requests per trial: the load the targets bound. With more,
a completion frees the slots of a whole pod, so the pairing below assumes each Job's
successor is one Job (true while a tuning keeps its first wave's shape).

The Job controller bounds the rate: each Job costs it about 6.5 requests (its pod's
creation and finalizer, three status updates, events), and kube-controller-manager's
client sends at most ``--kube-api-qps`` requests a second (20 by default, here as in a
cluster left at its defaults): about 3 Jobs a second. ``--controller-qps`` raises it, to
find the next bound.

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
  with its (w + i)-th Job, w the Jobs of its first wave (parallelTrialCount /
  trialsPerPod, rounded up). With a kill, the p95 is also given without the pairs that
  span the takeover (completed before the new leader's first Job, successor created
  after the kill);
- the takeover: seconds from the SIGKILL to the first Job created after it (the audit
  log's time of the request), and which replica took the Lease;
- lost trials: search trials without a record (Succeeded or Failed), and tunings not
  Succeeded; duplicated trials: the work of one trial request done more than once, both
  as the fault suite counts them (tests/faults.py); Jobs created more than once;
- SMAC ask+tell time against the number of finished trials, with the operator's tuner
  class (``StageTuner``) in process, a tuning of the largest run's shape (its trials, its
  width pending), as the operator drives it; its sum over the run's tunings is the CPU
  time that the operator's one SMAC thread needs;
- each replica's peak RSS (VmHWM), and the CPU that the operators, this process and each
  control-plane component used during the run (in cores: CPU seconds / wall seconds);
- API requests per trial: the apiserver's audit log, the operators' ServiceAccount only
  (both replicas share it);
- the size of the tuning object (the largest version seen).

    ../.venv/bin/python scale.py [--runs replicas,many,one] [--output bench-output]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
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
from faults import recorded
from kubernetes import client
from operator_run import Operator, install_chart
from workload import (
    SPACE,
    SyntheticWorkload,
    count_requests,
    job_creation_events,
    job_creations,
    synthetic_der,
    watch_forever,
)

from diartune.operator.api import (
    GROUP,
    LABEL_TRIAL,
    LABEL_TUNING,
    TRIAL_PLURAL,
    TUNING_PLURAL,
    VERSION,
)
from diartune.operator.leader import LeaseSettings
from diartune.operator.manifests import job_trials
from diartune.spec.model import MAX_TRIALS_PER_POD

CRDS = ROOT / "charts" / "diartune" / "crds"
SERVICE_ACCOUNT = "ops-diartune"  # what install_chart's release "ops" creates
RUNS = ("replicas", "many", "one")


def is_search_trial(name: str) -> bool:
    """Search trials are named <stage>-<number>; the final evaluations are not."""
    return name.rsplit("-", 1)[-1].isdigit()


@dataclass(frozen=True)
class Run:
    """One scenario: ``tunings`` tunings at once, each ``trials`` trials, ``parallel`` wide,
    ``trials_per_pod`` to a Job, under ``replicas`` operators; with ``kill_at``, the one
    holding the Lease is SIGKILLed once that fraction of all the trials has finished."""

    name: str
    tunings: int
    trials: int
    parallel: int
    trials_per_pod: int
    replicas: int = 1
    kill_at: float | None = None

    @property
    def namespace(self) -> str:
        """Where it runs."""
        return f"scale-{self.name}"

    @property
    def user(self) -> str:
        """The operators' ServiceAccount, as the audit log names it."""
        return f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"

    @property
    def total(self) -> int:
        """Its trials, all tunings together."""
        return self.tunings * self.trials

    @property
    def first_wave(self) -> int:
        """The Jobs a tuning starts with (parallelTrialCount / trialsPerPod, rounded up)."""
        return -(-self.parallel // self.trials_per_pod)


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
    searched: int = 0  # search trials whose Job completed
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
            complete = condition["type"] == "Complete" and condition["status"] == "True"
            if complete and trial not in self.job_done.get(tuning, {}):
                self._first(self.job_done, tuning, trial)
                self.searched += sum(map(is_search_trial, job_trials(job)))

    def tuning(self, _: str, tuning: dict[str, Any]) -> None:
        """A tuning changed: note its phase and its size."""
        self.object_bytes = max(self.object_bytes, len(json.dumps(tuning)))
        phase = (tuning.get("status") or {}).get("phase")
        if phase:
            self.phases[tuning["metadata"]["name"]] = phase


def tuning_manifest(run: Run, name: str, seed: int) -> dict[str, Any]:
    """A clustering-stage tuning of ``run``'s shape whose trials go to the fake GPU pool."""
    stage = {
        "name": "pipeline",
        "searchSpace": SPACE,
        "maxTrialCount": run.trials,
        "trialsPerPod": run.trials_per_pod,
    }
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
            "stages": [stage],
            "optimizer": {"seed": seed},
            "parallelTrialCount": run.parallel,
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


def cpu_seconds(pid: int) -> float:
    """The CPU seconds (user and system) that process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(cluster: Cluster) -> dict[str, float]:
    """The CPU seconds used so far by each control-plane component and by this process
    (its watches and the stand-in workload)."""
    used = {c.name: cpu_seconds(c.process.pid) for c in cluster.components}
    return used | {"bench": time.process_time()}


def successions(
    observed: Observations, run: Run, start: dict[str, dict[str, float]]
) -> list[tuple[float, float]]:
    """(completion, its successor Job's creation) of each Job completed at ``start``'s
    times: a tuning's i-th completion pairs with its (first wave + i)-th Job."""
    pairs = []
    wave = run.first_wave
    for tuning, created in observed.job_created.items():
        jobs = sorted(t for trial, t in created.items() if is_search_trial(trial))
        done = sorted(t for trial, t in start.get(tuning, {}).items() if is_search_trial(trial))
        pairs += [(done[i], jobs[wave + i]) for i in range(min(len(done), len(jobs) - wave))]
    return pairs


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, NaN if there is no value."""
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass(frozen=True)
class Usage:
    """What one operator replica used: its peak RSS (MiB) and its CPU seconds."""

    rss_mib: float
    cpu_s: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        """What process ``pid`` has used so far."""
        return cls(peak_rss_mib(pid), cpu_seconds(pid))


@dataclass(frozen=True)
class Kill:
    """The leader's SIGKILL: its pod, when (``time.monotonic()`` and wall clock), and how
    many search trials had finished then."""

    pod: str
    at: float
    wall: float
    finished: int


def lease_holder(cluster: Cluster, namespace: str) -> str:
    """The pod name that holds the operator's Lease in ``namespace``."""
    coordination = client.CoordinationV1Api(cluster.api_client())
    spec = coordination.read_namespaced_lease(LeaseSettings.name, namespace).spec
    return str(spec.holder_identity if spec else "")


def kill_leader(
    cluster: Cluster,
    namespace: str,
    operators: list[Operator],
    usage: dict[str, Usage],
    finished: int,
) -> Kill:
    """SIGKILL the replica that holds the Lease, ``finished`` trials in (noting what it
    used): it leaves ``operators``."""
    holder = lease_holder(cluster, namespace)
    leader = next((op for op in operators if op.pod_name == holder), None)
    if leader is None or leader.process is None:
        raise RuntimeError(f"the Lease's holder {holder!r} is none of the replicas")
    usage[holder] = Usage.of(leader.process.pid)
    kill = Kill(holder, time.monotonic(), time.time(), finished)
    leader.kill()
    operators.remove(leader)
    return kill


def takeover_s(audit_log: Path, user: str, namespace: str, kill: Kill) -> float:
    """Seconds from ``kill`` to the first Job created after it (the new leader's), by the
    time the API server received the request; NaN if none was."""
    received = (
        datetime.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        for event in job_creation_events(audit_log, user, namespace)
    )
    return min((t for t in received if t > kill.wall), default=float("nan")) - kill.wall


def start_watches(
    api: client.ApiClient,
    namespace: str,
    observed: Observations,
    workload: SyntheticWorkload,
    stop: threading.Event,
) -> list[threading.Thread]:
    """Watch the namespace's pods (for ``observed`` and ``workload``), Jobs and tunings
    until ``stop``; a watch's error goes to ``observed.errors``."""
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)
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
    return threads


def trial_counts(
    cluster: Cluster, run: Run, names: list[str], workload: SyntheticWorkload
) -> dict[str, int]:
    """Lost, failed and duplicated trials (as tests/faults.py counts them), and Jobs
    created more than once."""
    custom = client.CustomObjectsApi(cluster.api_client())
    listing: Any = custom.list_namespaced_custom_object(GROUP, VERSION, run.namespace, TRIAL_PLURAL)
    searched = recorded(listing["items"])
    found = collections.Counter(t["metadata"]["labels"][LABEL_TUNING] for t in searched)
    creations = job_creations(cluster.audit_log, run.user, run.namespace)
    return {
        "lost": sum(max(0, run.trials - found[name]) for name in names),
        "failed": sum(t["status"]["state"] == "Failed" for t in searched),
        "duplicated": sum(workload.duplicates().values()),
        "jobs_created_again": sum(count - 1 for count in creations.values()),
    }


def run_scenario(
    cluster: Cluster, run: Run, duration: tuple[float, float], output: Path, timeout: float
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run one scenario to the end; its figures and its latencies."""
    namespace = cluster.create_namespace(run.namespace)
    kubeconfig = install_chart(cluster, namespace)
    api = cluster.new_api_client()
    observed = Observations()
    workload = SyntheticWorkload(api, namespace, duration)
    custom = client.CustomObjectsApi(api)
    stop = threading.Event()
    threads = start_watches(api, namespace, observed, workload, stop)
    operators: list[Operator] = []
    pods: list[str] = []  # every replica, in the order they started
    usage: dict[str, Usage] = {}

    def replica() -> None:
        log = output / f"operator-{run.name}-{len(pods)}.log"
        operator = Operator(cluster, namespace, log, kubeconfig)
        operator.start()
        operators.append(operator)
        pods.append(operator.pod_name)

    for _ in range(run.replicas):
        replica()
    names = [f"{run.name}-{index}" for index in range(run.tunings)]
    cpu = cpu_now(cluster)
    started = time.monotonic()
    for index, name in enumerate(names):
        manifest = tuning_manifest(run, name, seed=index)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, TUNING_PLURAL, manifest)
    kill: Kill | None = None
    try:
        while not all(observed.phases.get(n) in ("Succeeded", "Failed") for n in names):
            if observed.errors or not all(
                op.process and op.process.poll() is None for op in operators
            ):
                raise RuntimeError(f"{run.name}: {observed.errors or 'an operator died'}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{run.name}: not finished after {timeout} s: {observed.phases}")
            finished = observed.searched
            if kill is None and run.kill_at is not None and finished >= run.kill_at * run.total:
                kill = kill_leader(cluster, namespace, operators, usage, finished)
                replica()  # the Deployment's replacement: a new pod, which stands by
            time.sleep(1)
        wall = time.monotonic() - started
        leader = lease_holder(cluster, namespace)
        usage |= {op.pod_name: Usage.of(op.process.pid) for op in operators if op.process}
        cpu = {name: seconds - cpu[name] for name, seconds in cpu_now(cluster).items()}
    finally:
        for operator in operators:
            operator.stop()
        stop.set()
    for thread in threads:
        thread.join(30)
    requests = count_requests(cluster.audit_log, run.user)
    (output / f"requests-{run.name}.json").write_text(json.dumps(requests.most_common(), indent=1))
    from_job = successions(observed, run, observed.job_done)
    from_pod = [b - a for a, b in successions(observed, run, observed.pod_done)]
    takeover = takeover_s(cluster.audit_log, run.user, namespace, kill) if kill else float("nan")
    resumed = kill.at + takeover if kill else float("nan")
    # Pairs that span the takeover: completed before the new leader's first Job, and
    # their successor created after the kill.
    outside = [b - a for a, b in from_job if kill is None or not (a < resumed and b > kill.at)]
    latency = [b - a for a, b in from_job]
    cpu["operators"] = sum(u.cpu_s for u in usage.values())
    row = {
        "run": run.name,
        "tunings": run.tunings,
        "trials": run.total,
        "parallel": run.tunings * run.parallel,
        "trials_per_pod": run.trials_per_pod,
        "replicas": run.replicas,
        "succeeded": sum(phase == "Succeeded" for phase in observed.phases.values()),
        **trial_counts(cluster, run, names, workload),
        "wall_s": wall,
        "trials_per_s": run.total / wall,
        "p50_s": percentile(latency, 50),
        "p95_s": percentile(latency, 95),
        "max_s": max(latency, default=float("nan")),
        "p95_outside_takeover_s": percentile(outside, 95) if kill else "",
        "killed_at_trials": kill.finished if kill else "",
        "takeover_s": takeover if kill else "",
        "new_leader": ("replacement" if leader == pods[-1] else "standby") if kill else "",
        "p50_from_pod_s": percentile(from_pod, 50),
        "p95_from_pod_s": percentile(from_pod, 95),
        "operator_peak_rss_mib": max(u.rss_mib for u in usage.values()),
        "replica_rss_mib": " / ".join(f"{usage[pod].rss_mib:.0f}" for pod in pods),
        "cpu_cores": ", ".join(f"{name} {seconds / wall:.2f}" for name, seconds in cpu.items()),
        "api_requests_per_trial": sum(requests.values()) / run.total,
        "tuning_object_max_kib": observed.object_bytes / 1024,
    }
    return row, {"from Job Complete": latency, "from pod Succeeded": from_pod}


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
    left.axvline(1.0, color="k", ls="--", lw=1, label="target p95 1 s")
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
    """The benchmark's options (the defaults are issue 28's scale)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="bench-output")
    parser.add_argument("--runs", default="replicas", help=f"some of {','.join(RUNS)}")
    parser.add_argument("--nodes", type=int, default=256, help="fake GPU nodes")
    parser.add_argument("--gpus-per-node", type=int, default=2)
    parser.add_argument("--tunings", type=int, default=100, help="runs many, replicas")
    parser.add_argument("--per-tuning", type=int, default=100, help="trials of a tuning")
    parser.add_argument("--parallel", type=int, default=500, help="trials at once, in all")
    parser.add_argument("--trials-per-pod", type=int, default=1, help="the stage's trialsPerPod")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="run replicas: the leader's SIGKILL, once this fraction of the trials has finished",
    )
    parser.add_argument("--duration", default="20,40", help="trial seconds, 'low,high'")
    parser.add_argument(
        "--controller-qps",
        type=int,
        help="kube-controller-manager's --kube-api-qps, burst twice that (default: its "
        "own, 20 and burst 30)",
    )
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    args = parser.parse_args()
    unknown = set(args.runs.split(",")) - set(RUNS)
    if unknown:
        parser.error(f"--runs: expected some of {','.join(RUNS)}, got {','.join(sorted(unknown))}")
    if not 0 < args.kill_at < 1:
        parser.error(f"--kill-at: expected a fraction between 0 and 1, got {args.kill_at}")
    if not 1 <= args.trials_per_pod <= MAX_TRIALS_PER_POD:
        parser.error(f"--trials-per-pod: expected 1 to {MAX_TRIALS_PER_POD}")
    return args


def selected_runs(args: argparse.Namespace) -> list[Run]:
    """The runs named by ``--runs``, in that order."""
    width = max(1, args.parallel // args.tunings)
    shapes = {
        "replicas": Run(
            "replicas", args.tunings, args.per_tuning, width, args.trials_per_pod, 2, args.kill_at
        ),
        "many": Run("many", args.tunings, args.per_tuning, width, args.trials_per_pod),
        "one": Run("one", 1, args.tunings * args.per_tuning, args.parallel, args.trials_per_pod),
    }
    return [shapes[name] for name in args.runs.split(",")]


def summary(row: dict[str, Any]) -> str:
    """One run's figures in a sentence."""
    text = (
        f"{row['run']} ({row['tunings']} x {row['trials'] // row['tunings']} trials, "
        f"{row['parallel']} at once, {row['replicas']} replica(s)): completion -> next Job "
        f"p50 {row['p50_s']:.2f} s, p95 {row['p95_s']:.2f} s, max {row['max_s']:.1f} s"
    )
    if row["takeover_s"] != "":
        text += (
            f", p95 {row['p95_outside_takeover_s']:.2f} s outside the takeover; leader killed "
            f"at {row['killed_at_trials']} finished trials, the {row['new_leader']}'s first "
            f"Job {row['takeover_s']:.1f} s later"
        )
    return text + (
        f"; {row['lost']} lost, {row['duplicated']} duplicated, {row['failed']} failed, "
        f"{row['jobs_created_again']} Jobs created again, {row['succeeded']}/{row['tunings']} "
        f"tunings Succeeded; RSS {row['replica_rss_mib']} MiB; "
        f"{row['api_requests_per_trial']:.1f} requests/trial; {row['trials_per_s']:.1f} "
        f"trials/s over {row['wall_s']:.0f} s; CPU cores: {row['cpu_cores']}; tuning object "
        f"{row['tuning_object_max_kib']:.1f} KiB"
    )


def main() -> None:
    args = arguments()
    output = Path(args.output) / "scale"
    output.mkdir(parents=True, exist_ok=True)
    low, high = (float(x) for x in args.duration.split(","))
    runs = selected_runs(args)
    shape = max(runs, key=lambda run: run.trials)  # SMAC's longest tuning
    tuner = measure_tuner(shape.trials, shape.parallel)
    write_table(output, "tuner", tuner)
    rows, curves = [], {}
    qps = args.controller_qps
    flags = [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"] if qps else []
    with Cluster(controller_args=flags) as cluster:
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
    smac = sum(row["seconds"] for row in tuner) * shape.tunings
    print(
        "scale: "
        + "; ".join(summary(row) for row in rows)
        + f"; SMAC tell+ask at {len(tuner) - len(last)}-{len(tuner)} finished trials "
        f"({shape.parallel} pending): mean {statistics.mean(last):.2f} s, median "
        f"{statistics.median(last):.2f} s, p95 {percentile(last, 95):.2f} s, max "
        f"{max(last):.2f} s, {smac:.0f} CPU seconds for {shape.tunings} such tuning(s); "
        f"kube-controller-manager at {qps or 'its default'} QPS; {machine()}"
    )


if __name__ == "__main__":
    main()
