"""Build a pyannote.database corpus of simulated conversations: ``simulate(options, output)``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.signal import fftconvolve

from diartune.simulate.acoustics import NOISES, room_impulse_response
from diartune.simulate.layout import Turn, assign_speakers, check_pools, lay_out
from diartune.simulate.options import (
    SPLIT_NAMES,
    Radio,
    SimulationError,
    SimulationOptions,
    SplitName,
)
from diartune.simulate.radio import transmit
from diartune.simulate.sources import (
    SAMPLE_RATE,
    SAMPLES_PER_MS,
    Piece,
    cut_pieces,
    load_speakers,
    piece_audio,
)
from diartune.simulate.summary import write_report

# Streams of random numbers, one per purpose, so that changing one part of the
# options does not reshuffle the others.
_PIECES, _SPLITS, _CONVERSATIONS = 0, 1, 2
_PEAK = 0.99  # the loudest sample after mixing; keeps 16-bit output from clipping


@dataclass(frozen=True)
class Rendered:
    """A conversation's audio and how it was made."""

    audio: np.ndarray
    gains: list[float]
    acoustics: dict[str, Any]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def usable_pieces(
    options: SimulationOptions,
) -> tuple[dict[str, list[Piece]], dict[str, float]]:
    """Each usable speaker's turns, and the seconds of every speaker left out."""
    conversation = options.conversation
    turn_ms = (
        round(conversation.turn_seconds[0] * 1000),
        round(conversation.turn_seconds[1] * 1000),
    )
    rng = _rng(options.seed, _PIECES)
    pieces, excluded = {}, {}
    for speaker, regions in load_speakers(options.sources).items():
        cut = cut_pieces(regions, turn_ms, round(conversation.min_turn_seconds * 1000), rng)
        seconds = sum(piece.ms for piece in cut) / 1000
        if cut and seconds >= options.min_speaker_seconds:
            pieces[speaker] = cut
        else:
            excluded[speaker] = seconds
    if not pieces:
        raise SimulationError(
            f"sources: no speaker has {options.min_speaker_seconds} s of single-speaker "
            f"speech in turns of at least {conversation.min_turn_seconds} s"
        )
    return pieces, excluded


def _noise(
    samples: int,
    speech: np.ndarray,
    active: np.ndarray,
    options: SimulationOptions,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    if options.noise is None:
        return np.zeros(samples), None
    kinds = [kind for kind in NOISES if rng.random() < options.noise.probability.get(kind, 0.0)]
    if not kinds:
        return np.zeros(samples), None
    noise = sum(rng.uniform(0.5, 1.0) * NOISES[kind](samples, rng) for kind in kinds)
    snr = float(rng.uniform(*options.noise.snr_db))
    speech_power = np.mean(np.square(speech[active])) if active.any() else 1e-6
    noise_power = np.mean(np.square(noise)) + 1e-12
    scale = np.sqrt(speech_power / (noise_power * 10 ** (snr / 10)))
    return np.asarray(noise) * scale, {"kinds": kinds, "snrDb": snr}


def _dispatcher(speakers: list[str], radio: Radio | None, rng: np.random.Generator) -> str | None:
    """The speaker heard through the radio in a conversation, if any (no draw without radio)."""
    if radio is None or rng.random() >= radio.probability:
        return None
    return speakers[int(rng.integers(len(speakers)))]


def _over_radio(
    speech: np.ndarray, options: Radio, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """A turn through the radio, with its squelch tail; and the tail's length in ms."""
    tail_ms = round(float(rng.uniform(*options.squelch_seconds)) * 1000)
    level = np.sqrt(np.mean(np.square(speech))) * 10 ** (options.squelch_db / 20)
    squelch = rng.normal(size=tail_ms * SAMPLES_PER_MS) * level
    return transmit(speech, squelch, options), tail_ms


def render(turns: list[Turn], options: SimulationOptions, rng: np.random.Generator) -> Rendered:
    """Mix a conversation's turns: levels, speaker gains, radio, reverberation, noise.

    Each turn is scaled to the speech level, then by its speaker's gain; with the
    radio, one speaker's turns go through it and end in a squelch tail; with reverb,
    each speaker gets a room impulse response of one RT60. The mix is scaled down
    when its peak would clip; ``gains`` are the final factors of the dry samples
    (before the radio, for the radio speaker's turns).
    """
    conversation = options.conversation
    samples = round(conversation.seconds * 1000) * SAMPLES_PER_MS
    speakers = list(dict.fromkeys(turn.piece.speaker for turn in turns))
    offsets = {speaker: rng.uniform(*conversation.speaker_gain_db) for speaker in speakers}
    responses: dict[str, np.ndarray] = {}
    acoustics: dict[str, Any] = {"reverb": None, "noise": None, "radio": None}
    if options.reverb is not None and rng.random() < options.reverb.probability:
        rt60 = float(rng.uniform(*options.reverb.rt60_seconds))
        drr = {speaker: float(rng.uniform(*options.reverb.drr_db)) for speaker in speakers}
        responses = {
            speaker: room_impulse_response(rt60, drr[speaker], rng) for speaker in speakers
        }
        acoustics["reverb"] = {"rt60Seconds": rt60, "drrDb": drr}
    dispatcher, tails = _dispatcher(speakers, options.radio, rng), []
    speech = np.zeros(samples)
    active = np.zeros(samples, dtype=bool)
    gains = []
    for turn in turns:
        dry = piece_audio(turn.piece).astype(np.float64)
        level = 10 ** ((conversation.level_dbfs + offsets[turn.piece.speaker]) / 20)
        gain = level / (np.sqrt(np.mean(np.square(dry))) + 1e-9)
        wet = dry * gain
        if options.radio is not None and turn.piece.speaker == dispatcher:
            wet, tail_ms = _over_radio(wet, options.radio, rng)
            tails.append(tail_ms)
        if turn.piece.speaker in responses:
            wet = fftconvolve(wet, responses[turn.piece.speaker])
        start = turn.onset_ms * SAMPLES_PER_MS
        end = min(samples, start + len(wet))
        speech[start:end] += wet[: end - start]
        active[start : start + len(dry)] = True
        gains.append(gain)
    if dispatcher is not None:
        acoustics["radio"] = {"speaker": dispatcher, "squelchMs": tails}
    noise, acoustics["noise"] = _noise(samples, speech, active, options, rng)
    mix = speech + noise
    scale = min(1.0, _PEAK / (np.abs(mix).max() + 1e-12))
    return Rendered(mix * scale, [gain * scale for gain in gains], acoustics)


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16-bit PCM, quantized here (x * 32768, rounded) so that reading back is exact."""
    import soundfile

    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    soundfile.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")


def _rttm(uri: str, turns: list[Turn]) -> list[str]:
    return [
        f"SPEAKER {uri} 1 {turn.onset_ms / 1000:.3f} {turn.piece.ms / 1000:.3f} "
        f"<NA> <NA> {turn.piece.speaker} <NA> <NA>"
        for turn in turns
    ]


def _layout_record(uri: str, turns: list[Turn], rendered: Rendered) -> dict[str, Any]:
    return {
        "uri": uri,
        "turns": [
            {
                "speaker": turn.piece.speaker,
                "source": str(turn.piece.path),
                "sourceStartMs": turn.piece.start_ms,
                "sourceEndMs": turn.piece.end_ms,
                "onsetMs": turn.onset_ms,
                "gain": gain,
            }
            for turn, gain in zip(turns, rendered.gains, strict=True)
        ],
        **rendered.acoustics,
    }


def _write_subset(
    folder: Path,
    subset: SplitName,
    pieces: dict[str, list[Piece]],
    speakers: list[str],
    options: SimulationOptions,
) -> list[dict[str, Any]]:
    """Write one subset's audio, RTTM, UEM, LST and layout; return the layout.

    Parameters
    ----------
    folder
        The corpus folder being written.
    subset
        train, development or test.
    pieces
        Each usable speaker's turns.
    speakers
        The speakers of this subset.
    options
        The simulation's options.
    """
    records, rttm, uem, uris = [], [], [], []
    seconds = round(options.conversation.seconds * 1000) / 1000
    for index in range(options.splits[subset].conversations):
        rng = _rng(options.seed, _CONVERSATIONS, SPLIT_NAMES.index(subset), index)
        uri = f"{subset}_{index:04d}"
        turns = lay_out(pieces, speakers, options.conversation, rng)
        rendered = render(turns, options, rng)
        write_wav(folder / "audio" / f"{uri}.wav", rendered.audio)
        uris.append(uri)
        uem.append(f"{uri} NA 0.000 {seconds:.3f}")
        rttm += _rttm(uri, turns)
        records.append(_layout_record(uri, turns, rendered))
    for suffix, lines in (("lst", uris), ("rttm", rttm), ("uem", uem)):
        (folder / f"{subset}.{suffix}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    layout = json.dumps(records, indent=1, ensure_ascii=False)
    (folder / "layout" / f"{subset}.json").write_text(layout, encoding="utf-8")
    return records


def _database_yml(folder: Path, protocol: str, subsets: Sequence[str]) -> Path:
    corpus, task, name = protocol.split(".")
    entries = {
        subset: {
            "uri": f"{subset}.lst",
            "annotation": f"{subset}.rttm",
            "annotated": f"{subset}.uem",
        }
        for subset in subsets
    }
    config = {
        "Databases": {corpus: "audio/{uri}.wav"},
        "Protocols": {corpus: {task: {name: {"scope": "file", **entries}}}},
    }
    path = folder / "database.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SimulationError(f"output: {output} exists and is not an empty folder")


def simulate(options: SimulationOptions, output: Path) -> Path:
    """Write a corpus of simulated conversations into ``output``; return its database.yml.

    The folder gets ``audio/*.wav`` (16 kHz, 16-bit), ``<subset>.rttm|uem|lst``,
    ``layout/<subset>.json`` (where every turn comes from, its gain, the acoustics),
    ``database.yml`` (protocol ``options.protocol``) and ``report.md|json``. It is
    written beside ``output`` first and renamed into place when complete. The same
    options (seed included) give byte-identical files.
    """
    _check_output(output)
    pieces, excluded = usable_pieces(options)
    assigned = assign_speakers(
        list(pieces), options.splits, options.shared_speakers, _rng(options.seed, _SPLITS)
    )
    check_pools(assigned, options.conversation)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}."))
    try:
        (partial / "audio").mkdir()
        (partial / "layout").mkdir()
        subsets = [subset for subset in SPLIT_NAMES if subset in assigned]
        layouts = {
            subset: _write_subset(partial, subset, pieces, assigned[subset], options)
            for subset in subsets
        }
        _database_yml(partial, options.protocol, subsets)
        write_report(partial, options, assigned, layouts, excluded)
        if output.exists():
            output.rmdir()
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output / "database.yml"
