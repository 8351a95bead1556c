"""The images built from the Dockerfile, checked by running them with podman.

The images are built by scripts/build-images.sh (once: up-to-date images are reused) from
a local stand-in of python:3.11-slim-bookworm. Every check runs the final images the way a
pod does: read-only root filesystem, a tmpfs on /tmp, the user of the image.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROTOCOL, ROOT, copy_ami, result_line, run_trial
from containers import images_fixture, inspect, podman  # noqa: F401  (fixture "images")
from trial_requests import request_document

TARGETS = ("operator", "trial")
#: What a pod's container gets: the root filesystem read-only, a tmpfs on /tmp.
POD_LIKE = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777"]
#: Installers and compilers that the final images must not hold.
ABSENT_TOOLS = ("pip", "pip3", "uv", "gcc", "cc", "c++", "g++", "make", "ld")


def run(
    image: str, *args: str, entrypoint: str | None = None, options: tuple[str, ...] = ()
) -> Any:
    """``podman run`` ``image`` like a pod (see POD_LIKE), no network; the completed process."""
    chosen = ["--entrypoint", entrypoint] if entrypoint else []
    return podman(
        "run",
        "--rm",
        "--network",
        "none",
        *POD_LIKE,
        *options,
        *chosen,
        image,
        *args,
        check=False,
        timeout=900,
    )


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"])


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_the_non_root_user_on_a_read_only_root(images: dict[str, str], target: str) -> None:
    config = inspect(images[target])["Config"]
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == "/home/diartune"
    done = run(
        images[target], "-c", "id -u; id -g; touch $HOME/x || echo read-only", entrypoint="/bin/sh"
    )
    assert done.stdout.split() == ["10001", "10001", "read-only"], done.stderr
    # Caches go to the tmpfs: matplotlib, a cache under XDG_CACHE_HOME, Python's tempfile.
    script = (
        "import matplotlib.pyplot, os, tempfile; tempfile.mkstemp();"
        "print(os.environ['XDG_CACHE_HOME'], os.environ['MPLCONFIGDIR'])"
    )
    done = run(images[target], "-c", script, entrypoint="python")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/tmp/.cache", "/tmp/matplotlib"]


@pytest.mark.parametrize("target", TARGETS)
def test_holds_no_installer_or_compiler(images: dict[str, str], target: str) -> None:
    probe = " ".join(f"command -v {tool};" for tool in ABSENT_TOOLS)
    done = run(images[target], "-c", f"{probe} python -m pip --version", entrypoint="/bin/sh")
    assert done.stdout == "", done.stdout  # `command -v` prints what it finds
    assert "No module named pip" in done.stderr
    # The OS package manager of the Debian base stays, unusable by the image's user.
    done = run(images[target], "-c", "apt-get install -y make", entrypoint="/bin/sh")
    assert done.returncode != 0


@pytest.mark.parametrize("target", TARGETS)
def test_version_labels_and_entrypoint_match_the_chart(images: dict[str, str], target: str) -> None:
    chart = yaml.safe_load((ROOT / "charts/diartune/Chart.yaml").read_text("utf-8"))
    assert chart["appVersion"] == project_version()
    done = run(images[target], "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == chart["appVersion"]
    config = inspect(images[target])["Config"]
    assert config["Labels"]["org.opencontainers.image.version"] == chart["appVersion"]
    assert config["Labels"]["org.opencontainers.image.title"] == f"diartune-{target}"
    assert images[target].endswith(f"/{target}:{chart['appVersion']}")
    assert config["Entrypoint"] == ["diartune"]
    # The chart's Deployment runs `diartune operator ...`; trial Jobs pass `trial ...` as args.
    assert config["Cmd"] == {"operator": ["operator"], "trial": ["trial", "--help"]}[target]


def test_operator_image_runs_the_chart_command_and_has_no_torch(images: dict[str, str]) -> None:
    deployment = (ROOT / "charts/diartune/templates/deployment.yaml").read_text("utf-8")
    assert 'command: ["diartune", "operator"]' in deployment
    done = run(images["operator"], "operator", "--help")
    assert done.returncode == 0 and "--all-namespaces" in done.stdout, done.stderr
    script = (
        "import importlib.util as u, shutil;"
        "print([m for m in ('torch', 'pyannote', 'kopf', 'smac') if u.find_spec(m)],"
        " shutil.which('ffmpeg'))"
    )
    done = run(images["operator"], "-c", script, entrypoint="python")
    assert done.stdout.strip() == "['kopf', 'smac'] None", done.stderr


def test_trial_image_is_offline_and_has_ffmpeg(images: dict[str, str]) -> None:
    env = dict(item.split("=", 1) for item in inspect(images["trial"])["Config"]["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYANNOTE_METRICS_ENABLED"] == "false"
    script = (
        "from pyannote.audio.telemetry.metrics import is_metrics_enabled;"
        "import huggingface_hub.constants as hub, torchcodec, shutil;"
        "print(is_metrics_enabled(), hub.HF_HUB_OFFLINE, shutil.which('ffmpeg'))"
    )
    done = run(images["trial"], "-c", script, entrypoint="python")
    assert done.stdout.split() == ["False", "True", "/usr/bin/ffmpeg"], done.stderr


@pytest.mark.integration
def test_trial_scores_offline_models_without_network_like_the_checkout(
    images: dict[str, str], models: tuple[Path, Path], tmp_path: Path
) -> None:
    """`diartune trial` in the image, --network none: the same DER as in the checkout."""
    # Readable and writable by the image's user, mounted where the request says.
    folders = {name: tmp_path / name for name in ("ami", "models", "out")}
    database = copy_ami(folders["ami"])
    folders["models"].mkdir()
    for model in models:
        shutil.copyfile(model, folders["models"] / model.name)
    folders["out"].mkdir()
    for folder in folders.values():
        folder.chmod(0o777 if folder.name == "out" else 0o755)
    request = {
        "name": "image",
        "stage": "clustering",
        "data": {"database": f"/data/ami/{database.name}", "protocol": PROTOCOL},
        "pipeline": {
            "segmentation": f"/data/models/{models[0].name}",
            "embedding": f"/data/models/{models[1].name}",
        },
        "params": {"clustering.threshold": 0.5, "clustering.min_cluster_size": 2},
        "tuned": ["clustering.min_cluster_size", "clustering.threshold"],
        "output": "/data/out/image",
    }
    mounts = [
        f"--volume={path}:/data/{name}:{'rw' if name == 'out' else 'ro'}"
        for name, path in folders.items()
    ]
    started = time.monotonic()
    done = run(
        images["trial"],
        "trial",
        "--request-json",
        json.dumps(request_document(request)),
        options=tuple(mounts),
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    in_image = result_line(done.stdout + done.stderr)
    assert (folders["out"] / "image" / "result.json").exists()
    print(f"trial in the image: {seconds:.1f} s, timings {in_image['timings']}", file=sys.stderr)

    on_host = {
        **request,
        "data": {"database": str(database), "protocol": PROTOCOL},
        "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
        "output": str(tmp_path / "checkout"),
    }
    code, text = run_trial(on_host, tmp_path)
    assert code == 0, text[-3000:]
    assert in_image["der"] == pytest.approx(result_line(text)["der"], abs=1e-9)
