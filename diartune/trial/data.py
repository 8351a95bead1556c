"""Data of a trial: fetch the pyannote.database corpus, load a protocol, check its files."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any

from pyannote.audio import Audio
from pyannote.database import FileFinder, registry
from pyannote.database.util import load_rttm

from diartune.database import declared_file
from diartune.spec import Data
from diartune.storage import MissingObject, Storage, is_s3


class BadInput(ValueError):
    """Input that no retry can fix: the message names the file or field at fault."""


def fetch_database(data: Data, storage: Storage, cache_dir: Path) -> Path:
    """A local database.yml for ``data.database``: S3 prefixes are mirrored into the cache."""
    if not is_s3(data.database):
        path = Path(data.database)
        if not path.is_file():
            raise BadInput(f"spec.data.database: {path}: no such file")
        return path.resolve()
    prefix, _, name = data.database.rpartition("/")
    local = cache_dir / "data" / hashlib.sha256(prefix.encode()).hexdigest()[:16]
    try:
        storage.download_prefix(prefix, local)
    except MissingObject as error:
        raise BadInput(f"spec.data.database: {error}") from error
    if not (local / name).is_file():
        raise BadInput(f"spec.data.database: {data.database}: no such object")
    return local / name


def load_protocol(database: Path, name: str) -> Any:
    """The pyannote.database protocol ``name`` defined in ``database``."""
    try:
        registry.load_database(str(database))
        return registry.get_protocol(name, preprocessors={"audio": FileFinder()})
    except Exception as error:  # pyannote.database raises many kinds
        raise BadInput(f"spec.data.protocol: {name!r} in {database}: {error}") from error


def subset_files(
    protocol: Any, database: Path, subset: str, load: bool = True
) -> list[dict[str, Any]]:
    """The files of ``subset``, each checked and, with ``load``, decoded into memory.

    Raises BadInput naming the file when audio is missing, cannot be decoded or is
    empty, or when the subset's RTTM names URIs that have no audio.
    """
    try:
        files = list(getattr(protocol, subset)())
    except Exception as error:
        raise BadInput(f"{protocol.name}: cannot read its {subset} subset: {error}") from error
    if not files:
        raise BadInput(f"{protocol.name}: the {subset} subset has no files")
    rttm = declared_file(database, protocol.name, subset, "annotation")
    if rttm is not None and rttm.is_file():
        known = {unicodedata.normalize("NFC", file["uri"]) for file in files}
        orphans = sorted(
            uri for uri in load_rttm(rttm) if unicodedata.normalize("NFC", uri) not in known
        )
        if orphans:
            raise BadInput(f"{rttm}: URIs that match no audio of the {subset} subset: {orphans}")
    audio = Audio(sample_rate=16000, mono="downmix")
    loaded = []
    for file in files:
        uri = file["uri"]
        try:
            path = file["audio"]
        except Exception as error:  # FileFinder raises when no file matches
            raise BadInput(f"{uri}: audio file not found ({error})") from error
        try:
            if load:
                waveform, sample_rate = audio(path)
                empty = waveform.numel() == 0
            else:
                empty = audio.get_duration(path) <= 0
        except Exception as error:
            raise BadInput(f"{path}: unreadable audio ({error})") from error
        if empty:
            raise BadInput(f"{path}: the audio is empty (0 samples)")
        entry = {"uri": uri, "audio": str(path)}
        if load:
            entry |= {
                "waveform": waveform,
                "sample_rate": sample_rate,
                "annotation": file["annotation"],
                "annotated": file["annotated"],
            }
        loaded.append(entry)
    return loaded
