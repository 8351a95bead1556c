"""A stand-in kubelet for one fake node: runs its pods' commands as local processes.

KWOK keeps the node (named ``runner-<n>``, see ``cluster.Cluster.add_runner_node``)
Ready but leaves its pods alone. ``NodeRunner`` watches the pods bound to that node and,
for each new one, marks it Running, runs its first container's command and args as a
subprocess (with the container's env, ``$(VAR)`` expansion and a per-pod working dir),
then reports Succeeded or Failed with the exit code and the termination message, the way
the kubelet does, so that the Job controller (and podFailurePolicy) see real results.
Deleting the pod kills the process.

By default the container image is not used, so ``executables`` maps a command name to
what runs instead, e.g. ``{"diartune": [sys.executable, "-m", "diartune"]}``; ``path_map``
maps container paths (volume mounts) to host paths. The container's
``terminationMessagePath`` (default ``/dev/termination-log``) is replaced in
command, args and env values by a per-pod file, read after the process exits.

With ``preload`` (modules to import once, e.g. ``["diartune.trial.run"]``), a pod whose
command comes to ``sys.executable -m MODULE ...`` is forked from a process that has imported
them (tests/fork_server.py), with the same env, working dir, args, log, exit code and
process group, so that it skips the 10-30 s of importing torch and pyannote; one whose env
changes a variable the imports read (``HF_HUB_CACHE``...; see ``PER_POD_VARIABLES``)
starts afresh.

In podman mode (``podman=containers.PodmanRuntime(...)``) each pod's container runs in its
image instead, with podman (see ``containers.PodmanRuntime``); ``executables`` and
``path_map`` are then unused and the per-pod file is bind-mounted at the container's path.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fork_server import ForkedProcess, ForkServer
from kubernetes import client, watch

if TYPE_CHECKING:
    from containers import PodmanRuntime

DEFAULT_NODE = "runner-0"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
MAX_KILL_GRACE_S = 10.0
#: The kubelet's image pull back-off starts at 10 s and doubles up to 300 s; shorter here.
PULL_BACKOFF_S = (1.0, 10.0)
#: What a forked pod may set apart from the fork server: a trial pod's HOME and
#: DIARTUNE_CACHE are in its emptyDir. The imports take from HOME only where library
#: caches and config files are (the runner keeps no read-only root filesystem anyway;
#: tests/test_in_images.py runs the images with one), and read DIARTUNE_CACHE only in
#: scans of the whole environment (tqdm, fsspec, networkx look for their own prefixes);
#: diartune reads it when a trial runs.
PER_POD_VARIABLES = ("HOME", "DIARTUNE_CACHE")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined vars are replaced, ``$$`` escapes ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def mount(text: str, mounts: Mapping[str, str]) -> str:
    """A container path under a mounted volume, as its host path (other text unchanged)."""
    for container_path, host_path in mounts.items():
        if text == container_path or text.startswith(container_path + "/"):
            return host_path + text[len(container_path) :]
    return text


def remap(text: str, path_map: Mapping[str, str]) -> str:
    """Replace every container path in ``path_map`` by its host path."""
    for container_path, host_path in path_map.items():
        text = text.replace(container_path, host_path)
    return text


def on_host(text: str, path_map: Mapping[str, str], mounts: Mapping[str, str]) -> str:
    """``text`` with its container paths as host paths: those of ``path_map`` (the
    termination log...), else one under a mounted volume. A path already mapped is not
    mounted again: the runner's host folders may lie under a container mount point
    (both under /tmp)."""
    mapped = remap(text, path_map)
    return mapped if mapped != text else mount(text, mounts)


class ImagePullError(RuntimeError):
    """An image that could not be pulled; ``reason`` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class RunningPod:
    """What the runner knows about one pod it is running."""

    namespace: str
    name: str
    uid: str
    workdir: Path
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    deleted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_running(self) -> bool:
        """Whether its process has started and not exited yet."""
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> Path:
        """Combined stdout/stderr of the pod's process."""
        return self.workdir / "container.log"

    @property
    def termination_log(self) -> Path:
        """The host file standing in for the container's terminationMessagePath."""
        return self.workdir / "termination-log"


class NodeRunner:
    """Run the pods bound to ``node`` as local processes, in a background thread.

    Use as a context manager: ``with NodeRunner(cluster.api_client(), executables=...)``.
    """

    def __init__(
        self,
        api: client.ApiClient,
        node: str = DEFAULT_NODE,
        executables: Mapping[str, Sequence[str]] | None = None,
        path_map: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        podman: PodmanRuntime | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        """``base_env`` (default ``os.environ``) is the environment the container env extends;
        with ``podman``, containers run in their images (and ``base_env`` is unused);
        ``preload``: modules imported once by the process that pods are forked from (not
        with ``podman``)."""
        self.core = client.CoreV1Api(api)
        self.podman = podman
        self.node = node
        self.executables = dict(executables or {})
        self.path_map = dict(path_map or {})
        self.base_env = dict(os.environ if base_env is None else base_env)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"diartune-{node}-"))
        self.pods: dict[str, RunningPod] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watch = watch.Watch()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._terminating: set[str] = set()
        self.preload = [] if podman is not None else list(preload)
        self._forks: ForkServer | None = None
        #: The pods whose process was forked from the fork server, by name.
        self.forked: list[str] = []

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> NodeRunner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the fork server (it imports meanwhile), list the node's pods, then watch
        them in a daemon thread."""
        if self.preload:
            self.workdir.mkdir(parents=True, exist_ok=True)
            log = self.workdir / "fork-server.log"
            self._forks = ForkServer(self.preload, self.base_env, log, PER_POD_VARIABLES)
        listing = self._list()
        for pod in listing.items:
            self._handle("ADDED", pod)
        self._thread = threading.Thread(
            target=self._watch_loop,
            args=(listing.metadata.resource_version,),
            name=f"node-runner-{self.node}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, kill running processes, wait for the workers, remove the workdir."""
        self._stopping.set()
        try:
            deadline = time.monotonic() + 10
            while self._thread and self._thread.is_alive() and time.monotonic() < deadline:
                self._watch.stop()  # shuts the socket down; repeated in case a new stream began
                self._thread.join(timeout=0.1)
            with self._lock:
                pods = list(self.pods.values())
            for pod in pods:
                self._kill(pod, grace=0)
            for worker in self._workers:
                worker.join(timeout=10)
            if self._forks is not None and self._forks.close() != 0:
                log = (self.workdir / "fork-server.log").read_text("utf-8", errors="replace")
                self._record(f"the fork server failed: {log[-2000:]}")
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self, namespace: str, name: str) -> str:
        """The output of the last process run for pod ``namespace/name`` ('' if none)."""
        with self._lock:
            matches = [p for p in self.pods.values() if (p.namespace, p.name) == (namespace, name)]
        if not matches or not matches[-1].log.exists():
            return ""
        return matches[-1].log.read_text("utf-8", errors="replace")

    # ---------------------------------------------------------------- watching

    def _list(self) -> Any:
        return self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}")

    def _watch_loop(self, resource_version: str) -> None:
        while not self._stopping.is_set():
            try:
                stream = self._watch.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.node}",
                    resource_version=resource_version,
                    timeout_seconds=300,
                )
                for event in stream:
                    pod = event["object"]
                    resource_version = pod.metadata.resource_version
                    self._handle(event["type"], pod)
            except client.ApiException as error:
                if error.status != 410:
                    self._record(f"watch failed: {error}")
                resource_version = self._relist()
            except Exception as error:  # the connection was cut by stop(), or broke
                if self._stopping.is_set():
                    return
                self._record(f"watch failed: {error!r}")
                resource_version = self._relist()

    def _relist(self) -> str:
        """Resynchronise after a watch expired or broke; returns the new resourceVersion."""
        if self._stopping.wait(0.2):
            return ""
        try:
            listing = self._list()
        except Exception as error:
            self._record(f"list failed: {error!r}")
            return ""
        seen = {pod.metadata.uid for pod in listing.items}
        for pod in listing.items:
            self._handle("MODIFIED", pod)
        with self._lock:
            gone = [p for uid, p in self.pods.items() if uid not in seen and p.is_running()]
        for pod in gone:
            self._start_worker(self._kill, pod, 0)
        return str(listing.metadata.resource_version)

    def _handle(self, event_type: str, pod: client.V1Pod) -> None:
        """Start new Pending pods; kill and finalize deleted ones (work runs in threads)."""
        meta = pod.metadata
        with self._lock:
            known = self.pods.get(meta.uid)
            if event_type == "DELETED" or meta.deletion_timestamp is not None:
                if meta.uid in self._terminating:
                    return
                self._terminating.add(meta.uid)
            elif known is None and pod.status.phase == "Pending":
                known = RunningPod(meta.namespace, meta.name, meta.uid, self._pod_dir(pod))
                self.pods[meta.uid] = known
                self._start_worker(self._run, known, pod)
                return
            else:
                return
        if event_type == "DELETED":
            if known is not None:
                self._start_worker(self._kill, known, 0)
        else:
            self._start_worker(self._terminate, known, pod)

    def _pod_dir(self, pod: client.V1Pod) -> Path:
        meta = pod.metadata
        return self.workdir / f"{meta.namespace}_{meta.name}_{meta.uid[:8]}"

    def _start_worker(self, target: Any, *args: Any) -> None:
        worker = threading.Thread(target=self._guard, args=(target, *args), daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        worker.start()

    def _guard(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except Exception as error:
            if not self._stopping.is_set():
                self._record(f"{target.__name__} failed: {error!r}")

    def _record(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    # ---------------------------------------------------------------- running a pod

    def _run(self, running: RunningPod, pod: client.V1Pod) -> None:
        """Mark the pod Running, run its command, report how it exited."""
        running.workdir.mkdir(parents=True, exist_ok=True)
        container = pod.spec.containers[0]
        if not self._pulled(pod, container, running):
            return
        try:
            argv, env = self._command(pod, container, running)
        except Exception as error:  # e.g. a missing Secret: fail the pod, don't hang the test
            self._report_exit(pod, container, running, 128, f"CreateContainerConfigError: {error}")
            return
        if running.deleted:
            return
        self._patch_status(pod, self._running_status(pod))
        try:
            process = self._spawn(running, argv, env)
        except OSError as error:
            self._report_exit(pod, container, running, 127, f"StartError: {error}")
            return
        if process is None:
            return
        code = process.wait()
        with running.lock:
            if running.deleted:
                return
        self._report_exit(pod, container, running, code)

    def _pulled(
        self, pod: client.V1Pod, container: client.V1Container, running: RunningPod
    ) -> bool:
        """Whether the container's image is there, pulled in podman mode as a kubelet does.

        While a pull fails, the pod stays Pending with the container waiting (ErrImagePull,
        then ImagePullBackOff), retried with a doubling back-off until the pod is deleted
        (e.g. by its Job's activeDeadlineSeconds); then this returns False.
        """
        if self.podman is None:
            return True
        delay, reason = PULL_BACKOFF_S[0], ""
        while not running.deleted:
            try:
                self.podman.pull(container.image, container.image_pull_policy or "IfNotPresent")
                return True
            except ImagePullError as error:
                reason = "ImagePullBackOff" if reason else error.reason
                self._patch_status(pod, self._waiting_status(pod, reason, str(error)))
            time.sleep(delay)
            delay = min(2 * delay, PULL_BACKOFF_S[1])
        return False

    def _spawn(
        self, running: RunningPod, argv: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes] | ForkedProcess | None:
        """Start the process in its own session, forked where it can be (None if the pod
        was deleted meanwhile)."""
        module = self._forked_module(argv, env)
        with running.lock:
            if running.deleted:
                return None
            with running.log.open("wb") as out:
                if module is not None and self._forks is not None:
                    running.process = self._forks.spawn(
                        module, argv[3:], env, running.workdir, running.log
                    )
                    self.forked.append(running.name)
                    return running.process
                running.process = subprocess.Popen(
                    argv,
                    cwd=running.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            return running.process

    def _forked_module(self, argv: list[str], env: dict[str, str]) -> str | None:
        """The module to fork ``argv`` as, if it is ``sys.executable -m MODULE ...`` and the
        fork server's imports read no variable that ``env`` changes."""
        if self._forks is None or argv[:2] != [sys.executable, "-m"] or len(argv) < 3:
            return None
        return argv[2] if self._forks.forks(env) else None

    def _command(
        self, pod: client.V1Pod, container: client.V1Container, running: RunningPod
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment to run ``container`` with on this machine."""
        container_env = self._container_env(pod, container)
        if self.podman is not None:
            command = [expand(arg, container_env) for arg in container.command or []]
            args = [expand(arg, container_env) for arg in container.args or []]
            argv = self.podman.run_argv(
                pod,
                container,
                command,
                args,
                container_env,
                running.workdir,
                running.termination_log,
            )
            return argv, self.podman.env
        termination_path = container.termination_message_path or DEFAULT_TERMINATION_PATH
        path_map = {**self.path_map, termination_path: str(running.termination_log)}
        mounts = self._empty_dirs(pod, container, running)
        container_env = {
            key: on_host(value, path_map, mounts) for key, value in container_env.items()
        }
        argv = [
            expand(arg, container_env)
            for arg in [*(container.command or []), *(container.args or [])]
        ]
        argv = [on_host(arg, path_map, mounts) for arg in argv]
        if not argv:
            raise ValueError(
                f"container {container.name} has no command (image entrypoints are unknown)"
            )
        executable = self.executables.get(argv[0]) or self.executables.get(Path(argv[0]).name)
        argv = [*(executable or argv[:1]), *argv[1:]]
        return argv, {**self.base_env, "HOSTNAME": pod.metadata.name, **container_env}

    @staticmethod
    def _empty_dirs(
        pod: client.V1Pod, container: client.V1Container, running: RunningPod
    ) -> dict[str, str]:
        """Each emptyDir the container mounts, as a folder of the pod's own: mount path ->
        host folder (a kubelet gives every pod fresh ones)."""
        empty = {v.name for v in pod.spec.volumes or [] if v.empty_dir is not None}
        mounts = {}
        for volume in container.volume_mounts or []:
            if volume.name in empty:
                folder = running.workdir / "volumes" / volume.name
                folder.mkdir(parents=True, exist_ok=True)
                mounts[volume.mount_path.rstrip("/")] = str(folder)
        return mounts

    def _container_env(self, pod: client.V1Pod, container: client.V1Container) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.env_from or []:
            env.update(self._env_from(pod.metadata.namespace, source))
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
            else:
                value = self._value_from(pod, var.value_from)
                if value is not None:
                    env[var.name] = value
        return env

    def _env_from(self, namespace: str, source: client.V1EnvFromSource) -> dict[str, str]:
        prefix = source.prefix or ""
        if source.secret_ref is not None:
            data = self._secret_data(namespace, source.secret_ref.name, source.secret_ref.optional)
        elif source.config_map_ref is not None:
            ref = source.config_map_ref
            data = self._config_map_data(namespace, ref.name, ref.optional)
        else:
            data = {}
        return {prefix + key: value for key, value in data.items()}

    def _value_from(self, pod: client.V1Pod, source: client.V1EnvVarSource) -> str | None:
        namespace = pod.metadata.namespace
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            return self._key(self._secret_data(namespace, ref.name, ref.optional), ref)
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            return self._key(self._config_map_data(namespace, ref.name, ref.optional), ref)
        if source.field_ref is not None:
            return self._field(pod, source.field_ref.field_path)
        raise ValueError(f"unsupported valueFrom: {source}")

    @staticmethod
    def _key(data: Mapping[str, str], ref: Any) -> str | None:
        if ref.key in data:
            return data[ref.key]
        if ref.optional:
            return None
        raise KeyError(f"key {ref.key!r} not found in {ref.name!r}")

    def _secret_data(self, namespace: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise
        return {
            key: base64.b64decode(value).decode("utf-8")
            for key, value in (secret.data or {}).items()
        }

    def _config_map_data(self, namespace: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except client.ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise

    @staticmethod
    def _field(pod: client.V1Pod, path: str) -> str:
        meta = pod.metadata
        fields = {
            "metadata.name": meta.name,
            "metadata.namespace": meta.namespace,
            "metadata.uid": meta.uid,
            "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name,
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return (getattr(meta, match.group(1)) or {}).get(match.group(2), "")
        if path not in fields:
            raise ValueError(f"unsupported fieldRef {path}")
        return str(fields[path] or "")

    # ---------------------------------------------------------------- status

    @staticmethod
    def _waiting_status(pod: client.V1Pod, reason: str, message: str) -> dict[str, Any]:
        """Pending, each container waiting for ``reason`` (as the kubelet reports a pull)."""
        waiting = {"waiting": {"reason": reason, "message": message[:1024]}}
        return {
            "phase": "Pending",
            "hostIP": "127.0.0.1",
            "containerStatuses": _container_statuses(pod, waiting, started=False),
        }

    def _running_status(self, pod: client.V1Pod) -> dict[str, Any]:
        now = _now()
        return {
            "phase": "Running",
            "startTime": now,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": now}
                for kind in ("Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": _container_statuses(
                pod, {"running": {"startedAt": now}}, started=True
            ),
        }

    def _report_exit(
        self,
        pod: client.V1Pod,
        container: client.V1Container,
        running: RunningPod,
        code: int,
        message: str | None = None,
    ) -> None:
        """Patch the pod Succeeded/Failed with the container's terminated state."""
        if code < 0:  # killed by a signal, as a container runtime reports it
            code = 128 - code
        if message is None:
            message = self._termination_message(container, running, code)
        now = _now()
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": now,
            "finishedAt": now,
        }
        statuses = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
            for c in pod.spec.containers
        ]
        phase = "Succeeded" if code == 0 else "Failed"
        conditions = [
            {"type": kind, "status": "False", "reason": f"Pod{phase}", "lastTransitionTime": now}
            for kind in ("ContainersReady", "Ready")
        ]
        self._patch_status(
            pod, {"phase": phase, "conditions": conditions, "containerStatuses": statuses}
        )

    @staticmethod
    def _termination_message(container: client.V1Container, running: RunningPod, code: int) -> str:
        message = ""
        if running.termination_log.exists():
            message = running.termination_log.read_bytes()[:MAX_MESSAGE_BYTES].decode(
                "utf-8", "replace"
            )
        fallback = container.termination_message_policy == "FallbackToLogsOnError"
        if not message and fallback and code != 0 and running.log.exists():
            lines = running.log.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            message = b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode("utf-8", "replace")
        return message

    def _patch_status(self, pod: client.V1Pod, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )
        except client.ApiException as error:
            if error.status != 404:
                raise

    # ---------------------------------------------------------------- deletion

    def _kill(self, running: RunningPod, grace: float = MAX_KILL_GRACE_S) -> None:
        """Mark the pod deleted and stop its process group (SIGTERM, SIGKILL after grace).

        In podman mode, SIGTERM reaches the container through ``podman run``; the container
        is then removed, as SIGKILL would only kill ``podman run``.
        """
        with running.lock:
            running.deleted = True
            process = running.process
        try:
            self._kill_process(process, grace)
        finally:
            if self.podman is not None and process is not None:
                self.podman.remove(running.namespace, running.name, running.uid)

    @staticmethod
    def _kill_process(
        process: subprocess.Popen[bytes] | ForkedProcess | None, grace: float
    ) -> None:
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            process.wait(timeout=grace if grace > 0 else None)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass

    def _terminate(self, known: RunningPod | None, pod: client.V1Pod) -> None:
        """The pod is being deleted: kill it, report it Failed if it ran, delete it for good."""
        grace = min(float(pod.metadata.deletion_grace_period_seconds or 0), MAX_KILL_GRACE_S)
        if known is not None:
            with known.lock:
                was_running = known.is_running()
            self._kill(known, grace)
            if was_running and pod.status.phase not in ("Succeeded", "Failed"):
                code = known.process.returncode if known.process else 137
                self._report_exit(pod, pod.spec.containers[0], known, code)
        try:
            self.core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=pod.metadata.uid),
                ),
            )
        except client.ApiException as error:
            if error.status not in (404, 409):
                raise


def _container_statuses(
    pod: client.V1Pod, state: dict[str, Any], started: bool
) -> list[dict[str, Any]]:
    """The status of each of the pod's containers, all in ``state``."""
    return [
        {
            "name": c.name,
            "image": c.image,
            "imageID": "",
            "ready": started,
            "started": started,
            "restartCount": 0,
            "state": state,
        }
        for c in pod.spec.containers
    ]
