"""Who speaks in which subset, and when each turn of a conversation starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from diartune.simulate.options import Conversation, SimulationError, Split, SplitName
from diartune.simulate.sources import Piece


@dataclass(frozen=True)
class Turn:
    """A piece of a speaker's speech placed in a conversation."""

    piece: Piece
    onset_ms: int

    @property
    def end_ms(self) -> int:
        """Where the turn ends in the conversation."""
        return self.onset_ms + self.piece.ms


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _draw_ms(bounds: tuple[float, float], rng: np.random.Generator) -> int:
    return _ms(float(rng.uniform(*bounds)))


def assign_speakers(
    speakers: list[str], splits: Mapping[SplitName, Split], shared: bool, rng: np.random.Generator
) -> dict[SplitName, list[str]]:
    """The speakers of each subset that has conversations.

    With ``shared``, every subset gets every speaker. Otherwise speakers are disjoint:
    each source's speakers (``<source>.<label>``) are shuffled, and one by one go to the
    subset that is furthest below its ``speaker_share``, so that every source is spread
    over the subsets and small subsets get their first speakers early.

    Parameters
    ----------
    speakers
        All usable speakers, sorted.
    splits
        The subsets and their shares.
    shared
        Whether subsets share speakers.
    rng
        Random generator (the caller seeds it).
    """
    active = [name for name, split in splits.items() if split.conversations > 0]
    if shared:
        return {name: list(speakers) for name in active}
    if len(speakers) < len(active):
        raise SimulationError(
            f"splits: {len(active)} subsets with disjoint speakers need at least "
            f"{len(active)} speakers, the sources give {len(speakers)}; add sources or "
            "set sharedSpeakers"
        )
    order = []
    for source in dict.fromkeys(speaker.split(".", 1)[0] for speaker in speakers):
        group = [speaker for speaker in speakers if speaker.split(".", 1)[0] == source]
        order += [group[index] for index in rng.permutation(len(group))]
    assigned: dict[SplitName, list[str]] = {name: [] for name in active}
    for speaker in order:
        name = min(active, key=lambda n: len(assigned[n]) / splits[n].speaker_share)
        assigned[name].append(speaker)
    return {name: sorted(members) for name, members in assigned.items()}


def check_pools(assigned: Mapping[SplitName, list[str]], conversation: Conversation) -> None:
    """Refuse subsets with fewer speakers than a conversation may need."""
    needed = max(conversation.speakers)
    for name, members in assigned.items():
        if len(members) < needed:
            raise SimulationError(
                f"conversation.speakers: conversations of up to {needed} speakers, but the "
                f"{name} subset has {len(members)} speaker(s); lower the counts, raise "
                f"splits.{name}.speakerShare or set sharedSpeakers"
            )


def _next_speaker(chosen: list[str], turns: list[Turn], rng: np.random.Generator) -> str:
    if len(turns) < len(chosen):  # everyone speaks once before anyone speaks again
        return chosen[len(turns)]
    others = [speaker for speaker in chosen if speaker != turns[-1].piece.speaker]
    return (others or chosen)[int(rng.integers(len(others or chosen)))]


def lay_out(
    pieces: dict[str, list[Piece]],
    speakers: list[str],
    options: Conversation,
    rng: np.random.Generator,
) -> list[Turn]:
    """The turns of one conversation: turn-taking with pauses and overlaps.

    Speakers take turns (never twice in a row); after a pause, or, with
    ``overlap_probability``, before the previous turn ends. A turn never starts before
    the turns earlier than the previous one end, so at most two people talk at once,
    and never in its predecessor's first half. The last turn is shortened to fit.

    Parameters
    ----------
    pieces
        Each speaker's turns to draw from.
    speakers
        The speakers of the subset.
    options
        How conversations are laid out.
    rng
        Random generator (the caller seeds it).
    """
    counts = sorted(options.speakers)
    weights = np.array([options.speakers[count] for count in counts])
    count = counts[int(rng.choice(len(counts), p=weights / weights.sum()))]
    chosen = [speakers[index] for index in rng.choice(len(speakers), count, replace=False)]
    total_ms, min_ms = _ms(options.seconds), _ms(options.min_turn_seconds)
    turns: list[Turn] = []
    onset, earlier_end = _draw_ms(options.pause_seconds, rng), 0
    while total_ms - onset >= min_ms:
        speaker = _next_speaker(chosen, turns, rng)
        piece = pieces[speaker][int(rng.integers(len(pieces[speaker])))]
        turn = Turn(piece.truncated(total_ms - onset), onset)
        if count > 1 and rng.random() < options.overlap_probability:
            start = turn.end_ms - _draw_ms(options.overlap_seconds, rng)
        else:
            start = turn.end_ms + _draw_ms(options.pause_seconds, rng)
        if turns:
            earlier_end = max(earlier_end, turns[-1].end_ms)
        turns.append(turn)
        onset = max(start, earlier_end, turn.onset_ms + turn.piece.ms // 2)
    return turns
