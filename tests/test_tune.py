"""``diartune tune``: the whole loop on real speech, its outputs, resume and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROTOCOL, copy_ami

pytestmark = pytest.mark.integration


def spec(database: Path, models: tuple[Path, Path], fine_tune: bool, trials: int) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    if fine_tune:
        stages.append(
            {
                "name": "segmentation",
                "fineTune": {"maxEpochs": 1, "batchesPerEpoch": 2},
                "searchSpace": {
                    "training.learning_rate": {
                        "type": "float",
                        "low": 1e-5,
                        "high": 1e-3,
                        "log": True,
                    },
                },
                "maxTrialCount": 2,
            }
        )
    stages.append(
        {
            "name": "clustering",
            "searchSpace": {
                "clustering.threshold": {"type": "float", "low": 0.05, "high": 1.0},
                "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 10},
            },
            "maxTrialCount": trials,
        }
    )
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "ami"},
        "spec": {
            "data": {"database": str(database), "protocol": PROTOCOL},
            "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
            "stages": stages,
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": 2,
            "maxFailedTrialCount": 2,
        },
    }


def _interruptible() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and an
    # ignored SIGINT survives exec: give `diartune tune` the terminal's default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tune(path: Path, output: Path, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "diartune", "tune", str(path), "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_interruptible,
        **popen,
    )


def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def records(output: Path) -> list[dict[str, Any]]:
    """The finished search trials (not the final evaluations)."""
    path = output / "trials.json"
    found = json.loads(path.read_text()) if path.exists() else []
    return [record for record in found if record["number"] >= 0]


def test_tuning_writes_its_outputs_and_a_rerun_resumes(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    database = copy_ami(tmp_path / "ami", test_subset=True)
    path = write(tmp_path, spec(database, models, fine_tune=True, trials=3))
    output = tmp_path / "out"
    done = tune(path, output)
    log, _ = done.communicate(timeout=1500)
    assert done.returncode == 0, log[-4000:]

    trials = json.loads((output / "trials.json").read_text())
    search = records(output)
    assert [t["stage"] for t in search].count("segmentation") == 2
    assert [t["stage"] for t in search].count("clustering") == 3
    best_segmentation = min(
        (t for t in search if t["stage"] == "segmentation"), key=lambda t: t["der"]
    )
    for trial in trials:
        assert trial["state"] == "Succeeded", trial
        if trial["stage"] == "clustering" and trial["number"] >= 0:  # from the fine-tuned winner
            assert trial["segmentation"] == best_segmentation["checkpoint"]
    for name in ("trials.csv", "best.yaml", "der.png", "summary.md"):
        assert (output / name).stat().st_size > 0
    summary = json.loads((output / "summary.json").read_text())
    best = min(search, key=lambda t: t["der"])
    assert (summary["bestDer"], summary["bestTrial"]) == (best["der"], best["name"])
    # The first stage fine-tunes, so pyannote's defaults (the spec's own model, not
    # fine-tuned) were scored on development by an evaluation of their own.
    evaluations = {t["name"]: t for t in trials if t["number"] < 0}
    assert set(evaluations) == {f"{best['name']}-test", "defaults-test", "defaults-development"}
    assert summary["defaultDer"] == evaluations["defaults-development"]["der"]
    assert summary["testDer"] == evaluations[f"{best['name']}-test"]["der"]
    assert summary["defaultTestDer"] == evaluations["defaults-test"]["der"]
    assert evaluations["defaults-test"]["segmentation"] == str(models[0])
    assert 0 < summary["testDer"] < 2

    from pyannote.audio import Pipeline

    exported = Pipeline.from_pretrained(output / "pipeline")
    assert exported.parameters(instantiated=True)["clustering"]["threshold"] == pytest.approx(
        summary["bestParams"]["clustering.threshold"]
    )

    logs = sorted((output / "logs").iterdir())
    again = tune(path, output)
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-4000:]
    assert "resuming: 5 trials already finished" in log
    assert json.loads((output / "trials.json").read_text()) == trials
    assert sorted((output / "logs").iterdir()) == logs  # no trial ran again


def trial_processes(parent: int) -> list[int]:
    """PIDs of the trial processes under ``parent`` (children of its fork server)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(parent, []))
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmdline:
            found += children.get(pid, [])
        todo += children.get(pid, [])
    return found


def wait_for(condition: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes_without_repeats(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    path = write(tmp_path, spec(ami, models, fine_tune=False, trials=6))
    output = tmp_path / "out"
    first = tune(path, output, start_new_session=True)
    wait_for(lambda: len(records(output)) >= 2)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    log, _ = first.communicate(timeout=120)
    assert first.returncode == 130, log[-4000:]
    assert "rerun the same command to resume" in log
    before = records(output)
    assert 2 <= len(before) < 6

    second = tune(path, output)
    log, _ = second.communicate(timeout=900)
    assert second.returncode == 0, log[-4000:]
    after = records(output)
    assert after[: len(before)] == before
    assert len(after) == 6 and len({t["name"] for t in after}) == 6
    params = [tuple(sorted(t["params"].items())) for t in after]
    assert len(set(params)) == 6  # no configuration ran twice


def test_a_killed_trial_fails_alone_and_the_tuning_goes_on(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    path = write(tmp_path, spec(ami, models, fine_tune=False, trials=4))
    output = tmp_path / "out"
    run = tune(path, output)
    wait_for(lambda: bool(trial_processes(run.pid)), timeout=300)
    os.kill(trial_processes(run.pid)[0], signal.SIGKILL)
    log, _ = run.communicate(timeout=900)
    assert run.returncode == 0, log[-4000:]
    trials = records(output)
    failed = [t for t in trials if t["state"] == "Failed"]
    assert len(trials) == 4 and len(failed) == 1
    assert "exit code -9" in failed[0]["message"]


def test_a_suspended_spec_launches_nothing_and_says_how_to_resume(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    document = spec(ami, models, fine_tune=False, trials=2)
    document["spec"]["suspend"] = True
    path = write(tmp_path, document)
    output = tmp_path / "out"
    run = tune(path, output)
    log, _ = run.communicate(timeout=300)
    assert run.returncode == 3, log[-4000:]
    assert "suspended: no trial was launched" in log
    assert records(output) == []
    assert json.loads((output / "summary.json").read_text())["phase"] == "Suspended"

    # What may change on Kubernetes may change here: the trial template, for one.
    document["spec"]["trialTemplate"] = {"image": "registry.local/trial:2"}
    run = tune(write(tmp_path, document), output)
    log, _ = run.communicate(timeout=300)
    assert run.returncode == 3, log[-4000:]

    document["spec"]["optimizer"]["seed"] = 7  # a different tuning: refused, by field
    run = tune(write(tmp_path, document), output)
    log, _ = run.communicate(timeout=300)
    assert run.returncode == 2, log[-4000:]
    assert "spec.optimizer.seed" in log and "Use another --output" in log


def test_sigterm_stops_the_tuning_and_its_trials(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """kill, timeout and batch schedulers send SIGTERM to the tuning's process alone: its
    trial processes must not run on, orphaned, writing into the output folder."""
    path = write(tmp_path, spec(ami, models, fine_tune=True, trials=2))
    output = tmp_path / "out"
    run = tune(path, output)
    wait_for(lambda: bool(trial_processes(run.pid)), timeout=300)
    trials = trial_processes(run.pid)
    run.send_signal(signal.SIGTERM)
    log, _ = run.communicate(timeout=120)
    assert run.returncode == 130, log[-4000:]
    assert "rerun the same command to resume" in log
    assert not [pid for pid in trials if alive(pid)]


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def segmentation_checkpoint(path: Path, powerset: bool) -> Path:
    """An untrained segmentation model: powerset (as pyannote's segmentation-3.0, which has
    no threshold) or multi-label (which has one)."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    from diartune.trial.finetune import new_segmentation_model
    from diartune.trial.models import save_checkpoint

    model = new_segmentation_model()
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION
        if powerset
        else Problem.MULTI_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=5.0,
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2 if powerset else None,
        permutation_invariant=True,
    )
    model.build()
    return save_checkpoint(model, path)


def test_a_threshold_to_tune_with_a_powerset_model_is_refused_before_any_trial(
    ami: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diartune.cli import main

    powerset = segmentation_checkpoint(tmp_path / "powerset.ckpt", powerset=True)
    document = spec(ami, (powerset, tmp_path / "embedding.ckpt"), fine_tune=False, trials=2)
    space = document["spec"]["stages"][0]["searchSpace"]
    space["segmentation.threshold"] = {"type": "float", "low": 0.3, "high": 0.7}
    path = write(tmp_path, document)
    output = tmp_path / "out"
    expected = (
        f"diartune: spec.stages[0].searchSpace.segmentation.threshold: {powerset} is a "
        "powerset segmentation model, which has no threshold; expected a model that is not "
        "powerset, or no segmentation.threshold\n"
    )
    assert main(["tune", str(path), "--output", str(output)]) == 2
    assert capsys.readouterr().err == expected
    assert not output.exists()  # no trial ran, nothing was written
    assert main(["validate", "--models", str(path)]) == 2
    assert capsys.readouterr().err == expected

    multi_label = segmentation_checkpoint(tmp_path / "multilabel.ckpt", powerset=False)
    document["spec"]["pipeline"]["segmentation"] = str(multi_label)
    assert main(["validate", "--models", str(write(tmp_path, document))]) == 0
