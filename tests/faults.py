"""The fault suite's harness: a tuning on the real control plane, a fault, and the count.

Each scenario installs the chart in a namespace of its own, runs ``diartune operator``
with the chart's ServiceAccount (through ``FaultProxy`` when API faults are injected),
lets KWOK's fake GPU nodes end the trial pods with ``SyntheticWorkload``, applies a
tuning, injects its fault, and waits for the tuning to end. Like a kubelet, the harness
restarts an operator that exited. Then it counts, from the API server's audit log and
from what the pods did:

- ``job creations``: successful creations of each trial's Job by the operator;
- ``runs``: pods that did a trial's work (a pod that only reports the result its request
  already wrote is not a run);
- ``lost``: trials the tuning should have finished and has no record of;
- ``duplicated``: trial requests whose work was done more than once (the same trial
  with the same parameters, models and data);
- ``time_to_recover_s``: for a scenario with a single fault moment (``Run.inject``), the
  seconds from just before the fault until the trial(s) it hit are Succeeded or Failed
  (or, when it names none, until any trial not final at that moment is).

Used by tests/test_faults.py (the scenarios that fit CI's time) and bench/faults.py.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cluster import FAKE_NODE_KEY, FAKE_NODE_TOLERATION, Cluster
from fault_proxy import FaultProxy
from kubernetes import client
from operator_run import PENDING_OPERATOR_POD, Operator, install_chart
from workload import Fate, SyntheticWorkload, job_creations, synthetic_der, watch_forever

from diartune.operator.api import GROUP, LABEL_TUNING, TRIAL_PLURAL, TUNING_PLURAL, VERSION

SERVICE_ACCOUNT = "ops-diartune"  # what install_chart's release "ops" creates
POOL = {"pool": "faults"}
TIMEOUT_S = 600.0
# Watches end every few seconds, so that a scenario's run sees them re-established (and
# expired) several times, as a long tuning does with the default 300 s.
OPERATOR_ENV = {"DIARTUNE_WATCH_TIMEOUT": "5"}
FINAL = ("Succeeded", "Failed")


def tuning_manifest(
    name: str, trials: int = 6, parallel: int = 2, trials_per_pod: int = 1
) -> dict[str, Any]:
    """A clustering-stage tuning whose trials go to the fake GPU pool, ``trials_per_pod``
    to a pod (1 unless a scenario is about pods of several trials)."""
    space = {
        "clustering.threshold": {"type": "float", "low": 0.0, "high": 2.0},
        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DiarizationTuning",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "database": "s3://corpus/database.yml",
                "protocol": "Faults.SpeakerDiarization.Faults",
            },
            "pipeline": {
                "segmentation": "s3://models/segmentation.ckpt",
                "embedding": "s3://models/embedding.ckpt",
            },
            "stages": [
                {
                    "name": "clustering",
                    "searchSpace": space,
                    "maxTrialCount": trials,
                    "trialsPerPod": trials_per_pod,
                }
            ],
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": parallel,
            "maxFailedTrialCount": 1,
            "artifacts": "s3://artifacts",
            "trialTemplate": {
                "image": "diartune-trial:faults",
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                "nodeSelector": POOL,
                "tolerations": [FAKE_NODE_TOLERATION],
                "activeDeadlineSeconds": 120,
            },
        },
    }


@dataclass
class Run:
    """One scenario as it ran: what the cluster, the operator and the pods did."""

    cluster: Cluster
    namespace: str
    workload: SyntheticWorkload
    operators: list[Operator]
    proxy: FaultProxy | None = None
    phases: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    peak_rss_mib: float = 0.0
    started: float = field(default_factory=time.monotonic)
    errors: list[str] = field(default_factory=list)
    #: The fault's moment (``inject``) and when the trials it hit were final again.
    injected: float | None = None
    recovered: float | None = None
    affected: tuple[str, tuple[str, ...], frozenset[str]] | None = None

    @property
    def custom(self) -> client.CustomObjectsApi:
        """The custom-objects API, as the cluster's admin."""
        return client.CustomObjectsApi(self.cluster.api_client())

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create a tuning."""
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, TUNING_PLURAL, manifest
        )

    def trials(self, tuning: str) -> list[dict[str, Any]]:
        """A tuning's DiarizationTrials."""
        listing = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, TRIAL_PLURAL, label_selector=f"{LABEL_TUNING}={tuning}"
        )
        return list(listing["items"])

    def tuning(self, name: str) -> dict[str, Any]:
        """A tuning as stored."""
        return dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, TUNING_PLURAL, name
            )
        )

    def inject(self, tuning: str, *trials: str) -> None:
        """Note the moment of a scenario's single fault, just before it is injected.

        The time to recover ends when each of ``trials`` (spec names, e.g.
        ``clustering-002``) is Succeeded or Failed, or without any, when a trial not final
        at this moment is: the tuning makes progress again. ``wait`` checks every 0.5 s.
        """
        settled = frozenset(
            t["metadata"]["uid"]
            for t in self.trials(tuning)
            if (t.get("status") or {}).get("state") in FINAL
        )
        self.affected = (tuning, trials, settled)
        self.recovered = None
        self.injected = time.monotonic()

    def _note_recovery(self) -> None:
        if self.affected is None or self.recovered is not None:
            return
        tuning, trials, settled = self.affected
        final = {
            t["spec"]["name"]
            for t in self.trials(tuning)
            if (t.get("status") or {}).get("state") in FINAL and t["metadata"]["uid"] not in settled
        }
        if final and set(trials) <= final:
            self.recovered = time.monotonic()

    def recover_s(self) -> float | None:
        """Seconds from ``inject`` until the trial it hit was final; None without one."""
        self._note_recovery()
        if self.injected is None or self.recovered is None:
            return None
        return round(self.recovered - self.injected, 1)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
        """Until ``check()`` is truthy, keeping the operators alive (a kubelet's restarts)."""
        deadline = time.monotonic() + timeout
        while True:
            self._note_recovery()
            value = check()
            if value:
                return value
            self.supervise()
            if self.errors:
                raise AssertionError(f"{what}: {self.errors}")
            if time.monotonic() > deadline:
                logs = "\n".join(op.log.read_text("utf-8")[-3000:] for op in self.operators)
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
            time.sleep(0.5)

    def supervise(self) -> None:
        """Restart any operator that exited, after a second, as its Deployment would."""
        for operator in self.operators:
            process = operator.process
            if process is None:
                continue
            self.peak_rss_mib = max(self.peak_rss_mib, _peak_rss_mib(process.pid))
            if process.poll() is not None:
                time.sleep(1)
                operator.start()
                self.restarts += 1

    def finished(self, name: str) -> dict[str, Any]:
        """Wait until the tuning Succeeded or Failed; its status."""

        def done() -> Any:
            status = self.tuning(name).get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        return dict(self.wait(f"tuning {name} to finish", done))

    def count(self, name: str, search_trials: int) -> dict[str, Any]:
        """The scenario's row: trials, Job creations, runs, lost, duplicated."""
        trials = self.trials(name)
        final = [
            t for t in trials if (t.get("status") or {}).get("state") in ("Succeeded", "Failed")
        ]
        search = recorded(trials)
        user = f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"
        creations = job_creations(self.cluster.audit_log, user, self.namespace)
        prefix = f"{name}/"
        runs = sum(v for (k, _), v in self.workload.runs.items() if k.startswith(prefix))
        duplicates = self.workload.duplicates(prefix)
        status = self.tuning(name).get("status") or {}
        return {
            "phase": status.get("phase"),
            "trials": len(search),
            "evaluations": len(final) - len(search),
            "job_creations": sum(v for k, v in creations.items() if k.startswith(f"{name}-")),
            "runs": runs,
            "lost": max(0, search_trials - len(search)),
            "duplicated": sum(duplicates.values()),
            "run_twice": sorted(key[len(prefix) :] for key in duplicates),
            "failed": status.get("trialsFailed"),
            "restarts": self.restarts,
            "operator_peak_rss_mib": round(self.peak_rss_mib),
            "seconds": round(time.monotonic() - self.started, 1),
            "time_to_recover_s": self.recover_s(),
        }

    def stop(self) -> None:
        """Stop the operators and the proxy."""
        for operator in self.operators:
            operator.stop()
        if self.proxy is not None:
            self.proxy.stop()


def recorded(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The search trials (not the final evaluations) with a record, Succeeded or Failed: a
    trial that the tuning should have finished and that has none is lost."""
    return [
        t
        for t in trials
        if (t.get("status") or {}).get("state") in FINAL and t["spec"]["number"] >= 0
    ]


def _peak_rss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(
    cluster: Cluster,
    folder: Path,
    fate: Fate | None = None,
    proxy: bool = False,
    replicas: int = 1,
    duration: tuple[float, float] = (2.0, 4.0),
    toleration_keys: tuple[str, ...] = (),
) -> tuple[Run, threading.Event]:
    """A namespace with the chart, the workload watching it, and the operator(s) running.

    ``toleration_keys``: taint keys the chart's trial policy allows besides KWOK's (a
    later ``--set`` of the same value wins over install_chart's own).
    """
    namespace = cluster.create_namespace(f"faults-{uuid.uuid4().hex[:6]}")
    keys = ",".join((FAKE_NODE_KEY, *toleration_keys))
    policy = ("--set", f"trialPolicy.allowedTolerationKeys={{{keys}}}")
    kubeconfig = install_chart(cluster, namespace, (*PENDING_OPERATOR_POD, *policy))
    fault_proxy = None
    if proxy:
        import ssl

        context = ssl.create_default_context(cafile=str(cluster.ca_path))
        fault_proxy = FaultProxy(cluster.server, context).start()
        kubeconfig = _through(kubeconfig, fault_proxy.url)
    api = cluster.new_api_client()
    workload = SyntheticWorkload(api, namespace, duration, fate)
    operators = [
        Operator(
            cluster,
            namespace,
            folder / f"operator-{namespace}-{index}.log",
            kubeconfig,
            env=OPERATOR_ENV,
        )
        for index in range(replicas)
    ]
    run = Run(cluster, namespace, workload, operators, fault_proxy)
    stop = threading.Event()

    def phase(_: str, tuning: dict[str, Any]) -> None:
        status = tuning.get("status") or {}
        run.phases[tuning["metadata"]["name"]] = status.get("phase", "")

    core = client.CoreV1Api(api)
    watches = [
        (core.list_namespaced_pod, (namespace,), workload.pod),
        (
            client.CustomObjectsApi(api).list_namespaced_custom_object,
            (GROUP, VERSION, namespace, TUNING_PLURAL),
            phase,
        ),
    ]

    def guarded(*args: Any) -> None:
        try:
            watch_forever(*args, stop)
        except Exception as error:  # reported by Run.wait
            run.errors.append(f"{type(error).__name__}: {error}")

    for watched in watches:
        threading.Thread(target=guarded, args=watched, daemon=True).start()
    for operator in operators:
        operator.start()
    return run, stop


def _through(kubeconfig: Path, server: str) -> Path:
    """The same credentials, with the API server reached through ``server`` (the proxy)."""
    config = yaml.safe_load(kubeconfig.read_text())
    proxied = copy.deepcopy(config)
    proxied["clusters"][0]["cluster"] = {"server": server}
    path = kubeconfig.with_name(kubeconfig.name + "-proxied")
    path.write_text(yaml.safe_dump(proxied))
    path.chmod(0o600)
    return path


def expected_der(params: dict[str, Any]) -> float:
    """The DER a successful trial of these parameters reports."""
    return synthetic_der(params)
