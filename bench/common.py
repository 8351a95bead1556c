"""What every benchmark shares: its data, its models, and how it writes its table and plot."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AMI = ROOT.parent / "shared" / "data" / "ami-debug"
PROTOCOL = "Debug.SpeakerDiarization.Debug"
POOL = ROOT.parent / "shared" / "data" / "speech-pool" / "manifest.csv"


def arguments(description: str) -> argparse.Namespace:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--database", default=str(AMI / "database.yml"))
    parser.add_argument("--protocol", default=PROTOCOL)
    parser.add_argument("--output", default="bench-output")
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


def demo_corpus(seed: int = 0) -> Path:
    """The demo's corpus recipe simulated with ``seed`` (made once under the cache)."""
    from diartune.demo import make_corpus
    from diartune.storage import cache_root

    folder = cache_root() / "bench-corpora" / f"seed-{seed}"
    return make_corpus(folder / "corpus", AMI / "database.yml", POOL, seed)


def offline_models(seed: int = 0) -> tuple[Path, Path]:
    """The demo's offline models, trained on ``demo_corpus(seed)``'s train subset (once)."""
    from diartune.demo import PROTOCOL as DEMO
    from diartune.spec.model import Data
    from diartune.trial.bootstrap import make_models

    database = demo_corpus(seed)
    folder = database.parent.parent / "models"
    return make_models(Data(database=str(database), protocol=DEMO), folder, 40, 40)


def ems_corpus() -> tuple[Path, tuple[Path, Path]]:
    """The demo's adaptation target at its full budget (made once under the cache): the
    ``ems`` corpus's database.yml and the source model (segmentation, embedding) trained on
    the other speakers' ``source`` conversations."""
    from diartune.adaptation import simulate_once, split_pool
    from diartune.demo import FULL, make_source_model, target_options
    from diartune.storage import cache_root

    folder = cache_root() / "bench-corpora" / "ems"
    source, target = split_pool(POOL, folder / "speakers")
    database = simulate_once(target_options(target, FULL), folder / "ems-corpus", "ems")
    segmentation, embedding, _ = make_source_model(
        folder / "source-model", AMI / "database.yml", source, FULL
    )
    return database, (segmentation, embedding)


def seed_rows(
    folder: Path, seed: int, measure: Callable[[int], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``measure(seed)``'s rows, measured once: a rerun reads the seeds it already finished
    from ``folder/seed-N.json``."""
    done = folder / f"seed-{seed}.json"
    if done.exists():
        return list(json.loads(done.read_text()))
    rows = measure(seed)
    done.write_text(json.dumps(rows, indent=1))
    return rows


def machine() -> str:
    """The machine the figures come from."""
    return f"{platform.node()}: {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}"


def write_table(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV and as a Markdown table."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (folder / f"{name}.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            f"{value:.3f}" if isinstance(value, float) else str(value) for value in row.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (folder / f"{name}.md").write_text("\n".join(lines) + "\n")


def bar_plot(folder: Path, name: str, labels: list[str], values: list[float], ylabel: str) -> None:
    """A bar chart as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(labels, values, color="C0")
    axis.set_ylabel(ylabel)
    axis.grid(axis="y", alpha=0.3)
    for index, value in enumerate(values):
        axis.annotate(f"{value:.2f}", (index, value), ha="center", va="bottom", fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / f"{name}.png", dpi=110)
    plt.close(figure)


def run_trial(request: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Run ``python -m diartune trial`` as a pod would; its wall time and result line.

    ``request`` has the flat fields of ``tests/trial_requests.py``.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from trial_requests import request_document

    document = json.dumps(request_document(request))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "diartune", "trial", "--request-json", document],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    line = next(x for x in done.stdout.splitlines() if x.startswith("DIARTUNE_RESULT "))
    return wall, json.loads(line.removeprefix("DIARTUNE_RESULT "))
