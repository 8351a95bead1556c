"""Make the offline starting models: a segmentation model trained here, Resemblyzer's encoder."""

from __future__ import annotations

from pathlib import Path

from diartune.corpus import fetch_database
from diartune.spec.model import Data, FineTune
from diartune.storage import Storage, cache_root
from diartune.trial.data import load_protocol, subset_files
from diartune.trial.finetune import fine_tune, new_segmentation_model
from diartune.trial.models import build_resemblyzer_checkpoint


def make_models(
    data: Data, output: Path, epochs: int, batches_per_epoch: int, duration: float = 5.0
) -> tuple[Path, Path]:
    """Train a PyanNet from scratch on the protocol's train subset; write both checkpoints.

    Returns the segmentation and embedding checkpoint paths. Existing ones are kept.
    """
    segmentation = output / "segmentation.ckpt"
    embedding = output / "embedding.ckpt"
    if not embedding.exists():
        build_resemblyzer_checkpoint(embedding)
    if not segmentation.exists():
        database = fetch_database(data, Storage(data.s3), cache_root())
        protocol = load_protocol(database, data.protocol)
        subset_files(protocol, "train", load=False)
        partial = output / "segmentation.ckpt.part"
        fine_tune(
            new_segmentation_model(),
            protocol,
            {"training.duration": duration, "training.learning_rate": 1e-3},
            FineTune(max_epochs=epochs, batches_per_epoch=batches_per_epoch),
            partial,
        )
        partial.replace(segmentation)
    return segmentation, embedding
