"""Models that need no hub, and loading models from disk, S3 or the hub.

``ResemblyzerEmbedding`` is Resemblyzer's pretrained speaker encoder (weights shipped
inside the ``resemblyzer`` wheel: a 3-layer LSTM over 40 mel bands, trained for speaker
verification), rebuilt as a pyannote ``Model`` so that pyannote's pipeline can use it
like any embedding checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import lightning
import torch
import torch.nn.functional as F
from pyannote.audio import Model
from pyannote.audio import __version__ as pyannote_version
from pyannote.audio.core.task import Problem, Resolution, Specifications
from torch import nn
from torchaudio.transforms import MelSpectrogram

from diartune.corpus import BadInput
from diartune.records import Checkpoint
from diartune.storage import Storage, is_s3, sha256_file

_SAMPLE_RATE = 16000
_PARTIAL_FRAMES = 160  # 1.6 s of 10 ms mel frames, as Resemblyzer embeds
_TARGET_DBFS = -30.0  # Resemblyzer normalizes (quieter) speech to this level


class ResemblyzerEmbedding(Model):
    """Resemblyzer's speaker encoder as a pyannote embedding model (256-d, cosine)."""

    def __init__(self, sample_rate: int = _SAMPLE_RATE, num_channels: int = 1, task: Any = None):
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.mel = MelSpectrogram(
            sample_rate=_SAMPLE_RATE,
            n_fft=400,
            hop_length=160,
            n_mels=40,
            norm="slaney",
            mel_scale="slaney",
        )
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        return 256

    def _partials(self, mels: torch.Tensor) -> torch.Tensor:
        """(frames, 40) mels as (partials, 160, 40): back-to-back 1.6 s windows."""
        if mels.shape[0] < _PARTIAL_FRAMES:
            mels = F.pad(mels, (0, 0, 0, _PARTIAL_FRAMES - mels.shape[0]))
        return mels.unfold(0, _PARTIAL_FRAMES, _PARTIAL_FRAMES).transpose(1, 2)

    def forward(  # type: ignore[override]
        self, waveforms: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, 1, samples) waveforms, optional (batch, frames) weights -> (batch, 256).

        Only frames where the weight exceeds 0.5 are embedded; an empty mask gives NaN,
        pyannote's convention for "no embedding". All partials of the batch go through
        the LSTM at once.
        """
        mels = self.mel(waveforms[:, 0]).transpose(1, 2)  # (batch, mel frames, 40)
        partials, owners, empty = [], [], []
        for index, sample in enumerate(mels):
            if weights is not None:
                mask = F.interpolate(weights[index][None, None], size=sample.shape[0])[0, 0]
                sample = sample[mask > 0.5]
            if sample.shape[0] == 0:
                empty.append(index)
                continue
            power = sample.mean().clamp_min(1e-10)
            gain = (10 ** (_TARGET_DBFS / 10) / power).clamp_min(1.0)  # louder only
            chunks = self._partials(sample * gain)
            partials.append(chunks)
            owners.append(torch.full((chunks.shape[0],), index, device=mels.device))
        sums = torch.zeros(len(mels), self.dimension, device=mels.device)
        if partials:
            _, (hidden, _) = self.lstm(torch.cat(partials))
            embedded = F.normalize(torch.relu(self.linear(hidden[-1])), dim=-1)
            sums.index_add_(0, torch.cat(owners), embedded)
        result = F.normalize(sums, dim=-1)
        result[empty] = float("nan")
        return result


def resemblyzer_weights() -> Path:
    """The speaker-encoder weights inside the installed resemblyzer wheel."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("resemblyzer is not installed (scripts/setup.sh installs it)")
    return Path(spec.origin).parent / "pretrained.pt"


def save_checkpoint(model: Model, path: Path) -> Path:
    """Write ``model`` as a checkpoint that ``Model.from_pretrained`` loads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "pyannote.audio": {
            "versions": {"pyannote.audio": pyannote_version},
            "architecture": {
                "module": type(model).__module__,
                "class": type(model).__name__,
            },
            "specifications": model.specifications,
        },
    }
    torch.save(checkpoint, path)
    return path


def build_resemblyzer_checkpoint(path: Path) -> Path:
    """Write Resemblyzer's pretrained encoder as a pyannote embedding checkpoint."""
    model = ResemblyzerEmbedding()
    state = torch.load(resemblyzer_weights(), map_location="cpu")["model_state"]
    model.load_state_dict(state, strict=False)
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION,
        resolution=Resolution.CHUNK,
        duration=3.0,
        min_duration=0.5,
    )
    return save_checkpoint(model, path)


def hub_reference(uri: str) -> tuple[str, str | None] | None:
    """``(repository, revision)`` when ``uri`` names a Hugging Face repository
    (``org/name[@revision]``); None for an s3:// URI or a local path."""
    if is_s3(uri) or Path(uri).exists() or uri.startswith((".", "/")):
        return None
    repository, _, revision = uri.partition("@")
    return repository, revision or None


def fetch_model(uri: str, storage: Storage, cache_dir: Path) -> Path:
    """A local path for the checkpoint at ``uri``, a path or an s3:// URI (downloaded once)."""
    if is_s3(uri):
        local = cache_dir / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        local = local / Path(uri).name
        if not local.exists():
            storage.download(uri, local)
        return local
    return Path(uri)


def verified(uri: str, path: Path, sha256: str) -> Path:
    """``path`` (fetched from ``uri``) if its bytes have the SHA-256 its trial recorded.

    A checkpoint is a pickle: unpickling runs code, so one diartune made is loaded only
    while it is byte for byte what its trial wrote.
    """
    found = sha256_file(path)
    if found != sha256:
        raise BadInput(
            f"{uri}: SHA-256 {found[:16]} is not the {sha256[:16]} its trial recorded; "
            "the checkpoint was changed after it was written, and is not loaded"
        )
    return path


def fetch_checkpoint(checkpoint: Checkpoint, storage: Storage, cache_dir: Path) -> Path:
    """A local copy of a checkpoint diartune made, verified."""
    location = fetch_model(checkpoint.uri, storage, cache_dir)
    if not location.exists():
        raise FileNotFoundError(f"{checkpoint.uri}: no such checkpoint")
    return verified(checkpoint.uri, location, checkpoint.sha256)


def load_model(
    uri: str,
    storage: Storage,
    cache_dir: Path,
    token: str | None = None,
    sha256: str | None = None,
) -> Model:
    """Load a pyannote model from a local path, an s3:// URI or the hub (``org/name[@revision]``
    with ``token``; from the Hugging Face cache with ``HF_HUB_OFFLINE=1``); with ``sha256``,
    only if the file has that digest (a checkpoint diartune made)."""
    reference = hub_reference(uri)
    if reference is not None:
        if sha256 is not None:
            raise BadInput(f"{uri}: a checkpoint of this tuning must be a file or s3:// URI")
        repository, revision = reference
        model = Model.from_pretrained(repository, revision=revision, token=token, strict=False)
    else:
        location = fetch_model(uri, storage, cache_dir)
        if not location.exists():
            raise FileNotFoundError(f"{uri}: no such model checkpoint")
        if sha256 is not None:
            verified(uri, location, sha256)
        model = Model.from_pretrained(location, strict=False)
    if model is None:
        raise FileNotFoundError(f"{uri}: could not load this model from the hub")
    return model
