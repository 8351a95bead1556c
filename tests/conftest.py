"""Shared fixtures: real speech (../shared/data/ami-debug), offline models, S3 servers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import seaweedfs
from trial_requests import request_document

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "Debug.SpeakerDiarization.Debug"
#: community-1's tunable VBx knobs, around pyannote's defaults (0.6, 0.07, 0.8).
VBX_SPACE = {
    "clustering.threshold": {"type": "float", "low": 0.3, "high": 0.9},
    "clustering.Fa": {"type": "float", "low": 0.01, "high": 0.5},
    "clustering.Fb": {"type": "float", "low": 0.3, "high": 2.0},
}
SPEECH_POOL = Path(os.environ.get("DIARTUNE_SPEECH_POOL", ROOT.parent / "shared/data/speech-pool"))
#: The credentials of the S3 servers, also in the environment once one is up.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "diartune-test",
    "AWS_SECRET_ACCESS_KEY": "diartune-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def ami_source() -> Path:
    """The real AMI speech that tests read (never copied into the repository)."""
    path = Path(os.environ.get("DIARTUNE_AMI_DEBUG", ROOT.parent / "shared/data/ami-debug"))
    if not (path / "database.yml").exists():
        pytest.fail(f"{path}: the ami-debug corpus is missing (set DIARTUNE_AMI_DEBUG)")
    return path


@pytest.fixture(scope="session")
def ami_raw() -> Path:
    """ami-debug exactly as shared: its train RTTM/UEM name trn00, its audio trñ00."""
    return ami_source()


def copy_ami(
    destination: Path, dev_includes_non_ascii: bool = False, test_subset: bool = False
) -> Path:
    """A writable copy of ami-debug whose train annotations match its audio (trñ00).

    The shared corpus names one train file ``trñ00`` in its list and audio but
    ``trn00`` in its RTTM and UEM; diartune refuses that (a test checks it). This
    copy fixes the annotations, so that the non-ASCII name runs end to end.
    """
    source = ami_source()
    destination.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name != "empty.wav":
            shutil.copyfile(path, destination / path.name)
    for name in ("debug.train.rttm", "debug.train.uem"):
        text = (destination / name).read_text("utf-8")
        fixed = "\n".join(
            line.replace("trn00", "trñ00", 1) if " trn00 " in f" {line} " else line
            for line in text.splitlines()
        )
        (destination / name).write_text(fixed + "\n", encoding="utf-8")
    if dev_includes_non_ascii:
        for suffix in ("lst", "rttm", "uem"):
            train = [
                line
                for line in (destination / f"debug.train.{suffix}").read_text("utf-8").splitlines()
                if "trñ00" in line
            ]
            dev = destination / f"debug.development.{suffix}"
            dev.write_text(dev.read_text("utf-8") + "\n".join(train) + "\n", encoding="utf-8")
    if test_subset:  # ami-debug has none: score the development files once more
        database = yaml.safe_load((destination / "database.yml").read_text())
        protocol = database["Protocols"]["Debug"]["SpeakerDiarization"]["Debug"]
        protocol["test"] = protocol["development"]
        (destination / "database.yml").write_text(yaml.safe_dump(database))
    return destination / "database.yml"


@pytest.fixture(scope="session")
def ami(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """database.yml of a consistent copy of ami-debug."""
    return copy_ami(tmp_path_factory.mktemp("ami"))


def _source_digest(*modules: str) -> str:
    digest = hashlib.sha256()
    for module in modules:
        digest.update((ROOT / "diartune" / module).read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def models(ami: Path) -> tuple[Path, Path]:
    """Offline segmentation (trained here on ami-debug's train subset) and embedding.

    Cached outside the repository by the source of the code that makes them, so a
    warm run reuses them.
    """
    from diartune.spec.model import Data
    from diartune.trial.bootstrap import make_models

    key = _source_digest("trial/finetune.py", "trial/models.py", "trial/bootstrap.py")
    cache = Path(os.environ.get("DIARTUNE_CACHE", Path.home() / ".cache/diartune"))
    folder = cache / "test-models" / key
    return make_models(Data(database=str(ami), protocol=PROTOCOL), folder, 12, 20)


def plda_cache(name: str) -> Path:
    """Where the offline PLDA's inputs and outputs are cached, by the code that makes them."""
    key = _source_digest(
        "trial/models.py", "trial/speakers.py", "trial/plda.py", "trial/offline_plda.py"
    )
    cache = Path(os.environ.get("DIARTUNE_CACHE", Path.home() / ".cache/diartune"))
    return cache / "test-plda" / key / name


@pytest.fixture(scope="session")
def offline_plda(models: tuple[Path, Path], ami: Path) -> Path:
    """The PLDA that build_plda makes for the offline embedding, from speech-pool and
    ami-debug's train speakers (cached outside the repo)."""
    from diartune.spec.model import Data
    from diartune.trial.offline_plda import build_plda

    data = Data(database=str(ami), protocol=PROTOCOL)
    return build_plda(plda_cache("plda"), models[1], SPEECH_POOL, data)


def trained(checkpoint: Path) -> tuple[int, int]:
    """(epochs completed, optimizer steps) of a Lightning checkpoint saved after fit."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return state["epoch"], state["global_step"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) reached over HTTP."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
    os.environ.update(S3_CREDENTIALS)
    yield endpoint
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def seaweedfs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A production S3 server: SeaweedFS's S3 gateway over HTTP, with S3_CREDENTIALS only.

    Unlike moto it checks signatures against those credentials.
    """
    folder = tmp_path_factory.mktemp("seaweedfs")
    keys = S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    with seaweedfs(folder, *keys) as endpoint:
        os.environ.update(S3_CREDENTIALS)
        yield endpoint


def run_trial(request: dict[str, Any], cwd: Path, **env: str) -> tuple[int, str]:
    """Run ``diartune trial`` as a process, as a pod would; return its code and output.

    ``request`` has the flat fields of ``request_document``.
    """
    document = request_document(request)
    path = cwd / f"{request['name']}.request.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "diartune", "trial", "--request", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=900,
    )
    return done.returncode, done.stdout + done.stderr


def result_line(output: str, prefix: str = "DIARTUNE_RESULT ") -> dict[str, Any]:
    """The JSON of the trial's result (or error) line."""
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output[-3000:]
    return dict(json.loads(lines[0][len(prefix) :]))
