"""``diartune operator`` as a process on the test control plane, with the Helm chart's RBAC.

Shared by the end-to-end tests (tests/test_operator.py) and the scale benchmark
(bench/scale.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from cluster import ROOT, Cluster, die_with_parent, free_port
from containers import container_name, podman_env, remove_container
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

RELEASE = "ops"
# What the chart's Deployment tells the operator that the test process must know too: the
# trial policy (which tunings may launch trials at all) and the trial pods' account.
CHART_ENV = ("DIARTUNE_TRIAL_POLICY", "DIARTUNE_TRIAL_SERVICE_ACCOUNT")


class Operator:
    """``diartune operator --namespace NS`` as a process, which can be killed and restarted,
    serving its metrics on a free port.

    It stands for one pod of the chart's Deployment: restarted, it keeps its ``POD_NAME``
    (``pod_name``), as a container restarted in its pod does, so it takes back its own
    Lease at once; another ``Operator`` (a new pod) waits for the Lease to expire.

    With ``image``, the process is ``podman run`` of that operator image (read-only root,
    a tmpfs on /tmp, the host's network), given the kubeconfig, POD_NAME and the DIARTUNE_*
    variables.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log: Path,
        kubeconfig: Path,
        *,
        log_format: str = "plain",
        env: Mapping[str, str] | None = None,
        image: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.env = dict(env or {})
        self.namespace = namespace
        self.log = log
        self.kubeconfig = kubeconfig
        self.log_format = log_format
        self.metrics_port = free_port()
        self.image = image
        self.pod_name = f"{RELEASE}-diartune-{uuid.uuid4().hex[:10]}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def container(self) -> str:
        """The container's name in image mode."""
        return container_name("operator", self.namespace)

    def start(self) -> None:
        """Start the operator (its output goes to ``log``)."""
        # No AWS_* variables: the operator never needs the S3 credentials.
        env = {k: v for k, v in self.cluster.env().items() if not k.startswith("AWS_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["POD_NAME"] = self.pod_name
        env.update(chart_env(self.cluster, self.namespace))
        env.update(self.env)
        options = ["--namespace", self.namespace, "--metrics-port", str(self.metrics_port)]
        options += ["--log-format", self.log_format]
        argv = [sys.executable, "-m", "diartune", "operator", *options]
        if self.image is not None:
            argv = self._podman_run(self.image, env, options)
            env = podman_env(env)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def _podman_run(self, image: str, env: dict[str, str], options: list[str]) -> list[str]:
        """The ``podman run`` argv of the operator image, with env's KUBECONFIG, POD_NAME and
        DIARTUNE_*."""
        kubeconfig = Path(env["KUBECONFIG"])
        named = ("KUBECONFIG", "POD_NAME")
        passed = {k: v for k, v in env.items() if k.startswith("DIARTUNE_") or k in named}
        # The kubeconfig names the CA by its host path: both keep their paths inside.
        mounts = [f"{path}:{path}:ro" for path in (kubeconfig, self.cluster.ca_path)]
        return [
            "podman",
            "run",
            "--rm",
            "--name",
            self.container,
            "--network",
            "host",
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp:rw,mode=1777",
            *(f"--volume={mount}" for mount in mounts),
            *(f"--env={key}={value}" for key, value in passed.items()),
            image,
            "operator",
            *options,
        ]

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.process is not None
        if self.image is not None:  # SIGKILL to `podman run` would leave the container
            remove_container(self.container)
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # `podman run` passes it to the container
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def errors(self) -> list[str]:
        """Tracebacks and errors the operator logged, in either log format."""
        return [line for line in self.lines() if "Traceback" in line or _is_error(line)]

    def lines(self) -> list[str]:
        """The lines the operator wrote so far."""
        text = self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""
        return text.splitlines()

    def metrics(self) -> list[Sample]:
        """Every sample of the operator's /metrics, parsed by prometheus-client's parser."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8")
        return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _is_error(line: str) -> bool:
    if not line.startswith("{"):
        return "[ERROR" in line
    return json.loads(line).get("severity") in ("error", "fatal")


def chart_env(cluster: Cluster, namespace: str) -> dict[str, str]:
    """The ``CHART_ENV`` variables of the chart's operator Deployment in ``namespace``."""
    apps = client.AppsV1Api(cluster.api_client())
    deployment = apps.read_namespaced_deployment(f"{RELEASE}-diartune", namespace)
    container = deployment.spec.template.spec.containers[0]
    return {var.name: var.value for var in container.env or () if var.name in CHART_ENV}


#: Keeps the chart's operator pod Pending: the operator runs as a test process instead.
PENDING_OPERATOR_POD = ("--set", "nodeSelector.diartune-test=no-such-node")


def install_chart(
    cluster: Cluster, namespace: str, values: Sequence[str] = PENDING_OPERATOR_POD
) -> Path:
    """``helm install`` the chart for ``namespace``; a kubeconfig with its ServiceAccount.

    ``values`` are more helm arguments (``--set ...``); by default the chart's own operator
    pod stays Pending.
    """
    helm = Path(os.environ.get("DIARTUNE_CACHE", Path.home() / ".cache/diartune"))
    helm = helm / "control-plane" / "bin" / "helm"
    if not os.access(helm, os.X_OK):
        subprocess.run([str(ROOT / "scripts/build-control-plane.sh")], check=True)
    subprocess.run(
        [
            str(helm),
            "install",
            RELEASE,
            str(ROOT / "charts" / "diartune"),
            "-n",
            namespace,
            "--skip-crds",
            "--set",
            "rbac.scope=namespace",
            "--set",
            f"watchNamespaces={{{namespace}}}",
            # What the tests' tunings ask for: their trial image, their S3 credentials and
            # KWOK's fake nodes.
            "--set",
            "trialPolicy.allowedImages={diartune-trial}",
            "--set",
            "trialPolicy.allowedSecrets={s3-credentials,canary-extra,hf-token}",
            "--set",
            "trialPolicy.allowedTolerationKeys={kwok.x-k8s.io/node}",
            *values,
        ],
        env=cluster.env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return cluster.serviceaccount_kubeconfig(namespace, f"{RELEASE}-diartune")
