"""Speaker verification on held-out speakers: does a PLDA separate them better than cosine?"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from diartune.trial.plda import (
    BETWEEN_SHRINKAGE,
    PLDA_DIMENSION,
    load_plda_folder,
    train_plda,
    write_plda,
)
from diartune.trial.speakers import SpeakerEmbeddings


@dataclass(frozen=True)
class Trials:
    """Every pair of a list of embeddings: indices ``first`` < ``second``, and same speaker."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray

    @classmethod
    def all_pairs(cls, speakers: np.ndarray) -> Trials:
        """All unordered pairs of distinct embeddings."""
        first, second = np.triu_indices(len(speakers), k=1)
        return cls(first, second, speakers[first] == speakers[second])


@dataclass(frozen=True)
class Verification:
    """Equal error rate and area under the ROC curve of one scoring (higher: same speaker)."""

    eer: float
    auc: float

    @classmethod
    def of(cls, scores: np.ndarray, same: np.ndarray) -> Verification:
        """Both figures for ``scores`` of trials whose truth is ``same``."""
        false_positive, true_positive, _ = roc_curve(same, scores)
        false_negative = 1 - true_positive
        closest = np.argmin(np.abs(false_negative - false_positive))
        eer = (false_positive[closest] + false_negative[closest]) / 2
        return cls(float(eer), float(roc_auc_score(same, scores)))


def cosine_scores(embeddings: np.ndarray, trials: Trials) -> np.ndarray:
    """Cosine similarity of each pair."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", unit[trials.first], unit[trials.second])


def plda_scores(features: np.ndarray, psi: np.ndarray, trials: Trials) -> np.ndarray:
    """Log-likelihood ratio, same speaker against different, of each pair.

    ``features`` are in the PLDA space (within-speaker covariance I, between-speaker
    diag(``psi``)), as pyannote's ``PLDA(embeddings)`` and ``PLDA.phi`` give them.
    With one vector on each side: log N(v; psi/(1+psi) u, 1 + psi/(1+psi)) -
    log N(v; 0, 1 + psi), Kaldi's ``Plda::LogLikelihoodRatio`` (symmetric in u, v).
    """
    u, v = features[trials.first], features[trials.second]
    same_mean = psi / (1 + psi) * u
    same_variance = 1 + psi / (1 + psi)
    different_variance = 1 + psi
    same = -0.5 * (np.log(same_variance) + (v - same_mean) ** 2 / same_variance)
    different = -0.5 * (np.log(different_variance) + v**2 / different_variance)
    return np.sum(same - different, axis=1)


def speaker_folds(speakers: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds - 1) of each embedding: speakers shuffled by ``seed``, dealt out."""
    names = np.random.default_rng(seed).permutation(np.unique(speakers))
    fold_of = {name: index % folds for index, name in enumerate(names)}
    return np.array([fold_of[speaker] for speaker in speakers])


def held_out_verification(
    train: SpeakerEmbeddings,
    test: SpeakerEmbeddings,
    dimension: int = PLDA_DIMENSION,
    between_shrinkage: float = BETWEEN_SHRINKAGE,
) -> dict[str, Verification]:
    """PLDA and cosine scores of all pairs of ``test``, the PLDA trained on ``train``.

    The PLDA goes through its files and pyannote's loader, as VBx gets it.

    Parameters
    ----------
    train, test : SpeakerEmbeddings
        Embeddings of distinct speakers.
    dimension, between_shrinkage
        The PLDA's, see :func:`diartune.trial.plda.train_plda`.
    """
    trials = Trials.all_pairs(test.speakers)
    transform, model = train_plda(train.embeddings, train.speakers, dimension, between_shrinkage)
    with tempfile.TemporaryDirectory(prefix="diartune-plda-") as folder:
        plda = load_plda_folder(
            write_plda(Path(folder), transform, model), test.embeddings.shape[1]
        )
    return {
        "plda": Verification.of(plda_scores(plda(test.embeddings), plda.phi, trials), trials.same),
        "cosine": Verification.of(cosine_scores(test.embeddings, trials), trials.same),
    }


def cross_validation(
    labelled: SpeakerEmbeddings, folds: int = 5, seed: int = 0
) -> list[dict[str, Verification]]:
    """:func:`held_out_verification` of each fold of speakers, trained on the other folds."""
    fold = speaker_folds(labelled.speakers, folds, seed)
    return [
        held_out_verification(labelled.subset(fold != k), labelled.subset(fold == k))
        for k in range(folds)
    ]
