"""``diartune trial`` on real speech with real pyannote: scores, cache, fine-tuning, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROTOCOL, copy_ami, result_line, run_trial
from trial_requests import request_document

from diartune.records import EXIT_BAD_INPUT, RECORD_FILE, BatchReport, TrialRecord
from diartune.storage import sha256_file

pytestmark = pytest.mark.integration

PARAMS = {
    "segmentation.min_duration_off": 0.1,
    "clustering.threshold": 0.3,
    "clustering.method": "average",
    "clustering.min_cluster_size": 2,
}


def request(
    database: Path, models: tuple[Path, Path], output: Path, **changes: Any
) -> dict[str, Any]:
    return {
        "name": "t",
        "stage": "clustering",
        "data": {"database": str(database), "protocol": PROTOCOL},
        "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
        "params": PARAMS,
        "tuned": sorted(PARAMS),
        "output": str(output / "artifacts"),
        **changes,
    }


def test_trial_scores_the_development_subset_and_reuses_its_cache(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    code, output = run_trial(request(ami, models, tmp_path, cache=cache), tmp_path)
    assert code == 0, output[-3000:]
    line = result_line(output)
    parts = line["components"]
    assert (
        0
        < line["der"]
        == pytest.approx(
            (parts["missedSpeechSeconds"] + parts["falseAlarmSeconds"] + parts["confusionSeconds"])
            / parts["referenceSpeechSeconds"]
        )
    )
    # reference speech of dev00+dev01
    assert parts["referenceSpeechSeconds"] == pytest.approx(45.38, abs=0.01)
    assert parts["derPercent"] == f"{100 * line['der']:.2f} %"
    assert line["timings"]["cache_hits"] == 0
    saved = json.loads((tmp_path / "artifacts/result.json").read_text())
    assert set(saved["perFile"]) == {"dev00", "dev01"}
    rttm = (tmp_path / "artifacts/hypothesis.rttm").read_text()
    assert {line.split()[1] for line in rttm.splitlines()} == {"dev00", "dev01"}

    code, output = run_trial(request(ami, models, tmp_path / "2", cache=cache), tmp_path)
    again = result_line(output)
    assert code == 0 and again["timings"]["cache_hits"] == 2
    assert again["der"] == pytest.approx(line["der"])
    assert again["timings"]["pipeline"] < line["timings"]["pipeline"]

    # The very same request again (its pod ran twice): the result it wrote, not a rerun.
    code, output = run_trial(request(ami, models, tmp_path, cache=cache), tmp_path)
    assert code == 0 and "reporting the result it already wrote" in output
    assert result_line(output) == line

    # A damaged cache entry is recomputed and rewritten, never trusted.
    entries = sorted(Path(cache).rglob("*.npz"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    code, output = run_trial(request(ami, models, tmp_path / "3", cache=cache), tmp_path)
    assert code == 0, output[-3000:]
    assert result_line(output)["timings"]["cache_hits"] == 1
    assert result_line(output)["der"] == pytest.approx(line["der"])
    code, output = run_trial(request(ami, models, tmp_path / "4", cache=cache), tmp_path)
    assert result_line(output)["timings"]["cache_hits"] == 2


def test_fine_tuning_trial_writes_a_loadable_checkpoint(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    params = {**PARAMS, "training.learning_rate": 1e-4, "training.batch_size": 8}
    job = request(
        ami,
        models,
        tmp_path,
        stage="segmentation",
        params=params,
        tuned=sorted(params),
        fineTune={"maxEpochs": 1, "batchesPerEpoch": 2},
    )
    code, output = run_trial(job, tmp_path)
    assert code == 0, output[-3000:]
    line = result_line(output)
    checkpoint = Path(line["checkpoint"])
    assert checkpoint == tmp_path / "artifacts/segmentation.ckpt" and checkpoint.stat().st_size
    assert line["timings"]["fine_tune"] > 0

    from pyannote.audio import Model

    assert Model.from_pretrained(checkpoint).specifications.powerset


def corrupt(database: Path, how: str) -> None:
    audio = database.parent / "dev01.wav"
    if how == "missing":
        audio.unlink()
    elif how == "unreadable":
        audio.write_bytes(b"RIFF\x00\x00 not really a wave file" * 10)
    elif how == "empty":
        audio.write_bytes(b"")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", "dev01: audio file not found"),
        ("unreadable", "dev01.wav: unreadable audio"),
        ("empty", "dev01.wav: unreadable audio"),
    ],
)
def test_bad_audio_is_bad_input_naming_the_file(
    how: str, message: str, models: tuple[Path, Path], tmp_path: Path
) -> None:
    database = copy_ami(tmp_path / "ami")
    corrupt(database, how)
    code, output = run_trial(request(database, models, tmp_path), tmp_path)
    assert code == EXIT_BAD_INPUT, output[-3000:]
    assert message in result_line(output, "DIARTUNE_ERROR ")["error"]
    # no result, hypothesis or checkpoint: only the record of the failure (run.main)
    assert [path.name for path in (tmp_path / "artifacts").iterdir()] == [RECORD_FILE]
    record = TrialRecord.model_validate_json((tmp_path / "artifacts" / RECORD_FILE).read_text())
    assert record.state == "Failed" and record.bad_input and message in (record.message or "")


def test_rttm_uris_without_audio_are_bad_input(
    ami_raw: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """The shared corpus itself: its train RTTM says trn00 where the audio is trñ00."""
    job = request(
        ami_raw / "database.yml",
        models,
        tmp_path,
        params={**PARAMS, "training.learning_rate": 1e-4},
        fineTune={"maxEpochs": 1, "batchesPerEpoch": 1},
    )
    code, output = run_trial(job, tmp_path)
    assert code == EXIT_BAD_INPUT, output[-3000:]
    error = result_line(output, "DIARTUNE_ERROR ")["error"]
    assert "debug.train.rttm:1: URI 'trn00' is not in the subset's list" in error


def test_nan_samples_are_bad_input(models: tuple[Path, Path], tmp_path: Path) -> None:
    import numpy as np
    import soundfile

    database = copy_ami(tmp_path / "ami")
    wav = database.parent / "dev01.wav"
    audio, rate = soundfile.read(wav, dtype="float32")
    audio[1000:1010] = np.nan
    soundfile.write(wav, audio, rate, subtype="FLOAT")
    code, output = run_trial(request(database, models, tmp_path), tmp_path)
    assert code == EXIT_BAD_INPUT, output[-3000:]
    error = result_line(output, "DIARTUNE_ERROR ")["error"]
    assert error.endswith("dev01.wav: NaN or infinite samples; expected finite audio"), error


def test_missing_database_is_bad_input(models: tuple[Path, Path], tmp_path: Path) -> None:
    code, output = run_trial(request(tmp_path / "nope.yml", models, tmp_path), tmp_path)
    assert code == EXIT_BAD_INPUT
    assert "spec.data.database" in result_line(output, "DIARTUNE_ERROR ")["error"]


def test_one_process_runs_several_trials_in_turn_each_with_its_own_outcome(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """What a pod of several trials runs: a bad input fails its trial alone, a request that
    already wrote its result reports it, and the termination message holds every outcome."""
    documents = [
        request(ami, models, tmp_path, name="clustering-000"),
        request(tmp_path / "nope.yml", models, tmp_path / "1", name="clustering-001"),
        request(ami, models, tmp_path, name="clustering-000"),  # the same: its result.json
    ]
    argv = [sys.executable, "-m", "diartune", "trial"]
    for index, document in enumerate(documents):
        path = tmp_path / f"{index}.request.json"
        path.write_text(json.dumps(request_document(document)), encoding="utf-8")
        argv += ["--request", str(path)]
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [*argv, "--termination-log", str(log)], capture_output=True, text=True, timeout=900
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert output.count("DIARTUNE_RESULT ") == 2 and output.count("DIARTUNE_ERROR ") == 1, output
    assert "clustering-000: reporting the result it already wrote" in output, output[-3000:]
    report = BatchReport.parse(log.read_text("utf-8"))
    assert list(report.trials) == ["clustering-000", "clustering-001"] and report.running is None
    first, failed = report.trials["clustering-000"], report.trials["clustering-001"]
    assert first.result is not None and first.result.der > 0 and first.seconds is not None
    assert failed.bad_input and "spec.data.database" in (failed.error or ""), failed


def test_a_segmentation_changed_since_its_trial_wrote_it_is_refused_before_loading(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """The next stage's model is one a trial of this tuning fine-tuned: its recorded
    SHA-256 must match before it is unpickled."""
    changed = tmp_path / "segmentation.ckpt"
    changed.write_bytes(models[0].read_bytes() + b"\0")
    digest = sha256_file(models[0])
    fields = request(ami, (changed, models[1]), tmp_path, segmentationSha256=digest)
    code, output = run_trial(fields, tmp_path)
    assert code == EXIT_BAD_INPUT, output[-3000:]
    error = result_line(output, "DIARTUNE_ERROR ")["error"]
    assert "segmentation.ckpt" in error and digest[:12] in error, error


def test_file_without_speech_is_scored_with_the_others(
    ami: Path, ami_raw: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """empty.wav (1 s of silence) has no DER of its own but takes part in the total."""
    database = copy_ami(tmp_path / "ami")
    shutil.copyfile(ami_raw / "empty.wav", database.parent / "empty.wav")
    with (database.parent / "debug.development.lst").open("a") as stream:
        stream.write("empty\n")
    with (database.parent / "debug.development.uem").open("a") as stream:
        stream.write("empty NA 0.000 1.000\n")
    code, output = run_trial(request(database, models, tmp_path), tmp_path)
    assert code == 0, output[-3000:]
    per_file = json.loads((tmp_path / "artifacts/result.json").read_text())["perFile"]
    assert per_file["empty"]["der"] is None and per_file["empty"]["referenceSpeechSeconds"] == 0


AUDIT = """
import socket, sys
attempts = []
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        attempts.append(repr(args[1] if event == "socket.connect" else args[0]))
sys.addaudithook(hook)
from diartune.cli import main
code = main(["trial", "--request", sys.argv[1]])
open(sys.argv[2], "w").write("\\n".join(attempts))
raise SystemExit(code)
"""


def test_no_outbound_connection_is_attempted(
    ami: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """pyannote 4 sends telemetry by default; a trial must not even try to connect."""
    import os
    import subprocess
    import sys

    path = tmp_path / "request.json"
    path.write_text(json.dumps(request_document(request(ami, models, tmp_path))))
    attempts = tmp_path / "attempts.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYANNOTE_METRICS_ENABLED"}
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, str(path), str(attempts)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert attempts.read_text() == ""


def test_a_tuned_chunk_duration_is_rounded_so_that_inference_chunks_stack() -> None:
    """pyannote's pipeline stacks in-memory crops of the model's chunk duration into one
    embedding batch; durations SMAC proposed made crops of two lengths."""
    import random

    import torch
    from pyannote.audio.core.io import Audio
    from pyannote.core import Segment, SlidingWindow

    from diartune.trial.finetune import chunk_duration

    rate = 16000
    file = {"waveform": torch.zeros(1, 30 * rate), "sample_rate": rate, "uri": "zeros"}

    def lengths(duration: float) -> set[int]:
        window = SlidingWindow(start=0.0, duration=duration, step=0.1 * duration)
        crops = (Audio().crop(file, chunk, mode="pad")[0] for chunk in window(Segment(0, 30)))
        return {crop.shape[1] for crop in crops}

    failed = 4.4504203498363  # training.duration of a trial that failed on a GPU
    assert len(lengths(failed)) > 1
    assert len(lengths(round(failed * rate) / rate)) > 1  # whole samples are not enough
    rng = random.Random(0)
    durations = [rng.uniform(0.5, 10.0) for _ in range(100)]
    assert all(len(lengths(chunk_duration(duration))) == 1 for duration in [failed, *durations])
