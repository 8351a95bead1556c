"""The PLDA of pyannote's VBx clustering: train it, write it, check it, load it.

pyannote.audio 4 (``pyannote.audio.core.plda.PLDA`` and ``utils.vbx.vbx_setup``) loads
a folder of two files, community-1's ``plda/`` format:

- ``xvec_transform.npz``: ``mean1`` (D,), ``mean2`` (L,), ``lda`` (D, L). An embedding
  ``x`` becomes ``sqrt(L) * l2norm(sqrt(D) * l2norm(x - mean1) @ lda - mean2)``: the
  x-vector preprocessing of the VBx recipe (centering, LDA, length normalization).
- ``plda.npz``: ``mu`` (L,), ``tr`` (L, L), ``psi`` (L,), Kaldi's PLDA: ``tr`` maps
  ``x - mu`` to a space where the within-speaker covariance is the identity and the
  between-speaker covariance is ``diag(psi)``.

D is the embedding's dimension; pyannote checks none of these shapes (a mismatch
fails deep inside numpy on the first file), hence :func:`check_plda`.

No maintained package trains this model without heavy dependencies (speechbrain's
PLDA is the simplified factor-analysis variant inside a whole toolkit, Kaldi needs
its binaries, bob's needs conda), so the two-covariance EM is written here, after
Kaldi's ``PldaEstimator``; the projection is scikit-learn's PCA.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyannote.audio.core.plda import PLDA
from pyannote.audio.utils.hf_hub import download_from_hf_hub
from sklearn.decomposition import PCA

from diartune.corpus import BadInput
from diartune.storage import Storage, is_s3
from diartune.trial.models import hub_reference

PLDA_DIMENSION = 64  # L: held-out EER best among 8-128 (docs/models.md)
BETWEEN_SHRINKAGE = 1.0  # suits a few dozen training speakers
TRANSFORM_FILE = "xvec_transform.npz"
PLDA_FILE = "plda.npz"
_ARRAYS = {TRANSFORM_FILE: ("mean1", "mean2", "lda"), PLDA_FILE: ("mu", "tr", "psi")}


def _length_norm(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm."""
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class XvectorTransform:
    """The VBx recipe's x-vector preprocessing: centering, projection, length normalization.

    Landini et al. (2022), "Bayesian HMM clustering of x-vector sequences (VBx) in
    speaker diarization: theory, implementation and analysis on standard tasks",
    Computer Speech & Language 71; the BUT VBx recipe's ``xvec_transform``. Length
    normalization before PLDA: Garcia-Romero and Espy-Wilson (2011), Interspeech.
    """

    mean1: np.ndarray  # (D,) mean of the embeddings
    mean2: np.ndarray  # (L,) mean of the projections
    lda: np.ndarray  # (D, L) the projection, named as pyannote reads it

    @classmethod
    def fit(cls, embeddings: np.ndarray, dimension: int) -> XvectorTransform:
        """Center, length-normalize, then project on the ``dimension`` main axes, whitened.

        The recipe projects with LDA; with a few dozen training speakers, LDA's axes
        are those that separate these speakers and generalize poorly (held-out EER
        in docs/models.md), so this projection is a PCA (scikit-learn's) and the
        PLDA alone models speakers.
        """
        mean1 = embeddings.mean(axis=0)
        normalized = np.sqrt(embeddings.shape[1]) * _length_norm(embeddings - mean1)
        pca = PCA(dimension, whiten=True, svd_solver="full").fit(normalized)  # not randomized
        projection = pca.components_.T / np.sqrt(pca.explained_variance_)
        mean2 = (normalized @ projection).mean(axis=0)
        return cls(mean1, mean2, projection)

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings as (N, L) PLDA inputs, exactly as pyannote computes them."""
        dimension, reduced = self.lda.shape
        centered = np.sqrt(dimension) * _length_norm(embeddings - self.mean1)
        return np.sqrt(reduced) * _length_norm(centered @ self.lda - self.mean2)


@dataclass(frozen=True)
class TwoCovariancePLDA:
    """Two-covariance PLDA: x = y + e, y ~ N(mean, between) per speaker, e ~ N(0, within).

    Ioffe (2006), "Probabilistic linear discriminant analysis", ECCV; Kenny (2010),
    "Bayesian speaker verification with heavy-tailed priors", Odyssey. Estimated by
    the EM of Kaldi's ``PldaEstimator`` (ivector/plda.cc).
    """

    mean: np.ndarray  # (L,)
    between: np.ndarray  # (L, L)
    within: np.ndarray  # (L, L)

    @classmethod
    def fit(
        cls, features: np.ndarray, speakers: np.ndarray, iterations: int = 10
    ) -> TwoCovariancePLDA:
        """Maximum-likelihood ``between`` and ``within`` by EM, from identity matrices.

        Each speaker's mean of n vectors is modeled as N(mean, between + within / n):
        the EM splits it into its speaker part and its residual, so that speakers with
        few vectors count for what they are worth.
        """
        labels, inverse, counts = np.unique(speakers, return_inverse=True, return_counts=True)
        dimension = features.shape[1]
        means = np.zeros((len(labels), dimension))
        np.add.at(means, inverse, features)
        means /= counts[:, None]
        mean = means.mean(axis=0)
        residuals = features - means[inverse]
        offset_scatter = residuals.T @ residuals
        centered_means = means - mean
        between = within = np.eye(dimension)
        for _ in range(iterations):
            between_inverse = np.linalg.inv(between)
            within_inverse = np.linalg.inv(within)
            between_stats = np.zeros((dimension, dimension))
            within_stats = offset_scatter.copy()
            for count in np.unique(counts):  # speakers with as many vectors share a posterior
                group = centered_means[counts == count]
                posterior = np.linalg.inv(between_inverse + count * within_inverse)
                speaker = group @ (count * within_inverse) @ posterior
                rest = group - speaker
                between_stats += len(group) * posterior + speaker.T @ speaker
                within_stats += count * (len(group) * posterior + rest.T @ rest)
            between = between_stats / len(labels)
            # Residuals give N - K degrees of freedom, the speakers' means one each.
            within = within_stats / len(features)
        return cls(mean, between, within)

    def with_isotropic_between(self, weight: float) -> TwoCovariancePLDA:
        """``between`` moved by ``weight`` (0 to 1) toward the identity times its mean variance.

        A few dozen speakers estimate ``between`` poorly in every direction but its
        overall scale; ``within`` has as many degrees of freedom as vectors.
        """
        isotropic = np.trace(self.between) / len(self.between) * np.eye(len(self.between))
        between = (1 - weight) * self.between + weight * isotropic
        return TwoCovariancePLDA(self.mean, between, self.within)

    def diagonalized(self) -> tuple[np.ndarray, np.ndarray]:
        """Kaldi's ``tr`` and ``psi``: tr @ within @ tr.T = I, tr @ between @ tr.T = diag(psi).

        Rows sorted by decreasing ``psi``.
        """
        values, vectors = np.linalg.eigh(self.within)
        whitening = (vectors / np.sqrt(values)).T
        psi, rotation = np.linalg.eigh(whitening @ self.between @ whitening.T)
        order = np.argsort(psi)[::-1]
        return rotation[:, order].T @ whitening, psi[order]


def train_plda(
    embeddings: np.ndarray,
    speakers: np.ndarray,
    dimension: int = PLDA_DIMENSION,
    between_shrinkage: float = BETWEEN_SHRINKAGE,
) -> tuple[XvectorTransform, TwoCovariancePLDA]:
    """The x-vector transform and the PLDA on its outputs, from labelled embeddings.

    Parameters
    ----------
    embeddings : (N, D) array
        Embeddings of speech of known speakers.
    speakers : (N,) array
        The speaker of each embedding.
    dimension : int
        L, the dimension of the PLDA space.
    between_shrinkage : float
        Weight of the isotropic part of the between-speaker covariance (see
        :meth:`TwoCovariancePLDA.with_isotropic_between`): 1 suits a few dozen
        training speakers, 0 (the plain EM estimate) thousands.
    """
    transform = XvectorTransform.fit(embeddings, dimension)
    plda = TwoCovariancePLDA.fit(transform(embeddings), speakers)
    return transform, plda.with_isotropic_between(between_shrinkage)


def write_plda(folder: Path, transform: XvectorTransform, plda: TwoCovariancePLDA) -> Path:
    """Write the two files of a PLDA folder that ``PLDA.from_pretrained(folder)`` loads."""
    folder.mkdir(parents=True, exist_ok=True)
    tr, psi = plda.diagonalized()
    np.savez(
        folder / TRANSFORM_FILE, mean1=transform.mean1, mean2=transform.mean2, lda=transform.lda
    )
    np.savez(folder / PLDA_FILE, mu=plda.mean, tr=tr, psi=psi)
    return folder


def write_inert_plda(folder: Path) -> Path:
    """Write a PLDA that pyannote loads and VBx cannot use, for pipelines without VBx.

    pyannote's ``SpeakerDiarization`` loads a PLDA whatever its clustering, and
    agglomerative clustering never reads it. This one takes 1-dimensional embeddings,
    so a pipeline switched to VBx fails on its first file (numpy: shapes not aligned)
    instead of clustering with a PLDA that models no speaker.
    """
    zero = np.zeros(1)
    transform = XvectorTransform(mean1=zero, mean2=zero, lda=np.ones((1, 1)))
    return write_plda(folder, transform, TwoCovariancePLDA(zero, np.eye(1), np.eye(1)))


def _arrays(path: Path, shown: str) -> dict[str, np.ndarray]:
    """The arrays pyannote reads from one file of a PLDA folder; BadInput naming it ``shown``."""
    expected = _ARRAYS[path.name]
    if not path.is_file():
        raise BadInput(f"{shown}: missing (a PLDA folder holds {TRANSFORM_FILE} and {PLDA_FILE})")
    try:
        stored = np.load(path)
    except (OSError, ValueError) as error:
        raise BadInput(f"{shown}: not a numpy .npz archive ({error})") from error
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise BadInput(f"{shown}: a single array, not a numpy .npz archive")
    with stored:
        missing = [name for name in expected if name not in stored]
        if missing:
            raise BadInput(f"{shown}: no array {missing} (expected {', '.join(expected)})")
        return {name: stored[name] for name in expected}


def check_plda(folder: Path, dimension: int, source: str | None = None) -> None:
    """Raise BadInput, naming the file, unless ``folder`` is a PLDA for ``dimension``-d embeddings.

    Checks that both files exist with pyannote's arrays, that the transform takes
    embeddings of ``dimension``, and that all shapes agree. A PLDA trained for another
    model of the same dimension passes: only its DER tells. Messages name files under
    ``source`` (the spec's location of the folder, such as an s3:// prefix) when given.
    """
    shown = (source or str(folder)).rstrip("/")
    if not folder.is_dir():
        raise BadInput(f"{shown}: no such PLDA folder")
    transform_file, plda_file = f"{shown}/{TRANSFORM_FILE}", f"{shown}/{PLDA_FILE}"
    transform = _arrays(folder / TRANSFORM_FILE, transform_file)
    plda = _arrays(folder / PLDA_FILE, plda_file)
    lda = transform["lda"]
    if lda.ndim != 2 or transform["mean1"].shape != lda.shape[:1]:
        raise BadInput(f"{transform_file}: lda must be (D, L) and mean1 (D,)")
    if lda.shape[0] != dimension:
        raise BadInput(
            f"{transform_file}: this PLDA takes {lda.shape[0]}-dimensional "
            f"embeddings, the embedding model gives {dimension}"
        )
    reduced = lda.shape[1]
    shapes = {
        "mean2": transform["mean2"].shape,
        "mu": plda["mu"].shape,
        "psi": plda["psi"].shape,
        "tr": plda["tr"].shape,
    }
    expected = {"mean2": (reduced,), "mu": (reduced,), "psi": (reduced,), "tr": (reduced, reduced)}
    wrong = [f"{name} {shapes[name]}" for name in shapes if shapes[name] != expected[name]]
    if wrong:
        raise BadInput(f"{plda_file}: shapes {wrong} do not fit lda's L = {reduced}")
    if not np.all(plda["psi"] > 0):
        raise BadInput(f"{plda_file}: psi must be positive (pyannote divides by it)")


def fetch_plda(uri: str, storage: Storage, cache_dir: Path, token: str | None = None) -> Path:
    """A local folder holding the PLDA at ``uri`` (``spec.pipeline.plda``).

    A local folder is taken as is; an s3:// prefix is mirrored into ``cache_dir`` (once:
    objects are fetched again only when they changed); a hub id ``org/name[@revision]``
    is the ``plda/`` subfolder of that repository, from the Hugging Face cache or the hub.
    """
    if is_s3(uri):
        local = cache_dir / "plda" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        return storage.download_prefix(uri, local)
    reference = hub_reference(uri)
    if reference is None:
        return Path(uri)
    repository, revision = reference
    files = [
        download_from_hf_hub(repository, name, subfolder="plda", revision=revision, token=token)
        for name in (TRANSFORM_FILE, PLDA_FILE)
    ]
    return Path(str(files[0])).parent


def load_plda_folder(folder: Path, dimension: int, source: str | None = None) -> PLDA:
    """pyannote's PLDA from a local folder, checked first against the embedding's dimension
    (see :func:`check_plda` for ``source``)."""
    check_plda(folder, dimension, source)
    plda = PLDA.from_pretrained(str(folder))
    assert plda is not None  # a local folder always loads or raises
    return plda


def load_plda(
    uri: str, storage: Storage, cache_dir: Path, dimension: int, token: str | None = None
) -> tuple[Path, PLDA]:
    """The PLDA at ``uri`` for ``dimension``-d embeddings, and the local folder it came from.

    BadInput names the file at ``uri`` that is missing or does not fit.
    """
    folder = fetch_plda(uri, storage, cache_dir, token)
    return folder, load_plda_folder(folder, dimension, uri)
