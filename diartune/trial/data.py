"""Data of a trial: load a protocol of the fetched corpus, decode and check its files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pyannote.audio import Audio
from pyannote.database import FileFinder, registry

from diartune.corpus import BadInput, corpus_problems


def load_protocol(
    database: Path, name: str, subsets: tuple[str, ...] = (), confined: bool = False
) -> Any:
    """The pyannote.database protocol ``name`` defined in ``database``, once the lists,
    annotations and paths of ``subsets`` (all when empty) passed ``diartune.corpus``'s
    checks (BadInput otherwise). ``confined``: audio paths must stay in the database's
    folder (an S3 mirror)."""
    problems = corpus_problems(database, name, confined, subsets)
    if problems:
        raise BadInput("\n".join(problems))
    try:
        registry.load_database(str(database))
        return registry.get_protocol(name, preprocessors={"audio": FileFinder()})
    except Exception as error:  # pyannote.database raises many kinds
        raise BadInput(f"spec.data.protocol: {name!r} in {database}: {error}") from error


def subset_files(protocol: Any, subset: str, load: bool = True) -> list[dict[str, Any]]:
    """The files of ``subset``, each checked and, with ``load``, decoded into memory.

    Parameters
    ----------
    protocol
        A pyannote.database protocol (``load_protocol``).
    subset
        ``train``, ``development`` or ``test``.
    load
        Decode the audio (else only check that it has a duration).

    Raises
    ------
    BadInput
        Naming the file when audio is missing, cannot be decoded, is empty, or holds NaN
        or infinite samples.
    """
    try:
        files = list(getattr(protocol, subset)())
    except Exception as error:
        raise BadInput(f"{protocol.name}: cannot read its {subset} subset: {error}") from error
    if not files:
        raise BadInput(f"{protocol.name}: the {subset} subset has no files")
    audio = Audio(sample_rate=16000, mono="downmix")
    loaded = []
    for file in files:
        uri = file["uri"]
        try:
            path = file["audio"]
        except Exception as error:  # FileFinder raises when no file matches
            raise BadInput(f"{uri}: audio file not found ({error})") from error
        try:
            if load:
                waveform, sample_rate = audio(path)
                empty = waveform.numel() == 0
            else:
                empty = audio.get_duration(path) <= 0
        except Exception as error:
            raise BadInput(f"{path}: unreadable audio ({error})") from error
        if empty:
            raise BadInput(f"{path}: the audio is empty (0 samples)")
        if load and not bool(torch.isfinite(waveform).all()):
            raise BadInput(f"{path}: NaN or infinite samples; expected finite audio")
        entry = {"uri": uri, "audio": str(path)}
        if load:
            entry |= {
                "waveform": waveform,
                "sample_rate": sample_rate,
                "annotation": file["annotation"],
                "annotated": file["annotated"],
            }
        loaded.append(entry)
    return loaded


def _radical_inverse(index: int) -> float:
    """Van der Corput's base-2 sequence: 0, 1/2, 1/4, 3/4, ... spread over [0, 1)."""
    value, scale = 0.0, 0.5
    while index:
        value += scale * (index & 1)
        index >>= 1
        scale /= 2
    return value


def budget_order(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The files in the order a files budget takes them, deterministic and stratified.

    Files are ranked by number of speakers, then reference speech, then URI, and taken
    at van der Corput positions of that ranking, so that every prefix spreads over the
    strata (few to many speakers, short to long) and a larger budget's subset contains
    every smaller one's.
    """
    ranked = sorted(
        files,
        key=lambda f: (
            len(f["annotation"].labels()),
            f["annotation"].get_timeline().support().duration(),
            f["uri"],
        ),
    )
    # Van der Corput orders indices of a power-of-two range; scale them to this one.
    size = 1 << max(len(ranked) - 1, 0).bit_length()
    taken: list[int] = []
    seen: set[int] = set()
    for index in sorted(range(size), key=_radical_inverse):
        position = index * len(ranked) // size
        if position not in seen:
            seen.add(position)
            taken.append(position)
    return [ranked[i] for i in taken]


def budget_files(files: list[dict[str, Any]], percent: float | None) -> list[dict[str, Any]]:
    """The first ``percent`` % of the files in budget order (at least one); all with None."""
    if percent is None or percent >= 100:
        return files
    count = max(1, math.ceil(len(files) * percent / 100))
    return budget_order(files)[:count]
