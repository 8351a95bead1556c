"""A real Kubernetes control plane for tests: etcd, kube-apiserver, controller-manager,
scheduler and KWOK fake nodes, started from local binaries the way envtest does.

Use the session fixture ``cluster`` (``from cluster import cluster_fixture`` in a test
module) or the ``Cluster`` context manager. The binaries come from
``scripts/build-control-plane.sh`` (``${DIARTUNE_CACHE:-~/.cache/diartune}/control-plane/bin``),
which is run when one of them is missing. KWOK's behaviour is described in
``tests/kwok-stages.yaml``. Set DIARTUNE_KEEP_CLUSTER=1 to keep the temp dir and its logs.
"""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parent.parent
STAGES = Path(__file__).resolve().parent / "kwok-stages.yaml"
BUILD_SCRIPT = ROOT / "scripts" / "build-control-plane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

FAKE_NODE_KEY = "kwok.x-k8s.io/node"
FAKE_NODE_VALUE = "fake"
#: KWOK leaves pods on nodes named like this alone (see kwok-stages.yaml, node_runner.py).
RUNNER_NODE_PREFIX = "runner-"
#: Tolerate this to schedule onto a fake node.
FAKE_NODE_TOLERATION: dict[str, str] = {
    "key": FAKE_NODE_KEY,
    "operator": "Exists",
    "effect": "NoSchedule",
}
#: Annotations that make KWOK terminate a Running pod on a fake (non-runner) node.
FAKE_EXIT_CODE = "fake.diartune.test/exit-code"
FAKE_DELAY = "fake.diartune.test/delay"
FAKE_MESSAGE = "fake.diartune.test/message"
FAKE_REASON = "fake.diartune.test/reason"
#: Annotate a pod on a fake node with this (a waiting reason, e.g. ImagePullBackOff): it
#: never starts, Pending with its containers waiting for that reason.
FAKE_WAITING = "fake.diartune.test/waiting"
#: Annotate a fake node with this (value "stopped") to stop its heartbeat: it goes NotReady.
FAKE_HEARTBEAT = "fake.diartune.test/heartbeat"

STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def bin_dir() -> Path:
    """Where build-control-plane.sh puts the control-plane binaries."""
    cache = os.environ.get("DIARTUNE_CACHE") or str(Path.home() / ".cache" / "diartune")
    return Path(cache) / "control-plane" / "bin"


def ensure_binaries(directory: Path | None = None) -> Path:
    """Return the binary directory, running the (idempotent) build script if one is missing."""
    directory = directory or bin_dir()
    if all(os.access(directory / name, os.X_OK) for name in BINARIES):
        return directory
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=sys.stderr, stderr=subprocess.STDOUT, check=False
    )
    missing = [name for name in BINARIES if not os.access(directory / name, os.X_OK)]
    if result.returncode != 0 or missing:
        raise RuntimeError(
            f"{BUILD_SCRIPT} exited {result.returncode}; missing in {directory}: {missing}"
        )
    return directory


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- certificates


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.KeyUsage))
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_certificates(directory: Path) -> None:
    """Write ca, apiserver (serving), admin (system:masters client) certs and the SA key pair."""
    ca_key = _new_key()
    ca_name = _name("diartune-test-ca")
    ca_cert = _certificate(
        ca_name,
        ca_key,
        None,
        [x509.BasicConstraints(ca=True, path_length=None), _key_usage(ca=True)],
    )
    sans = x509.SubjectAlternativeName(
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            *(
                x509.DNSName(name)
                for name in (
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                )
            ),
        ]
    )
    leaves = {
        "apiserver": (
            _name("kube-apiserver"),
            [sans, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])],
        ),
        "admin": (
            _name("admin", "system:masters"),
            [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
        ),
    }
    _write_key(directory / "ca.key", ca_key)
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for stem, (subject, extensions) in leaves.items():
        key = _new_key()
        extensions = [
            x509.BasicConstraints(ca=False, path_length=None),
            _key_usage(ca=False),
            *extensions,
        ]
        cert = _certificate(subject, key, (ca_name, ca_key), extensions)
        _write_key(directory / f"{stem}.key", key)
        (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    sa_key = _new_key()
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig_dict(server: str, ca_file: Path, user: dict[str, str], name: str = "test") -> dict:
    """A one-context kubeconfig for ``server`` with the given ``user`` entry."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


# --------------------------------------------------------------------------- processes


@dataclass
class Component:
    """One running control-plane process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        """Raise with the tail of the log if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{tail(self.log)}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    components: list[Component],
    log: Path | None = None,
) -> None:
    """Wait until ``condition()`` holds, failing early if a component dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        for component in components:
            component.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"timed out after {timeout:.0f}s waiting for {what}\n{tail(log) if log else ''}"
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """etcd + kube-apiserver (RBAC) + controller-manager + scheduler + KWOK, in a temp dir.

    ``with Cluster() as cluster:`` starts everything, waits for /readyz and the default
    ServiceAccount, and on exit stops the processes in reverse order and removes the dir.
    """

    def __init__(
        self,
        binaries: Path | None = None,
        stages: Path = STAGES,
        keep: bool | None = None,
        apiserver_args: Sequence[str] = (),
        controller_args: Sequence[str] = (),
    ) -> None:
        """``keep`` (default: env DIARTUNE_KEEP_CLUSTER set) keeps the temp dir and logs;
        ``apiserver_args`` and ``controller_args`` are extra kube-apiserver and
        kube-controller-manager flags. Every ServiceAccount's requests
        are logged to ``audit_log`` (the control plane's own components are not)."""
        self.binaries = binaries
        self.stages = stages
        self.apiserver_args = list(apiserver_args)
        self.controller_args = list(controller_args)
        self.keep = bool(os.environ.get("DIARTUNE_KEEP_CLUSTER")) if keep is None else keep
        self.workdir = Path()
        self.server = ""
        self.components: list[Component] = []
        self.startup_seconds = 0.0
        self._api_client: client.ApiClient | None = None

    # ---------------------------------------------------------------- paths

    @property
    def kubeconfig(self) -> Path:
        """Admin (system:masters) kubeconfig file."""
        return self.workdir / "kubeconfig"

    @property
    def ca_path(self) -> Path:
        """CA certificate that signed the apiserver's serving and client certificates."""
        return self.workdir / "ca.crt"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: every request made by a ServiceAccount."""
        return self.workdir / "audit.log"

    def log_path(self, component: str) -> Path:
        """Log file of ``component`` (etcd, kube-apiserver, kube-controller-manager, ...)."""
        return self.workdir / f"{component}.log"

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start all components and wait until the cluster is usable."""
        started = time.monotonic()
        binaries = ensure_binaries(self.binaries)
        self.workdir = Path(tempfile.mkdtemp(prefix="diartune-cluster-"))
        try:
            write_certificates(self.workdir)
            self._start_etcd(binaries)
            self._start_apiserver(binaries)
            self._start_controllers(binaries)
            self._wait_for_default_serviceaccount()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the components in reverse start order (each SIGTERM, then SIGKILL) and clean up."""
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None
        while self.components:
            self.components.pop().stop()
        if self.keep:
            print(f"kept the cluster's files in {self.workdir}", file=sys.stderr)
        elif self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(self, name: str, argv: list[str]) -> Component:
        log = self.log_path(name)
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                preexec_fn=die_with_parent,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        component = Component(name, process, log)
        self.components.append(component)
        return component

    def _start_etcd(self, binaries: Path) -> None:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        etcd = self._spawn(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self.etcd_url = client_url
        wait_for(lambda: _http_ok(f"{client_url}/health"), "etcd /health", 30, [etcd], etcd.log)

    def _start_apiserver(self, binaries: Path) -> None:
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--tls-cert-file=apiserver.crt",
                "--tls-private-key-file=apiserver.key",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-account-key-file=sa.pub",
                "--service-account-signing-key-file=sa.key",
                "--client-ca-file=ca.crt",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                # One file: at its default of 100 MB the log is rotated, and the readers of
                # audit_log (request counts, Job creations) would miss the older requests.
                "--audit-log-maxsize=1000000",
                *self.apiserver_args,
            ],
        )
        user = {
            "client-certificate": str(self.workdir / "admin.crt"),
            "client-key": str(self.workdir / "admin.key"),
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(self.server, self.ca_path, user)))
        context = self._ssl_context()
        wait_for(
            lambda: _http_ok(f"{self.server}/readyz", context),
            "kube-apiserver /readyz",
            START_TIMEOUT_S,
            self.components,
            apiserver.log,
        )

    def _audit_policy(self) -> Path:
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted"],
            "rules": [
                {"level": "None", "namespaces": ["kube-system"]},
                {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                {"level": "None"},
            ],
        }
        path = self.workdir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        return path

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
        return context

    def _start_controllers(self, binaries: Path) -> None:
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                kubeconfig,
                "--leader-elect=false",
                "--service-account-private-key-file=sa.key",
                "--root-ca-file=ca.crt",
                "--use-service-account-credentials=true",
                "--cluster-signing-cert-file=ca.crt",
                "--cluster-signing-key-file=ca.key",
                "--controllers=*,-nodeipam",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                *self.controller_args,
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                kubeconfig,
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(binaries / "kwok"),
                kubeconfig,
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_KEY}={FAKE_NODE_VALUE}",
                "--cidr=10.244.0.0/16",
                f"--config={self.stages}",
            ],
        )

    def _wait_for_default_serviceaccount(self) -> None:
        core = client.CoreV1Api(self.api_client())

        def exists() -> bool:
            try:
                core.read_namespaced_service_account("default", "default")
            except client.ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        wait_for(
            exists,
            "the default ServiceAccount",
            START_TIMEOUT_S,
            self.components,
            self.log_path("kube-controller-manager"),
        )

    # ---------------------------------------------------------------- clients

    def api_client(self) -> client.ApiClient:
        """A shared admin ``kubernetes.client.ApiClient`` (closed on stop)."""
        if self._api_client is None:
            self._api_client = self.new_api_client()
        return self._api_client

    def new_api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A new ApiClient for ``kubeconfig`` (default: admin); the caller closes it."""
        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``os.environ`` plus KUBECONFIG (and ``extra``), for kubectl, helm or an operator."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), **(extra or {})}

    def kubectl(
        self, *args: str, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run the venv's kubectl against this cluster, capturing text output."""
        kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"
        return subprocess.run(
            [kubectl, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            **kwargs,
        )

    def create_namespace(
        self, name: str, timeout: float = 30, labels: Mapping[str, str] | None = None
    ) -> str:
        """Create namespace ``name`` and wait for its default ServiceAccount (pods need it)."""
        core = client.CoreV1Api(self.api_client())
        core.create_namespace({"metadata": {"name": name, "labels": dict(labels or {})}})
        watch_until(
            core.list_namespaced_service_account,
            lambda accounts: "default" in accounts,
            timeout,
            namespace=name,
        )
        return name

    def serviceaccount_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path | None = None,
        expiration_seconds: int = 3600,
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        The token comes from the TokenRequest API, so it carries exactly the RBAC the
        ServiceAccount was granted (e.g. by a Helm chart).
        """
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        core = client.CoreV1Api(self.api_client())
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        path = path or self.workdir / f"kubeconfig-{namespace}-{name}"
        data = kubeconfig_dict(
            self.server, self.ca_path, {"token": token}, name=f"{namespace}-{name}"
        )
        data["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(data))
        path.chmod(0o600)
        return path

    # ---------------------------------------------------------------- nodes

    def add_gpu_nodes(
        self,
        count: int,
        gpus_per_node: int = 8,
        prefix: str = "gpu-node-",
        labels: Mapping[str, str] | None = None,
        cpu: str = "32",
        memory: str = "256Gi",
        pods: int = 110,
        wait: bool = True,
    ) -> list[str]:
        """Create ``count`` KWOK-managed GPU nodes named ``{prefix}{i}``; return their names.

        Each has capacity/allocatable ``nvidia.com/gpu``, cpu, memory and pods, the
        annotation and NoSchedule taint ``kwok.x-k8s.io/node=fake`` (pods need
        ``FAKE_NODE_TOLERATION``) and the label ``kubernetes.io/hostname``. With ``wait``,
        returns once every node is Ready and schedulable (no not-ready taint).
        """
        core = client.CoreV1Api(self.api_client())
        existing = {node.metadata.name for node in core.list_node().items}
        start = next(i for i in range(10_000) if f"{prefix}{i}" not in existing)
        names = [f"{prefix}{i}" for i in range(start, start + count)]
        for name in names:
            core.create_node(self._node_manifest(name, gpus_per_node, labels, cpu, memory, pods))
        if wait:
            self.wait_nodes_ready(names)
        return names

    def add_runner_node(
        self,
        name: str = f"{RUNNER_NODE_PREFIX}0",
        gpus: int = 8,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Create (if missing) the fake node whose pods ``node_runner.NodeRunner`` runs.

        Its name must start with ``runner-``: KWOK's pod stages skip such nodes' pods.
        Returns once the node is Ready.
        """
        if not name.startswith(RUNNER_NODE_PREFIX):
            raise ValueError(f"runner node names start with {RUNNER_NODE_PREFIX!r}: {name}")
        core = client.CoreV1Api(self.api_client())
        try:
            core.create_node(self._node_manifest(name, gpus, labels))
        except client.ApiException as error:
            if error.status != 409:  # already there (another module made it): reuse it
                raise
        self.wait_nodes_ready([name])
        return name

    def delete_nodes(self, names: list[str]) -> None:
        """Delete fake nodes (their pods are then garbage-collected by the pod GC)."""
        core = client.CoreV1Api(self.api_client())
        for name in names:
            try:
                core.delete_node(name)
            except client.ApiException as error:
                if error.status != 404:
                    raise

    @staticmethod
    def _node_manifest(
        name: str,
        gpus: int,
        labels: Mapping[str, str] | None,
        cpu: str = "32",
        memory: str = "256Gi",
        pods: int = 110,
    ) -> dict[str, Any]:
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "nvidia.com/gpu": str(gpus)}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {FAKE_NODE_KEY: FAKE_NODE_VALUE},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    **(labels or {}),
                },
            },
            "spec": {
                "taints": [{"key": FAKE_NODE_KEY, "value": FAKE_NODE_VALUE, "effect": "NoSchedule"}]
            },
            "status": {"capacity": resources, "allocatable": resources},
        }

    def wait_nodes_ready(self, names: list[str], timeout: float = 60) -> None:
        """Wait (watching nodes) until each named node is Ready and has no not-ready taint."""
        core = client.CoreV1Api(self.api_client())
        try:
            watch_until(
                core.list_node,
                lambda nodes: all(n in nodes and _node_ready(nodes[n]) for n in names),
                timeout,
            )
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{tail(self.log_path('kwok'))}") from None


def watch_until(
    list_fn: Callable[..., Any],
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
    **list_kwargs: Any,
) -> dict[str, Any]:
    """List, then watch, objects until ``predicate({name: object})`` holds; return that dict.

    ``list_fn`` is a kubernetes client list method (e.g. ``CoreV1Api.list_namespaced_pod``)
    and ``list_kwargs`` its arguments (namespace, label_selector, ...). Raises TimeoutError
    with a summary of the objects seen.
    """
    deadline = time.monotonic() + timeout
    objects: dict[str, Any] = {}
    resource_version = None
    while True:
        if resource_version is None:
            listing = list_fn(**list_kwargs)
            objects = {item.metadata.name: item for item in listing.items}
            resource_version = listing.metadata.resource_version
        if predicate(objects):
            return objects
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout}s; saw {summarize(objects)}")
        try:
            stream = watch.Watch().stream(
                list_fn,
                resource_version=resource_version,
                timeout_seconds=max(1, math.ceil(remaining)),
                **list_kwargs,
            )
            for event in stream:
                item = event["object"]
                resource_version = item.metadata.resource_version
                if event["type"] == "DELETED":
                    objects.pop(item.metadata.name, None)
                else:
                    objects[item.metadata.name] = item
                if predicate(objects):
                    return objects
        except client.ApiException as error:
            if error.status != 410:
                raise
            resource_version = None


def summarize(objects: Mapping[str, Any]) -> str:
    """``name: phase-or-conditions`` for each object, for error messages."""
    parts = []
    for name, item in objects.items():
        status = getattr(item, "status", None)
        phase = getattr(status, "phase", None)
        conditions = getattr(status, "conditions", None) or []
        state = phase or ",".join(f"{c.type}={c.status}" for c in conditions) or "?"
        parts.append(f"{name}: {state}")
    return "; ".join(parts) or "nothing"


def die_with_parent() -> None:
    """In the child: get SIGKILL when the thread that started it dies (pytest was killed).

    Keeps a killed test run from leaving etcd and the apiserver behind on a shared machine.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _node_ready(node: client.V1Node) -> bool:
    conditions = node.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    tainted = any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])
    return ready and not tainted


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class _Shared:
    """The one Cluster of this pytest process, shared by every module that imports the fixture.

    Each test module that imports ``cluster_fixture`` gets its own session-scoped
    FixtureDef; counting users keeps that to one control plane, stopped by the last.
    """

    cluster: Cluster | None = None
    users = 0

    @classmethod
    @contextmanager
    def use(cls) -> Iterator[Cluster]:
        if cls.cluster is None:
            started = Cluster()
            started.start()
            print(f"control plane up in {started.startup_seconds:.1f}s", file=sys.stderr)
            cls.cluster = started
        cls.users += 1
        try:
            yield cls.cluster
        finally:
            cls.users -= 1
            if cls.users == 0:
                cls.cluster.stop()
                cls.cluster = None


@pytest.fixture(scope="session", name="cluster")
def cluster_fixture() -> Iterator[Cluster]:
    """Fixture ``cluster``: a real control plane shared by the whole test session.

    Import it into a test module (``from cluster import cluster_fixture``) to use it.
    """
    with _Shared.use() as running:
        yield running
