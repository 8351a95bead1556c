"""Fine-tuning trials that resume: after their process is killed mid-training, and when
Hyperband promotes a configuration to more epochs. Real pyannote, real lightning."""

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
import torch
from conftest import PROTOCOL, result_line, run_trial, trained
from trial_requests import request_document

from diartune.records import EXIT_BAD_INPUT
from diartune.storage import sha256_file

pytestmark = pytest.mark.integration

PARAMS = {"training.learning_rate": 1e-4, "training.batch_size": 8, "training.duration": 3.0}
BATCHES = 20


def fine_tuning(
    ami: Path, models: tuple[Path, Path], output: Path, epochs: int, **changes: Any
) -> dict[str, Any]:
    return {
        "name": "segmentation-000",
        "stage": "segmentation",
        "data": {"database": str(ami), "protocol": PROTOCOL},
        "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
        "params": PARAMS,
        "fineTune": {"maxEpochs": epochs, "batchesPerEpoch": BATCHES},
        "output": str(output),
        **changes,
    }


def start_and_kill_after_first_save(request: dict[str, Any], cwd: Path) -> int:
    """Run the trial as a process and SIGKILL it once it saved its first training state
    (after epoch 1 of 4: the three epochs left take far longer than the kill)."""
    path = cwd / "request.json"
    path.write_text(json.dumps(request_document(request)), encoding="utf-8")
    state = Path(request["output"]) / "training/state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "diartune", "trial", "--request", str(path)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (Path(request["output"]) / "result.json").exists(), "it finished before the kill"
    return int(json.loads(state.read_text())["epochs"])


def test_a_killed_fine_tuning_resumes_from_its_last_epoch(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    request = fine_tuning(ami, models, tmp_path / "killed", epochs=4)
    saved = start_and_kill_after_first_save(request, tmp_path)
    assert saved == 1
    code, output = run_trial(request, tmp_path)
    assert code == 0, output[-3000:]
    assert f"resuming after epoch {saved}" in output
    checkpoint = Path(result_line(output)["checkpoint"])
    epochs, steps = trained(checkpoint)
    assert epochs == 4 and 0 < steps <= 4 * BATCHES
    assert not (tmp_path / "killed/training").exists() or not any(
        (tmp_path / "killed/training").iterdir()
    )  # the saved state is removed once the trial's own checkpoint is there

    # The same training without the kill ends with the same weights (see docs/spec.md
    # for what lightning does not restore).
    code, output = run_trial(fine_tuning(ami, models, tmp_path / "whole", epochs=4), tmp_path)
    assert code == 0, output[-3000:]
    assert trained(Path(result_line(output)["checkpoint"])) == (epochs, steps)
    whole = torch.load(result_line(output)["checkpoint"], weights_only=False)["state_dict"]
    resumed = torch.load(checkpoint, weights_only=False)["state_dict"]
    difference = max((whole[k].float() - resumed[k].float()).abs().max().item() for k in whole)
    print(f"largest weight difference, resumed vs uninterrupted: {difference:.2e}")
    assert difference < 1e-4


def test_a_half_written_or_foreign_state_is_never_loaded(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    request = fine_tuning(ami, models, tmp_path / "out", epochs=2)
    training = tmp_path / "out/training"
    training.mkdir(parents=True)
    partial = training / "epoch-1.ckpt"
    partial.write_bytes(b"PK\x03\x04 half of a checkpoint")
    digest = request_document(request)
    from diartune.records import TrialRequest

    state = {
        "requestDigest": TrialRequest.model_validate(digest).digest,
        "epochs": 1,
        "checkpoint": {"uri": str(partial), "sha256": "0" * 64},
    }
    (training / "state.json").write_text(json.dumps(state))
    code, output = run_trial(request, tmp_path)
    assert code == 0, output[-3000:]
    assert "not resuming" in output and "SHA-256" in output
    assert trained(Path(result_line(output)["checkpoint"]))[0] == 2


def test_a_promoted_configuration_trains_only_its_extra_epochs(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    code, output = run_trial(fine_tuning(ami, models, tmp_path / "one", epochs=1), tmp_path)
    assert code == 0, output[-3000:]
    first = Path(result_line(output)["checkpoint"])
    _, steps_per_epoch = trained(first)
    source = {"uri": str(first), "sha256": sha256_file(first)}
    promoted = fine_tuning(ami, models, tmp_path / "three", epochs=3, continueFrom=source)
    code, output = run_trial(promoted, tmp_path)
    assert code == 0, output[-3000:]
    line = result_line(output)
    assert trained(Path(line["checkpoint"])) == (3, 3 * steps_per_epoch)
    assert line["checkpointSha256"] == sha256_file(Path(line["checkpoint"]))

    # A checkpoint changed since its trial wrote it is refused before it is unpickled.
    first.write_bytes(first.read_bytes() + b"\0")
    code, output = run_trial(
        fine_tuning(ami, models, tmp_path / "tampered", epochs=3, continueFrom=source), tmp_path
    )
    assert code == EXIT_BAD_INPUT
    assert "is not the" in result_line(output, "DIARTUNE_ERROR ")["error"]


def test_a_files_budget_scores_a_nested_share_of_the_development_files(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    clustering = {
        "name": "clustering-000",
        "stage": "clustering",
        "data": {"database": str(ami), "protocol": PROTOCOL},
        "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
        "params": {"clustering.threshold": 0.7},
    }
    shares = {}
    for percent in (50, 100):
        output = tmp_path / str(percent)
        code, log = run_trial({**clustering, "files": percent, "output": str(output)}, tmp_path)
        assert code == 0, log[-3000:]
        shares[percent] = set(json.loads((output / "result.json").read_text())["perFile"])
    assert len(shares[50]) == 1 and shares[50] < shares[100] == {"dev00", "dev01"}
