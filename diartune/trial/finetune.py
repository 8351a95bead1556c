"""Fine-tune (or train from scratch) a segmentation model with pyannote's task and lightning."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning
import torch
from pyannote.audio import Model
from pyannote.audio.models.segmentation import PyanNet
from pyannote.audio.tasks import SpeakerDiarization
from torch_audiomentations import AddColoredNoise, Compose, Gain

from diartune.params import KNOWN, Value
from diartune.spec import FineTune


def _augmentation(probability: float, sample_rate: int) -> Compose | None:
    if probability <= 0:
        return None
    return Compose(
        [
            Gain(min_gain_in_db=-6.0, max_gain_in_db=6.0, p=probability, output_type="dict"),
            AddColoredNoise(
                min_snr_in_db=5.0,
                max_snr_in_db=30.0,
                p=probability,
                sample_rate=sample_rate,
                output_type="dict",
            ),
        ],
        output_type="dict",
    )


def _training(params: dict[str, Value], name: str) -> Any:
    return params.get(f"training.{name}", KNOWN[f"training.{name}"].default)


def fine_tune(
    model: Model,
    protocol: Any,
    params: dict[str, Value],
    settings: FineTune,
    output: Path,
    seed: int = 0,
) -> Path:
    """Train ``model`` on the protocol's train subset; write and return its checkpoint.

    A pretrained model keeps its speaker counts (so its head is not rebuilt); the
    chunk duration, batch size, learning rate, epochs and augmentation come from
    the trial's ``training.*`` parameters.
    """
    lightning.seed_everything(seed, workers=True, verbose=False)
    specifications = getattr(model, "_specifications", None)
    per_chunk = len(specifications.classes) if specifications is not None else None
    per_frame = (specifications.powerset_max_classes if specifications is not None else None) or 2
    cpus = os.cpu_count() or 1
    task = SpeakerDiarization(
        protocol,
        duration=float(_training(params, "duration")),
        batch_size=int(_training(params, "batch_size")),
        num_workers=0 if cpus <= 2 else min(8, cpus // 2),
        augmentation=_augmentation(float(_training(params, "augmentation")), 16000),
        max_speakers_per_chunk=per_chunk,
        max_speakers_per_frame=per_frame,
    )
    model.task = task
    learning_rate = float(_training(params, "learning_rate"))
    # pyannote's Model hard-codes Adam(lr=1e-3); the trial's rate replaces it.
    model.configure_optimizers = lambda: torch.optim.Adam(  # type: ignore[method-assign]
        model.parameters(), lr=learning_rate
    )
    epochs = int(params.get("training.max_epochs", settings.max_epochs))
    with tempfile.TemporaryDirectory(prefix="diartune-fit-") as workdir:
        trainer = lightning.Trainer(
            accelerator="auto",
            devices=1,
            max_epochs=epochs,
            limit_train_batches=settings.batches_per_epoch or 1.0,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            gradient_clip_val=0.5,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            default_root_dir=workdir,
        )
        trainer.fit(model)
        output.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(output)
    return output


def new_segmentation_model() -> PyanNet:
    """An untrained PyanNet, the start of a segmentation model made offline.

    Smaller than pyannote's default (2 LSTM layers of 64 units instead of 4 of 128),
    so that a few minutes of CPU train it to a usable state.
    """
    return PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 64, "num_layers": 2},
        linear={"hidden_size": 64},
    )
