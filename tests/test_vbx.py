"""VBx tunings on one machine: threshold, Fa and Fb tuned with the offline PLDA, and a
PLDA that does not fit the embedding refused before any trial runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import PROTOCOL, VBX_SPACE, copy_ami

from diartune.cli import main
from diartune.trial.plda import PLDA_FILE, TRANSFORM_FILE, train_plda, write_plda

pytestmark = pytest.mark.integration


def vbx_spec(database: Path, models: tuple[Path, Path], plda: Path, trials: int) -> dict[str, Any]:
    """A clustering-only VBx tuning of threshold, Fa and Fb."""
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "vbx"},
        "spec": {
            "data": {"database": str(database), "protocol": PROTOCOL},
            "pipeline": {
                "segmentation": str(models[0]),
                "embedding": str(models[1]),
                "clustering": "VBxClustering",
                "plda": str(plda),
            },
            "stages": [{"name": "clustering", "searchSpace": VBX_SPACE, "maxTrialCount": trials}],
            "optimizer": {"seed": 0, "initialDesignSize": 2},
            "parallelTrialCount": 2,
        },
    }


def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "vbx.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_vbx_tuning_tunes_threshold_fa_and_fb_and_exports_a_pipeline_that_runs(
    models: tuple[Path, Path], offline_plda: Path, tmp_path: Path
) -> None:
    database = copy_ami(tmp_path / "ami", test_subset=True)
    output = tmp_path / "out"
    path = write(tmp_path, vbx_spec(database, models, offline_plda, 4))
    done = subprocess.run(
        [sys.executable, "-m", "diartune", "tune", str(path), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    trials = json.loads((output / "trials.json").read_text())
    search = sorted((t for t in trials if t["number"] >= 0), key=lambda t: t["number"])
    failed = [(t["name"], t.get("message")) for t in trials if t["state"] != "Succeeded"]
    assert len(search) == 4 and not failed, failed
    # pyannote's VBx defaults first, then three other points of the space.
    assert search[0]["params"] == {
        "clustering.threshold": 0.6,
        "clustering.Fa": 0.07,
        "clustering.Fb": 0.8,
    }
    assert len({tuple(sorted(t["params"].items())) for t in search}) == 4
    assert all(0 < t["der"] < 2 for t in search)

    summary = json.loads((output / "summary.json").read_text())
    exported = output / "pipeline"
    config = yaml.safe_load((exported / "config.yaml").read_text())
    assert config["pipeline"]["params"]["clustering"] == "VBxClustering"
    for name in (TRANSFORM_FILE, PLDA_FILE):
        assert (exported / "plda" / name).read_bytes() == (offline_plda / name).read_bytes()

    from pyannote.audio import Pipeline

    pipeline = Pipeline.from_pretrained(exported)
    tuned = pipeline.parameters(instantiated=True)["clustering"]
    for name in ("threshold", "Fa", "Fb"):
        assert tuned[name] == pytest.approx(summary["bestParams"][f"clustering.{name}"])
    audio = database.parent / "dev00.wav"
    diarization = pipeline({"uri": "dev00", "audio": str(audio)}).speaker_diarization
    assert diarization.labels(), "the exported VBx pipeline found no speaker"


@pytest.fixture
def plda_for_16_dimensions(tmp_path: Path) -> Path:
    """A valid PLDA folder, for 16-dimensional embeddings (the offline embedding has 256)."""
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(10), 4)
    embeddings = rng.normal(size=(10, 16))[speakers] + 0.1 * rng.normal(size=(40, 16))
    return write_plda(tmp_path / "plda16", *train_plda(embeddings, speakers, dimension=6))


def test_a_plda_of_another_dimension_stops_tune_and_validate_before_any_trial(
    models: tuple[Path, Path],
    plda_for_16_dimensions: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = copy_ami(tmp_path / "ami")
    path = write(tmp_path, vbx_spec(database, models, plda_for_16_dimensions, 2))
    expected = (
        f"diartune: {plda_for_16_dimensions / TRANSFORM_FILE}: this PLDA takes 16-dimensional "
        "embeddings, the embedding model gives 256\n"
    )
    output = tmp_path / "out"
    assert main(["tune", str(path), "--output", str(output)]) == 2
    assert capsys.readouterr().err == expected
    assert not output.exists()  # no trial ran, nothing was written

    assert main(["validate", str(path)]) == 0  # the spec itself is valid
    capsys.readouterr()
    assert main(["validate", "--models", str(path)]) == 2
    assert capsys.readouterr().err == expected

    (plda_for_16_dimensions / PLDA_FILE).unlink()
    assert main(["tune", str(path), "--output", str(output)]) == 2
    assert capsys.readouterr().err == (
        f"diartune: {plda_for_16_dimensions / PLDA_FILE}: missing (a PLDA folder holds "
        f"{TRANSFORM_FILE} and {PLDA_FILE})\n"
    )
