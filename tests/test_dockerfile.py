"""The Dockerfile's two images, read without Docker: pins, users, entrypoints, contents.

No image is built here (no Docker engine). These checks keep the Dockerfile in line with
what runs it: the chart's Deployment command and the trial command of the operator.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from diartune.cli import parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TRIAL_COMMAND = ["diartune", "trial", "--request-json", "{}"]  # what the operator runs


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


def closure(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and every stage it builds on or copies from."""
    stage = stages[name]
    parents = [stage.image] if stage.image in stages else []
    parents += re.findall(r"--from=([\w-]+)", stage.text())
    found = [stage]
    for parent in parents:
        found += [s for s in closure(stages, parent) if s not in found]
    return found


def exec_form(stage: Stage, keyword: str) -> list[str]:
    [value] = stage.get(keyword)[-1:]
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{keyword} must use the exec (JSON) form"
    return [str(item) for item in parsed]


def env(stages: list[Stage]) -> dict[str, str]:
    found: dict[str, str] = {}
    for stage in reversed(stages):  # base first
        for args in stage.get("ENV"):
            found.update(item.split("=", 1) for item in shlex.split(args))
    return found


def test_both_targets_and_pinned_images() -> None:
    args, stages = parse()
    assert {"builder", "operator", "trial"} <= set(stages)
    external = {stage.image for stage in stages.values() if stage.image not in stages}
    assert external == {"python:3.11-slim-bookworm"}
    for image in external:
        tag = image.partition(":")[2]
        assert (tag and tag != "latest") or "@sha256:" in image, image
    assert args["UV_VERSION"] == "0.13.8"
    assert 'pip install --no-cache-dir "uv==${UV_VERSION}"' in stages["builder"].text()


@pytest.mark.parametrize("target", ["operator", "trial"])
def test_final_stages_run_as_non_root(target: str) -> None:
    _, stages = parse()
    [user] = stages[target].get("USER")[-1:]
    uid = user.split(":")[0]
    assert uid not in ("0", "root") and int(uid) == 10001
    assert exec_form(stages[target], "ENTRYPOINT") == ["diartune"]
    assert stages[target].get("LABEL"), "label the image"


def test_operator_has_no_torch() -> None:
    _, stages = parse()
    text = "\n".join(stage.text() for stage in closure(stages, "operator"))
    assert "requirements/operator.lock" in text
    for absent in ("trial.lock", "torch", "resemblyzer", "ffmpeg"):
        assert absent not in text
    assert re.search(r"uv pip install .*--no-deps /dist/\*\.whl", text)
    lock = (ROOT / "requirements/operator.lock").read_text("utf-8")
    assert not re.search(r"^(torch|nvidia-|pyannote)", lock, re.MULTILINE)
    assert re.search(r"^kopf==", lock, re.MULTILINE)


def test_trial_has_ffmpeg_the_trial_lock_and_offline_settings() -> None:
    _, stages = parse()
    chain = closure(stages, "trial")
    text = "\n".join(stage.text() for stage in chain)
    assert "apt-get install -y --no-install-recommends ffmpeg" in text
    assert "-r /tmp/trial.lock" in text and "COPY requirements/trial.lock" in text
    assert "--no-deps resemblyzer==0.1.4" in text
    assert re.search(r"uv pip install .*--no-deps /dist/\*\.whl", text)
    assert "operator.lock" not in text
    values = env(chain)
    assert values["PYANNOTE_METRICS_ENABLED"] == "false"
    assert values["HF_HUB_OFFLINE"] == "1"
    lock = (ROOT / "requirements/trial.lock").read_text("utf-8")
    assert re.search(r"^torch==", lock, re.MULTILINE)
    assert re.search(r"^pyannote-audio==", lock, re.MULTILINE)


@pytest.mark.parametrize("name", ["operator.lock", "trial.lock"])
def test_locks_agree_with_the_tested_dev_lock(name: str) -> None:
    def pins(path: Path) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text("utf-8"), re.MULTILINE)
        return dict(found)

    lock = pins(ROOT / "requirements" / name)
    dev = pins(ROOT / "requirements/dev.lock")
    assert {k: v for k, v in lock.items() if dev.get(k, v) != v} == {}


def test_entrypoints_run_what_kubernetes_runs() -> None:
    _, stages = parse()
    chart = ROOT / "charts/diartune/templates/deployment.yaml"
    [command] = re.findall(r"command: (\[.*\])", chart.read_text("utf-8"))
    operator = exec_form(stages["operator"], "ENTRYPOINT") + exec_form(stages["operator"], "CMD")
    assert json.loads(command) == operator == ["diartune", "operator"]
    # The operator's trial Jobs keep the image's entrypoint and pass the subcommand as args.
    trial = exec_form(stages["trial"], "ENTRYPOINT")
    assert trial + TRIAL_COMMAND[1:] == TRIAL_COMMAND
    assert exec_form(stages["trial"], "CMD") == ["trial", "--help"]
    args = parser().parse_args(TRIAL_COMMAND[1:])
    assert (args.command, args.request_json) == ("trial", "{}")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert scripts == {"diartune": "diartune.cli:main"}


def test_the_cli_takes_the_deployments_args() -> None:
    for args in (
        ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"],
        ["--namespace", "a", "--namespace", "b", "--liveness=http://0.0.0.0:8080/healthz"],
    ):
        assert parser().parse_args(["operator", *args]).command == "operator"


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
