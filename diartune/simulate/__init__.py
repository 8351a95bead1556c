"""``diartune simulate``: corpora of simulated multi-speaker conversations from real speech.

Single-speaker pieces of real recordings (pyannote.database protocols with RTTM, or
folders of one-speaker files) are laid out again as conversations with turn-taking,
pauses, overlaps, speaker gains, background noise and reverberation, as in the
simulated mixtures of end-to-end diarization research. References come from the
layout, so they are exact; train, development and test have disjoint speakers.

``simulate`` is imported on first use: it needs scipy.signal (seconds to import), which
the ``diartune`` command should not load for its other subcommands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diartune.simulate.command import add_simulate_parser
from diartune.simulate.options import (
    PoolSource,
    ProtocolSource,
    SimulationError,
    SimulationOptions,
    parse_options,
)

if TYPE_CHECKING:
    from diartune.simulate.corpus import simulate

__all__ = [
    "PoolSource",
    "ProtocolSource",
    "SimulationError",
    "SimulationOptions",
    "add_simulate_parser",
    "parse_options",
    "simulate",
]


def __getattr__(name: str) -> Any:
    if name == "simulate":
        from diartune.simulate.corpus import simulate

        return simulate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
