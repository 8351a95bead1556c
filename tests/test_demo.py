"""The README demo's corpus: speaker-disjoint splits of real speech; bad sources refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from diartune.cli import main
from diartune.demo import corpus_options
from diartune.simulate import parse_options

AMI = ROOT.parent / "shared/data/ami-debug/database.yml"
POOL = ROOT.parent / "shared/data/speech-pool/manifest.csv"


def test_demo_corpus_holds_out_speakers_and_ami_development() -> None:
    options = parse_options(corpus_options(AMI, POOL, seed=3))
    assert not options.shared_speakers
    assert options.seed == 3
    assert {name: split.conversations for name, split in options.splits.items()} == {
        "train": 48,
        "development": 16,
        "test": 16,
    }
    # ami-debug's development meetings stay unseen, to score the offline models on.
    assert [getattr(source, "subsets", None) for source in options.sources] == [["train"], None]


def test_missing_source_stops_the_demo_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "manifest.csv"
    status = main(
        ["demo", "--output", str(tmp_path / "out"), "--ami", str(AMI), "--pool", str(missing)]
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert status == 2
    assert printed[-1].startswith("diartune demo: ")
    assert str(missing) in printed[-1]
    assert not (tmp_path / "out" / "models").exists()
