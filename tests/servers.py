"""Production servers for the end-to-end tests, built by ``scripts/build-test-servers.sh``.

``seaweedfs(...)`` serves SeaweedFS's S3 gateway (the object store: master, volume, filer
and S3 in one ``weed server``) and ``registry(...)`` CNCF distribution (the container
registry), each on free ports of 127.0.0.1, as context managers that yield the address
and stop the server (and check it did not die) on exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cluster import Component, die_with_parent, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-test-servers.sh"
BINARIES = ("weed", "registry")
START_TIMEOUT_S = 120.0


def bin_dir() -> Path:
    """Where build-test-servers.sh links the server binaries."""
    cache = os.environ.get("DIARTUNE_CACHE") or str(Path.home() / ".cache" / "diartune")
    return Path(cache) / "test-servers" / "bin"


def ensure_binaries() -> Path:
    """The binary directory, after running the (idempotent) build script if one is missing.

    The script holds a lock while it builds: this waits for a build already running, such
    as the one scripts/test.sh starts in the background.
    """
    directory = bin_dir()
    if not all(os.access(directory / name, os.X_OK) for name in BINARIES):
        subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=sys.stderr, check=True)
    return directory


@contextmanager
def _serving(name: str, argv: list[str], log: Path, ready: Callable[[], bool]) -> Iterator[None]:
    """Run ``argv`` (output to ``log``) until the block ends; wait for ``ready()`` first."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    server = Component(name, process, log)
    try:
        wait_for(ready, f"{name} to serve", START_TIMEOUT_S, [server], log)
        yield
        server.check_alive()
    finally:
        server.stop()


@contextmanager
def seaweedfs(workdir: Path, access_key: str, secret_key: str) -> Iterator[str]:
    """SeaweedFS with its S3 gateway on 127.0.0.1; yields the endpoint URL.

    The S3 gateway accepts exactly one identity, ``access_key``/``secret_key``, allowed
    everything. Ready once a bucket can be created and an object written in it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": access_key,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    port = free_port()
    ports = {
        f"{component}.port{suffix}": str(free_port())
        for component in ("master", "volume", "filer")
        for suffix in ("", ".grpc")
    }
    argv = [
        str(ensure_binaries() / "weed"),
        "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",  # on by default: it reports to seaweedfs.com
        # Each bucket is a collection that grows several volumes: leave room for them.
        "-volume.max=200",
        "-master.volumeSizeLimitMB=256",
        "-filer",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={port}",
        f"-s3.port.grpc={free_port()}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        *(f"-{flag}={value}" for flag, value in ports.items()),
    ]
    (workdir / "data").mkdir(exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )

    def writable() -> bool:
        try:
            s3.create_bucket(Bucket="diartune-ready")
            s3.put_object(Bucket="diartune-ready", Key="ready", Body=b"ok")
        except (BotoCoreError, ClientError):
            time.sleep(0.5)
            return False
        return True

    with _serving("seaweedfs", argv, workdir / "weed.log", writable):
        s3.delete_object(Bucket="diartune-ready", Key="ready")
        s3.delete_bucket(Bucket="diartune-ready")
        yield endpoint


@contextmanager
def registry(workdir: Path) -> Iterator[str]:
    """A CNCF distribution registry over plain HTTP on 127.0.0.1; yields ``127.0.0.1:port``.

    Its storage is ``workdir/data``: keep ``workdir`` to keep what was pushed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": address},
    }
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config))

    def serving() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    argv = [str(ensure_binaries() / "registry"), "serve", str(path)]
    with _serving("registry", argv, workdir / "registry.log", serving):
        yield address
