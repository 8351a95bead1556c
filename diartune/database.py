"""What a pyannote.database configuration (database.yml) declares, read as plain YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUBSETS = ("train", "development", "test")


def _protocol_entry(database: Path, protocol: str) -> dict[str, Any]:
    config = yaml.safe_load(database.read_text(encoding="utf-8")) or {}
    corpus, task, name = protocol.split(".")
    entry = config.get("Protocols", {}).get(corpus, {}).get(task, {}).get(name, {})
    return entry if isinstance(entry, dict) else {}


def declared_subsets(database: Path, protocol: str) -> list[str]:
    """The subsets (train, development, test) that ``protocol`` declares, in that order."""
    entry = _protocol_entry(database, protocol)
    return [subset for subset in SUBSETS if isinstance(entry.get(subset), dict)]


def declared_file(database: Path, protocol: str, subset: str, key: str) -> Path | None:
    """The file declared under ``key`` (uri, annotation, annotated) for a subset, if any."""
    value = (_protocol_entry(database, protocol).get(subset) or {}).get(key)
    return (database.parent / value) if value else None
