"""Benchmark: a clustering-only trial with and without the segmentation/embedding cache.

Runs the real trial command (``python -m diartune trial``) on the development subset, as a
pod would: once with no cache, once filling the cache, then --repeat times reading it.
Target: the cached trial's pipeline step is at least 20x faster.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from common import arguments, bar_plot, machine, offline_models, run_trial, write_table

PARAMS = {"clustering.threshold": 0.5, "clustering.min_cluster_size": 2}


def trial(args, models, output: Path, cache: str | None) -> dict:  # type: ignore[no-untyped-def]
    wall, result = run_trial(
        {
            "name": "bench",
            "stage": "clustering",
            "data": {"database": args.database, "protocol": args.protocol},
            "pipeline": {"segmentation": str(models[0]), "embedding": str(models[1])},
            "params": PARAMS,
            "tuned": sorted(PARAMS),
            "output": str(output),
            "cache": cache,
        }
    )
    return {"wall": wall, **result["timings"], "der": result["der"]}


def main() -> None:
    args = arguments(__doc__ or "")
    models = offline_models()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(Path(scratch) / "cache")
        runs = [("no cache", None)] * args.repeat + [("filling cache", cache)]
        runs += [("cached", cache)] * args.repeat
        for index, (mode, location) in enumerate(runs):
            timings = trial(args, models, Path(scratch) / f"t{index}", location)
            rows.append({"mode": mode, **{k: round(v, 3) for k, v in timings.items()}})
            print(rows[-1], flush=True)
    output = Path(args.output) / "cache"
    write_table(output, "cache", rows)
    median = {
        mode: statistics.median(r["pipeline"] for r in rows if r["mode"] == mode)
        for mode in ("no cache", "cached")
    }
    walls = {
        mode: statistics.median(r["wall"] for r in rows if r["mode"] == mode)
        for mode in ("no cache", "cached")
    }
    bar_plot(output, "cache", list(median), list(median.values()), "pipeline seconds (median)")
    print(
        f"cache: pipeline {median['no cache']:.2f} s -> {median['cached']:.3f} s "
        f"({median['no cache'] / median['cached']:.0f}x faster); whole trial process "
        f"{walls['no cache']:.1f} s -> {walls['cached']:.1f} s "
        f"({walls['no cache'] / walls['cached']:.1f}x); {machine()}"
    )


if __name__ == "__main__":
    main()
