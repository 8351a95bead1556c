"""What a tuning leaves in its output folder: trials table, best configuration, plot, summary."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from diartune.records import Components, TrialRecord, percent
from diartune.search.summary import Interval, Phase, Summary
from diartune.spec.file import format_errors
from diartune.storage import StorageError, is_s3

if TYPE_CHECKING:
    from diartune.search.study import Study

TRIALS_JSON = "trials.json"
#: The spec a local tuning started with, in its output folder.
ACCEPTED_SPEC = "spec.json"
#: The DER components in seconds, columns of trials.csv.
_SECONDS = [name for name in Components.model_fields if name.endswith("_seconds")]
_RECORDS = TypeAdapter(list[TrialRecord])


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def load_records(folder: Path) -> list[TrialRecord]:
    """The trial records saved in ``folder`` (none when it has no trials.json).

    Raises StorageError, one line naming the file (and the line where the JSON breaks),
    when trials.json is not the list of trial records diartune writes: truncated, edited,
    not UTF-8, a folder.
    """
    path = folder / TRIALS_JSON
    if not path.exists() and not path.is_symlink():
        return []
    expected = "expected the trials.json that diartune tune writes"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise StorageError(f"{path}: not UTF-8 text (byte {error.start}); {expected}") from None
    except OSError as error:
        raise StorageError(f"{path}: cannot be read ({error.strerror}); {expected}") from None
    try:
        return _RECORDS.validate_json(text)
    except ValidationError as error:
        problem = format_errors(error, str(path)).splitlines()[0]
        raise StorageError(f"{problem}; {expected}") from None


def save_records(folder: Path, records: list[TrialRecord]) -> None:
    """Write the trials table as JSON (the durable record) and CSV."""
    rows = [record.model_dump(mode="json", by_alias=True) for record in records]
    _atomic_write(folder / TRIALS_JSON, json.dumps(rows, indent=2, ensure_ascii=False))
    names = sorted({name for record in records for name in record.params})
    columns = [
        "name",
        "stage",
        "subset",
        "budget",
        "state",
        "der",
        *(to_camel(p) for p in _SECONDS),
        "seconds",
    ]
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns + names + ["message"])
        for record in records:
            parts = record.components
            writer.writerow(
                [record.name, record.stage, record.subset, record.budget, record.state]
                + [record.der]
                + ([getattr(parts, p) for p in _SECONDS] if parts else [""] * len(_SECONDS))
                + [record.seconds]
                + [record.params.get(name, "") for name in names]
                + [record.message or ""]
            )


def save_best(folder: Path, best: TrialRecord, summary: Summary) -> None:
    """Write the best trial's configuration, and how sure its gain is, as YAML."""
    document: dict[str, object] = {
        "trial": best.name,
        "stage": best.stage,
        "der": best.der,
        "objective": {summary.objective: summary.best_objective},
        "segmentation": best.checkpoint or best.segmentation,
        "params": best.full_params,
    }
    for subset, gain in (("development", summary.development_gain), ("test", summary.test_gain)):
        if gain is not None:
            document[f"gain_over_defaults_{subset}"] = gain.text
    (folder / "best.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def plot(
    folder: Path,
    records: list[TrialRecord],
    stages: list[str],
    compared: list[tuple[str, TrialRecord, TrialRecord]] = (),  # type: ignore[assignment]
) -> Path:
    """DER per trial with the best so far, one panel per stage, and the per-file DER of
    the tuned pipeline against pyannote's defaults, as der.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(stages) + bool(compared)
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    for axis, stage in zip(axes[0], stages, strict=False):
        _stage_panel(axis, [r for r in records if r.stage == stage and not r.is_evaluation])
        axis.set_title(f"stage {stage}")
    axes[0][0].set_ylabel("DER (development)")
    if axes[0][0].get_legend_handles_labels()[0]:  # none when no trial of it succeeded
        axes[0][0].legend(loc="upper right", fontsize=8)
    if compared:
        _per_file_panel(axes[0][-1], compared)
    figure.tight_layout()
    path = folder / "der.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _stage_panel(axis: Any, trials: list[TrialRecord]) -> None:
    ok = [(r.number, r.der) for r in trials if r.der is not None]
    if ok:
        numbers, ders = zip(*sorted(ok), strict=True)
        best, running = [], float("inf")
        for der in ders:
            running = min(running, der)
            best.append(running)
        axis.scatter(numbers, ders, s=14, label="trial DER")
        axis.step(numbers, best, where="post", color="C1", label="best so far")
    for number in (r.number for r in trials if r.der is None):
        axis.axvline(number, color="C3", alpha=0.3, lw=1)
    axis.set_xlabel("trial")
    axis.grid(alpha=0.3)


def _per_file_panel(axis: Any, compared: list[tuple[str, TrialRecord, TrialRecord]]) -> None:
    """Each file's DER, defaults (x) against tuned (y): below the diagonal, tuning helped."""
    highest = 0.0
    for index, (subset, tuned, defaults) in enumerate(compared):
        assert tuned.scores is not None and defaults.scores is not None
        x = [e / t for e, t in zip(defaults.scores.error, defaults.scores.total, strict=True) if t]
        y = [e / t for e, t in zip(tuned.scores.error, tuned.scores.total, strict=True) if t]
        axis.scatter(x, y, s=16, color=f"C{index + 2}", label=f"{subset} ({len(x)} files)")
        highest = max([highest, *x, *y])
    axis.plot([0, highest], [0, highest], color="grey", lw=1, ls="--")
    axis.set_xlabel("DER with pyannote's defaults, per file")
    axis.set_ylabel("DER tuned, per file")
    axis.set_title("per file: below the diagonal, tuning helped")
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(alpha=0.3)


def _cell(der: float | None, interval: Interval | None) -> str:
    if der is None:
        return "-"
    if interval is None:
        return percent(der)
    spread = f", {interval.files} files, per-file SD {100 * interval.spread:.1f}"
    return f"{percent(der)} [{100 * interval.low:.2f}, {100 * interval.high:.2f}]{spread}"


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
        "| DER, 95 % CI over files | development (tuned on) | test (evaluated once) |",
        "|---|---|---|",
        f"| pyannote's default parameters | {_cell(summary.default_der, summary.default_interval)} "
        f"| {_cell(summary.default_test_der, summary.default_test_interval)} |",
        f"| tuned | {_cell(summary.best_der, summary.best_interval)} "
        f"| {_cell(summary.test_der, summary.test_interval)} |",
        "",
    ]
    lines += [f"- {gain.text}." for gain in (summary.development_gain, summary.test_gain) if gain]
    lines += [
        "",
        f"Best trial: {summary.best_trial}; trials: {summary.trials} "
        f"({summary.failed} failed); minimized: {summary.objective} DER; "
        f"wall time: {seconds:.0f} s.",
    ]
    if summary.imported_trials:
        lines += [
            "",
            f"Warm start: {summary.imported_trials} trials of earlier tunings were told to "
            "SMAC first (not counted above).",
        ]
    if summary.message:
        lines += ["", summary.message]
    text = "\n".join(lines) + "\n"
    (folder / "summary.md").write_text(text, encoding="utf-8")
    return text


def write_results(folder: Path, tuning: str, study: Study, seconds: float) -> tuple[Summary, str]:
    """Write what a tuning leaves in its output folder, the same for ``diartune tune`` and
    ``diartune report``: der.png (a panel per stage, and the tuned pipeline against the
    defaults file by file), best.yaml, the exported pipeline (copied into the folder when
    it is local), summary.json and summary.md.

    Parameters
    ----------
    folder
        The output folder.
    tuning
        The tuning's name.
    study
        The tuning's study, with its records.
    seconds
        Wall time of the tuning.

    Returns
    -------
    summary
        The summary as written (its pipeline the folder's copy).
    markdown
        summary.md's text.
    """
    summary = study.summary()
    plot(folder, study.records, [stage.name for stage in study.spec.stages], study.compared())
    best = study.best()
    if best is not None:
        save_best(folder, best, summary)
    if summary.phase is Phase.SUCCEEDED and summary.pipeline and not is_s3(summary.pipeline):
        local, exported = folder / "pipeline", Path(summary.pipeline)
        if exported.is_dir() and exported.resolve() != local.resolve():
            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(exported, local)
        if local.is_dir():  # the report of a folder whose trials were moved keeps the copy
            summary = summary.model_copy(update={"pipeline": str(local)})
    return summary, write_summary(folder, tuning, summary, seconds)
