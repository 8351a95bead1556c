"""The DiarizationTuning model: what it accepts, and how it names what it refuses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from diartune.spec.file import load_tuning, parse_tuning
from diartune.spec.model import SpecError

EXAMPLES = Path(__file__).parent.parent / "examples"


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "ems"},
        "spec": {
            "data": {"database": "db.yml", "protocol": "EMS.SpeakerDiarization.Dispatch"},
            "pipeline": {"segmentation": "seg.ckpt", "embedding": "emb.ckpt"},
            "stages": [
                {
                    "name": "clustering",
                    "searchSpace": {
                        "clustering.threshold": {"type": "float", "low": 0.3, "high": 1.3},
                    },
                    "maxTrialCount": 5,
                }
            ],
        },
    }


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as error:
        parse_tuning(document, "t.yaml")
    return str(error.value)


def with_change(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(minimal())
    *parents, last = path.split("/")
    node = document
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    return document


def test_minimal_spec_gets_defaults() -> None:
    tuning = parse_tuning(minimal())
    assert tuning.spec.pipeline.clustering == "AgglomerativeClustering"
    assert tuning.spec.optimizer.seed == 0
    assert tuning.spec.parallel_trial_count == 1
    assert tuning.spec.objective.collar == 0.0


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    assert load_tuning(example).kind == "DiarizationTuning"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec/data/databse", "x", "t.yaml: spec.data.databse: unknown field"),
        (
            "spec/parallelTrialCount",
            "four",
            "spec.parallelTrialCount: Input should be a valid integer",
        ),
        (
            "spec/parallelTrialCount",
            0,
            "spec.parallelTrialCount: Input should be greater than or equal to 1",
        ),
        ("spec/data/protocol", "EMS", "spec.data.protocol: String should match pattern"),
        (
            "spec/stages/0/searchSpace/clustering.threshold",
            {"type": "float", "low": 1.3, "high": 0.3},
            "clustering.threshold: low (1.3) must be less than high (0.3)",
        ),
        (
            "spec/stages/0/searchSpace/clustering.threshold",
            {"type": "float", "low": 0.0, "high": 1.0, "log": True},
            "a log scale needs low > 0, got low = 0.0",
        ),
        (
            "spec/stages/0/searchSpace/clustering.method",
            {"type": "categorical", "choices": []},
            "searchSpace.clustering.method.choices: List should have at least 1 item",
        ),
        (
            "spec/stages/0/searchSpace/clustering.Fa",
            {"type": "float", "low": 0.01, "high": 0.5},
            "searchSpace.clustering.Fa: AgglomerativeClustering has no parameter 'Fa'",
        ),
        (
            "spec/stages/0/searchSpace/clustering.method",
            {"type": "categorical", "choices": ["average", "kmeans"]},
            "unsupported values ['kmeans']",
        ),
        (
            "spec/stages/0/searchSpace/training.learning_rate",
            {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "searchSpace.training.learning_rate: training.* parameters need fineTune",
        ),
        (
            "spec/stages/0/searchSpace/clustering.tresh",
            {"type": "float", "low": 0.1, "high": 1.0},
            "spec.stages[0].searchSpace.clustering.tresh: unknown parameter",
        ),
        (
            "spec/stages/0/searchSpace/clustering.threshold",
            {"type": "normal", "low": 0.1, "high": 1.0},
            "spec.stages[0].searchSpace.clustering.threshold: Input tag 'normal'",
        ),
        (
            "spec/pipeline/clustering",
            "VBxClustering",
            "spec.pipeline.plda: VBxClustering needs a PLDA",
        ),
        ("apiVersion", "diartune.io/v1", "apiVersion: Input should be 'diartune.io/v1alpha1'"),
        ("metadata/name", "Bad_Name", "metadata.name: String should match pattern"),
    ],
)
def test_bad_input_names_the_field(path: str, value: Any, expected: str) -> None:
    assert expected in refused(with_change(path, value))


def test_a_parameter_tuned_in_two_stages_is_refused() -> None:
    document = minimal()
    document["spec"]["stages"].append(copy.deepcopy(document["spec"]["stages"][0]))
    document["spec"]["stages"][1]["name"] = "again"
    assert "spec.stages[1].searchSpace.clustering.threshold: already tuned in stage" in refused(
        document
    )


def test_every_problem_is_reported_at_once() -> None:
    document = with_change("spec/parallelTrialCount", -1)
    document["spec"]["maxFailedTrialCount"] = "many"
    message = refused(document)
    assert "spec.parallelTrialCount" in message and "spec.maxFailedTrialCount" in message


def test_missing_file_and_bad_yaml_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: no such file"):
        load_tuning(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_tuning(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(SpecError, match="expected a DiarizationTuning mapping"):
        load_tuning(listed)
