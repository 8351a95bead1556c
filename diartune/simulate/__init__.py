"""``diartune simulate``: corpora of simulated multi-speaker conversations from real speech.

Single-speaker pieces of real recordings (pyannote.database protocols with RTTM, or
folders of one-speaker files) are laid out again as conversations with turn-taking,
pauses, overlaps, speaker gains, background noise and reverberation, as in the
simulated mixtures of end-to-end diarization research. References come from the
layout, so they are exact; train, development and test have disjoint speakers.
"""

from diartune.simulate.command import add_simulate_parser
from diartune.simulate.corpus import simulate
from diartune.simulate.options import (
    PoolSource,
    ProtocolSource,
    SimulationError,
    SimulationOptions,
    parse_options,
)

__all__ = [
    "PoolSource",
    "ProtocolSource",
    "SimulationError",
    "SimulationOptions",
    "add_simulate_parser",
    "parse_options",
    "simulate",
]
