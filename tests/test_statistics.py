"""Intervals and paired comparisons over files: known properties, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from diartune.objective import aggregate
from diartune.records import Components, FileScores
from diartune.search.statistics import (
    compare,
    compare_by_speakers,
    estimate,
    estimate_by_speakers,
)


def scores(ders: list[float], seconds: float = 30.0, files: str = "f") -> FileScores:
    return FileScores(files=files, error=[d * seconds for d in ders], total=[seconds] * len(ders))


def test_aggregates_match_their_definitions() -> None:
    error, total = np.array([1.0, 3.0, 2.0]), np.array([10.0, 10.0, 0.0])
    assert aggregate(error, total, "total") == pytest.approx(6.0 / 20.0)  # no-speech FA counts
    assert aggregate(error, total, "mean") == pytest.approx(0.2)  # the silent file has no DER
    assert aggregate(error, total, "upperBound") > aggregate(error, total, "mean")


def test_file_scores_pair_by_sorted_uris() -> None:
    def part(der: float) -> Components:
        return Components.of(der * 5, der * 5, 0, 10)

    one = FileScores.of({"b": part(0.2), "a": part(0.1)})
    other = FileScores.of({"a": part(0.3), "b": part(0.3)})
    assert one.files == other.files and one.error == [1.0, 2.0]
    assert FileScores.of({"a": part(0.1)}).files != one.files


def test_an_interval_holds_the_value_and_narrows_with_more_files() -> None:
    rng = np.random.default_rng(1)
    few = scores(list(rng.uniform(0.2, 0.4, 8)))
    many = scores(list(rng.uniform(0.2, 0.4, 128)))
    for found in (estimate(few), estimate(many)):
        assert found.low <= found.value <= found.high
    assert estimate(many).high - estimate(many).low < estimate(few).high - estimate(few).low
    assert estimate(few) == estimate(few)  # seeded: the same scores, the same interval


def test_a_uniformly_better_configuration_is_significantly_better() -> None:
    rng = np.random.default_rng(2)
    defaults = list(rng.uniform(0.3, 0.6, 16))
    tuned = [d - 0.05 + rng.normal(0, 0.01) for d in defaults]
    found = compare(scores(tuned), scores(defaults))
    assert found.significant and 0.03 < found.gain < 0.07
    assert found.low > 0
    assert "significantly better" in found.describe("test")


def test_noise_alone_is_not_significant_and_says_so_in_plain_words() -> None:
    rng = np.random.default_rng(3)
    defaults = list(rng.uniform(0.3, 0.6, 16))
    tuned = [d + rng.normal(0, 0.05) for d in defaults]
    found = compare(scores(tuned), scores(defaults))
    assert not found.significant and found.low < 0 < found.high
    assert "not significant, the interval includes 0" in found.describe("development")


def test_scores_of_other_files_are_not_compared() -> None:
    with pytest.raises(ValueError, match="not scored on the same files"):
        compare(scores([0.2, 0.3], files="a"), scores([0.2, 0.3], files="b"))


def test_the_speaker_bootstrap_is_never_narrower_than_the_file_bootstrap() -> None:
    rng = np.random.default_rng(4)
    found = scores(list(rng.uniform(0.2, 0.5, 48)))
    many = [[f"s{index}", f"s{index + 1}", f"s{index + 2}"] for index in range(48)]
    by_files, by_speakers = estimate(found), estimate_by_speakers(found, many)
    assert by_speakers.high - by_speakers.low >= by_files.high - by_files.low
    assert by_speakers == estimate_by_speakers(found, many)  # seeded


def test_files_that_share_speakers_widen_the_interval() -> None:
    # 48 files over 6 speakers, two per file; the DER depends on who speaks.
    rng = np.random.default_rng(5)
    effect = rng.uniform(0.1, 0.6, 6)
    pairs = [sorted(rng.choice(6, size=2, replace=False)) for _ in range(48)]
    ders = [float(effect[pair].mean() + rng.normal(0, 0.02)) for pair in pairs]
    speakers = [[f"s{a}", f"s{b}"] for a, b in pairs]
    by_files, by_speakers = estimate(scores(ders)), estimate_by_speakers(scores(ders), speakers)
    assert by_speakers.value == by_files.value
    assert by_speakers.high - by_speakers.low > 1.5 * (by_files.high - by_files.low)
    tuned = [d - 0.05 for d in ders]
    gain = compare_by_speakers(scores(tuned), scores(ders), speakers)
    assert gain.significant and gain.gain == pytest.approx(0.05)
    with pytest.raises(ValueError, match="needs its speakers"):
        estimate_by_speakers(scores(ders), speakers[:-1])
