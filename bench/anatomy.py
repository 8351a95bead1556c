"""Benchmark: where a trial's time goes, phase by phase.

Runs one fine-tuning trial (``--epochs`` epochs on the train subset) and one clustering
trial on the development subset with the real trial command, and reports the seconds of
each phase: process start (imports), data fetch, model loading, fine-tuning per epoch,
segmentation, embeddings, clustering and scoring. The default corpus is the demo's
(ami-debug's train annotations do not match its audio; see docs/spec.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import arguments, bar_plot, demo_corpus, machine, offline_models, run_trial, write_table

PHASES = [
    "start",
    "data",
    "models",
    "fine_tune",
    "segmentation",
    "embeddings",
    "clustering",
    "scoring",
]


def main() -> None:
    args = arguments(__doc__ or "")
    models = offline_models()
    if args.database.endswith("ami-debug/database.yml"):
        from diartune.demo import PROTOCOL

        args.database = str(demo_corpus())
        args.protocol = PROTOCOL
    epochs = max(1, args.repeat)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for stage, fine_tune in (
            ("segmentation", {"maxEpochs": epochs, "batchesPerEpoch": 20}),
            ("clustering", None),
        ):
            wall, result = run_trial(
                {
                    "name": stage,
                    "stage": stage,
                    "data": {"database": args.database, "protocol": args.protocol},
                    "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
                    "params": {"training.learning_rate": 1e-4} if fine_tune else {},
                    "fineTune": fine_tune,
                    "output": str(Path(scratch) / stage),
                }
            )
            timings = result["timings"]
            measured = sum(timings.get(p, 0.0) for p in PHASES[1:]) + timings.get(
                "speaker_counting", 0.0
            )
            timings["start"] = max(0.0, wall - measured)
            row = {"trial": stage, "wall": round(wall, 2)}
            row |= {phase: round(timings.get(phase, 0.0), 2) for phase in PHASES}
            if fine_tune:
                row["per_epoch"] = round(timings["fine_tune"] / epochs, 2)
            rows.append(row)
            print(row, flush=True)
    output = Path(args.output) / "anatomy"
    write_table(output, "anatomy", rows)
    bar_plot(output, "anatomy", PHASES, [rows[0][p] for p in PHASES], "seconds (fine-tune trial)")
    first = rows[0]
    print(
        f"anatomy: fine-tune trial {first['wall']:.0f} s = "
        + ", ".join(f"{p} {first[p]:.1f}" for p in PHASES)
        + f"; {machine()}"
    )


if __name__ == "__main__":
    main()
