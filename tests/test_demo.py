"""The README demo's scenario: source and target speakers apart, target splits apart,
sizes in one place; bad sources refused on one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import ROOT

from diartune.cli import main
from diartune.demo import FULL, corpus_options, source_options, target_options
from diartune.simulate import parse_options

AMI = ROOT.parent / "shared/data/ami-debug/database.yml"
POOL = ROOT.parent / "shared/data/speech-pool/manifest.csv"


def _speakers(manifest: Path) -> set[str]:
    with manifest.open(newline="", encoding="utf-8") as stream:
        return {row["speaker_id"] for row in csv.DictReader(stream)}


def test_source_and_target_speakers_are_apart(tmp_path: Path) -> None:
    from diartune.adaptation import SOURCE_POOL_SPEAKERS, split_pool

    source, target = split_pool(POOL, tmp_path)
    assert _speakers(source).isdisjoint(_speakers(target))
    assert _speakers(source) | _speakers(target) == _speakers(POOL)
    assert len(_speakers(source)) == SOURCE_POOL_SPEAKERS
    assert split_pool(POOL, tmp_path / "again")[1].read_bytes() == target.read_bytes()
    with target.open(newline="", encoding="utf-8") as stream:
        assert all(Path(row["file"]).is_file() for row in csv.DictReader(stream))


def test_demo_corpora_hold_out_speakers(tmp_path: Path) -> None:
    ems = parse_options(target_options(tmp_path / "target.csv", FULL))
    assert not ems.shared_speakers
    assert {name: split.conversations for name, split in ems.splits.items()} == {
        "train": FULL.target_train,
        "development": FULL.target_development,
        "test": FULL.target_test,
    }
    assert [source.kind for source in ems.sources] == ["pool"]
    home = parse_options(source_options(AMI, tmp_path / "source.csv", FULL))
    assert not home.shared_speakers and set(home.splits) == {"train", "test"}
    # ami-debug's development meetings stay unseen, to score the offline models on.
    assert [getattr(source, "subsets", None) for source in home.sources] == [["train"], None]
    assert ems.protocol != home.protocol


def test_the_benches_no_shift_corpus_keeps_its_recipe() -> None:
    options = parse_options(corpus_options(AMI, POOL, seed=3))
    assert not options.shared_speakers and options.seed == 3
    assert {name: split.conversations for name, split in options.splits.items()} == {
        "train": 48,
        "development": 16,
        "test": 16,
    }
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
    assert not (tmp_path / "out" / "source-model").exists()


def test_models_needs_a_corpus_or_a_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--output", str(tmp_path)]) == 2
    assert "--database and --protocol are required" in capsys.readouterr().err
