"""The options of ``diartune simulate``: one typed model, every option with its default.

Field names are snake_case in Python and camelCase in YAML (``speakerShare``), as in the
DiarizationTuning spec. Every time is in seconds; the simulator works on a grid of whole
milliseconds, so that the RTTM it writes (3 decimals) is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from diartune.spec.file import format_errors

SplitName = Literal["train", "development", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = get_args(SplitName)
NoiseKind = Literal["engine", "siren", "squelch"]


class SimulationError(ValueError):
    """Input the simulator cannot use; the message is one line naming the option or file."""


class _Options(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True
    )


def _check_range(bounds: tuple[float, float], name: str) -> None:
    low, high = bounds
    if low > high:
        raise ValueError(f"@{name}: low ({low}) must not exceed high ({high})")


class ProtocolSource(_Options):
    """Recordings with reference speaker turns: subsets of a pyannote.database protocol.

    Pieces are cut from the regions of the annotated part (UEM) where exactly one
    speaker talks. A speaker label is the same speaker in every subset of the source.
    """

    kind: Literal["protocol"] = "protocol"
    database: str = Field(description="pyannote.database configuration (database.yml).")
    protocol: str = Field(
        description="Protocol name, e.g. Debug.SpeakerDiarization.Debug.",
        pattern=r"^[^.\s]+\.SpeakerDiarization\.[^.\s]+$",
    )
    subsets: list[SplitName] | None = Field(
        None, description="Subsets to take speakers from. Default: all that the protocol has."
    )
    name: str | None = Field(
        None,
        description="Prefix of this source's speakers in the output, e.g. 'ami' gives "
        "'ami.MEE068'. Default: the protocol's database name, lower-cased.",
        pattern=r"^[\w-]+$",
    )
    uri_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="URI in the RTTM/UEM -> URI of the audio, for annotations that name a "
        "file differently from its list and audio (ami-debug: {trn00: trñ00}). Without it "
        "such a file is refused, never silently skipped.",
    )


class PoolSource(_Options):
    """Single-speaker recordings listed in a CSV manifest: one speaker per file, no RTTM.

    Each file's speech is found by its energy: 10 ms frames louder than the loudest
    frame minus ``trim_db`` are speech; pauses shorter than ``min_pause`` are bridged.
    That trims leading and trailing silence and splits a file at its long pauses.
    """

    kind: Literal["pool"] = "pool"
    manifest: str = Field(description="CSV manifest; file paths in it are relative to it.")
    file_column: str = Field("file", description="Column holding each audio file's path.")
    speaker_column: str = Field("speaker_id", description="Column holding each file's speaker.")
    name: str | None = Field(
        None,
        description="Prefix of this source's speakers. Default: the manifest's folder name.",
        pattern=r"^[\w-]+$",
    )
    trim_db: float = Field(
        35.0, gt=0, description="Frames this many dB below the file's loudest are silence."
    )
    min_pause: float = Field(
        0.3, ge=0, description="Silences shorter than this stay inside a speech region."
    )


Source = Annotated[ProtocolSource | PoolSource, Field(discriminator="kind")]


class Split(_Options):
    """One subset of the simulated corpus."""

    conversations: int = Field(ge=0, description="Conversations (files) in this subset.")
    speaker_share: float = Field(
        gt=0,
        le=1,
        description="Share of the speakers given to this subset when speakers are disjoint "
        "(shares are relative to each other).",
    )


def default_splits() -> dict[SplitName, Split]:
    """The subsets written by default: 80 / 20 / 20 conversations, 70 / 15 / 15 % of speakers."""
    return {
        "train": Split(conversations=80, speaker_share=0.7),
        "development": Split(conversations=20, speaker_share=0.15),
        "test": Split(conversations=20, speaker_share=0.15),
    }


class Conversation(_Options):
    """How one conversation is laid out: speakers, turns, pauses and overlaps."""

    seconds: float = Field(30.0, gt=1, le=3600, description="Duration of each conversation.")
    speakers: dict[int, float] = Field(
        default_factory=lambda: {2: 0.5, 3: 0.3, 4: 0.2},
        description="Number of speakers -> weight: how often conversations have that many.",
    )
    turn_seconds: tuple[float, float] = Field(
        (1.0, 6.0),
        description="Length of a turn: single-speaker regions longer than a length drawn "
        "from this range are cut into several turns.",
    )
    min_turn_seconds: float = Field(
        0.5, gt=0, description="Shorter single-speaker regions are not used."
    )
    pause_seconds: tuple[float, float] = Field(
        (0.1, 1.5), description="Silence between turns (and before the first)."
    )
    overlap_probability: float = Field(
        0.3, ge=0, le=1, description="Chance that a turn starts before the previous one ends."
    )
    overlap_seconds: tuple[float, float] = Field(
        (0.2, 1.0), description="How long such a turn overlaps the previous one."
    )
    speaker_gain_db: tuple[float, float] = Field(
        (-6.0, 6.0),
        description="Gain of each speaker of a conversation around the speech level "
        "(near and far voices).",
    )
    level_dbfs: float = Field(
        -26.0, le=0, description="Speech level: every piece is first scaled to this RMS."
    )

    @model_validator(mode="after")
    def _check(self) -> Conversation:
        for name in ("turn_seconds", "pause_seconds", "overlap_seconds", "speaker_gain_db"):
            _check_range(getattr(self, name), to_camel(name))
        if not self.speakers or min(self.speakers) < 1 or min(self.speakers.values()) <= 0:
            raise ValueError("@speakers: needs counts >= 1 with weights > 0, e.g. {2: 1.0}")
        if self.turn_seconds[0] < self.min_turn_seconds:
            raise ValueError("@turnSeconds: its low end must be at least minTurnSeconds")
        return self


def _default_noise() -> dict[NoiseKind, float]:
    return {"engine": 1.0, "siren": 0.5, "squelch": 0.5}


class Noise(_Options):
    """Background noise of emergency scenes, mixed at a signal-to-noise ratio."""

    probability: dict[NoiseKind, float] = Field(
        default_factory=_default_noise,
        description="Chance of each kind in a conversation: engine rumble, a siren "
        "sweep, radio squelch bursts.",
    )
    snr_db: tuple[float, float] = Field(
        (5.0, 20.0), description="Speech-to-noise ratio of a conversation, in dB."
    )

    @model_validator(mode="after")
    def _check(self) -> Noise:
        _check_range(self.snr_db, "snrDb")
        if any(not 0 <= value <= 1 for value in self.probability.values()):
            raise ValueError("@probability: chances must lie in [0, 1]")
        return self


class Reverb(_Options):
    """Synthetic room reverberation: one impulse response per speaker of a conversation.

    The response is a unit direct path followed by exponentially decaying Gaussian
    noise (Polack's statistical model) that is 60 dB down after RT60.
    """

    probability: float = Field(0.5, ge=0, le=1, description="Chance a conversation has it.")
    rt60_seconds: tuple[float, float] = Field(
        (0.2, 0.6), description="Reverberation time of the room."
    )
    drr_db: tuple[float, float] = Field(
        (0.0, 10.0), description="Direct-to-reverberant energy ratio, in dB."
    )

    @model_validator(mode="after")
    def _check(self) -> Reverb:
        _check_range(self.rt60_seconds, "rt60Seconds")
        _check_range(self.drr_db, "drrDb")
        if self.rt60_seconds[0] <= 0:
            raise ValueError("@rt60Seconds: must be positive")
        return self


class Radio(_Options):
    """One speaker of a conversation (the dispatcher) heard through a narrow-band radio.

    Each of that speaker's turns is band-passed, lightly clipped, resampled to 8 kHz,
    coded with G.711 mu-law (8 bits) and decoded, resampled back and band-passed by
    the receiver; a burst of squelch noise follows each turn. The reference keeps the
    turn's bounds: the squelch tail is not speech.
    """

    probability: float = Field(
        0.5, ge=0, le=1, description="Chance a conversation has a radio speaker."
    )
    band_hz: tuple[float, float] = Field(
        (300.0, 3400.0), description="Pass band of the transmitter and the receiver, in Hz."
    )
    clip_db: float = Field(
        3.0, ge=0, description="Samples within this many dB of a turn's peak are clipped."
    )
    squelch_seconds: tuple[float, float] = Field(
        (0.1, 0.25), description="Length of the squelch tail after each radio turn."
    )
    squelch_db: float = Field(
        0.0, description="Level of the squelch tail relative to the turn's speech RMS, in dB."
    )

    @model_validator(mode="after")
    def _check(self) -> Radio:
        _check_range(self.squelch_seconds, "squelchSeconds")
        if not 0 < self.band_hz[0] < self.band_hz[1] < 4000:
            raise ValueError("@bandHz: expected 0 < low < high < 4000 (8 kHz audio)")
        if self.squelch_seconds[0] < 0:
            raise ValueError("@squelchSeconds: must not be negative")
        return self


class SimulationOptions(_Options):
    """Everything ``diartune simulate`` needs besides the output folder."""

    sources: list[Source] = Field(
        min_length=1, description="Where speakers come from (protocol and pool sources)."
    )
    protocol: str = Field(
        "Sim.SpeakerDiarization.Conversations",
        description="Name of the protocol written (spec.data.protocol).",
        pattern=r"^[\w-]+\.SpeakerDiarization\.[\w-]+$",
    )
    splits: dict[SplitName, Split] = Field(
        default_factory=default_splits,
        description="Subsets to write; one with 0 conversations is left out.",
    )
    shared_speakers: bool = Field(
        False,
        description="Let every subset use every speaker. Default: train, development and "
        "test have disjoint speakers, so that held-out scores mean unseen voices.",
    )
    min_speaker_seconds: float = Field(
        2.0,
        ge=0,
        description="Speakers with less usable single-speaker speech are left out "
        "(the report lists them).",
    )
    conversation: Conversation = Field(default_factory=Conversation)
    noise: Noise | None = Field(default_factory=Noise, description="null: no noise.")
    reverb: Reverb | None = Field(default_factory=Reverb, description="null: no reverb.")
    radio: Radio | None = Field(
        None, description="A dispatcher heard through a radio; null (the default): never."
    )
    seed: int = Field(0, ge=0, description="The same seed gives byte-identical output.")

    @model_validator(mode="after")
    def _check_splits(self) -> SimulationOptions:
        if not any(split.conversations for split in self.splits.values()):
            raise ValueError("@splits: no subset has conversations")
        return self


def parse_options(document: Any, source: str = "<options>") -> SimulationOptions:
    """Validate a parsed YAML/JSON document; SimulationError names the first bad option."""
    try:
        return SimulationOptions.model_validate(document)
    except ValidationError as error:
        raise SimulationError(format_errors(error, source).replace("\n", "; ")) from None


def load_options(path: Path) -> dict[str, Any]:
    """The mapping of an options YAML file (validated later, with the command's flags)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimulationError(f"--config: {path}: no such file") from None
    except yaml.YAMLError as error:
        message = str(error).replace("\n", " ")
        raise SimulationError(f"--config: {path}: not valid YAML: {message}") from None
    if not isinstance(document, dict):
        raise SimulationError(f"--config: {path}: expected a mapping of options")
    return document
