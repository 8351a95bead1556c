"""What can be checked of the Dockerfile without building it: pins, locks, the build context.

Everything about the images themselves (user, entrypoints, contents, versions, offline
settings) is checked on the built images, in tests/test_images.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from diartune.cli import parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    """One FROM ... AS name stage and its instructions."""

    name: str
    image: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def get(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def text(self) -> str:
        return "\n".join(f"{key} {args}" for key, args in self.instructions)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, line continuations joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(args.split())))
    return found


def parse() -> tuple[dict[str, str], dict[str, Stage]]:
    """The global ARG defaults and the stages, by name."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, rest in instructions(DOCKERFILE.read_text("utf-8")):
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            current = stages[name.strip()] = Stage(name.strip(), image.strip())
        elif current is None and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        elif current is not None:
            current.instructions.append((keyword, rest))
    return args, stages


def test_both_targets_and_pinned_images() -> None:
    args, stages = parse()
    assert {"operator", "trial"} <= set(stages)
    external = {stage.image for stage in stages.values() if stage.image not in stages}
    assert external == {"python:3.11-slim-bookworm"}
    for image in external:
        tag = image.partition(":")[2]
        assert (tag and tag != "latest") or "@sha256:" in image, image
    assert args["UV_VERSION"] == "0.13.8"
    text = "\n".join(stage.text() for stage in stages.values())
    installs = re.findall(r"(?<!uv )pip install [^&\n]*", text)
    assert len(installs) == 3  # uv, in the app stage and in each deps stage
    assert all('"uv==${UV_VERSION}"' in install for install in installs), installs


def test_dependencies_are_installed_without_the_source() -> None:
    """The layers of the locks never see diartune/, so a code change leaves them cached."""
    _, stages = parse()
    for target in ("operator", "trial"):
        deps = stages[f"{target}-deps"]
        sources = [source for args in deps.get("COPY") for source in args.split()[:-1]]
        assert sources == [f"requirements/{target}.lock"]
        assert stages[target].image == deps.name


def test_operator_lock_has_no_torch() -> None:
    lock = (ROOT / "requirements/operator.lock").read_text("utf-8")
    assert not re.search(r"^(torch|nvidia-|pyannote)", lock, re.MULTILINE)
    assert re.search(r"^kopf==", lock, re.MULTILINE)


@pytest.mark.parametrize("name", ["operator.lock", "trial.lock"])
def test_locks_agree_with_the_tested_dev_lock(name: str) -> None:
    def pins(path: Path) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text("utf-8"), re.MULTILINE)
        return dict(found)

    lock = pins(ROOT / "requirements" / name)
    dev = pins(ROOT / "requirements/dev.lock")
    assert {k: v for k, v in lock.items() if dev.get(k, v) != v} == {}


def test_the_cli_takes_the_charts_commands() -> None:
    chart = ROOT / "charts/diartune/templates/deployment.yaml"
    [command] = re.findall(r"command: (\[.*\])", chart.read_text("utf-8"))
    assert json.loads(command) == ["diartune", "operator"]
    for args in (
        ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"],
        ["--namespace", "a", "--namespace", "b", "--liveness=http://0.0.0.0:8080/healthz"],
    ):
        assert parser().parse_args(["operator", *args]).command == "operator"
    # The operator's trial Jobs keep the image's entrypoint and pass the subcommand as args.
    args = parser().parse_args(["trial", "--request-json", "{}"])
    assert (args.command, args.request_json) == ("trial", ["{}"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert scripts == {"diartune": "diartune.cli:main"}


def test_dockerignore_lets_in_what_is_copied() -> None:
    ignore = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    _, stages = parse()
    for stage in stages.values():
        for args in stage.get("COPY"):
            if "--from=" in args:
                continue
            *sources, _ = args.split()
            for source in sources:
                assert source.rstrip("/") in allowed, source
                assert (ROOT / source).exists(), source


def test_versions_agree() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    chart = yaml.safe_load((ROOT / "charts/diartune/Chart.yaml").read_text("utf-8"))
    assert chart["appVersion"] == version
    _, stages = parse()
    for target in ("operator", "trial"):
        labels = " ".join(stages[target].get("LABEL"))
        assert f'org.opencontainers.image.version="{version}"' in labels
