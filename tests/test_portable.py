"""Hub ids offline, and a tuned pipeline that stock pyannote loads without diartune.

A trial takes its models as hub ids from a Hugging Face cache in the hub's own layout
(``HF_HUB_OFFLINE=1``); the pipeline it exports is loaded with
``pyannote.audio.Pipeline.from_pretrained`` by an interpreter that cannot import
diartune, and must diarize exactly as the trial did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import PROTOCOL, result_line, run_trial
from hub_cache import add_repository
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.models.embedding import XVectorMFCC

from diartune.trial.models import save_checkpoint
from diartune.trial.plda import train_plda, write_plda

pytestmark = pytest.mark.integration

#: Runs with ``python -I`` (no PYTHONPATH, no script folder on sys.path); diartune's
#: editable install stays reachable through its finder, so imports of it are refused.
WITHOUT_DIARTUNE = """
import importlib.abc, sys

class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "diartune":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hidden())
from pathlib import Path
from pyannote.audio import Pipeline

pipeline = Pipeline.from_pretrained(sys.argv[1])
with open(sys.argv[2], "w", encoding="utf-8") as rttm:
    for audio in sys.argv[3:]:
        output = pipeline({"uri": Path(audio).stem, "audio": audio})
        output.speaker_diarization.write_rttm(rttm)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] == "diartune")
print(type(pipeline).__module__, *loaded)
"""


def stock_embedding(path: Path) -> Path:
    """An x-vector embedding of pyannote's own architecture (random weights: what
    matters here is that only pyannote is needed to load it), 256-dimensional."""
    torch.manual_seed(0)
    model = XVectorMFCC(dimension=256)
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=3.0
    )
    return save_checkpoint(model, path)


def random_plda(folder: Path) -> Path:
    """A PLDA for 256-dimensional embeddings, trained on random vectors: it loads."""
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(40), 5)
    embeddings = rng.normal(size=(40, 256))[speakers] + rng.normal(size=(200, 256))
    return write_plda(folder, *train_plda(embeddings, speakers, dimension=16))


def speakers(rttm: list[str]) -> dict[str, list[list[str]]]:
    """Each file's diarization as its speakers' turns, whatever the speakers are called.

    The trial's files carry their reference, so pyannote names its speakers after the
    reference's (optimal mapping); without one it names them SPEAKER_00, ... Every field of
    each line but the speaker's name must match, and each speaker's turns exactly.
    """
    turns: dict[str, dict[str, list[str]]] = {}
    for line in rttm:
        fields = line.split()
        label = fields.pop(7)
        turns.setdefault(fields[1], {}).setdefault(label, []).append(" ".join(fields))
    return {uri: sorted(sorted(t) for t in by.values()) for uri, by in turns.items()}


@pytest.fixture(scope="module")
def hub_cache(models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``diartune-test/segmentation`` (the offline PyanNet) and ``diartune-test/xvector``
    (a stock x-vector and, in ``plda/``, a PLDA for it) in a Hugging Face cache."""
    folder = tmp_path_factory.mktemp("hub")
    cache = folder / "cache"
    add_repository(cache, "diartune-test/segmentation", {"pytorch_model.bin": models[0]})
    plda = random_plda(folder / "plda")
    files = {
        "pytorch_model.bin": stock_embedding(folder / "xvector.ckpt"),
        "plda/xvec_transform.npz": plda / "xvec_transform.npz",
        "plda/plda.npz": plda / "plda.npz",
    }
    (folder / "commit").write_text(add_repository(cache, "diartune-test/xvector", files))
    return cache


@pytest.mark.parametrize(
    ("clustering", "params"),
    [
        ("AgglomerativeClustering", {"clustering.threshold": 0.3, "clustering.method": "average"}),
        ("VBxClustering", {"clustering.threshold": 0.4, "clustering.Fa": 0.1}),
    ],
)
def test_hub_ids_load_offline_and_the_export_runs_without_diartune(
    clustering: str,
    params: dict[str, float | str],
    ami: Path,
    hub_cache: Path,
    tmp_path: Path,
) -> None:
    commit = (hub_cache.parent / "commit").read_text()
    embedding = f"diartune-test/xvector@{commit}"
    pipeline = {"segmentation": "diartune-test/segmentation", "embedding": embedding}
    if clustering == "VBxClustering":
        pipeline |= {"clustering": clustering, "plda": embedding}
    request = {
        "name": "hub",
        "stage": "clustering",
        "export": True,
        "data": {"database": str(ami), "protocol": PROTOCOL},
        "pipeline": pipeline,
        "params": params,
        "output": str(tmp_path / "artifacts"),
    }
    offline = {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    code, output = run_trial(request, tmp_path, **offline)
    assert code == 0, output[-3000:]
    assert result_line(output)["der"] > 0

    exported = tmp_path / "artifacts" / "pipeline"
    config = yaml.safe_load((exported / "config.yaml").read_text())
    assert (
        config["pipeline"]["name"]
        == "pyannote.audio.pipelines.speaker_diarization.SpeakerDiarization"
    )
    assert config["pipeline"]["params"]["clustering"] == clustering
    audio = [str(ami.parent / f"{uri}.wav") for uri in ("dev00", "dev01")]
    rttm = tmp_path / "alone.rttm"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    alone = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_DIARTUNE, str(exported), str(rttm), *audio],
        capture_output=True,
        text=True,
        env={**environment, "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false"},
        cwd=tmp_path,
        timeout=900,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert alone.stdout.splitlines()[-1] == "pyannote.audio.pipelines.speaker_diarization"
    in_trial = (tmp_path / "artifacts" / "hypothesis.rttm").read_text().splitlines()
    assert speakers(rttm.read_text().splitlines()) == speakers(in_trial)
    assert {line.split()[1] for line in in_trial} == {"dev00", "dev01"}
