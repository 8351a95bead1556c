"""The Dockerfile's images, built by ``scripts/build-images.sh`` and run with podman.

``build_images("operator", "trial")`` builds the images (or finds them up to date: the
script keys each image by what it is built from) and returns their references;
``podman(...)`` runs podman with the configuration and storage the script wrote (in
``${DIARTUNE_CACHE:-~/.cache/diartune}/images``); ``PodmanRuntime`` is the podman mode of
``node_runner.NodeRunner``: it runs a pod's container the way a kubelet would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity
from node_runner import ImagePullError

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-images.sh"
BUILD_TIMEOUT_S = 3600


def images_root() -> Path:
    """Where build-images.sh keeps the container configuration, storage and logs."""
    cache = os.environ.get("DIARTUNE_CACHE") or str(Path.home() / ".cache" / "diartune")
    return Path(cache) / "images"


def podman_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with the configuration files build-images.sh writes."""
    config = images_root() / "config"
    return {
        **(os.environ if base is None else base),
        "CONTAINERS_CONF": str(config / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(config / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(config / "registries.conf"),
    }


def build_images(*targets: str) -> dict[str, str]:
    """Build (or find up to date) the Dockerfile's ``targets``; their image references.

    Raises RuntimeError with the end of the script's log when a build fails.
    """
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *targets],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} {' '.join(targets)} failed:\n{done.stderr[-5000:]}")
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.strip())


@pytest.fixture(scope="session", name="images")
def images_fixture() -> dict[str, str]:
    """Fixture ``images``: ``{"operator": reference, "trial": reference}``, built if needed.

    Import it into a test module (``from containers import images_fixture``) to use it.
    """
    return build_images("operator", "trial")


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run podman with the project's container configuration; capture text output."""
    return _run_tool("podman", args, check, timeout)


def skopeo(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run skopeo (which copies images between storages and registries), failing on error."""
    return _run_tool("skopeo", args, True, timeout)


def _run_tool(
    tool: str, args: Sequence[str], check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [tool, *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def inspect(image: str) -> dict[str, Any]:
    """``podman image inspect`` of one image."""
    [found] = json.loads(podman("image", "inspect", image).stdout)
    return dict(found)


def container_name(*parts: str) -> str:
    """A valid, recognisable container name from ``parts`` (e.g. namespace, pod, uid)."""
    return "diartune-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", "-".join(parts))


def remove_container(name: str) -> None:
    """Kill and remove container ``name`` if it exists."""
    podman("rm", "--force", "--ignore", "--time", "0", name, timeout=60)


class PodmanRuntime:
    """Runs a pod's container with podman, as a kubelet would (``NodeRunner``'s podman mode).

    The container gets the pod's image (pulled as its ``imagePullPolicy`` says), command,
    args, env (resolved by the runner), user, capabilities and memory limit; its root
    filesystem is read-only, whatever the pod says, with its emptyDir volumes and a tmpfs on
    /tmp unless a volume covers it; projected volumes (the ServiceAccount token that the
    admission plugin adds) are written like the kubelet's, the token from a TokenRequest
    bound to the pod, and KUBERNETES_SERVICE_HOST/PORT name the API server; the network is
    the host's, so that servers on 127.0.0.1 are reachable. The termination message path
    is a file of the pod's work dir, bind-mounted.
    """

    def __init__(self, api: client.ApiClient, insecure_registries: Sequence[str] = ()) -> None:
        """``insecure_registries``: registry hosts (host:port) reached over plain HTTP."""
        self.core = client.CoreV1Api(api)
        self.server = api.configuration.host
        self.insecure_registries = set(insecure_registries)
        self.env = podman_env()

    def run_argv(
        self,
        pod: client.V1Pod,
        container: client.V1Container,
        command: list[str],
        args: list[str],
        env: Mapping[str, str],
        workdir: Path,
        termination_log: Path,
    ) -> list[str]:
        """The ``podman run`` argv of the container, whose image ``pull`` got.

        ``command`` and ``args`` are the container's, already ``$(VAR)``-expanded.
        """
        meta = pod.metadata
        termination_log.touch()
        termination_log.chmod(0o666)  # the container's user writes it
        env_file = workdir / "container.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        env_file.chmod(0o600)
        mounts = self._volume_mounts(pod, container, workdir)
        argv = [
            "podman",
            "run",
            "--rm",
            "--name",
            container_name(meta.namespace, meta.name, meta.uid[:8]),
            "--network",
            "host",
            "--pull",
            "never",
            "--read-only",
            "--read-only-tmpfs=false",
            "--env-file",
            str(env_file),
            "--volume",
            f"{termination_log}:{container.termination_message_path or '/dev/termination-log'}",
            *mounts,
            *self._security(pod, container),
            *self._limits(container),
        ]
        if container.working_dir:
            argv += ["--workdir", container.working_dir]
        if command:
            argv += ["--entrypoint", json.dumps(command)]
        return [*argv, container.image, *args]

    def pull(self, image: str, policy: str) -> None:
        """Pull ``image`` per ``policy`` (Always, IfNotPresent, Never), as the kubelet does.

        Raises ImagePullError when the image is not there and cannot be pulled.
        """
        present = podman("image", "exists", image, check=False).returncode == 0
        if policy == "Never" and not present:
            raise ImagePullError(
                "ErrImageNeverPull", f"{image} is not present with pull policy Never"
            )
        if policy == "Always" or not present:
            registry = image.split("/", 1)[0]
            tls = ["--tls-verify=false"] if registry in self.insecure_registries else []
            done = podman("pull", "--quiet", *tls, image, check=False, timeout=1800)
            if done.returncode != 0:
                raise ImagePullError("ErrImagePull", f"{image}: {done.stderr.strip()}")

    def remove(self, namespace: str, name: str, uid: str) -> None:
        """Kill and remove the pod's container, if it still exists."""
        remove_container(container_name(namespace, name, uid[:8]))

    # ------------------------------------------------------------------ pieces of the argv

    def _volume_mounts(
        self, pod: client.V1Pod, container: client.V1Container, workdir: Path
    ) -> list[str]:
        volumes = {volume.name: volume for volume in pod.spec.volumes or []}
        options: list[str] = []
        for mount in container.volume_mounts or []:
            volume = volumes[mount.name]
            mode = "ro" if mount.read_only else "rw"
            if volume.empty_dir is not None and volume.empty_dir.medium == "Memory":
                options += ["--tmpfs", f"{mount.mount_path}:rw,mode=1777"]
            elif volume.empty_dir is not None:
                host = workdir / "volumes" / mount.name
                host.mkdir(parents=True, exist_ok=True)
                host.chmod(0o777)  # an emptyDir is writable by the pod's user
                options += ["--volume", f"{host}:{mount.mount_path}:{mode}"]
            elif volume.projected is not None:
                host = self._projected(pod, volume.projected, workdir / "volumes" / mount.name)
                options += ["--volume", f"{host}:{mount.mount_path}:ro"]
            else:
                raise ValueError(f"volume {mount.name}: only emptyDir and projected are supported")
        if "/tmp" not in {mount.mount_path for mount in container.volume_mounts or []}:
            options += ["--tmpfs", "/tmp:rw,mode=1777"]
        # The kubelet's service environment: how in-cluster clients find the API server.
        host, _, port = self.server.removeprefix("https://").rpartition(":")
        return [
            *options,
            "--env",
            f"KUBERNETES_SERVICE_HOST={host}",
            "--env",
            f"KUBERNETES_SERVICE_PORT={port}",
        ]

    def _projected(
        self, pod: client.V1Pod, volume: client.V1ProjectedVolumeSource, folder: Path
    ) -> Path:
        """Write a projected volume's files (ServiceAccount token, ConfigMap keys, namespace).

        These are what the ServiceAccount admission plugin puts in every pod that mounts
        its token (the ``kube-api-access-*`` volume).
        """
        meta = pod.metadata
        files: dict[str, str] = {}
        for source in volume.sources:
            if source.service_account_token is not None:
                token = source.service_account_token
                files[token.path] = self._token(pod, token.audience, token.expiration_seconds)
            elif source.config_map is not None:
                data = self.core.read_namespaced_config_map(
                    source.config_map.name, meta.namespace
                ).data
                for item in source.config_map.items:
                    files[item.path] = data[item.key]
            elif source.downward_api is not None:
                fields = {"metadata.namespace": meta.namespace, "metadata.name": meta.name}
                for item in source.downward_api.items:
                    files[item.path] = fields[item.field_ref.field_path]
            else:
                raise ValueError(f"projected volume source not supported: {source}")
        folder.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            (folder / path).write_text(text)
            (folder / path).chmod(0o644)
        return folder

    def _token(self, pod: client.V1Pod, audience: str | None, seconds: int | None) -> str:
        """A ServiceAccount token bound to the pod, from the TokenRequest API."""
        meta = pod.metadata
        request = {
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": seconds or 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.name,
                    "uid": meta.uid,
                },
            }
        }
        account = pod.spec.service_account_name or "default"
        created = self.core.create_namespaced_service_account_token(
            account, meta.namespace, request
        )
        return str(created.status.token)

    @staticmethod
    def _security(pod: client.V1Pod, container: client.V1Container) -> list[str]:
        pod_context = pod.spec.security_context or client.V1PodSecurityContext()
        context = container.security_context or client.V1SecurityContext()
        user = context.run_as_user if context.run_as_user is not None else pod_context.run_as_user
        group = (
            context.run_as_group if context.run_as_group is not None else pod_context.run_as_group
        )
        options: list[str] = []
        if user is not None:
            options += ["--user", f"{user}:{group}" if group is not None else str(user)]
        if pod_context.fs_group is not None:
            options += ["--group-add", str(pod_context.fs_group)]
        if context.allow_privilege_escalation is False:
            options += ["--security-opt", "no-new-privileges"]
        capabilities = context.capabilities or client.V1Capabilities()
        options += [f"--cap-drop={name.lower()}" for name in capabilities.drop or []]
        options += [f"--cap-add={name.lower()}" for name in capabilities.add or []]
        return options

    @staticmethod
    def _limits(container: client.V1Container) -> list[str]:
        limits = (container.resources.limits if container.resources else None) or {}
        if "memory" not in limits:
            return []
        return ["--memory", str(int(parse_quantity(limits["memory"])))]
