"""The adaptation scenario: a pipeline pretrained on one domain, adapted to another.

Speakers are split once: the **source** speakers (ami-debug's train speakers and a seeded
draw of speech-pool's) make clean, meeting-like ``source`` conversations, on which a
segmentation model is trained from scratch: the user's pretrained starting point. The
other speech-pool speakers are the **target** speakers, never heard by that model; they
make ``ems`` conversations (paramedic and dispatch audio) whose train, development and
test subsets have different speakers. Both corpora come from ``diartune simulate``'s
presets (``diartune.simulate.presets``).

The arms scored on the target test speakers (issue 25 names them):

- A0: the source model with pyannote's default pipeline parameters;
- B0: pyannote's tutorial recipe: fine-tune at learning rate 1e-4, keep the epoch of
  lowest development loss (early stopping), default pipeline parameters;
- C: diartune's two-stage tuning (the demo's ``DiarizationTuning``).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import EarlyStopping

from diartune.records import FileScores, TrialResult
from diartune.simulate.presets import PresetName, merge_options, preset_options
from diartune.spec.model import Data, FineTune

#: ami-debug's train RTTM and UEM name this file without its tilde (kept as upstream ships it).
AMI_ALIASES = {"trn00": "trñ00"}
AMI_PROTOCOL = "Debug.SpeakerDiarization.Debug"
SOURCE_PROTOCOL = "Source.SpeakerDiarization.Meetings"
TARGET_PROTOCOL = "Ems.SpeakerDiarization.Dispatch"
#: speech-pool speakers given to the source domain; the others are the target's.
SOURCE_POOL_SPEAKERS = 8
#: The tutorial recipe's learning rate, and its patience in epochs without a lower
#: development loss.
TUTORIAL_LEARNING_RATE = 1e-4
TUTORIAL_PATIENCE = 2


def split_pool(pool: Path, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write speech-pool's manifest as two: the source speakers and the target speakers.

    The source speakers are ``SOURCE_POOL_SPEAKERS`` drawn with ``seed``; file paths are
    written absolute, so the manifests may live anywhere. Returns (source, target).
    """
    from diartune.simulate import SimulationError

    if not pool.is_file():
        raise SimulationError(f"--pool: {pool}: no such file")
    with pool.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    if "file" not in columns or "speaker_id" not in columns:
        raise SimulationError(f"--pool: {pool}: expected the columns file and speaker_id")
    speakers = sorted({row["speaker_id"] for row in rows})
    source = set(random.Random(seed).sample(speakers, SOURCE_POOL_SPEAKERS))
    paths = []
    for name, keep in (("source", True), ("target", False)):
        path = folder / f"{name}-speakers.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                if (row["speaker_id"] in source) == keep:
                    writer.writerow({**row, "file": str((pool.parent / row["file"]).resolve())})
        paths.append(path)
    return paths[0], paths[1]


def domain_options(
    preset: PresetName,
    sources: list[dict[str, Any]],
    splits: dict[str, tuple[int, float]],
    protocol: str,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``diartune simulate`` options (YAML keys) of one domain's corpus.

    ``splits`` maps a subset to its conversations and speaker share.
    """
    shares = {
        subset: {"conversations": count, "speakerShare": share}
        for subset, (count, share) in splits.items()
    }
    mine = {"sources": sources, "protocol": protocol, "splits": shares, "seed": seed}
    return merge_options(preset_options(preset), mine)


def source_sources(ami: Path, manifest: Path) -> list[dict[str, Any]]:
    """The source speakers: ami-debug's train subset and the source part of speech-pool."""
    return [
        {
            "kind": "protocol",
            "database": str(ami),
            "protocol": AMI_PROTOCOL,
            "subsets": ["train"],
            "uriAliases": AMI_ALIASES,
        },
        {"kind": "pool", "manifest": str(manifest), "name": "pool"},
    ]


def target_sources(manifest: Path) -> list[dict[str, Any]]:
    """The target speakers: the rest of speech-pool."""
    return [{"kind": "pool", "manifest": str(manifest), "name": "pool"}]


def simulate_once(options: dict[str, Any], folder: Path, what: str) -> Path:
    """Simulate ``options`` into ``folder`` unless it is there; return its database.yml.

    Raises ``SimulationError`` (one line naming the option or file) on bad sources.
    """
    from diartune.simulate import parse_options, simulate

    database = folder / "database.yml"
    if database.exists():
        return database
    return simulate(parse_options(options, what), folder)


class _BestWeights(lightning.Callback):
    """Keeps a copy of the weights of the epoch with the lowest development loss."""

    def __init__(self) -> None:
        self.loss = float("inf")
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: lightning.Trainer, module: Any) -> None:
        loss = trainer.callback_metrics.get("loss/val")
        if loss is not None and float(loss) < self.loss:
            self.loss = float(loss)
            self.state = copy.deepcopy(module.state_dict())


def tutorial_fine_tune(
    source: Path, data: Data, max_epochs: int, output: Path, duration: float = 5.0
) -> Path:
    """B0: pyannote's tutorial recipe on the target's train subset; write the checkpoint.

    Learning rate 1e-4, the development loss after every epoch, training stopped after
    ``TUTORIAL_PATIENCE`` epochs without a lower one (at most ``max_epochs``), and the
    weights of the lowest kept. Existing output is kept.
    """
    from diartune.corpus import fetch_database
    from diartune.storage import Storage, cache_root
    from diartune.trial.data import load_protocol, subset_files
    from diartune.trial.finetune import fine_tune
    from diartune.trial.models import load_model, save_checkpoint

    if output.exists():
        return output
    storage = Storage(data.s3)
    protocol = load_protocol(fetch_database(data, storage, cache_root()), data.protocol)
    for subset in ("train", "development"):
        subset_files(protocol, subset, load=False)
    model = load_model(str(source), storage, cache_root())
    best = _BestWeights()
    stop = EarlyStopping("loss/val", patience=TUTORIAL_PATIENCE, mode="min")
    fine_tune(
        model,
        protocol,
        {"training.duration": duration, "training.learning_rate": TUTORIAL_LEARNING_RATE},
        FineTune(max_epochs=max_epochs),
        output.with_suffix(".last.ckpt"),
        callbacks=[best, stop],
        validate=True,
    )
    if best.state is not None:
        model.load_state_dict(best.state)
    save_checkpoint(model, output.with_suffix(".part"))
    output.with_suffix(".part").replace(output)
    output.with_suffix(".last.ckpt").unlink()
    return output


def score_defaults(
    name: str, segmentation: Path, embedding: Path, data: Data, folder: Path
) -> TrialResult:
    """pyannote's default pipeline parameters with ``segmentation``, scored once on the test
    subset of ``data`` (result kept in ``folder``: a rerun reads it)."""
    from diartune.records import RESULT_FILE, Trial, TrialRequest
    from diartune.spec.model import Pipeline
    from diartune.spec.params import pipeline_defaults
    from diartune.trial.run import run_trial

    result = folder / RESULT_FILE
    if result.exists():
        return TrialResult.model_validate_json(result.read_text("utf-8"))
    pipeline = Pipeline(segmentation=str(segmentation), embedding=str(embedding))
    trial = Trial(
        name=name,
        stage=name,
        number=-1,
        subset="test",
        params={},
        full_params=pipeline_defaults(pipeline.clustering),
        segmentation=str(segmentation),
    )
    request = TrialRequest(trial=trial, data=data, pipeline=pipeline, output=str(folder))
    with tempfile.TemporaryDirectory(prefix="diartune-score-") as work:
        return run_trial(request, Path(work))


def file_speakers(database: Path, protocol: str, scores: FileScores) -> list[list[str]]:
    """Each test file's reference speakers, in the order of ``scores`` (sorted URIs)."""
    from pyannote.database import registry

    with warnings.catch_warnings():  # the demo loads each corpus again, on purpose
        warnings.simplefilter("ignore", UserWarning)
        registry.load_database(str(database))
    files = registry.get_protocol(protocol).test()
    speakers = {file["uri"]: sorted(file["annotation"].labels()) for file in files}
    uris = sorted(speakers)
    if hashlib.sha256("\n".join(uris).encode()).hexdigest()[:16] != scores.files:
        raise ValueError(f"{protocol}: the scores are not of its test files")
    return [speakers[uri] for uri in uris]
