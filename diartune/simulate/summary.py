"""The report of a simulated corpus: speakers, speech, overlap, turns, acoustics per subset."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from diartune.simulate.options import SimulationOptions, SplitName


def _spread(values: list[float]) -> dict[str, float] | None:
    """10th percentile, median and 90th percentile (None for no values)."""
    if not values:
        return None
    p10, median, p90 = np.percentile(values, [10, 50, 90]).tolist()
    return {"p10": round(p10, 3), "median": round(median, 3), "p90": round(p90, 3)}


def _subset_summary(
    records: list[dict[str, Any]], speakers: list[str], seconds: float
) -> dict[str, Any]:
    speech_ms = overlap_ms = 0
    per_speaker: Counter[str] = Counter()
    sizes: Counter[int] = Counter()
    turns: list[float] = []
    for record in records:
        count = np.zeros(round(seconds * 1000), dtype=np.int8)
        for turn in record["turns"]:
            length = turn["sourceEndMs"] - turn["sourceStartMs"]
            count[turn["onsetMs"] : turn["onsetMs"] + length] += 1
            per_speaker[turn["speaker"]] += length
            turns.append(length / 1000)
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
        "turnSeconds": _spread(turns),
        "withNoise": sum(record["noise"] is not None for record in records),
        "snrDb": _spread([record["noise"]["snrDb"] for record in records if record["noise"]]),
        "withReverb": sum(record["reverb"] is not None for record in records),
        "withRadio": sum(record["radio"] is not None for record in records),
        "secondsPerSpeaker": {name: per_speaker[name] / 1000 for name in speakers},
    }


def _spread_text(spread: dict[str, float] | None) -> str:
    if spread is None:
        return "-"
    return f"{spread['median']:.1f} ({spread['p10']:.1f}-{spread['p90']:.1f})"


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Simulated corpus {report['protocol']}",
        "",
        f"Seed {report['seed']}; speakers {'shared' if report['sharedSpeakers'] else 'disjoint'}"
        " across subsets.",
        "",
        "| subset | files | hours | speakers | speech s | overlap ratio | turn s | "
        "speakers per file | noise | SNR dB | reverb | radio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, subset in report["subsets"].items():
        sizes = ", ".join(f"{size}: {count}" for size, count in subset["speakersPerFile"].items())
        lines.append(
            f"| {name} | {subset['files']} | {subset['seconds'] / 3600:.2f} | "
            f"{subset['speakers']} | {subset['speechSeconds']:.1f} | "
            f"{subset['overlapRatio']:.3f} | {_spread_text(subset['turnSeconds'])} | {sizes} | "
            f"{subset['withNoise']} | {_spread_text(subset['snrDb'])} | "
            f"{subset['withReverb']} | {subset['withRadio']} |"
        )
    lines += [
        "",
        "Turn s and SNR dB: median (10th-90th percentile) over turns and over noisy files; "
        "noise, reverb, radio: files with it.",
    ]
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
