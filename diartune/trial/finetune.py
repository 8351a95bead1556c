"""Fine-tune (or train from scratch) a segmentation model with pyannote's task and lightning."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
from pyannote.audio import Model
from pyannote.audio.models.segmentation import PyanNet
from pyannote.audio.tasks import SpeakerDiarization
from torch_audiomentations import AddColoredNoise, Compose, Gain

from diartune.spec.model import FineTune
from diartune.spec.params import KNOWN, Value
from diartune.trial.device import available_cpus, loader_workers


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


def chunk_duration(seconds: float) -> float:
    """``training.duration`` rounded to 10 ms.

    The model keeps its training chunk duration for inference, where pyannote's pipeline
    crops in-memory audio from ``round(start * rate)`` to ``round(end * rate)``, chunks
    starting every tenth of the duration. Unless every start falls on a whole sample (or
    off a half one), Python's round-half-to-even makes chunks one sample apart, which
    cannot be stacked into one embedding batch (a RuntimeError in ``torch.vstack``). At
    pyannote's 16 kHz, a multiple of 10 ms puts every start on a whole sample.
    """
    return round(seconds, 2)


#: Called with a checkpoint of the whole training state and the epochs it completed.
SaveState = Callable[[Path, int], None]


class _SaveEvery(lightning.Callback):
    """Hands the training state to ``save`` every ``every`` epochs (not after the last:
    the trial's checkpoint is that one)."""

    def __init__(self, every: int, save: SaveState, folder: Path) -> None:
        self.every, self.save, self.folder = every, save, folder

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: Any) -> None:
        done = trainer.current_epoch + 1
        if done % self.every == 0 and done < (trainer.max_epochs or 0):
            path = self.folder / f"epoch-{done}.ckpt"
            trainer.save_checkpoint(path)
            self.save(path, done)
            path.unlink()


def fine_tune(
    model: Model,
    protocol: Any,
    params: dict[str, Value],
    settings: FineTune,
    output: Path,
    seed: int = 0,
    resume: Path | None = None,
    save_state: SaveState | None = None,
    callbacks: Sequence[lightning.Callback] = (),
    validate: bool = False,
) -> Path:
    """Train ``model`` on the protocol's train subset; write and return its checkpoint.

    A pretrained model keeps its speaker counts (so its head is not rebuilt); the
    chunk duration, batch size, learning rate, epochs and augmentation come from
    the trial's ``training.*`` parameters.

    Parameters
    ----------
    model
        The model to train (pretrained or new).
    protocol
        A pyannote.database protocol with a train subset.
    params
        The trial's parameters; ``training.*`` ones set the training.
    settings
        Epochs, batches per epoch, precision, how often the state is saved.
    output
        Where the checkpoint (weights, optimizer and loop state) is written.
    seed
        Seed of Python, numpy and torch (the chunks drawn and the initial weights).
    resume
        A checkpoint of this training at an earlier epoch: the weights, optimizer and
        epoch counter are restored from it and training goes on to ``maxEpochs``.
    save_state
        Called every ``settings.checkpoint_every_epochs`` epochs with a checkpoint of the
        training state.
    callbacks
        More lightning callbacks for the trainer (``bench/gpu.py`` times epochs with one).
    validate
        Compute the loss on the development subset after every epoch (``loss/val``, for
        early stopping callbacks); trials do not.
    """
    lightning.seed_everything(seed, workers=True, verbose=False)
    specifications = getattr(model, "_specifications", None)
    per_chunk = len(specifications.classes) if specifications is not None else None
    per_frame = (specifications.powerset_max_classes if specifications is not None else None) or 2
    task = SpeakerDiarization(
        protocol,
        duration=chunk_duration(float(_training(params, "duration"))),
        batch_size=int(_training(params, "batch_size")),
        num_workers=loader_workers(available_cpus()),
        pin_memory=torch.cuda.is_available(),
        augmentation=_augmentation(
            float(_training(params, "augmentation")), model.audio.sample_rate
        ),
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
        every = settings.checkpoint_every_epochs
        saver = [_SaveEvery(every, save_state, Path(workdir))] if save_state else []
        trainer = lightning.Trainer(
            accelerator="auto",
            devices=1,
            precision=settings.precision if torch.cuda.is_available() else "32",
            max_epochs=epochs,
            callbacks=[*saver, *callbacks],
            limit_train_batches=settings.batches_per_epoch or 1.0,
            limit_val_batches=1.0 if validate else 0,
            num_sanity_val_steps=0,
            gradient_clip_val=0.5,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            default_root_dir=workdir,
        )
        # A checkpoint to resume from is diartune's own, verified by its SHA-256 first.
        trainer.fit(model, ckpt_path=resume, weights_only=False)
        output.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(output)
    return output


def new_segmentation_model(seed: int = 0) -> PyanNet:
    """An untrained PyanNet, the start of a segmentation model made offline.

    Smaller than pyannote's default (2 LSTM layers of 64 units instead of 4 of 128),
    so that a few minutes of CPU train it to a usable state. Its initial weights are drawn
    from ``seed`` (``fine_tune`` seeds only what happens after), without touching torch's
    global random state.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return PyanNet(
            sincnet={"stride": 10},
            lstm={"hidden_size": 64, "num_layers": 2},
            linear={"hidden_size": 64},
        )
