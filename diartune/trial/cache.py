"""A persistent cache of segmentation outputs and embeddings, shared by trials.

pyannote's pipeline, when ``training`` is on, reuses what it finds under
``training_cache/*`` in each file's dict. This cache fills those keys before a run
and saves them after, keyed by everything they depend on: the segmentation and
embedding checkpoints (by content hash), the file (URI and audio hash), the versions
of pyannote.audio and diartune that computed them and, for models that are not
powerset, the segmentation threshold. Clustering-stage trials then skip the two
expensive steps. Entries live under a local folder or an S3 prefix.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.core import SlidingWindow, SlidingWindowFeature

from diartune.storage import MissingObject, Storage, join

SEGMENTATION = "training_cache/segmentation"
EMBEDDINGS = "training_cache/embeddings"

#: The code behind an entry: a tuning resumed after an upgrade recomputes what it reuses.
CODE_VERSIONS = {package: version(package) for package in ("pyannote.audio", "diartune")}


class FeatureCache:
    """Segmentations and embeddings of files under one pipeline setting."""

    def __init__(self, location: str, storage: Storage, scratch: Path, identity: dict[str, Any]):
        self.location = location
        self.storage = storage
        self.scratch = scratch
        self.identity = json.dumps({**identity, "code": CODE_VERSIONS}, sort_keys=True)
        self.hits = 0
        self.misses = 0

    def _uri(self, file: dict[str, Any]) -> str:
        audio = file["waveform"].numpy().tobytes()
        key = hashlib.sha256(
            self.identity.encode() + file["uri"].encode() + hashlib.sha256(audio).digest()
        ).hexdigest()
        return join(self.location, key[:2], f"{key}.npz")

    def load(self, file: dict[str, Any]) -> bool:
        """Fill the file's pyannote cache keys; False when nothing is cached for it."""
        uri = self._uri(file)
        local = self.scratch / Path(uri).name
        try:
            self.storage.download(uri, local)
        except (MissingObject, FileNotFoundError):
            self.misses += 1
            return False
        try:
            with np.load(local) as stored:
                window = SlidingWindow(*stored["window"].tolist())
                entries: dict[str, Any] = {
                    SEGMENTATION: SlidingWindowFeature(stored["segmentation"], window)
                }
                if "embeddings" in stored:
                    embeddings = {"embeddings": stored["embeddings"]}
                    if "threshold" in stored:
                        embeddings["segmentation.threshold"] = float(stored["threshold"])
                    entries[EMBEDDINGS] = embeddings
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.misses += 1  # a damaged entry is recomputed and overwritten, never trusted
            return False
        file.update(entries)
        self.hits += 1
        return True

    def save(self, file: dict[str, Any]) -> None:
        """Store what the pipeline computed for the file."""
        segmentation: SlidingWindowFeature = file[SEGMENTATION]
        window = segmentation.sliding_window
        arrays = {
            "segmentation": segmentation.data,
            "window": np.array([window.duration, window.step, window.start]),
        }
        # Without speech the pipeline stops before computing embeddings.
        if EMBEDDINGS in file:
            arrays["embeddings"] = file[EMBEDDINGS]["embeddings"]
            if "segmentation.threshold" in file[EMBEDDINGS]:
                arrays["threshold"] = np.array(file[EMBEDDINGS]["segmentation.threshold"])
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        local = self.scratch / "upload.npz"
        local.write_bytes(buffer.getvalue())
        self.storage.upload(local, self._uri(file))
