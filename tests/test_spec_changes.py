"""What may change while a tuning runs: one rule for ``diartune tune`` and the operator."""

from __future__ import annotations

import copy
from typing import Any

from diartune.spec.changes import fixed_part, resolve
from diartune.spec.model import Spec

DOCUMENT: dict[str, Any] = {
    "data": {"database": "s3://corpus/ami/database.yml", "protocol": "A.SpeakerDiarization.B"},
    "pipeline": {"segmentation": "s3://models/seg.ckpt", "embedding": "s3://models/emb.ckpt"},
    "stages": [
        {
            "name": "clustering",
            "searchSpace": {"clustering.threshold": {"type": "float", "low": 0.1, "high": 1}},
            "maxTrialCount": 4,
        }
    ],
    "parallelTrialCount": 1,
}


def document(**overrides: Any) -> dict[str, Any]:
    return copy.deepcopy(DOCUMENT) | overrides


def test_the_fixed_part_ignores_what_may_change() -> None:
    changed = document(parallelTrialCount=4, suspend=True, trialTemplate={"image": "other:1"})
    changed["stages"][0]["maxTrialCount"] = 50
    changed["stages"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    changed["stages"][0]["trialsPerPod"] = 2
    base = Spec.model_validate(document())
    assert fixed_part(base) == fixed_part(Spec.model_validate(changed))
    assert fixed_part(base) != fixed_part(Spec.model_validate(document(optimizer={"seed": 3})))


def test_changeable_fields_apply_and_others_are_refused_by_name() -> None:
    changed = document(parallelTrialCount=3, optimizer={"seed": 4})
    changed["stages"][0]["maxTrialCount"] = 9
    changed["stages"][0]["resources"] = {"limits": {"memory": "32Gi"}}
    changed["stages"][0]["trialsPerPod"] = 2
    spec, refused = resolve(document(), changed)
    assert spec.parallel_trial_count == 3
    assert spec.stages[0].max_trial_count == 9 and spec.stages[0].pod_size == 2
    assert spec.stages[0].resources.limits == {"memory": "32Gi"}
    assert spec.optimizer.seed == 0
    assert refused is not None and "spec.optimizer.seed" in refused


def test_suspend_and_trial_template_may_change() -> None:
    template = {"image": "registry.local/trial:2", "env": [{"name": "A", "value": "1"}]}
    spec, refused = resolve(document(), document(suspend=True, trialTemplate=template))
    assert refused is None
    assert spec.suspend and spec.trial_template.image == "registry.local/trial:2"


def test_an_invalid_update_keeps_the_previous_spec() -> None:
    spec, refused = resolve(document(), document(parallelTrialCount=0))
    assert spec.parallel_trial_count == 1
    assert refused is not None and "not valid" in refused


def test_an_invalid_update_keeps_the_changes_that_ran_until_then() -> None:
    running, _ = resolve(document(), document(parallelTrialCount=3, suspend=True))
    spec, refused = resolve(document(), document(parallelTrialCount=0), running)
    assert (spec.parallel_trial_count, spec.suspend) == (3, True)
    assert refused is not None and "previous spec is kept" in refused
