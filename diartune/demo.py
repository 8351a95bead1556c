"""The README demo: a small corpus made from real speech, offline models, a real tuning.

The corpus remixes the real two-speaker recording that ships inside pyannote.audio
(``pyannote/audio/sample/sample.wav`` with its RTTM) into new conversations: speaker
turns are cut from the single-speaker regions of the sample and laid out again with
pauses, overlaps and background noise (engine-like brown noise and a siren sweep, as
in an ambulance). References come from the same layout, so they are exact. The
speakers are the same in every subset: this demo shows the machinery, not
generalization to new speakers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from diartune.quiet import routed

SAMPLE_RATE = 16000
SUBSETS = {"train": 8, "development": 4, "test": 4}
CONVERSATION_SECONDS = 30.0
PROTOCOL = "Demo.SpeakerDiarization.Ambulance"


def _sample() -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    import pyannote.audio
    import soundfile

    folder = Path(pyannote.audio.__file__).parent / "sample"
    audio, rate = soundfile.read(folder / "sample.wav", dtype="float32")
    assert rate == SAMPLE_RATE, rate
    turns = []
    for line in (folder / "sample.rttm").read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        turns.append((start, start + duration, fields[7]))
    return audio, turns


def _single_speaker_pieces(
    turns: list[tuple[float, float, str]], rng: np.random.Generator
) -> list[tuple[float, float, str]]:
    """Pieces of 1 to 4 s where exactly one speaker talks."""
    pieces = []
    for start, end, speaker in turns:
        for other_start, other_end, other in turns:
            if other != speaker and other_start < end and other_end > start:
                if other_start <= start:
                    start = max(start, other_end)
                else:
                    end = min(end, other_start)
        while end - start >= 1.0:
            length = min(end - start, float(rng.uniform(1.0, 4.0)))
            pieces.append((start, start + length, speaker))
            start += length
    return pieces


def _noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    brown = np.cumsum(rng.normal(size=samples)).astype(np.float32)
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # keep it stationary
    brown /= np.abs(brown).max() + 1e-9
    t = np.arange(samples) / SAMPLE_RATE
    siren = np.sin(2 * np.pi * (700 * t + 150 * np.sin(2 * np.pi * 0.25 * t) / (0.5 * np.pi)))
    return 0.03 * brown + 0.01 * siren.astype(np.float32) * (rng.random() < 0.5)


def _conversation(
    audio: np.ndarray, pieces: list[tuple[float, float, str]], rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    total = int(CONVERSATION_SECONDS * SAMPLE_RATE)
    mix = _noise(total, rng)
    reference = []
    cursor = float(rng.uniform(0.3, 1.5))
    speaker = None
    while True:
        choices = [p for p in pieces if p[2] != speaker] or pieces
        start, end, speaker = choices[int(rng.integers(len(choices)))]
        length = end - start
        if cursor + length > CONVERSATION_SECONDS - 0.2:
            break
        clip = audio[
            int(start * SAMPLE_RATE) : int(start * SAMPLE_RATE) + int(length * SAMPLE_RATE)
        ]
        offset = int(cursor * SAMPLE_RATE)
        mix[offset : offset + len(clip)] += clip * float(rng.uniform(0.6, 1.2))
        reference.append((cursor, cursor + len(clip) / SAMPLE_RATE, speaker))
        # Paramedics interrupt each other: a third of the turns overlap the next one.
        gap = -float(rng.uniform(0.2, 0.8)) if rng.random() < 0.33 else float(rng.uniform(0.1, 1.2))
        cursor = max(cursor + length + gap, cursor + 0.5)
    return np.clip(mix, -1.0, 1.0), reference


def make_corpus(folder: Path, seed: int = 0) -> Path:
    """Write the demo corpus (WAV, RTTM, UEM, LST, database.yml); return database.yml."""
    import soundfile

    database = folder / "database.yml"
    if database.exists():
        return database
    rng = np.random.default_rng(seed)
    audio, turns = _sample()
    pieces = _single_speaker_pieces(turns, rng)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    protocol: dict[str, Any] = {"scope": "file"}
    for subset, count in SUBSETS.items():
        uris, rttm, uem = [], [], []
        for index in range(count):
            uri = f"{subset[:3]}{index:02d}"
            mix, reference = _conversation(audio, pieces, rng)
            soundfile.write(folder / "audio" / f"{uri}.wav", mix, SAMPLE_RATE, subtype="PCM_16")
            uris.append(uri)
            uem.append(f"{uri} NA 0.000 {CONVERSATION_SECONDS:.3f}")
            rttm += [
                f"SPEAKER {uri} 1 {s:.3f} {e - s:.3f} <NA> <NA> {who} <NA> <NA>"
                for s, e, who in reference
            ]
        for suffix, lines in (("lst", uris), ("rttm", rttm), ("uem", uem)):
            (folder / f"{subset}.{suffix}").write_text("\n".join(lines) + "\n")
        protocol[subset] = {
            "uri": f"{subset}.lst",
            "annotation": f"{subset}.rttm",
            "annotated": f"{subset}.uem",
        }
    database_name, task, name = PROTOCOL.split(".")
    config = {
        "Databases": {database_name: "audio/{uri}.wav"},
        "Protocols": {database_name: {task: {name: protocol}}},
    }
    database.write_text(yaml.safe_dump(config, sort_keys=False))
    return database


def demo_spec(database: Path, models: Path, quick: bool) -> dict[str, Any]:
    """The DiarizationTuning of the demo (examples/demo.yaml documents the same shape)."""
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "demo"},
        "spec": {
            "data": {"database": str(database), "protocol": PROTOCOL},
            "pipeline": {
                "segmentation": str(models / "segmentation.ckpt"),
                "embedding": str(models / "embedding.ckpt"),
            },
            "stages": [
                {
                    "name": "segmentation",
                    "fineTune": {"maxEpochs": 1, "batchesPerEpoch": 10 if quick else 20},
                    "searchSpace": {
                        "training.learning_rate": {
                            "type": "float",
                            "low": 1e-5,
                            "high": 1e-3,
                            "log": True,
                        },
                        "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 1.0},
                    },
                    "maxTrialCount": 2 if quick else 4,
                },
                {
                    "name": "clustering",
                    "searchSpace": {
                        "clustering.threshold": {"type": "float", "low": 0.05, "high": 1.0},
                        "clustering.method": {
                            "type": "categorical",
                            "choices": ["average", "centroid", "weighted"],
                        },
                        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
                    },
                    "maxTrialCount": 4 if quick else 20,
                },
            ],
            "optimizer": {"seed": 0, "initialDesignSize": 2 if quick else 6},
            "parallelTrialCount": 2,
            "maxFailedTrialCount": 2,
        },
    }


def run_demo(output: Path, quick: bool = False, verbose: bool = False) -> int:
    """Make the corpus and models under ``output``, then tune; print the summary.

    What pyannote and lightning print while the models are made goes to
    ``output/models.log``, unless ``verbose``.
    """
    from diartune.local.tuning import LocalTuning
    from diartune.spec import Data
    from diartune.spec_file import parse_tuning
    from diartune.trial.bootstrap import make_models

    start = time.monotonic()
    models = output / "models"
    log = output / "models.log"
    print(f"making the demo corpus and models (their log: {log})", flush=True)
    with routed(log, verbose):
        database = make_corpus(output / "corpus")
        make_models(
            Data(database=str(database), protocol=PROTOCOL),
            models,
            epochs=10 if quick else 40,
            batches_per_epoch=40,
        )
    print(f"corpus and models ready in {time.monotonic() - start:.0f} s", flush=True)
    document = demo_spec(database.resolve(), models.resolve(), quick)
    (output / "demo.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    tuning = parse_tuning(document, str(output / "demo.yaml"))
    summary = LocalTuning(tuning, output / "run", verbose=verbose).run()
    print(f"demo wall time: {time.monotonic() - start:.0f} s")
    return 0 if summary.phase == "Succeeded" else 1
