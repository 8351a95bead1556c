"""Benchmark: agglomerative clustering against VBx, defaults and tuned, on held-out speakers.

For each seed, on the generalization benchmark's corpus and models
(``common.demo_corpus``, ``common.offline_models``):

- a PLDA for the offline embedding is trained on the corpus's train subset only
  (``build_plda``: single-speaker regions, the development and test speakers left out);
- each clustering is scored with pyannote's defaults, and tuned by diartune (SMAC3 HPO
  facade, 30 trials on the development subset) over a 4-dimensional space:
  ``segmentation.min_duration_off`` with the clustering threshold, method and
  min_cluster_size (agglomerative, as ``hpo.SPACE``) or the threshold, Fa and Fb (VBx,
  community-1's knobs);
- every choice is scored once on the test subset, with a 95 % bootstrap interval over its
  files and paired-bootstrap intervals of its gain over agglomerative clustering with
  pyannote's defaults, and over its own clustering with pyannote's defaults. Both
  clusterings score the same files with the same segmentations and embeddings.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import demo_corpus, machine, offline_models, seed_rows, write_table
from hpo import SPACE, Objective, run_smac

VBX_SPACE = {
    "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 1.0},
    "clustering.threshold": {"type": "float", "low": 0.1, "high": 1.5},
    "clustering.Fa": {"type": "float", "low": 0.01, "high": 0.5},
    "clustering.Fb": {"type": "float", "low": 0.1, "high": 4.0},
}
SPACES = {"AgglomerativeClustering": SPACE, "VBxClustering": VBX_SPACE}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="corpora (seeds 0..N-1)")
    parser.add_argument("--output", default="bench-output")
    return parser.parse_args()


def corpus_plda(seed: int, embedding: Path) -> Any:
    """pyannote's PLDA trained on the seed's train speakers (made once under the cache)."""
    from pyannote.audio.core.plda import PLDA

    from diartune.demo import PROTOCOL
    from diartune.spec.model import Data
    from diartune.trial.offline_plda import build_plda

    database = demo_corpus(seed)
    data = Data(database=str(database), protocol=PROTOCOL)
    folder = build_plda(database.parent.parent / "plda", embedding, None, data)
    return PLDA.from_pretrained(str(folder))


def one_seed(seed: int) -> list[dict[str, Any]]:
    """One row per clustering and method: development and test DER, the test gains."""
    from diartune.demo import PROTOCOL
    from diartune.search.statistics import compare, estimate
    from diartune.spec.params import pipeline_defaults

    database, models = str(demo_corpus(seed)), offline_models(seed)
    plda = corpus_plda(seed, models[1])
    measured: list[tuple[str, str, dict[str, Any], float, Any]] = []
    shared: dict[str, Any] = {}  # each subset's files, their features computed once
    for clustering, space in SPACES.items():
        development, test = (
            Objective(database, PROTOCOL, models, subset, clustering, plda, shared.get(subset))
            for subset in ("development", "test")
        )
        shared = {"development": development.files, "test": test.files}
        defaults = {name: pipeline_defaults(clustering)[name] for name in space}
        run_smac(development, seed, space)
        tuned = min(development.history, key=lambda entry: entry[1])[0]
        for method, params in (("defaults", defaults), ("tuned", tuned)):
            measured.append((clustering, method, params, development(params), test.scores(params)))
    baseline = measured[0][4]  # agglomerative clustering with pyannote's defaults, on test
    own = {name: scores for name, method, _, _, scores in measured if method == "defaults"}
    rows = []
    for clustering, method, params, on_development, on_test in measured:
        found = estimate(on_test)
        gain, over_own = compare(on_test, baseline), compare(on_test, own[clustering])
        rows.append(
            {
                "seed": seed,
                "clustering": clustering,
                "method": method,
                "development": on_development,
                "test": found.value,
                "test_ci": found.describe(),
                "test_gain": gain.gain,
                "test_gain_low": gain.low,
                "test_gain_high": gain.high,
                "gain_over_own_defaults": over_own.gain,
                "gain_over_own_defaults_low": over_own.low,
                "gain_over_own_defaults_high": over_own.high,
                "params": params,
            }
        )
    return rows


def report(rows: list[dict[str, Any]], seeds: int) -> str:
    """Mean test DER of each clustering and method, and how often each beats the baseline."""
    parts = []
    for clustering in SPACES:
        for method in ("defaults", "tuned"):
            chosen = [r for r in rows if (r["clustering"], r["method"]) == (clustering, method)]
            mean = 100 * statistics.mean(r["test"] for r in chosen)
            better = sum(r["test_gain_low"] > 0 for r in chosen)
            parts.append(f"{clustering} {method} {mean:.2f} % ({better} significant gains)")
    return f"vbx: {seeds} seeds, mean test DER: {'; '.join(parts)}; {machine()}"


def main() -> None:
    args = arguments()
    folder = Path(args.output) / "vbx"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):
        rows += seed_rows(folder, seed, one_seed)
        print({(r["clustering"], r["method"]): round(100 * r["test"], 2) for r in rows}, flush=True)
        write_table(folder, "vbx", rows)
    print(report(rows, args.seeds))


if __name__ == "__main__":
    main()
