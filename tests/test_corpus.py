"""A corpus that would make a DER lie is bad input, named by file and line: checked on
copies of the real ami-debug corpus, changed one way each."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from conftest import PROTOCOL, copy_ami

from diartune.cli import main
from diartune.corpus import corpus_problems

pytestmark = pytest.mark.integration


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A consistent copy of ami-debug (its database.yml)."""
    return copy_ami(tmp_path / "ami")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_consistent_corpus_has_no_problem(corpus: Path) -> None:
    assert corpus_problems(corpus, PROTOCOL) == []


def test_the_shared_corpus_mismatch_is_named_with_its_lines(ami_raw: Path) -> None:
    problems = corpus_problems(ami_raw / "database.yml", PROTOCOL, subsets=("train",))
    assert problems[0].endswith(
        "debug.train.rttm:1: URI 'trn00' is not in the subset's list (14 lines from line 1)"
    )
    assert any("no annotated region for 'trñ00'" in problem for problem in problems)
    assert corpus_problems(ami_raw / "database.yml", PROTOCOL, subsets=("development",)) == []


def test_another_unicode_normalization_is_named_with_both_spellings(corpus: Path) -> None:
    """An NFD RTTM beside NFC audio: pyannote would give that file an empty reference."""
    rttm = corpus.parent / "debug.train.rttm"
    decomposed = unicodedata.normalize("NFD", "trñ00")
    edit(rttm, "trñ00", decomposed)
    [problem] = corpus_problems(corpus, PROTOCOL)
    assert f"URI {decomposed!r} differs from the listed 'trñ00' only by its Unicode" in problem
    assert problem.startswith(f"{rttm}:1:")


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("debug.development.rttm", " 1 ", " 1 -", "onset '-"),
        (
            "debug.development.rttm",
            "SPEAKER dev00 1 ",
            "SPEAKER dev00 1 x",
            "expected a finite number >= 0",
        ),
        ("debug.development.rttm", "SPEAKER", "SPEAKR", "expected SPEAKER <uri>"),
        (
            "debug.development.uem",
            "dev01 NA 0.000 30.000",
            "dev01 NA 30.000 0.000",
            "0 <= start < end",
        ),
        ("debug.development.uem", "dev01 NA 0.000 30.000\n", "", "no annotated region for 'dev01'"),
        ("debug.development.lst", "dev01", "dev01\ndev01", "'dev01' is listed twice"),
    ],
)
def test_each_lie_is_refused_by_file_and_line(
    corpus: Path, name: str, old: str, new: str, expected: str
) -> None:
    path = corpus.parent / name
    edit(path, old, new)
    problems = corpus_problems(corpus, PROTOCOL)
    assert problems, f"{name} changed from {old!r} to {new!r} was accepted"
    assert expected in problems[0] and problems[0].startswith(str(path)), problems


def test_a_negative_duration_is_refused(corpus: Path) -> None:
    rttm = corpus.parent / "debug.development.rttm"
    fields = rttm.read_text("utf-8").splitlines()[0].split()
    edit(rttm, f" {fields[4]} ", f" -{fields[4]} ")
    [problem] = corpus_problems(corpus, PROTOCOL)
    assert problem.endswith(f"duration '-{fields[4]}': expected a finite number > 0")


def test_audio_paths_of_a_mirrored_corpus_stay_in_its_folder(corpus: Path) -> None:
    edit(corpus, "./{uri}.wav", "../../../{uri}.wav")
    assert corpus_problems(corpus, PROTOCOL) == []  # a local corpus is the user's own
    problems = corpus_problems(corpus, PROTOCOL, confined=True)
    assert "leads outside the database's folder" in problems[0]


def test_validate_data_lists_the_problems_before_any_trial(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""apiVersion: diartune.io/v1alpha1
kind: DiarizationTuning
metadata: {{name: ami}}
spec:
  data: {{database: {corpus}, protocol: {PROTOCOL}}}
  pipeline: {{segmentation: ./seg.ckpt, embedding: ./emb.ckpt}}
  stages:
  - name: clustering
    searchSpace: {{clustering.threshold: {{type: float, low: 0.1, high: 1.0}}}}
    maxTrialCount: 4
"""
    )
    assert main(["validate", str(spec), "--data"]) == 0
    assert "lists, annotations and paths are consistent" in capsys.readouterr().out
    edit(corpus.parent / "debug.development.lst", "dev01", "dev01\ndev01")
    assert main(["validate", str(spec), "--data"]) == 2
    assert "debug.development.lst:3: 'dev01' is listed twice" in capsys.readouterr().err
