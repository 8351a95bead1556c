"""The feature cache reuses an entry only under the identity and code that computed it."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pyannote.core import SlidingWindow, SlidingWindowFeature

from diartune.storage import Storage
from diartune.trial import cache as feature_cache
from diartune.trial.cache import SEGMENTATION, FeatureCache

IDENTITY = {"segmentation": "digest-a", "embedding": "digest-b"}


def computed_file() -> dict[str, Any]:
    """A file as the pipeline leaves it: audio plus its segmentation."""
    scores = np.random.default_rng(0).random((3, 10, 2)).astype(np.float32)
    return {
        "uri": "dev00",
        "waveform": torch.zeros(1, 16000),
        SEGMENTATION: SlidingWindowFeature(scores, SlidingWindow(duration=5.0, step=0.5)),
    }


def fresh(file: dict[str, Any]) -> dict[str, Any]:
    return {"uri": file["uri"], "waveform": file["waveform"]}


def open_cache(tmp_path: Path, identity: dict[str, Any] = IDENTITY) -> FeatureCache:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return FeatureCache(str(tmp_path / "cache"), Storage(), scratch, identity)


def test_an_entry_is_reused_under_the_same_identity(tmp_path: Path) -> None:
    file = computed_file()
    open_cache(tmp_path).save(file)
    again = fresh(file)
    assert open_cache(tmp_path).load(again)
    np.testing.assert_array_equal(again[SEGMENTATION].data, file[SEGMENTATION].data)


def test_other_models_miss(tmp_path: Path) -> None:
    open_cache(tmp_path).save(computed_file())
    other = open_cache(tmp_path, {**IDENTITY, "embedding": "digest-c"})
    assert not other.load(fresh(computed_file()))


@pytest.mark.parametrize("package", ["pyannote.audio", "diartune"])
def test_entries_of_another_code_version_are_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str
) -> None:
    open_cache(tmp_path).save(computed_file())
    monkeypatch.setitem(feature_cache.CODE_VERSIONS, package, "0.0.0-upgraded")
    upgraded = open_cache(tmp_path)
    assert not upgraded.load(fresh(computed_file()))
    assert upgraded.misses == 1
