"""How sure a DER is: its spread over files, bootstrap confidence intervals, and paired
comparisons of two configurations scored on the same files.

A subset's DER depends on which recordings it holds; with the few annotated recordings
users have, that dependence is the largest uncertainty. So every interval here comes from
a bootstrap over files (Efron and Tibshirani, *An Introduction to the Bootstrap*, 1993):
resample the files with replacement, recompute the aggregate, take the 2.5th and 97.5th
percentiles. A comparison resamples the same files for both configurations (a paired
bootstrap), so that what the files share cancels out. The resampling is seeded: the same
scores always give the same interval.
The aggregates themselves are ``diartune.objective``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diartune.objective import aggregate
from diartune.records import FileScores
from diartune.spec.model import Aggregate

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0


def _resampled(count: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def _bootstrap(
    error: np.ndarray, total: np.ndarray, indices: np.ndarray, how: Aggregate
) -> np.ndarray:
    """The aggregate of each resample (rows of ``indices``)."""
    if how == "total":
        with np.errstate(invalid="ignore", divide="ignore"):
            return error[indices].sum(axis=1) / total[indices].sum(axis=1)
    return np.array([aggregate(error[rows], total[rows], how) for rows in indices])


def _draw_counts(count: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, count): how often each of ``count`` items is drawn in each resample."""
    counts = np.zeros((resamples, count))
    np.add.at(counts, (np.arange(resamples)[:, None], _resampled(count, resamples, seed)), 1.0)
    return counts


def _speaker_weights(speakers: list[list[str]], resamples: int, seed: int) -> np.ndarray:
    """(resamples, files) weights of a bootstrap over speakers and files: the files and
    the speakers are each drawn with replacement, and a file weighs its own draw count
    times the mean of its speakers' draw counts (1 on average; 0 when the file or all
    its speakers were not drawn). Drawing both keeps the file-to-file spread that a
    bootstrap over files sees and adds what comes from who speaks (as Owen's pigeonhole
    bootstrap does for crossed designs)."""
    names = sorted({name for file in speakers for name in file})
    index = {name: column for column, name in enumerate(names)}
    membership = np.zeros((len(names), len(speakers)))
    for column, file in enumerate(speakers):
        for name in file:
            membership[index[name], column] = 1.0 / len(file)
    drawn = _draw_counts(len(names), resamples, seed + 1) @ membership
    return _draw_counts(len(speakers), resamples, seed) * drawn


def _weighted_total(error: np.ndarray, total: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The total DER of each weighted resample (rows of ``weights``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ error) / (weights @ total)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A DER on a set of files, how it spreads over them, and its confidence interval."""

    value: float
    low: float
    high: float
    files: int
    spread: float  # standard deviation of the per-file DERs

    def describe(self) -> str:
        """``32.12 % [28.40, 35.90] (95 % CI, 16 files, per-file SD 6.1)``."""
        return (
            f"{100 * self.value:.2f} % [{100 * self.low:.2f}, {100 * self.high:.2f}] "
            f"(95 % CI, {self.files} files, per-file SD {100 * self.spread:.1f})"
        )


def estimate(
    scores: FileScores, how: Aggregate = "total", resamples: int = RESAMPLES, seed: int = SEED
) -> Estimate:
    """The aggregate DER of ``scores`` with its bootstrap confidence interval."""
    error, total = np.asarray(scores.error), np.asarray(scores.total)
    values = _bootstrap(error, total, _resampled(len(error), resamples, seed), how)
    spoken = total > 0
    spread = float(np.std(error[spoken] / total[spoken])) if spoken.any() else float("nan")
    low, high = _interval(values, LEVEL)
    return Estimate(aggregate(error, total, how), low, high, len(error), spread)


@dataclass(frozen=True)
class Comparison:
    """How much lower one configuration's DER is than another's on the same files."""

    gain: float  # baseline minus tuned: positive when tuning helped
    low: float
    high: float
    files: int

    @property
    def significant(self) -> bool:
        """Whether the interval excludes no change."""
        return self.low > 0 or self.high < 0

    def describe(self, subset: str) -> str:
        """One sentence that says the gain, its interval and whether it is significant."""
        points = (
            f"{100 * self.gain:+.2f} DER points [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"
        )
        where = f"on {subset} (95 % CI, paired bootstrap over {self.files} files)"
        if not self.significant:
            return f"tuned vs defaults: {points} {where}: not significant, the interval includes 0"
        verdict = "better" if self.gain > 0 else "worse"
        return f"tuned vs defaults: {points} {where}: significantly {verdict}"


def compare(
    tuned: FileScores,
    baseline: FileScores,
    how: Aggregate = "total",
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Paired bootstrap of ``baseline - tuned`` over the files both were scored on.

    Raises ValueError when they were not scored on the same files.
    """
    if tuned.files != baseline.files or len(tuned.error) != len(baseline.error):
        raise ValueError("the two configurations were not scored on the same files")
    a_error, a_total = np.asarray(tuned.error), np.asarray(tuned.total)
    b_error, b_total = np.asarray(baseline.error), np.asarray(baseline.total)
    indices = _resampled(len(a_error), resamples, seed)
    gains = _bootstrap(b_error, b_total, indices, how) - _bootstrap(a_error, a_total, indices, how)
    low, high = _interval(gains, LEVEL)
    gain = aggregate(b_error, b_total, how) - aggregate(a_error, a_total, how)
    return Comparison(gain, low, high, len(a_error))


def _check_speakers(scores: FileScores, speakers: list[list[str]]) -> None:
    if len(speakers) != len(scores.error) or not all(speakers):
        raise ValueError("every scored file needs its speakers, in the order of its scores")


def estimate_by_speakers(
    scores: FileScores, speakers: list[list[str]], resamples: int = RESAMPLES, seed: int = SEED
) -> Estimate:
    """The total DER of ``scores`` with an interval from a bootstrap over speakers and files.

    Files that share speakers are not independent: resampling files alone would make the
    interval too narrow. ``speakers`` holds each file's speakers, in the order of
    ``scores`` (sorted URIs).
    """
    _check_speakers(scores, speakers)
    error, total = np.asarray(scores.error), np.asarray(scores.total)
    values = _weighted_total(error, total, _speaker_weights(speakers, resamples, seed))
    spoken = total > 0
    spread = float(np.std(error[spoken] / total[spoken])) if spoken.any() else float("nan")
    low, high = _interval(values, LEVEL)
    return Estimate(aggregate(error, total, "total"), low, high, len(error), spread)


def compare_by_speakers(
    tuned: FileScores,
    baseline: FileScores,
    speakers: list[list[str]],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """``compare`` (total DER) with a paired bootstrap over speakers and files.

    Raises ValueError when the two were not scored on the same files.
    """
    if tuned.files != baseline.files or len(tuned.error) != len(baseline.error):
        raise ValueError("the two configurations were not scored on the same files")
    _check_speakers(tuned, speakers)
    weights = _speaker_weights(speakers, resamples, seed)
    a_error, a_total = np.asarray(tuned.error), np.asarray(tuned.total)
    b_error, b_total = np.asarray(baseline.error), np.asarray(baseline.total)
    gains = _weighted_total(b_error, b_total, weights) - _weighted_total(a_error, a_total, weights)
    low, high = _interval(gains, LEVEL)
    gain = aggregate(b_error, b_total, "total") - aggregate(a_error, a_total, "total")
    return Comparison(gain, low, high, len(a_error))
