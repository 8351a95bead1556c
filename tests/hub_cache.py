"""A Hugging Face cache in the hub's own layout, made offline.

What ``huggingface_hub`` leaves in ``$HF_HUB_CACHE`` after downloading a model repository,
so that hub ids (``org/name``, ``org/name@<commit>``) load with ``HF_HUB_OFFLINE=1``::

    models--<org>--<name>/
        blobs/<sha256 of the file>
        snapshots/<commit>/<path>   -> ../../blobs/<sha256>  (relative symlinks)
        refs/main                   <commit>
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from diartune.storage import sha256_file


def add_repository(cache: Path, repository: str, files: dict[str, Path]) -> str:
    """Store ``files`` (path in the repository -> local file) as the ``main`` revision of
    the model repository ``repository`` in the cache folder ``cache``; return its commit."""
    root = cache / f"models--{repository.replace('/', '--')}"
    blobs = {name: sha256_file(source) for name, source in sorted(files.items())}
    commit = hashlib.sha1(repr(sorted(blobs.items())).encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for name, blob in blobs.items():
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[name], root / "blobs" / blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "blobs" / blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return commit
