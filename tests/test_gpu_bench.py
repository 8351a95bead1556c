"""bench/gpu.py --quick runs on a CPU and reports every figure (values are not checked:
timings on shared machines are noise)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_gpu_bench_on_cpu(tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # the CPU, even where a GPU is
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads(output.read_text())
    assert report["environment"]["device"] == "cpu"
    assert report["errors"] == []
    [training] = report["fine_tune"]
    assert training["precision"] == "32"
    for name in (
        "epoch_seconds",
        "chunks_per_second",
        "steady_chunks_per_second",
        "peak_memory_mib",
    ):
        assert positive(training[name]), (name, training)
    assert training["batches_per_epoch"] >= 2
    [inference] = report["inference"]
    assert inference["segmentation_on"] == inference["embedding_on"] == "cpu"
    for name in ("segmentation_rtf", "embeddings_rtf", "pipeline_rtf", "peak_memory_mib"):
        assert positive(inference[name]), (name, inference)
    assert (tmp_path / "gpu.md").exists() and (tmp_path / "gpu.csv").exists()
