"""Make a PLDA for VBx offline, from speech of known speakers and the offline embedding."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.audio import Model

from diartune.corpus import fetch_database
from diartune.spec.model import Data
from diartune.storage import Storage, cache_root
from diartune.trial.data import load_protocol, subset_files
from diartune.trial.plda import (
    BETWEEN_SHRINKAGE,
    PLDA_DIMENSION,
    PLDA_FILE,
    TRANSFORM_FILE,
    train_plda,
    write_plda,
)
from diartune.trial.speakers import (
    SpeakerAudio,
    SpeakerEmbeddings,
    embed,
    single_speaker_audio,
    speech_pool_audio,
    windows,
)

WINDOW = 3.0  # seconds: embeddings of 1.5-3 s of speech, as diarization's chunks give
MIN_DURATION = 1.0  # seconds of single-speaker speech worth an embedding


def evaluation_speakers(protocol: Any) -> set[str]:
    """Speakers of the protocol's development and test subsets: never train on them."""
    speakers: set[str] = set()
    for subset in ("development", "test"):
        try:
            files = list(getattr(protocol, subset)())
        except NotImplementedError:  # pyannote.database: the protocol has no such subset
            continue
        speakers |= {label for file in files for label in file["annotation"].labels()}
    return speakers


def protocol_audio(data: Data) -> list[SpeakerAudio]:
    """Single-speaker speech of the train subset, evaluation speakers left out.

    RTTM URIs that match no audio raise BadInput (``subset_files``), as in trials:
    ami-debug as shared names ``trñ00`` ``trn00`` in its RTTM, and guessing which
    audio such a URI meant is not this function's job.
    """
    database = fetch_database(data, Storage(data.s3), cache_root())
    protocol = load_protocol(database, data.protocol)
    files = subset_files(protocol, "train")
    return single_speaker_audio(files, exclude=evaluation_speakers(protocol))


def training_embeddings(
    embedding: Model, speech_pool: Path | None, data: Data | None, window: float = WINDOW
) -> SpeakerEmbeddings:
    """Embeddings of ``window``-second pieces of a speech pool and a protocol's train subset."""
    pieces = []
    if speech_pool is not None:
        pieces += speech_pool_audio(speech_pool)
    if data is not None:
        pieces += protocol_audio(data)
    return embed(embedding, windows(pieces, window, MIN_DURATION))


def build_plda(
    output_folder: Path,
    embedding: Path,
    speech_pool: Path | None,
    data: Data | None,
    dimension: int = PLDA_DIMENSION,
    between_shrinkage: float = BETWEEN_SHRINKAGE,
) -> Path:
    """Write a PLDA folder for the embedding checkpoint ``embedding``; an existing one is kept.

    The folder is what ``PLDA.from_pretrained`` and ``spec.pipeline.plda`` take. It is
    written whole or not at all. Deterministic: no step draws random numbers.

    Parameters
    ----------
    output_folder : Path
        Where the two files go.
    embedding : Path
        The embedding checkpoint whose embeddings the PLDA models.
    speech_pool : Path, optional
        A one-speaker-per-file corpus with manifest.csv (see ``speech_pool_audio``).
    data : Data, optional
        A pyannote.database protocol: single-speaker regions of its train subset, less
        the speakers of its development and test subsets.
    dimension, between_shrinkage
        See :func:`diartune.trial.plda.train_plda`.
    """
    if (output_folder / TRANSFORM_FILE).is_file() and (output_folder / PLDA_FILE).is_file():
        return output_folder
    model = Model.from_pretrained(embedding, strict=False)
    if model is None:
        raise FileNotFoundError(f"{embedding}: no such embedding checkpoint")
    labelled = training_embeddings(model, speech_pool, data)
    if not np.all(np.isfinite(labelled.embeddings)):
        raise ValueError(f"{embedding}: some training speech got no embedding")
    output_folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output_folder.name}.", dir=output_folder.parent))
    try:
        write_plda(
            partial,
            *train_plda(labelled.embeddings, labelled.speakers, dimension, between_shrinkage),
        )
        os.replace(partial, output_folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output_folder
