"""The report of a simulated corpus: speakers per subset, speech, overlap, seconds per speaker."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from diartune.simulate.options import SimulationOptions, SplitName


def _subset_summary(
    records: list[dict[str, Any]], speakers: list[str], seconds: float
) -> dict[str, Any]:
    speech_ms = overlap_ms = 0
    per_speaker: Counter[str] = Counter()
    sizes: Counter[int] = Counter()
    for record in records:
        count = np.zeros(round(seconds * 1000), dtype=np.int8)
        for turn in record["turns"]:
            length = turn["sourceEndMs"] - turn["sourceStartMs"]
            count[turn["onsetMs"] : turn["onsetMs"] + length] += 1
            per_speaker[turn["speaker"]] += length
        speech_ms += int(np.count_nonzero(count))
        overlap_ms += int(np.count_nonzero(count > 1))
        sizes[len({turn["speaker"] for turn in record["turns"]})] += 1
    return {
        "files": len(records),
        "seconds": round(len(records) * seconds, 3),
        "speakers": len(speakers),
        "speechSeconds": speech_ms / 1000,
        "overlapSeconds": overlap_ms / 1000,
        "overlapRatio": round(overlap_ms / speech_ms, 4) if speech_ms else 0.0,
        "speakersPerFile": {str(size): sizes[size] for size in sorted(sizes)},
        "withNoise": sum(record["noise"] is not None for record in records),
        "withReverb": sum(record["reverb"] is not None for record in records),
        "secondsPerSpeaker": {name: per_speaker[name] / 1000 for name in speakers},
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Simulated corpus {report['protocol']}",
        "",
        f"Seed {report['seed']}; speakers {'shared' if report['sharedSpeakers'] else 'disjoint'}"
        " across subsets.",
        "",
        "| subset | files | hours | speakers | speech s | overlap ratio | speakers per file |"
        " noise | reverb |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, subset in report["subsets"].items():
        sizes = ", ".join(f"{size}: {count}" for size, count in subset["speakersPerFile"].items())
        lines.append(
            f"| {name} | {subset['files']} | {subset['seconds'] / 3600:.2f} | "
            f"{subset['speakers']} | {subset['speechSeconds']:.1f} | "
            f"{subset['overlapRatio']:.3f} | {sizes} | {subset['withNoise']} | "
            f"{subset['withReverb']} |"
        )
    for name, subset in report["subsets"].items():
        lines += ["", f"## Seconds per speaker: {name}", ""]
        lines += [f"- {who}: {sec:.1f}" for who, sec in subset["secondsPerSpeaker"].items()]
    if report["excludedSpeakers"]:
        lines += ["", "## Left out (too little single-speaker speech)", ""]
        lines += [f"- {who}: {sec:.1f} s" for who, sec in report["excludedSpeakers"].items()]
    return "\n".join(lines) + "\n"


def write_report(
    folder: Path,
    options: SimulationOptions,
    assigned: dict[SplitName, list[str]],
    layouts: dict[SplitName, list[dict[str, Any]]],
    excluded: dict[str, float],
) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into ``folder``; return the report.

    Parameters
    ----------
    folder
        The corpus folder.
    options
        The simulation's options (echoed in the JSON).
    assigned
        Each subset's speakers.
    layouts
        Each subset's layout records (as written to ``layout/<subset>.json``).
    excluded
        Speakers left out, with their usable seconds.
    """
    report = {
        "protocol": options.protocol,
        "seed": options.seed,
        "sharedSpeakers": options.shared_speakers,
        "subsets": {
            name: _subset_summary(records, assigned[name], options.conversation.seconds)
            for name, records in layouts.items()
        },
        "excludedSpeakers": excluded,
        "options": options.model_dump(mode="json", by_alias=True),
    }
    (folder / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (folder / "report.md").write_text(_markdown(report), encoding="utf-8")
    return report
