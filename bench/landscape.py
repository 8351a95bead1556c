"""Benchmark: what the clustering parameters do to the development DER, one linkage at a time.

The search benchmark (``search.py``) says how close each searcher gets in 30 trials; this
says where the good configurations are. On each corpus of ``search.py`` (its objective:
development features computed once, the ems source model for the no-shift corpora), it
scores every linkage of pyannote's space at the thresholds 0.1, 0.2, ... 1.9, with
``min_cluster_size`` 1 and pyannote's 12, ``min_duration_off`` at pyannote's 0. It writes
``<output>/landscape/landscape.csv`` (every point) and prints, per corpus and linkage, the
best point and the DER along the thresholds at ``min_cluster_size`` 12.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import machine, write_table
from hpo import SPACE
from search import corpus_objective

THRESHOLDS = [round(float(t), 2) for t in np.linspace(0.1, 1.9, 19)]
MIN_CLUSTER_SIZES = (1, 12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", default="0,3,1,ems", help="as search.py's")
    parser.add_argument("--files", type=int, default=8, help="no-shift corpora: first N files")
    parser.add_argument("--output", default="bench-output")
    args = parser.parse_args()
    folder = Path(args.output) / "landscape"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for corpus in args.corpora.split(","):
        objective = corpus_objective(corpus, 0 if corpus == "ems" else args.files, True)
        for method in SPACE["clustering.method"]["choices"]:
            mine = []
            for threshold in THRESHOLDS:
                for size in MIN_CLUSTER_SIZES:
                    params = {
                        "segmentation.min_duration_off": 0.0,
                        "clustering.threshold": threshold,
                        "clustering.method": method,
                        "clustering.min_cluster_size": size,
                    }
                    mine.append(
                        {
                            "corpus": corpus,
                            "method": method,
                            "threshold": threshold,
                            "min_cluster_size": size,
                            "der": 100 * objective(params),
                        }
                    )
            best = min(mine, key=lambda row: row["der"])
            along = " ".join(f"{row['der']:.0f}" for row in mine if row["min_cluster_size"] == 12)
            print(
                f"{corpus:>4} {method:<9} best {best['der']:.2f} at threshold "
                f"{best['threshold']}, min_cluster_size {best['min_cluster_size']}; "
                f"along the thresholds: {along}",
                flush=True,
            )
            rows += mine
    write_table(folder, "landscape", rows)
    print(f"landscape: corpora {args.corpora}; {machine()}")


if __name__ == "__main__":
    main()
