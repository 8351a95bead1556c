"""Benchmark: does tuning hold on speakers it never heard? Five corpora, four methods.

For each seed, the demo's corpus recipe (``diartune.demo.corpus_options``: ami-debug's
train speakers and speech-pool, simulated conversations, speakers disjoint across
train, development and test) is simulated with that seed, the offline segmentation
model is trained on its train subset (``make_models``, as the demo does), and then, side
by side on the same features:

- pyannote's default parameters;
- random search, ``pyannote-audio optimize`` (Optuna TPE) and diartune (SMAC3 HPO
  facade), 30 trials each on the development subset, over pyannote's own space
  (``hpo.SPACE``);
- the best configuration of each is scored once on the test subset, whose speakers no
  trial and no model heard, with a 95 % paired-bootstrap interval of its gain over the
  defaults (``diartune.search.statistics.compare``);
- the seed's models with pyannote's defaults on ami-debug's development subset: real AMI
  meetings whose speakers no training conversation holds (the corpus takes ami-debug's
  train subset only).

The development bound is the lowest development DER computed in the seed: every trial
of random search and diartune, each method's choice (pyannote optimize's trials score
its own aggregate, so only its choice is rescored), and a grid when ``--grid-points`` is
set; regret is a method's development DER minus that bound.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import AMI, demo_corpus, machine, offline_models, seed_rows, write_table
from common import PROTOCOL as AMI_PROTOCOL
from hpo import BUDGET, Objective, grid_optimum, run_pyannote_optimize, run_random, run_smac

METHODS = ("random", "pyannote optimize", "diartune")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5, help="corpora and tunings (seeds 0..N-1)")
    parser.add_argument("--output", default="bench-output")
    parser.add_argument(
        "--grid-points", type=int, default=0, help="thresholds of a grid bound (0: no grid)"
    )
    return parser.parse_args()


def best(history: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """The parameters of the lowest DER (the first one on ties)."""
    return min(history, key=lambda entry: entry[1])[0]


def one_seed(seed: int, grid_points: int) -> list[dict[str, Any]]:
    """One row per method: development and test DER, the test gain over the defaults."""
    from diartune.demo import PROTOCOL
    from diartune.search.statistics import compare, estimate
    from diartune.spec.params import pipeline_defaults

    database, models = str(demo_corpus(seed)), offline_models(seed)
    defaults = dict(pipeline_defaults("AgglomerativeClustering"))
    # The models on real AMI meetings none of their training speakers is in.
    ami = Objective(str(AMI / "database.yml"), AMI_PROTOCOL, models, "development")(defaults)
    development = Objective(database, PROTOCOL, models, "development")
    test = Objective(database, PROTOCOL, models, "test")
    chosen: dict[str, dict[str, Any]] = {"defaults": defaults}
    for method in METHODS:
        before = len(development.history)
        if method == "random":
            run_random(development, seed)
        elif method == "diartune":
            run_smac(development, seed)
        else:  # its own trials are scored by its own aggregate: only its choice is rescored
            chosen[method] = run_pyannote_optimize(database, PROTOCOL, models)[1]
        if method != "pyannote optimize":
            chosen[method] = best(development.history[before:])
    on_development = {method: development(params) for method, params in chosen.items()}
    if grid_points:
        grid_optimum(development, grid_points)
    # Every development DER computed: each method's trials, their choices, the grid.
    bound = min(der for _, der in development.history)
    baseline = test.scores(chosen["defaults"])
    rows = []
    for method, params in chosen.items():
        on_test = test.scores(params)
        gain, found = compare(on_test, baseline), estimate(on_test)
        rows.append(
            {
                "seed": seed,
                "method": method,
                "development": on_development[method],
                "development_regret": on_development[method] - bound,
                "test": found.value,
                "test_ci": found.describe(),
                "test_gain": gain.gain,
                "test_gain_low": gain.low,
                "test_gain_high": gain.high,
                "ami_development_defaults": ami,
                "params": params,
            }
        )
    return rows


def report(rows: list[dict[str, Any]], seeds: int) -> str:
    """The one-line summary against the issue's targets."""

    def of(method: str, key: str) -> list[float]:
        return [row[key] for row in rows if row["method"] == method]

    wins = sum(t < d for t, d in zip(of("diartune", "test"), of("defaults", "test"), strict=True))
    significant = sum(low > 0 for low in of("diartune", "test_gain_low"))
    tuned, optimize = of("diartune", "test"), of("pyannote optimize", "test")
    ratio = statistics.mean(tuned) / statistics.mean(optimize)
    means = ", ".join(
        f"{method} {100 * statistics.mean(of(method, 'test')):.2f} %"
        for method in ("defaults", *METHODS)
    )
    return (
        f"generalization: {seeds} seeds, {BUDGET} trials, mean test DER: {means}; diartune "
        f"below the defaults on test in {wins}/{seeds} seeds ({significant} significantly); "
        f"diartune / pyannote optimize on test {ratio:.3f}; development regret "
        f"{100 * statistics.mean(of('diartune', 'development_regret')):.2f} points; the "
        f"models on ami-debug development with the defaults: "
        f"{100 * statistics.mean(of('defaults', 'ami_development_defaults')):.2f} %; {machine()}"
    )


def main() -> None:
    args = arguments()
    folder = Path(args.output) / "generalization"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):
        rows += seed_rows(folder, seed, lambda n: one_seed(n, args.grid_points))
        print(
            {row["method"]: round(100 * row["test"], 2) for row in rows if row["seed"] == seed},
            flush=True,
        )
        write_table(folder, "generalization", rows)
    print(report(rows, args.seeds))


if __name__ == "__main__":
    main()
