"""The ``diartune simulate`` subcommand: options from a YAML file and flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from diartune.simulate.options import (
    SPLIT_NAMES,
    SimulationError,
    default_splits,
    load_options,
    parse_options,
)
from diartune.simulate.presets import PRESET_NAMES, merge_options, preset_options


def _split_counts(texts: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for text in texts:
        subset, _, number = text.partition("=")
        if subset not in SPLIT_NAMES or not number.isdigit():
            raise SimulationError(f"--conversations: expected SUBSET=N (train=200), got {text!r}")
        counts[subset] = int(number)
    return counts


def _sources(args: argparse.Namespace) -> list[dict[str, Any]]:
    sources = []
    for values in args.protocol_source or []:
        if len(values) < 2:
            raise SimulationError("--protocol-source: expected DATABASE PROTOCOL [SUBSET ...]")
        database, protocol, *subsets = values
        source = {"kind": "protocol", "database": database, "protocol": protocol}
        sources.append(source | ({"subsets": subsets} if subsets else {}))
    return sources + [{"kind": "pool", "manifest": manifest} for manifest in args.pool or []]


def _document(args: argparse.Namespace) -> dict[str, Any]:
    """The options mapping: the --preset, the --config file on it, the flags on top."""
    document = load_options(Path(args.config)) if args.config else {}
    if args.preset:
        document = merge_options(preset_options(args.preset), document)
    document["sources"] = list(document.get("sources") or []) + _sources(args)
    if not document["sources"]:
        raise SimulationError(
            "sources: none given; name them with --protocol-source or --pool, or under "
            "sources in --config"
        )
    if args.protocol:
        document["protocol"] = args.protocol
    if args.seed is not None:
        document["seed"] = args.seed
    if args.shared_speakers:
        document["sharedSpeakers"] = True
    if args.no_noise:
        document["noise"] = None
    if args.no_reverb:
        document["reverb"] = None
    if args.seconds is not None:
        document["conversation"] = {**document.get("conversation", {}), "seconds": args.seconds}
    if args.conversations:
        defaults: dict[str, dict[str, Any]] = {
            name: split.model_dump(by_alias=True) for name, split in default_splits().items()
        }
        splits = document.get("splits") or dict(defaults)
        for subset, count in _split_counts(args.conversations).items():
            splits[subset] = {**splits.get(subset, defaults[subset]), "conversations": count}
        document["splits"] = splits
    return document


def _run(args: argparse.Namespace) -> int:
    from diartune.simulate.corpus import simulate

    try:
        options = parse_options(_document(args), args.config or "options")
        database = simulate(options, Path(args.output))
    except SimulationError as error:
        print(f"diartune simulate: {error}", file=sys.stderr)
        return 2
    report = json.loads((database.parent / "report.json").read_text(encoding="utf-8"))
    for name, subset in report["subsets"].items():
        turns = subset["turnSeconds"]
        print(
            f"{name}: {subset['files']} files, {subset['speakers']} speakers, "
            f"overlap ratio {subset['overlapRatio']:.2f}, median turn "
            f"{turns['median'] if turns else 0:.1f} s, radio in {subset['withRadio']}"
        )
    print(f"spec.data: database {database}, protocol {options.protocol}")
    return 0


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``simulate`` to the subcommands of ``diartune``; its ``run`` returns the exit code.

    Exit codes: 0, or 2 for bad input (one line on stderr naming the option or file; an
    output folder that cannot be written, too).
    """
    parser = commands.add_parser(
        "simulate",
        help="simulate a corpus of multi-speaker conversations from real recordings",
        description="Write a pyannote.database corpus of simulated conversations "
        "(see docs/simulate.md). Flags override the --config file, which overrides --preset.",
    )
    parser.add_argument("--output", required=True, help="new (or empty) folder for the corpus")
    parser.add_argument("--config", help="options YAML (SimulationOptions, camelCase keys)")
    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="start from a domain's options (docs/simulate.md); --config and flags win",
    )
    parser.add_argument(
        "--protocol-source",
        nargs="+",
        action="append",
        metavar="ARG",
        help="DATABASE PROTOCOL [SUBSET ...]: speakers from a protocol with RTTM (repeatable)",
    )
    parser.add_argument(
        "--pool",
        action="append",
        metavar="MANIFEST",
        help="CSV manifest of single-speaker files (columns file, speaker_id) (repeatable)",
    )
    parser.add_argument("--protocol", help="protocol to write (Sim.SpeakerDiarization.<Name>)")
    parser.add_argument(
        "--conversations",
        action="append",
        metavar="SUBSET=N",
        help="conversations of a subset, e.g. train=200 (repeatable; 0 leaves it out)",
    )
    parser.add_argument("--seconds", type=float, help="duration of each conversation")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--shared-speakers", action="store_true", help="let subsets share speakers")
    parser.add_argument("--no-noise", action="store_true", help="no background noise")
    parser.add_argument("--no-reverb", action="store_true", help="no reverberation")
    parser.set_defaults(run=_run)
