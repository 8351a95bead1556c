"""Benchmark: which searcher finds the lowest development DER in 30 trials, over many runs
and corpora.

The generalization benchmark runs each method once per corpus, so one lucky or unlucky
run decides its row. This one isolates the search: per corpus, its models and the
features of its development subset are fixed (computed once: each trial costs only the
clustering and the scoring), the space is pyannote's (``hpo.SPACE``), and each searcher
runs ``--runs`` times with seeds 0..runs-1. The corpora (``--corpora``):

- ``0``, ``3``, ``1``...: the no-shift corpus of that seed and its offline models
  (``common.demo_corpus``, ``common.offline_models``), or with the ems source model
  (``--source-model``: no training);
- ``ems``: the demo's adaptation target, scored with the source model
  (``common.ems_corpus``: the demo's full budget).

The searchers (``--searchers``, default all):

- random search (ConfigSpace sampling);
- ``diartune``: the product's tuner (``StageTuner``: SMAC3's HPO facade, pyannote's
  defaults first, 8 Sobol points, diartune's forest and local search), as it is;
- two variants of it, the candidates BENCHMARKS.md's search section measured
  (``CANDIDATES``): SMAC's random interleaving off (``diartune no random``; the HPO
  facade interleaves a random configuration with probability 0.2) and 4 Sobol points
  instead of 8 (``diartune design 4``);
- SMAC3's HPO facade as shipped (its own initial design of the same size, no defaults
  first, no diartune parts), through ask/tell;
- Optuna's TPE sampler in-process (what ``pyannote-audio optimize`` uses), seeded.

Each finished run is appended to ``<output>/search/runs-<corpus>.csv`` (every trial's DER):
a rerun skips the (corpus, searcher, seed) runs there. It then writes, per corpus and
pooled over corpora, the mean and SD over runs of the best development DER after 10, 20
and 30 trials (``search.csv``, ``search.md``), Welch's t-test per corpus and a bootstrap
over runs of the pooled difference for each diartune tuner against random search and TPE
(``comparisons.csv``), and the mean best-so-far curves per corpus (``corpus-*/hpo.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import demo_corpus, ems_corpus, machine, offline_models, write_table
from hpo import BUDGET, SPACE, Objective, best_so_far, plot, run_random, run_smac, stage

CHECKPOINTS = (10, 20, 30)
EMS = "ems"
COLUMNS = ["corpus", "searcher", "seed", *(f"best_at_{n}" for n in CHECKPOINTS), "wall_s", "ders"]
Searcher = Callable[[Objective, int], list[float]]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", default=f"0,3,1,{EMS}", help="corpus seeds, or ems")
    parser.add_argument("--runs", type=int, default=10, help="runs of each searcher")
    parser.add_argument("--searchers", default="", help="comma-separated; default: all")
    parser.add_argument(
        "--files", type=int, default=0, help="the first N development files only (0: all)"
    )
    parser.add_argument(
        "--source-model",
        action="store_true",
        help="score the no-shift corpora with the ems source model too (no training)",
    )
    parser.add_argument("--output", default="bench-output")
    return parser.parse_args()


def corpus_objective(corpus: str, files: int, source: bool) -> Objective:
    """The development DER of ``corpus`` with its models (the ems source model if
    ``source``), features computed once."""
    from diartune.adaptation import TARGET_PROTOCOL
    from diartune.demo import PROTOCOL

    if corpus == EMS:
        database, models = ems_corpus()
        protocol = TARGET_PROTOCOL
    else:
        database = demo_corpus(int(corpus))
        models = ems_corpus()[1] if source else offline_models(int(corpus))
        protocol = PROTOCOL
    objective = Objective(str(database), protocol, models, "development")
    if files:
        objective.files = objective.files[:files]
    return objective


@contextlib.contextmanager
def random_design(probability: float) -> Iterator[None]:
    """SMAC's HPO facade interleaving random configurations with this probability (its
    own: 0.2), for a run."""
    from smac import HyperparameterOptimizationFacade

    defaults = HyperparameterOptimizationFacade.get_random_design.__kwdefaults__
    before = defaults["probability"]
    defaults["probability"] = probability
    try:
        yield
    finally:
        defaults["probability"] = before


def diartune(probability: float = 0.2, design: int = 8) -> Searcher:
    """The product's tuner, SMAC interleaving random configurations with ``probability``,
    after ``design`` Sobol points."""

    def search(objective: Objective, seed: int) -> list[float]:
        with random_design(probability):
            return run_smac(objective, seed, design=design)[0]

    return search


def run_vanilla_smac(objective: Objective, seed: int) -> list[float]:
    """SMAC3's HPO facade with its own parts and initial design (8 Sobol points)."""
    from smac import HyperparameterOptimizationFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    from diartune.search.space import plain, stage_space

    with tempfile.TemporaryDirectory(prefix="diartune-search-bench-") as folder:
        scenario = Scenario(
            stage_space(stage(), seed),
            deterministic=True,
            n_trials=BUDGET,
            seed=seed,
            output_directory=Path(folder),
        )
        smac = HyperparameterOptimizationFacade(
            scenario,
            target_function=None,
            initial_design=HyperparameterOptimizationFacade.get_initial_design(
                scenario, n_configs=8
            ),
            overwrite=True,
            logging_level=40,
        )
        ders = []
        for _ in range(BUDGET):
            info = smac.ask()
            der = objective(plain(info.config))
            smac.tell(info, TrialValue(cost=der))
            ders.append(der)
    return ders


def run_tpe(objective: Objective, seed: int, space: dict[str, Any] = SPACE) -> list[float]:
    """Optuna's TPE sampler (pyannote.pipeline's default), seeded, over ``space``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))

    def trial_der(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, entry in space.items():
            if entry["type"] == "float":
                params[name] = trial.suggest_float(name, entry["low"], entry["high"])
            elif entry["type"] == "int":
                params[name] = trial.suggest_int(name, entry["low"], entry["high"])
            else:
                params[name] = trial.suggest_categorical(name, entry["choices"])
        return objective(params)

    study.optimize(trial_der, n_trials=BUDGET)
    return [float(trial.value or 0.0) for trial in study.trials]


#: The tuner's settings the search section of BENCHMARKS.md measured against its own.
CANDIDATES: dict[str, Searcher] = {
    "diartune no random": diartune(probability=0.0),
    "diartune design 4": diartune(design=4),
}
SEARCHERS: dict[str, Searcher] = {
    "random": lambda objective, seed: run_random(objective, seed),
    "diartune": diartune(),
    "smac as shipped": run_vanilla_smac,
    "optuna tpe": run_tpe,
    **CANDIDATES,
}


def finished(folder: Path, corpus: str) -> list[dict[str, Any]]:
    """The runs of ``corpus`` already in its CSV, DERs as floats."""
    path = folder / f"runs-{corpus}.csv"
    if not path.exists():
        return []
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        row["seed"] = int(row["seed"])
        row["ders"] = [float(der) for der in row["ders"].split()]
    return rows


def record(folder: Path, row: dict[str, Any]) -> None:
    """Append one finished run to its corpus's CSV."""
    path = folder / f"runs-{row['corpus']}.csv"
    new = not path.exists()
    with path.open("a", newline="") as stream:
        writer = csv.DictWriter(stream, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row | {"ders": " ".join(f"{der:.6f}" for der in row["ders"])})


def run_all(args: argparse.Namespace, folder: Path, corpora: list[str], names: list[str]) -> None:
    """Every (seed, corpus, searcher) run not in the CSVs yet, seed by seed."""
    objectives: dict[str, Objective] = {}
    for seed in range(args.runs):
        for corpus in corpora:
            done = {(row["searcher"], row["seed"]) for row in finished(folder, corpus)}
            for name in names:
                if (name, seed) in done:
                    continue
                if corpus not in objectives:
                    objectives[corpus] = corpus_objective(corpus, args.files, args.source_model)
                start = time.perf_counter()
                ders = SEARCHERS[name](objectives[corpus], seed)
                wall = time.perf_counter() - start
                curve = best_so_far(ders)
                at = {f"best_at_{n}": curve[n - 1] for n in CHECKPOINTS}
                row = {"corpus": corpus, "searcher": name, "seed": seed, "wall_s": round(wall, 1)}
                record(folder, row | at | {"ders": ders})
                print(
                    f"corpus {corpus}, {name}, seed {seed}: {100 * curve[-1]:.2f} % "
                    f"after {BUDGET} trials ({wall:.0f} s)",
                    flush=True,
                )


def best_at(rows: list[dict[str, Any]], corpus: str, name: str, n: int) -> list[float]:
    """Each run's best DER (%) after ``n`` trials."""
    return [
        100 * min(row["ders"][:n])
        for row in rows
        if row["corpus"] == corpus and row["searcher"] == name
    ]


def summary(
    rows: list[dict[str, Any]], corpora: list[str], names: list[str]
) -> list[dict[str, Any]]:
    """Mean and SD over runs per corpus; pooled: the mean of the corpus means and the
    root mean of the corpus variances (the spread of one searcher's runs, corpus
    differences left out)."""
    table = []
    for name in names:
        for corpus in corpora:
            cells: dict[str, Any] = {"corpus": corpus, "searcher": name}
            for n in CHECKPOINTS:
                values = best_at(rows, corpus, name, n)
                cells["runs"] = len(values)
                cells[f"mean_at_{n}"] = statistics.mean(values) if values else float("nan")
                cells[f"sd_at_{n}"] = statistics.stdev(values) if len(values) > 1 else 0.0
            table.append(cells)
        mine = [cells for cells in table if cells["searcher"] == name]
        pooled: dict[str, Any] = {"corpus": "pooled", "searcher": name}
        pooled["runs"] = sum(cells["runs"] for cells in mine)
        for n in CHECKPOINTS:
            pooled[f"mean_at_{n}"] = statistics.mean(cells[f"mean_at_{n}"] for cells in mine)
            variance = statistics.mean(cells[f"sd_at_{n}"] ** 2 for cells in mine)
            pooled[f"sd_at_{n}"] = variance**0.5
        table.append(pooled)
    return table


def comparisons(
    rows: list[dict[str, Any]], corpora: list[str], names: list[str]
) -> list[dict[str, Any]]:
    """Each diartune tuner against random search and TPE after 30 trials: per corpus the
    difference of means (positive: diartune lower) and Welch's p; pooled, the mean of the
    corpus differences with a 95 % bootstrap interval (runs resampled within each corpus)."""
    from scipy import stats

    generator = np.random.default_rng(0)
    table = []
    for mine in (name for name in names if name.startswith("diartune")):
        for other in ("random", "optuna tpe"):
            if other not in names:
                continue
            pairs = {
                c: (best_at(rows, c, other, BUDGET), best_at(rows, c, mine, BUDGET))
                for c in corpora
            }
            for corpus, (theirs, ours) in pairs.items():
                gain = statistics.mean(theirs) - statistics.mean(ours)
                p = float(stats.ttest_ind(theirs, ours, equal_var=False).pvalue)
                table.append(
                    {
                        "corpus": corpus,
                        "diartune": mine,
                        "against": other,
                        "gain": gain,
                        "p_welch": p,
                        "low": "",
                        "high": "",
                    }
                )
            draws = np.mean(
                [
                    generator.choice(theirs, (10000, len(theirs))).mean(axis=1)
                    - generator.choice(ours, (10000, len(ours))).mean(axis=1)
                    for theirs, ours in pairs.values()
                ],
                axis=0,
            )
            low, high = np.percentile(draws, [2.5, 97.5])
            gain = statistics.mean(
                statistics.mean(t) - statistics.mean(o) for t, o in pairs.values()
            )
            table.append(
                {
                    "corpus": "pooled",
                    "diartune": mine,
                    "against": other,
                    "gain": gain,
                    "p_welch": "",
                    "low": float(low),
                    "high": float(high),
                }
            )
    return table


def main() -> None:
    args = arguments()
    corpora = args.corpora.split(",")
    names = args.searchers.split(",") if args.searchers else list(SEARCHERS)
    unknown = sorted(set(names) - set(SEARCHERS))
    if unknown:
        raise SystemExit(f"--searchers: unknown {unknown}; expected some of {list(SEARCHERS)}")
    folder = Path(args.output) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    run_all(args, folder, corpora, names)
    rows = [
        row
        for corpus in corpora
        for row in finished(folder, corpus)
        if row["searcher"] in names and row["seed"] < args.runs
    ]
    table = summary(rows, corpora, names)
    write_table(folder, "search", table)
    write_table(folder, "comparisons", comparisons(rows, corpora, names))
    for cells in table:
        at = ", ".join(
            f"{cells[f'mean_at_{n}']:.2f} ({cells[f'sd_at_{n}']:.2f})" for n in CHECKPOINTS
        )
        print(f"{cells['corpus']:>6} {cells['searcher']:<20} after 10/20/30: {at}")
    for corpus in corpora:
        mine = [row for row in rows if row["corpus"] == corpus]
        runs = {name: [row["ders"] for row in mine if row["searcher"] == name] for name in names}
        default = next(row["ders"][0] for row in mine if row["searcher"].startswith("diartune"))
        bound = min(min(row["ders"]) for row in mine)
        (folder / f"corpus-{corpus}").mkdir(exist_ok=True)
        plot(folder / f"corpus-{corpus}", runs, bound, default)
    print(f"search: corpora {corpora}, {args.runs} runs of {BUDGET} trials; {machine()}")


if __name__ == "__main__":
    main()
