"""Speech of known speakers, cut into windows and embedded: what a PLDA is trained on."""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional
from pyannote.audio import Audio, Model
from torch.nn.utils.rnn import pad_sequence

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SpeakerAudio:
    """Speech of one speaker: a (1, samples) waveform at 16 kHz."""

    speaker: str
    waveform: torch.Tensor


@dataclass(frozen=True)
class SpeakerEmbeddings:
    """Embeddings (N, D) and the speaker of each (N,)."""

    embeddings: np.ndarray
    speakers: np.ndarray

    def save(self, path: Path) -> Path:
        """Write both arrays to an .npz file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, embeddings=self.embeddings, speakers=self.speakers)
        return path

    @classmethod
    def load(cls, path: Path) -> SpeakerEmbeddings:
        """Read what :meth:`save` wrote."""
        with np.load(path) as stored:
            return cls(stored["embeddings"], stored["speakers"])

    def subset(self, keep: np.ndarray) -> SpeakerEmbeddings:
        """The rows where the boolean mask ``keep`` is true."""
        return SpeakerEmbeddings(self.embeddings[keep], self.speakers[keep])


def trim_silence(waveform: torch.Tensor) -> torch.Tensor:
    """The waveform without its leading and trailing silence (torchaudio's SoX-style VAD)."""
    trimmed = torchaudio.functional.vad(waveform, SAMPLE_RATE, pre_trigger_time=0.25)
    return torchaudio.functional.vad(trimmed.flip(-1), SAMPLE_RATE, pre_trigger_time=0.25).flip(-1)


def speech_pool_audio(folder: Path) -> list[SpeakerAudio]:
    """Every file of a one-speaker-per-file corpus, trimmed of silence at both ends.

    ``folder/manifest.csv`` names each file (``file``, relative to ``folder``) and its
    speaker (``speaker_id``), as ../shared/data/speech-pool does.
    """
    audio = Audio(sample_rate=SAMPLE_RATE, mono="downmix")
    with (folder / "manifest.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [
        SpeakerAudio(row["speaker_id"], trim_silence(audio(folder / row["file"])[0]))
        for row in rows
    ]


def single_speaker_audio(files: list[dict[str, Any]], exclude: set[str]) -> list[SpeakerAudio]:
    """Annotated regions where exactly one speaker talks, of speakers not in ``exclude``.

    ``files`` are loaded protocol files (``subset_files``): waveform, annotation and
    annotated (UEM) regions.
    """
    pieces = []
    for file in files:
        annotation = file["annotation"].crop(file["annotated"])
        overlap = annotation.get_overlap()
        for speaker in sorted(set(annotation.labels()) - exclude):
            for segment in annotation.label_timeline(speaker).support().extrude(overlap):
                start, end = (round(time * file["sample_rate"]) for time in segment)
                waveform = file["waveform"][:, start:end]
                pieces.append(SpeakerAudio(speaker, waveform))
    return pieces


def windows(pieces: list[SpeakerAudio], window: float, min_duration: float) -> list[SpeakerAudio]:
    """Each piece cut into equal windows of at most ``window`` seconds.

    Pieces shorter than ``min_duration`` seconds are dropped; equal cuts, rather than
    fixed ones with a short remainder, keep every window at least half ``window`` long.
    """
    cut = []
    for piece in pieces:
        samples = piece.waveform.shape[1]
        if samples < min_duration * SAMPLE_RATE:
            continue
        count = math.ceil(samples / (window * SAMPLE_RATE))
        bounds = np.linspace(0, samples, count + 1).round().astype(int)
        cut += [
            SpeakerAudio(piece.speaker, piece.waveform[:, start:end])
            for start, end in itertools.pairwise(bounds)
        ]
    return cut


def embed(model: Model, pieces: list[SpeakerAudio], batch_size: int = 32) -> SpeakerEmbeddings:
    """The embedding of each piece, in batches of pieces of similar lengths.

    Pieces of a batch are zero-padded to the longest; the padding is masked out with
    the ``weights`` that pyannote's pipeline gives embedding models.
    """
    order = sorted(range(len(pieces)), key=lambda index: pieces[index].waveform.shape[1])
    outputs = []
    model.eval()
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            batch = [pieces[index].waveform[0] for index in order[first : first + batch_size]]
            waveforms = pad_sequence(batch, batch_first=True)
            weights = pad_sequence(
                [torch.ones_like(samples) for samples in batch], batch_first=True
            )
            outputs.append(model(waveforms[:, None], weights=weights).numpy())
    embeddings = np.concatenate(outputs).astype(np.float64)
    embeddings[order] = embeddings.copy()
    return SpeakerEmbeddings(embeddings, np.array([piece.speaker for piece in pieces]))
