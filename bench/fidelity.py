"""Benchmark: what multi-fidelity saves (issue 12 §4). Three optimizers, equal epochs.

One fine-tuning stage (``training.learning_rate``, ``training.duration`` and
``training.augmentation``; the demo's offline segmentation model fine-tuned on the demo
corpus's train subset, DER on its development subset with pyannote's default pipeline
parameters) tuned three ways with the same spec but its optimizer, for several optimizer
seeds:

- ``hpo``: SMAC's HPO facade (pyannote's defaults, Sobol design, random forest, log EI),
  ``--trials`` trials of ``--epochs`` epochs each;
- ``random``: the same facade with every trial in its initial design (pyannote's
  defaults, then Sobol points): no surrogate;
- ``multiFidelity``: SMAC's multi-fidelity facade, Hyperband (``--eta``) over epochs
  budgets from ``--epochs / eta**2`` to ``--epochs``; a promoted configuration continues
  from the checkpoint it wrote at its smaller budget.

Each is a real ``diartune tune`` (local executor, one trial at a time); the figures are the
product's. A trial costs its budget in epochs, minus the budget its configuration reached
before (continuation), and its wall time is the one its record says. Reported per method
and seed: the best development DER within the HPO facade's total epochs; the epochs and
wall time until the method first reached the HPO facade's final DER; the totals; and the
best configuration's gain over the HPO facade's with a 95 % paired bootstrap over files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import demo_corpus, machine, offline_models, write_table

METHODS = ("hpo", "random", "multiFidelity")
SEARCH_SPACE = {
    "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "training.duration": {"type": "float", "low": 2.0, "high": 10.0},
    "training.augmentation": {"type": "float", "low": 0.0, "high": 0.8},
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="optimizer seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=9, help="maxEpochs: the largest budget")
    parser.add_argument("--trials", type=int, default=8, help="trials of hpo and random")
    parser.add_argument("--initial-design", type=int, default=3, help="hpo's Sobol points")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument(
        "--mf-trials", type=int, default=22, help="multiFidelity trials (22: one Hyperband round)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="tunings run at once")
    parser.add_argument("--database", help="corpus database.yml (default: the demo corpus)")
    parser.add_argument("--models", help="folder of segmentation.ckpt and embedding.ckpt")
    parser.add_argument("--output", default="bench-output")
    return parser.parse_args()


def tuning_spec(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The DiarizationTuning of one method and seed."""
    from diartune.demo import PROTOCOL

    models = Path(args.models)
    stage: dict[str, Any] = {
        "name": "segmentation",
        "fineTune": {"maxEpochs": args.epochs},
        "searchSpace": SEARCH_SPACE,
        "maxTrialCount": args.mf_trials if method == "multiFidelity" else args.trials,
    }
    optimizer: dict[str, Any] = {"seed": seed, "initialDesignSize": args.initial_design}
    if method == "random":
        optimizer["initialDesignSize"] = args.trials - 1
    if method == "multiFidelity":
        optimizer |= {"facade": "multiFidelity", "eta": args.eta}
        stage["budget"] = {"kind": "epochs", "minBudget": args.epochs / args.eta**2}
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": f"{method.lower()}-{seed}"},
        "spec": {
            "data": {"database": str(Path(args.database).resolve()), "protocol": PROTOCOL},
            "pipeline": {
                "segmentation": str((models / "segmentation.ckpt").resolve()),
                "embedding": str((models / "embedding.ckpt").resolve()),
            },
            "stages": [stage],
            "optimizer": optimizer,
            "parallelTrialCount": 1,
            "maxFailedTrialCount": 2,
        },
    }


def run_all(folder: Path, args: argparse.Namespace) -> None:
    """Run every method and seed, ``args.jobs`` tunings at once, each on its own CPUs.

    A tuning that finished before (its summary.json exists) is not run again; one that
    was stopped resumes from its trial records.
    """
    pending = [(m, s) for s in range(args.seeds) for m in METHODS]
    pending = [(m, s) for m, s in pending if not (folder / f"{m}-{s}" / "summary.json").exists()]
    cpus = np.array_split(sorted(os.sched_getaffinity(0)), args.jobs)
    running: dict[int, tuple[subprocess.Popen[bytes], str]] = {}
    while pending or running:
        for slot in [s for s in range(args.jobs) if s not in running and pending]:
            method, seed = pending.pop(0)
            running[slot] = (_start(folder, method, seed, args, set(cpus[slot].tolist())), method)
        time.sleep(2)
        for slot, (process, name) in list(running.items()):
            if process.poll() is not None:
                print(f"{name}: exit {process.returncode}", flush=True)
                del running[slot]


def _start(
    folder: Path, method: str, seed: int, args: argparse.Namespace, cpus: set[int]
) -> subprocess.Popen[bytes]:
    run = folder / f"{method}-{seed}"
    run.mkdir(parents=True, exist_ok=True)
    spec = run.with_suffix(".yaml")
    spec.write_text(yaml.safe_dump(tuning_spec(method, seed, args), sort_keys=False))
    command = [sys.executable, "-m", "diartune", "tune", str(spec), "--output", str(run)]
    with (run.with_suffix(".log")).open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: _pin(cpus)
        )


def _pin(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)  # trials size their DataLoader workers from it


@dataclass(frozen=True)
class Step:
    """One trial of a tuning, in the order it ran."""

    der: float | None
    epochs: float
    seconds: float
    scores: Any


def steps(run: Path, max_epochs: int) -> list[Step]:
    """The search trials of a tuning: DER, epochs and seconds each cost."""
    from diartune.records import FileScores
    from diartune.search.study import epochs

    records = [json.loads(p.read_text()) for p in run.glob("trials/*/record.json")]
    records = sorted((r for r in records if r["number"] >= 0), key=lambda r: r["number"])
    reached: dict[str, float] = {}
    result = []
    for record in records:
        budget = epochs(record["budget"]) if record["budget"] else max_epochs
        key = json.dumps(record["params"], sort_keys=True)
        succeeded = record["state"] == "Succeeded"
        start = reached.get(key, 0.0) if record["budget"] else 0.0
        if succeeded and record["budget"]:
            reached[key] = max(budget, reached.get(key, 0.0))
        scores = FileScores(**record["scores"]) if succeeded else None
        result.append(
            Step(
                record.get("der") if succeeded else None,
                budget - start,
                record["seconds"] or 0.0,
                scores,
            )
        )
    return result


def best_within(trials: list[Step], epochs: float) -> Step | None:
    """The lowest-DER trial among those that ran within ``epochs`` epochs in all."""
    spent, best = 0.0, None
    for step in trials:
        spent += step.epochs
        if spent > epochs + 1e-9:
            break
        if step.der is not None and (best is None or best.der is None or step.der < best.der):
            best = step
    return best


def reached(trials: list[Step], target: float) -> tuple[float | None, float | None]:
    """Epochs and seconds spent until a trial's DER was at most ``target`` (None: never)."""
    epochs = seconds = 0.0
    for step in trials:
        epochs, seconds = epochs + step.epochs, seconds + step.seconds
        if step.der is not None and step.der <= target + 1e-12:
            return epochs, seconds
    return None, None


def seed_rows(folder: Path, seed: int, max_epochs: int) -> list[dict[str, Any]]:
    """One row per method of one seed; the HPO facade sets the budget and the target."""
    from diartune.search.statistics import compare

    runs = {m: steps(folder / f"{m}-{seed}", max_epochs) for m in METHODS}
    budget = sum(step.epochs for step in runs["hpo"])
    reference = best_within(runs["hpo"], budget)
    assert reference is not None and reference.der is not None, f"hpo-{seed} has no result"
    rows = []
    for method, trials in runs.items():
        best = best_within(trials, budget)
        epochs, seconds = reached(trials, reference.der)
        row: dict[str, Any] = {
            "seed": seed,
            "method": method,
            "trials": len(trials),
            "best DER at hpo's epochs": best.der if best else None,
            "epochs to hpo's DER": epochs,
            "epochs ratio": epochs / budget if epochs is not None else None,
            "seconds to hpo's DER": seconds,
            "total epochs": sum(step.epochs for step in trials),
            "total seconds": sum(step.seconds for step in trials),
        }
        if best is not None and method != "hpo":
            gain = compare(best.scores, reference.scores)
            row["gain over hpo (points, 95 % CI)"] = (
                f"{100 * gain.gain:+.2f} [{100 * gain.low:+.2f}, {100 * gain.high:+.2f}]"
            )
        rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    """Means over seeds, one line per method."""
    lines = [f"machine: {machine()}"]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        ders = [r["best DER at hpo's epochs"] for r in mine if r["best DER at hpo's epochs"]]
        ratios = [r["epochs ratio"] for r in mine if r["epochs ratio"] is not None]
        lines.append(
            f"{method}: mean best DER at hpo's epochs "
            f"{100 * statistics.mean(ders):.2f} % over {len(ders)} seeds; reached hpo's DER "
            f"in {len(ratios)}/{len(mine)} seeds"
            + (f", with {100 * statistics.mean(ratios):.0f} % of its epochs" if ratios else "")
        )
    return "\n".join(lines)


def main() -> None:
    args = arguments()
    if args.database is None:
        args.database = str(demo_corpus(0))
    if args.models is None:
        args.models = str(offline_models(0)[0].parent)
    folder = Path(args.output) / "fidelity"
    run_all(folder, args)
    rows = [row for seed in range(args.seeds) for row in seed_rows(folder, seed, args.epochs)]
    write_table(folder, "fidelity", rows)
    print((folder / "fidelity.md").read_text())
    print(report(rows))


if __name__ == "__main__":
    main()
