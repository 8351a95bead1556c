"""Benchmark: which searcher finds the lowest development DER in 30 trials, over many runs.

The generalization benchmark runs each method once per corpus, so one lucky or unlucky
run decides its row. This one isolates the search: one corpus and its models
(``common.demo_corpus(--corpus)``), the development subset, pyannote's space
(``hpo.SPACE``), and each searcher run ``--runs`` times with seeds 0..runs-1:

- random search (ConfigSpace sampling);
- diartune's tuner (``StageTuner``: SMAC3's HPO facade with diartune's parts: pyannote's
  defaults first, 8 Sobol points, a single-threaded depth-first forest, ordered local
  search);
- SMAC3's HPO facade as shipped (its own initial design of the same size, no defaults
  first, no diartune parts), through ask/tell;
- Optuna's TPE sampler in-process (what ``pyannote-audio optimize`` uses), seeded.

It prints, per searcher, the mean and spread of the best development DER after 10, 20 and
30 trials; it writes each run's best DER at 10, 20 and 30 trials as CSV and the mean
best-so-far curves as PNG. Features are computed once and shared by every run (the same
pipeline object).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import demo_corpus, machine, offline_models, write_table
from hpo import BUDGET, SPACE, Objective, best_so_far, plot, run_random, run_smac, stage

CHECKPOINTS = (10, 20, 30)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=int, default=0, help="the corpus seed")
    parser.add_argument("--runs", type=int, default=5, help="runs of each searcher")
    parser.add_argument("--output", default="bench-output")
    return parser.parse_args()


def run_vanilla_smac(objective: Objective, seed: int) -> list[float]:
    """SMAC3's HPO facade with its own parts and initial design (8 Sobol points)."""
    from smac import HyperparameterOptimizationFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    from diartune.search.space import plain, stage_space

    scenario = Scenario(
        stage_space(stage(), seed),
        deterministic=True,
        n_trials=BUDGET,
        seed=seed,
        output_directory=Path("/tmp/diartune-search-bench") / str(seed),
    )
    smac = HyperparameterOptimizationFacade(
        scenario,
        target_function=None,
        initial_design=HyperparameterOptimizationFacade.get_initial_design(scenario, n_configs=8),
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


def run_tpe(objective: Objective, seed: int) -> list[float]:
    """Optuna's TPE sampler (pyannote.pipeline's default), seeded, over ``SPACE``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))

    def trial_der(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, entry in SPACE.items():
            if entry["type"] == "float":
                params[name] = trial.suggest_float(name, entry["low"], entry["high"])
            elif entry["type"] == "int":
                params[name] = trial.suggest_int(name, entry["low"], entry["high"])
            else:
                params[name] = trial.suggest_categorical(name, entry["choices"])
        return objective(params)

    study.optimize(trial_der, n_trials=BUDGET)
    return [trial.value for trial in study.trials]


SEARCHERS: dict[str, Callable[[Objective, int], list[float]]] = {
    "random": lambda objective, seed: run_random(objective, seed),
    "diartune": lambda objective, seed: run_smac(objective, seed)[0],
    "smac as shipped": run_vanilla_smac,
    "optuna tpe": run_tpe,
}


def main() -> None:
    from diartune.demo import PROTOCOL
    from diartune.spec.params import pipeline_defaults

    args = arguments()
    corpus, models = demo_corpus(args.corpus), offline_models(args.corpus)
    objective = Objective(str(corpus), PROTOCOL, models, "development")
    rows, runs = [], {}
    for name, search in SEARCHERS.items():
        runs[name] = [search(objective, seed) for seed in range(args.runs)]
        curves = [best_so_far(ders) for ders in runs[name]]
        for seed, curve in enumerate(curves):
            at = {f"best_at_{n}": curve[n - 1] for n in CHECKPOINTS}
            rows.append({"searcher": name, "seed": seed} | at)
        summary = []
        for n in CHECKPOINTS:
            values = [100 * curve[n - 1] for curve in curves]
            mean, spread = statistics.mean(values), statistics.pstdev(values)
            summary.append(f"at {n} {mean:.2f} % (SD {spread:.2f})")
        print(f"{name}: best development DER {', '.join(summary)}", flush=True)
    folder = Path(args.output) / "search"
    write_table(folder, f"search-corpus-{args.corpus}", rows)
    defaults = pipeline_defaults("AgglomerativeClustering")
    bound = min(der for _, der in objective.history)
    plot(folder, runs, bound, objective({name: defaults[name] for name in SPACE}))
    print(f"search: corpus seed {args.corpus}, {args.runs} runs of {BUDGET} trials; {machine()}")


if __name__ == "__main__":
    main()
