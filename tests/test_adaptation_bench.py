"""bench/adaptation.py --quick runs every arm of every fold, scores them all on the same
test files, rotates the target speakers over the folds, and takes its intervals from the
bootstrap over speakers (which arm wins is not checked: at these sizes it is noise)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from adaptation import ARMS, QUICK, ArmResult, file_scores, fold_speakers, pooled  # noqa: E402
from common import POOL  # noqa: E402

from diartune.adaptation import split_pool  # noqa: E402
from diartune.search.statistics import estimate, estimate_by_speakers  # noqa: E402


def _manifest_speakers(manifest: Path) -> set[str]:
    with manifest.open(newline="", encoding="utf-8") as stream:
        return {row["speaker_id"] for row in csv.DictReader(stream)}


def _rttm_speakers(rttm: Path) -> set[str]:
    return {line.split()[7] for line in rttm.read_text().splitlines() if line.strip()}


def test_every_target_speaker_is_a_test_speaker_exactly_once(tmp_path: Path) -> None:
    _, target = split_pool(POOL, tmp_path)
    folds = fold_speakers(target, 4)
    held = [speaker for fold in folds for speaker in fold]
    assert len(held) == len(set(held)) == 27
    assert min(len(fold) for fold in folds) >= 6


def run_quick(folder: Path) -> str:
    """``adaptation.py --quick`` into ``folder``; what it printed."""
    done = subprocess.run(
        [sys.executable, "adaptation.py", "--quick", "--output", str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT / "bench",
        timeout=3600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


@pytest.mark.integration
@pytest.mark.timeout(5400)  # 3.6 minutes on 2 idle cores, 12 at load 8
def test_quick_adaptation_bench(tmp_path: Path) -> None:
    run_quick(tmp_path)
    check_quick(tmp_path / "adaptation")
    assert ": DER " not in run_quick(tmp_path), "a rerun measured an arm again"


def check_quick(output: Path) -> None:
    """Every arm of every fold on the fold's test files, held-out speakers, intervals from
    the bootstrap over speakers."""
    speakers: list[set[str]] = []
    for fold in range(QUICK.folds):
        corpus = output / f"fold-{fold}"
        held = {f"pool.{name}" for name in _manifest_speakers(corpus / "speakers" / "held.csv")}
        assert _rttm_speakers(corpus / "held" / "test.rttm") <= held
        for subset in ("train", "development"):
            assert _rttm_speakers(corpus / "adapt" / f"{subset}.rttm").isdisjoint(held)
        results = [
            ArmResult.model_validate_json(path.read_text())
            for path in sorted((output / f"fold-{fold}" / "results").glob("*.json"))
        ]
        assert {result.arm for result in results} == set(ARMS)
        assert len({tuple(result.uris) for result in results}) == 1, "arms on other files"
        speakers.append({name for names in results[0].speakers for name in names})
    assert sum(map(len, speakers)) == len(set().union(*speakers)), "a speaker in two folds"

    summary = json.loads((output / "report" / "summary.json").read_text())
    # Pooled over the folds: with 3 files per fold, both bootstraps span the range of files.
    folds = [output / f"fold-{fold}" / "results" / "A0.json" for fold in range(QUICK.folds)]
    a0 = pooled([ArmResult.model_validate_json(path.read_text()) for path in folds])
    [row] = [r for r in summary["rows"] if r["fold"] == "pooled" and r["arm"] == "A0"]
    by_speakers = estimate_by_speakers(file_scores(a0), a0.speakers)
    assert (row["low"], row["high"]) == (100 * by_speakers.low, 100 * by_speakers.high)
    by_files = estimate(file_scores(a0))
    assert (by_speakers.low, by_speakers.high) != (by_files.low, by_files.high)
    assert {r["fold"] for r in summary["rows"]} == {"fold 0", "fold 1", "pooled"}
    assert (output / "report" / "adaptation.png").stat().st_size > 0
