"""Benchmark: the DER each tuner finds in 30 trials, side by side in one run.

Same models (the offline ones), same data (ami-debug's development subset), same space
(pyannote's own: segmentation.min_duration_off, clustering threshold, method and
min_cluster_size), same budget, several seeds:

- pyannote's default parameters;
- random search (ConfigSpace sampling);
- ``pyannote-audio optimize``, pyannote's own CLI (Optuna TPE, average case), as a process;
- diartune's tuner (SMAC3 HPO facade, warm start, Sobol design);
- the optimum of a dense grid (cheap: segmentations and embeddings are cached); the bound
  is the best DER of the grid and of every method's trials (the grid is coarser than the
  continuous space).

In-process trials evaluate the same pyannote pipeline with its features computed once,
as the cache makes clustering-stage trials on Kubernetes.
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import arguments, machine, offline_models, write_table

SPACE = {
    "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 1.0},
    "clustering.threshold": {"type": "float", "low": 0.0, "high": 2.0},
    "clustering.method": {
        "type": "categorical",
        "choices": ["average", "centroid", "complete", "median", "single", "ward", "weighted"],
    },
    "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
}
BUDGET = 30


class Objective:
    """DER of a configuration on the development subset, features computed once."""

    def __init__(
        self,
        database: str,
        protocol: str,
        models: tuple[Path, Path],
        subset: str = "development",
        clustering: str = "AgglomerativeClustering",
        plda: Any = None,
        files: list[Any] | None = None,
    ) -> None:
        from pyannote.audio import Model

        from diartune.trial.data import load_protocol, subset_files
        from diartune.trial.pipeline import build_pipeline

        if files is None:  # else another objective's: their cached features are shared
            path = Path(database)
            files = subset_files(load_protocol(path, protocol, (subset,)), subset)
        self.files = files
        segmentation, embedding = (Model.from_pretrained(m) for m in models)
        self.clustering = clustering
        self.pipeline = build_pipeline(segmentation, embedding, clustering, {}, set(), plda)
        self.pipeline.training = True  # pyannote then keeps features in each file's dict
        self.history: list[tuple[dict[str, Any], float]] = []

    def per_file(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each file's DER parts (``Components`` by URI) with these parameters (pyannote's
        defaults for the others)."""
        from diartune.spec.model import Objective as Settings
        from diartune.spec.params import with_defaults
        from diartune.trial.evaluate import score
        from diartune.trial.pipeline import nested, pipeline_params

        full = with_defaults(self.clustering, params)
        self.pipeline.instantiate(nested(pipeline_params(self.pipeline, full)))
        hypotheses = {}
        for file in self.files:
            output = self.pipeline(file)
            hypotheses[file["uri"]] = output.speaker_diarization
        return score(self.files, hypotheses, Settings())[1]

    def scores(self, params: dict[str, Any]) -> Any:
        """Each file's errors and reference speech (``FileScores``) with these parameters."""
        from diartune.records import FileScores

        return FileScores.of(self.per_file(params))

    def __call__(self, params: dict[str, Any]) -> float:
        from diartune.objective import objective_value

        der = objective_value(self.scores(params), "total")
        self.history.append((params, der))
        return der


def stage(space: dict[str, Any] = SPACE) -> Any:
    from diartune.spec.model import Stage

    return Stage.model_validate({"name": "pipeline", "searchSpace": space, "maxTrialCount": BUDGET})


def run_random(objective: Objective, seed: int) -> list[float]:
    from diartune.search.space import plain, stage_space

    space = stage_space(stage(), seed)
    return [objective(plain(c)) for c in space.sample_configuration(BUDGET)]


def run_smac(
    objective: Objective, seed: int, space: dict[str, Any] = SPACE, design: int = 8
) -> tuple[list[float], float]:
    from diartune.search.tuner import Observation, StageTuner
    from diartune.spec.model import Optimizer

    tuner = StageTuner(stage(space), Optimizer(seed=seed, initial_design_size=design))
    ders, overhead = [], 0.0
    for _ in range(BUDGET):
        start = time.perf_counter()
        params = tuner.ask().params
        overhead += time.perf_counter() - start
        der = objective(params)
        start = time.perf_counter()
        tuner.tell(Observation(params, der))
        overhead += time.perf_counter() - start
        ders.append(der)
    return ders, overhead / BUDGET


def run_pyannote_optimize(
    database: str, protocol: str, models: tuple[Path, Path]
) -> tuple[list[float], dict[str, Any]]:
    """``pyannote-audio optimize`` on the exported default pipeline: the losses of its
    trials (from its journal) and its best parameters (diartune's names).

    The CLI takes no seed: each run draws its own.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from pyannote.audio import Model

    from diartune.spec.params import pipeline_defaults
    from diartune.trial.pipeline import export_pipeline, nested

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "pipeline"
        defaults = nested(pipeline_defaults("AgglomerativeClustering"))
        defaults["segmentation"].pop("threshold")
        export_pipeline(folder, models, "AgglomerativeClustering", defaults, None, (32, 32))
        Model.from_pretrained(models[0])  # fail here, not in the subprocess, if unloadable
        config = folder / "config.yaml"
        # pyannote 4.0.7's optimizer scores the pipeline's output as an Annotation, which
        # only the legacy output is: without it, `optimize` fails on its first trial.
        document = yaml.safe_load(config.read_text())
        document["pipeline"]["params"]["legacy"] = True
        # pyannote's default batch of 1 makes the first trial (features of every file)
        # several times slower; batches do not change a DER.
        document["pipeline"]["params"]["segmentation_batch_size"] = 32
        document["pipeline"]["params"]["embedding_batch_size"] = 32
        config.write_text(yaml.safe_dump(document))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pyannote.audio",
                "optimize",
                str(config),
                protocol,
                "--registry",
                database,
                "--max-iterations",
                str(BUDGET),
                "--average-case",
                "--device",
                "cpu",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYANNOTE_METRICS_ENABLED": "false"},
        )
        storage = JournalStorage(JournalFileBackend(str(config.with_suffix(".journal"))))
        study = optuna.load_study(study_name=f"{protocol}.development", storage=storage)
        trials = [t for t in study.trials if t.value is not None][:BUDGET]
    best = min(trials, key=lambda t: float(t.value or 0.0))
    # pyannote.pipeline flattens nested parameters with ">": clustering>threshold.
    params = {name.replace(">", "."): value for name, value in best.params.items()}
    return [float(t.value or 0.0) for t in trials], params


def grid_optimum(objective: Objective, points: int) -> float:
    choices = SPACE["clustering.method"]["choices"]
    grid = itertools.product(
        np.linspace(0.0, 1.0, 4),
        np.linspace(0.0, 2.0, points),
        choices,
        [1, 2, 4, 8, 12, 20],
    )
    return min(
        objective(
            {
                "segmentation.min_duration_off": float(off),
                "clustering.threshold": float(threshold),
                "clustering.method": method,
                "clustering.min_cluster_size": size,
            }
        )
        for off, threshold, method, size in grid
    )


def best_so_far(values: list[float]) -> list[float]:
    return list(np.minimum.accumulate(values))


def plot(folder: Path, curves: dict[str, list[list[float]]], bound: float, default: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for index, (method, runs) in enumerate(curves.items()):
        mean = np.mean([best_so_far(run) for run in runs], axis=0)
        axis.plot(range(1, len(mean) + 1), 100 * mean, label=method, color=f"C{index}")
    axis.axhline(100 * bound, color="k", ls="--", lw=1, label="best known (grid and all trials)")
    axis.axhline(100 * default, color="gray", ls=":", lw=1, label="pyannote defaults")
    axis.set_xlabel("trials")
    axis.set_ylabel("best DER so far (%), mean over seeds")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(folder / "hpo.png", dpi=110)
    plt.close(figure)


def main() -> None:
    args = arguments(__doc__ or "")
    models = offline_models()
    objective = Objective(args.database, args.protocol, models)
    from diartune.spec.params import pipeline_defaults

    default = objective({k: v for k, v in pipeline_defaults("AgglomerativeClustering").items()})
    seeds = range(args.repeat)
    curves: dict[str, list[list[float]]] = {"random": [], "pyannote optimize": [], "diartune": []}
    overheads = []
    for seed in seeds:
        curves["random"].append(run_random(objective, seed))
        losses, _ = run_pyannote_optimize(args.database, args.protocol, models)
        curves["pyannote optimize"].append(losses)
        ders, overhead = run_smac(objective, seed)
        curves["diartune"].append(ders)
        overheads.append(overhead)
        print({m: round(min(c[-1]), 4) for m, c in curves.items()}, flush=True)
    grid = grid_optimum(objective, points=21)
    # The bound: the best DER any evaluation found, grid or trial (the grid is coarser
    # than the continuous space, and pyannote optimize's own trials count too).
    trials = [der for runs in curves.values() for run in runs for der in run]
    bound = min(grid, *trials)
    rows = [
        {
            "method": "pyannote defaults",
            "der_mean": default,
            "der_sd": 0.0,
            "regret": default - bound,
        }
    ]
    finals = {m: [min(run) for run in runs] for m, runs in curves.items()}
    for method, values in finals.items():
        mean = statistics.mean(values)
        rows.append(
            {
                "method": method,
                "der_mean": mean,
                "der_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "regret": mean - bound,
            }
        )
    rows.append({"method": "grid optimum", "der_mean": grid, "der_sd": 0.0, "regret": grid - bound})
    rows.append({"method": "best known", "der_mean": bound, "der_sd": 0.0, "regret": 0.0})
    output = Path(args.output) / "hpo"
    write_table(output, "hpo", rows)
    write_table(output, "evaluations", [{**p, "der": der} for p, der in objective.history])
    plot(output, curves, bound, default)
    ratio = statistics.mean(finals["diartune"]) / statistics.mean(finals["pyannote optimize"])
    print(
        f"hpo: after {BUDGET} trials, {args.repeat} seeds: diartune "
        f"{100 * statistics.mean(finals['diartune']):.2f} % vs pyannote optimize "
        f"{100 * statistics.mean(finals['pyannote optimize']):.2f} % (ratio {ratio:.3f}), "
        f"random {100 * statistics.mean(finals['random']):.2f} %, defaults {100 * default:.2f} %, "
        f"grid optimum {100 * grid:.2f} %, best known {100 * bound:.2f} % (best possible "
        f"ratio {bound / statistics.mean(finals['pyannote optimize']):.3f}; diartune regret "
        f"{100 * (statistics.mean(finals['diartune']) - bound):.2f} points); "
        f"SMAC ask+tell {statistics.mean(overheads):.2f} s/trial; {machine()}"
    )


if __name__ == "__main__":
    main()
