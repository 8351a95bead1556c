"""bench/fidelity.py's accounting: what each trial of a tuning cost in epochs, and the
best DER within a number of epochs (the benchmark's figures come from these)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from fidelity import best_within, reached, steps  # noqa: E402

SCORES = {"files": "0123456789abcdef", "error": [1.0], "total": [4.0]}


def write_trial(run: Path, number: int, rate: float, budget: float | None, der: Any) -> None:
    folder = run / "trials" / f"segmentation-{number:03d}"
    folder.mkdir(parents=True)
    record = {
        "number": number,
        "params": {"training.learning_rate": rate},
        "budget": budget,
        "state": "Succeeded" if der is not None else "Failed",
        "der": der,
        "scores": SCORES if der is not None else None,
        "seconds": 10.0,
    }
    (folder / "record.json").write_text(json.dumps(record))


def test_a_promoted_configuration_costs_only_its_extra_epochs(tmp_path: Path) -> None:
    for number, (rate, budget, der) in enumerate(
        [
            (1e-3, 1.0, 0.40),
            (1e-4, 1.0, 0.45),
            (1e-3, 3.0, 0.35),
            (1e-4, 3.0, None),
            (1e-3, 9.0, 0.30),
        ]
    ):
        write_trial(tmp_path, number, rate, budget, der)
    evaluation = tmp_path / "trials" / "defaults-development"
    evaluation.mkdir()
    (evaluation / "record.json").write_text(json.dumps({"number": -1}))

    trials = steps(tmp_path, max_epochs=9)

    # 1e-4 failed at 3 epochs: it reached only 1, so the failed run cost 2.
    assert [step.epochs for step in trials] == [1, 1, 2, 2, 6]
    assert best_within(trials, 6).der == 0.35  # the 9-epoch trial would cross 6 epochs
    assert reached(trials, 0.35) == (4, 30.0)
    assert reached(trials, 0.2) == (None, None)


def test_full_cost_trials_cost_max_epochs_each(tmp_path: Path) -> None:
    for number, der in enumerate([0.5, 0.4, 0.45]):
        write_trial(tmp_path, number, 10.0**-number, None, der)

    trials = steps(tmp_path, max_epochs=9)

    assert [step.epochs for step in trials] == [9, 9, 9]
    assert best_within(trials, 18).der == 0.4
