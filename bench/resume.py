"""Benchmark: what checkpoint-resume saves on a fine-tuning trial killed at 80 % of its epochs.

On the demo's corpus and offline models (``common.demo_corpus``, ``common.offline_models``),
one fine-tuning trial of ``--epochs`` epochs (at most 40 batches each) runs three ways with the
real trial command:

- uninterrupted;
- killed (SIGKILL, as a preempted pod) once it has saved the state of 80 % of its epochs;
- run again with the same request: it resumes from that state.

It reports the wall time and the fine-tuning seconds of the uninterrupted run and of the
resumed run, and their ratios: the issue's target is that the resumed run takes about
20 % of the full time. Process start, data, models and scoring are paid again by the
resumed run, so its wall-time ratio is above its fine-tuning ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, demo_corpus, machine, offline_models, run_trial, write_table

BATCHES = 40


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the trial")
    parser.add_argument("--output", default="bench-output")
    return parser.parse_args()


def request(output: Path, epochs: int) -> dict[str, Any]:
    """The fine-tuning trial, in the flat fields of ``tests/trial_requests.py``."""
    from diartune.demo import PROTOCOL

    models = offline_models()
    return {
        "name": "segmentation-000",
        "stage": "segmentation",
        "data": {"database": str(demo_corpus()), "protocol": PROTOCOL},
        "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
        "params": {"training.learning_rate": 1e-4},
        "fineTune": {"maxEpochs": epochs, "batchesPerEpoch": BATCHES},
        "output": str(output),
    }


def kill_after(flat: dict[str, Any], epochs: int) -> int:
    """Run the trial and SIGKILL it once its saved state holds ``epochs`` epochs."""
    sys.path.insert(0, str(ROOT / "tests"))
    from trial_requests import request_document

    from diartune.trial.progress import STATE

    state = Path(flat["output"]) / STATE
    document = json.dumps(request_document(flat))
    process = subprocess.Popen(
        [sys.executable, "-m", "diartune", "trial", "--request-json", document],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = 0
    while process.poll() is None and saved < epochs:
        time.sleep(0.05)
        if state.exists():
            saved = int(json.loads(state.read_text())["epochs"])
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if saved < epochs:
        raise RuntimeError(f"the trial ended before it saved {epochs} epochs")
    return saved


def main() -> None:
    args = arguments()
    at = round(0.8 * args.epochs)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        full_wall, full = run_trial(request(Path(scratch) / "full", args.epochs))
        flat = request(Path(scratch) / "killed", args.epochs)
        saved = kill_after(flat, at)
        resumed_wall, resumed = run_trial(flat)
    runs = (("uninterrupted", full_wall, full), ("resumed", resumed_wall, resumed))
    for run, wall, result in runs:
        rows.append(
            {
                "run": run,
                "epochs_trained": args.epochs if run == "uninterrupted" else args.epochs - saved,
                "wall": round(wall, 2),
                "fine_tune": round(result["timings"]["fine_tune"], 2),
            }
        )
    write_table(Path(args.output) / "resume", "resume", rows)
    training = rows[1]["fine_tune"] / rows[0]["fine_tune"]
    print(
        f"resume: killed after {saved} of {args.epochs} epochs; the resumed run took "
        f"{100 * training:.0f} % of the uninterrupted run's fine-tuning time "
        f"({rows[1]['fine_tune']:.1f} s / {rows[0]['fine_tune']:.1f} s) and "
        f"{100 * rows[1]['wall'] / rows[0]['wall']:.0f} % of its wall time "
        f"({rows[1]['wall']:.1f} s / {rows[0]['wall']:.1f} s); {machine()}"
    )


if __name__ == "__main__":
    main()
