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
