"""The objective: how a trial's per-file scores become the one number a tuning minimizes.

Aggregates (``spec.objective.aggregate``):

- ``total``: pyannote.metrics' DER over all files (errors summed over reference speech
  summed), the default and what pyannote reports;
- ``mean``: the mean of the per-file DERs (each recording counts the same);
- ``upperBound``: the upper end of the 90 % Bayesian confidence interval of the mean
  per-file DER (``scipy.stats.bayes_mvs``), what ``pyannote-audio optimize`` minimizes
  unless told ``--average-case``: it favours configurations that are good on every file.

Files without reference speech have no DER of their own: they count in ``total`` (their
false alarms) and are left out of ``mean`` and ``upperBound``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import bayes_mvs

from diartune.records import FileScores
from diartune.spec.model import Aggregate


def aggregate(error: np.ndarray, total: np.ndarray, how: Aggregate = "total") -> float:
    """The DER of files with these errors and reference speech (seconds), aggregated."""
    if how == "total":
        return float(error.sum() / total.sum()) if total.sum() > 0 else float("nan")
    spoken = total > 0
    per_file = error[spoken] / total[spoken]
    if how == "mean" or len(np.unique(per_file)) < 2:
        return float(per_file.mean()) if len(per_file) else float("nan")
    (_, (_, upper)), _, _ = bayes_mvs(per_file, alpha=0.9)
    return float(upper)


def objective_value(scores: FileScores, how: Aggregate) -> float:
    """The value a tuning minimizes for these per-file scores."""
    return aggregate(np.asarray(scores.error), np.asarray(scores.total), how)
