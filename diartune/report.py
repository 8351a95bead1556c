"""What a tuning leaves in its output folder: trials table, best configuration, plot, summary."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import yaml

from diartune.records import TrialRecord
from diartune.study import Summary

TRIALS_JSON = "trials.json"


def percent(der: float | None) -> str:
    """A DER as people read it: ``32.12 %`` (``-`` when there is none)."""
    return "-" if der is None else f"{100 * der:.2f} %"


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def load_records(folder: Path) -> list[TrialRecord]:
    """The trial records saved in ``folder`` (none when it is new)."""
    path = folder / TRIALS_JSON
    if not path.exists():
        return []
    return [TrialRecord.model_validate(item) for item in json.loads(path.read_text("utf-8"))]


def save_records(folder: Path, records: list[TrialRecord]) -> None:
    """Write the trials table as JSON (the durable record) and CSV."""
    rows = [record.model_dump(mode="json", by_alias=True) for record in records]
    _atomic_write(folder / TRIALS_JSON, json.dumps(rows, indent=2, ensure_ascii=False))
    names = sorted({name for record in records for name in record.params})
    columns = ["name", "stage", "subset", "state", "der", "missed", "falseAlarm", "confusion"]
    columns.append("seconds")
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns + names + ["message"])
        for record in records:
            parts = record.components
            writer.writerow(
                [record.name, record.stage, record.subset, record.state, record.der]
                + ([parts.missed, parts.false_alarm, parts.confusion] if parts else ["", "", ""])
                + [record.seconds]
                + [record.params.get(name, "") for name in names]
                + [record.message or ""]
            )


def save_best(folder: Path, best: TrialRecord) -> None:
    """Write the best trial's configuration as YAML."""
    document = {
        "trial": best.name,
        "stage": best.stage,
        "der": best.der,
        "segmentation": best.checkpoint or best.segmentation,
        "params": best.full_params,
    }
    (folder / "best.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def plot(folder: Path, records: list[TrialRecord], stages: list[str]) -> Path:
    """DER per trial with the best so far, one panel per stage, as der.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(stages), figsize=(5 * len(stages), 3.6), squeeze=False, sharey=True
    )
    for axis, stage in zip(axes[0], stages, strict=True):
        trials = [r for r in records if r.stage == stage and not r.is_evaluation]
        ok = [(r.number, r.der) for r in trials if r.der is not None]
        failed = [r.number for r in trials if r.der is None]
        if ok:
            numbers, ders = zip(*sorted(ok), strict=True)
            best, running = [], float("inf")
            for der in ders:
                running = min(running, der)
                best.append(running)
            axis.scatter(numbers, ders, s=14, label="trial DER")
            axis.step(numbers, best, where="post", color="C1", label="best so far")
        for number in failed:
            axis.axvline(number, color="C3", alpha=0.3, lw=1)
        axis.set_title(f"stage {stage}")
        axis.set_xlabel("trial")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("DER (development)")
    axes[0][0].legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    path = folder / "der.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_summary(folder: Path, tuning: str, summary: Summary, seconds: float) -> str:
    """Write summary.json and summary.md; return the Markdown.

    Parameters
    ----------
    folder
        The tuning's output folder.
    tuning
        The tuning's name.
    summary
        What the study found.
    seconds
        Wall time of this run.
    """
    document = {"tuning": tuning, **summary.model_dump(mode="json", by_alias=True)}
    _atomic_write(
        folder / "summary.json",
        json.dumps(document | {"seconds": round(seconds, 1)}, indent=2, ensure_ascii=False),
    )
    lines = [
        f"# Tuning {tuning}: {summary.phase}",
        "",
        "| DER | development | test (evaluated once) |",
        "|---|---|---|",
        f"| pyannote's default parameters | {percent(summary.default_der)} "
        f"| {percent(summary.default_test_der)} |",
        f"| tuned | {percent(summary.best_der)} | {percent(summary.test_der)} |",
        "",
        f"Best trial: {summary.best_trial}; trials: {summary.trials} "
        f"({summary.failed} failed); wall time: {seconds:.0f} s.",
    ]
    if summary.message:
        lines += ["", summary.message]
    text = "\n".join(lines) + "\n"
    (folder / "summary.md").write_text(text, encoding="utf-8")
    return text
