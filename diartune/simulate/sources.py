"""Speakers and their single-speaker speech, from protocol and pool sources.

Times are whole milliseconds (``*_ms``) and audio is mono 16 kHz float32, so that a
millisecond is exactly 16 samples and every reference written later is exact.
"""

from __future__ import annotations

import csv
import difflib
import re
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from diartune.corpus import Subset, protocol_subsets
from diartune.simulate.options import PoolSource, ProtocolSource, SimulationError, Source

SAMPLE_RATE = 16000
SAMPLES_PER_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True)
class Piece:
    """A stretch of one speaker's speech in a source recording."""

    speaker: str
    path: Path
    start_ms: int
    end_ms: int

    @property
    def ms(self) -> int:
        """Length in milliseconds."""
        return self.end_ms - self.start_ms

    def truncated(self, ms: int) -> Piece:
        """The first ``ms`` milliseconds of this piece."""
        return replace(self, end_ms=self.start_ms + min(ms, self.ms))


def nfc(text: str) -> str:
    """``text`` in Unicode NFC, so that composed and decomposed spellings compare equal."""
    return unicodedata.normalize("NFC", text)


@lru_cache(maxsize=256)
def read_audio(path: Path) -> np.ndarray:
    """A file's audio as mono 16 kHz float32 (downmixed and resampled when needed)."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as error:  # soundfile's errors derive from these
        raise SimulationError(f"{path}: unreadable audio ({error})") from None
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        divisor = np.gcd(rate, SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    if mono.size == 0:
        raise SimulationError(f"{path}: the audio is empty (0 samples)")
    return mono


def piece_audio(piece: Piece) -> np.ndarray:
    """The samples of ``piece``."""
    audio = read_audio(piece.path)
    return audio[piece.start_ms * SAMPLES_PER_MS : piece.end_ms * SAMPLES_PER_MS]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of the runs of True in a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _where(index: int) -> str:
    return f"sources[{index}]"


def _name(text: str) -> str:
    """A source name usable as a speaker prefix (no dots, no spaces)."""
    return re.sub(r"[^\w-]", "-", nfc(text))


def _protocol(source: ProtocolSource, index: int, database: Path) -> Any:
    """The pyannote.database protocol of a source, with audio paths found by FileFinder."""
    from pyannote.database import FileFinder, registry

    try:
        registry.load_database(str(database))
        return registry.get_protocol(source.protocol, preprocessors={"audio": FileFinder()})
    except Exception as error:  # pyannote.database raises many kinds
        message = str(error).replace("\n", " ")
        raise SimulationError(
            f"{_where(index)}: {source.protocol} in {database}: {message}"
        ) from None


def _protocol_files(protocol: Any, index: int, subsets: list[str]) -> dict[str, Path]:
    """NFC URI -> audio path of every file in the given subsets of a protocol."""
    files = {}
    for subset in subsets:
        try:
            items = list(getattr(protocol, subset)())
        except Exception as error:  # pyannote.database raises many kinds
            message = str(error).replace("\n", " ")
            raise SimulationError(
                f"{_where(index)}: cannot read the {subset} subset of {protocol.name}: {message}"
            ) from None
        for file in items:
            try:
                files[nfc(file["uri"])] = Path(file["audio"])
            except Exception as error:  # FileFinder raises when no file matches
                message = str(error).replace("\n", " ")
                raise SimulationError(
                    f"{_where(index)}: audio of {file['uri']!r} not found ({message})"
                ) from None
    return files


def _subsets(source: ProtocolSource, index: int, database: Path) -> list[Subset]:
    """The subsets to read, each with an RTTM file that exists."""
    declared = {subset.name: subset for subset in protocol_subsets(database, source.protocol)}
    wanted: list[str] = list(source.subsets or declared)
    missing = [subset for subset in wanted if subset not in declared]
    if missing or not wanted:
        raise SimulationError(
            f"{_where(index)}.subsets: {database} declares no {missing or 'subset'} "
            f"for {source.protocol}"
        )
    for name in wanted:
        rttm = declared[name].annotation
        if rttm is None:
            raise SimulationError(
                f"{_where(index)}: the {name} subset of {source.protocol} has no annotation "
                "(RTTM); a protocol source needs reference speaker turns"
            )
        if not rttm.is_file():
            raise SimulationError(f"{_where(index)}: {rttm}: no such RTTM file")
    return [declared[name] for name in wanted]


def _annotations(
    source: ProtocolSource, index: int, subsets: list[Subset], files: dict[str, Path]
) -> tuple[dict[str, list[tuple[int, int, str]]], dict[str, list[tuple[int, int]]]]:
    """Turns (start_ms, end_ms, NFC label) and annotated regions per NFC audio URI.

    Parameters
    ----------
    source, index
        The source and its place in the options (for messages).
    subsets
        The subsets to read (each with an RTTM file, ``_subsets``).
    files
        NFC URI -> audio path of those subsets.
    """
    from pyannote.database.util import load_rttm, load_uem

    aliases = {nfc(key): nfc(value) for key, value in source.uri_aliases.items()}
    names = [subset.name for subset in subsets]
    used: set[str] = set()

    def audio_uri(uri: str, where: Path) -> str:
        name = aliases.get(nfc(uri), nfc(uri))
        if name not in files:
            closest = difflib.get_close_matches(name, files, n=1)
            hint = f" (closest: {closest[0]!r})" if closest else ""
            raise SimulationError(
                f"{where}: URI {uri!r} matches no audio of {source.protocol} {names}{hint}; "
                f"fix the file or map it with {_where(index)}.uriAliases"
            )
        used.add(nfc(uri))
        return name

    turns: dict[str, list[tuple[int, int, str]]] = {uri: [] for uri in files}
    annotated: dict[str, list[tuple[int, int]]] = {}
    for subset in subsets:
        assert subset.annotation is not None  # _subsets checked it
        for uri, annotation in load_rttm(subset.annotation).items():
            name = audio_uri(uri, subset.annotation)
            for segment, _, label in annotation.itertracks(yield_label=True):
                start, end = round(segment.start * 1000), round(segment.end * 1000)
                turns[name].append((start, end, nfc(str(label))))
        uem = subset.annotated
        if uem is not None and uem.is_file():
            for uri, timeline in load_uem(uem).items():
                annotated[audio_uri(uri, uem)] = [
                    (round(segment.start * 1000), round(segment.end * 1000)) for segment in timeline
                ]
    unused = sorted(set(aliases) - used)
    if unused:
        raise SimulationError(f"{_where(index)}.uriAliases: {unused} are in no RTTM or UEM")
    return turns, annotated


def _single_speaker(
    turns: list[tuple[int, int, str]], regions: list[tuple[int, int]], length_ms: int
) -> dict[str, list[tuple[int, int]]]:
    """Per label, the (start_ms, end_ms) runs where it alone speaks inside ``regions``."""
    labels = sorted({label for _, _, label in turns})
    active = np.zeros((len(labels), length_ms), dtype=bool)
    for start, end, label in turns:
        active[labels.index(label), max(start, 0) : min(end, length_ms)] = True
    annotated = np.zeros(length_ms, dtype=bool)
    for start, end in regions:
        annotated[max(start, 0) : min(end, length_ms)] = True
    alone = active & (active.sum(axis=0) == 1) & annotated
    return {label: runs(alone[row]) for row, label in enumerate(labels)}


def _protocol_speakers(source: ProtocolSource, index: int) -> dict[str, list[Piece]]:
    import soundfile

    database = Path(source.database)
    if not database.is_file():
        raise SimulationError(f"{_where(index)}.database: {database}: no such file")
    database = database.resolve()
    name = _name(source.name or source.protocol.split(".")[0].lower())
    protocol = _protocol(source, index, database)
    subsets = _subsets(source, index, database)
    files = _protocol_files(protocol, index, [subset.name for subset in subsets])
    turns, annotated = _annotations(source, index, subsets, files)
    speakers: dict[str, list[Piece]] = {}
    for uri, path in sorted(files.items()):
        try:
            length_ms = int(soundfile.info(path).duration * 1000)
        except (OSError, RuntimeError) as error:
            raise SimulationError(f"{path}: unreadable audio ({error})") from None
        regions = annotated.get(uri, [(0, length_ms)])
        for label, spans in _single_speaker(turns[uri], regions, length_ms).items():
            pieces = speakers.setdefault(f"{name}.{label}", [])
            pieces += [Piece(f"{name}.{label}", path, start, end) for start, end in spans]
    return speakers


def energy_regions(audio: np.ndarray, trim_db: float, min_pause_ms: int) -> list[tuple[int, int]]:
    """(start_ms, end_ms) of speech found by energy in 10 ms frames.

    Frames within ``trim_db`` of the loudest frame are speech; shorter pauses than
    ``min_pause_ms`` between speech frames are bridged.
    """
    frame = 10 * SAMPLES_PER_MS
    count = len(audio) // frame
    power = np.square(audio[: count * frame].reshape(count, frame), dtype=np.float64).mean(1)
    level = 10 * np.log10(power + 1e-12)
    speech = runs(level > level.max() - trim_db)
    merged: list[tuple[int, int]] = []
    for start, end in speech:
        if merged and (start - merged[-1][1]) * 10 < min_pause_ms:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [(start * 10, end * 10) for start, end in merged]


def _pool_speakers(source: PoolSource, index: int) -> dict[str, list[Piece]]:
    manifest = Path(source.manifest)
    if not manifest.is_file():
        raise SimulationError(f"{_where(index)}.manifest: {manifest}: no such file")
    name = _name(source.name or manifest.resolve().parent.name)
    with manifest.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for column in (source.file_column, source.speaker_column):
        if not rows or column not in rows[0]:
            raise SimulationError(f"{_where(index)}: {manifest} has no column {column!r}")
    speakers: dict[str, list[Piece]] = {}
    for row in rows:
        path = (manifest.parent / row[source.file_column]).resolve()
        if not path.is_file():
            raise SimulationError(f"{manifest}: {row[source.file_column]}: no such audio file")
        speaker = f"{name}.{nfc(row[source.speaker_column])}"
        regions = energy_regions(read_audio(path), source.trim_db, round(source.min_pause * 1000))
        speakers.setdefault(speaker, []).extend(
            Piece(speaker, path, start, end) for start, end in regions
        )
    return speakers


def load_speakers(sources: list[Source]) -> dict[str, list[Piece]]:
    """Every speaker of the sources with their single-speaker regions, sorted by name.

    A speaker is ``<source name>.<label>``: sources of the same name share speakers.
    """
    speakers: dict[str, list[Piece]] = {}
    for index, source in enumerate(sources):
        if isinstance(source, ProtocolSource):
            found = _protocol_speakers(source, index)
        else:
            found = _pool_speakers(source, index)
        for speaker, pieces in found.items():
            speakers.setdefault(speaker, []).extend(pieces)
    return dict(sorted(speakers.items()))


def cut_pieces(
    regions: list[Piece], turn_ms: tuple[int, int], min_ms: int, rng: np.random.Generator
) -> list[Piece]:
    """Cut single-speaker regions into turns of ``turn_ms`` lengths; drop shorter rests.

    Parameters
    ----------
    regions
        One speaker's single-speaker regions.
    turn_ms
        Range of turn lengths, in milliseconds; each turn draws its own.
    min_ms
        Regions and rests shorter than this are not used.
    rng
        Random generator (the caller seeds it).
    """
    pieces = []
    for region in regions:
        start = region.start_ms
        while region.end_ms - start >= min_ms:
            length = min(region.end_ms - start, int(rng.integers(turn_ms[0], turn_ms[1] + 1)))
            pieces.append(replace(region, start_ms=start, end_ms=start + length))
            start += length
    return pieces
