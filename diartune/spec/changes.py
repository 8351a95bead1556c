"""What may change while a tuning runs, and which spec a tuning follows after a change.

The rule, as in Katib: ``parallelTrialCount``, ``maxFailedTrialCount``, ``suspend``,
``trialTemplate`` and each stage's ``maxTrialCount``, ``resources`` and ``trialsPerPod`` may
change; anything else makes a different tuning. The spec accepted when the tuning started is
kept (the operator in an annotation, ``diartune tune`` in its output folder); a later spec
contributes its changeable fields, and any other change is refused with the fields it
touched named. Both drivers apply this one rule.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic.alias_generators import to_camel

from diartune.spec.file import parse_spec
from diartune.spec.model import Spec, SpecError

MUTABLE_FIELDS = ("parallel_trial_count", "max_failed_trial_count", "suspend", "trial_template")
MUTABLE_KEYS = tuple(to_camel(name) for name in MUTABLE_FIELDS)
#: What may change in each stage (by name).
STAGE_MUTABLE_KEYS = ("maxTrialCount", "resources", "trialsPerPod")
ALLOWED = (
    "parallelTrialCount, maxTrialCount, maxFailedTrialCount, suspend, trialTemplate and "
    "a stage's resources and trialsPerPod"
)


def fixed_part(spec: Spec) -> dict[str, Any]:
    """The spec without the fields that may change during a tuning (as JSON)."""
    document = spec.model_dump(mode="json", by_alias=True, exclude=set(MUTABLE_FIELDS))
    for stage in document["stages"]:
        for key in STAGE_MUTABLE_KEYS:
            del stage[key]
    return document


def _with_mutable_fields(accepted: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(accepted)
    for key in MUTABLE_KEYS:
        if key in current:
            merged[key] = copy.deepcopy(current[key])
        else:
            merged.pop(key, None)
    stages = {
        stage.get("name"): stage for stage in current.get("stages") or [] if isinstance(stage, dict)
    }
    for stage in merged.get("stages") or []:
        now = stages.get(stage.get("name"))
        if now is None:
            continue
        for key in STAGE_MUTABLE_KEYS:
            if now.get(key) is not None:
                stage[key] = copy.deepcopy(now[key])
            elif key != "maxTrialCount":  # required: the accepted count stays
                stage.pop(key, None)
    return merged


def accepted_part(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of the spec it accepted (in an annotation): the spec without
    the fields that may change, which are always taken from the current spec (``resolve``),
    so that no trialTemplate (its env included) is copied into an annotation."""
    return {key: value for key, value in spec.items() if key not in MUTABLE_KEYS}


def check_accepted(document: Any, source: str = "spec") -> dict[str, Any]:
    """A saved accepted spec (``accepted_part``, or a whole spec), once checked; SpecError,
    naming the field, when it is not one (edited by hand). Its trialTemplate is not
    checked: ``resolve`` always takes the current spec's."""
    parse_spec(
        {**document, "trialTemplate": {}} if isinstance(document, dict) else document, source
    )
    return dict(document)


def differences(old: Any, new: Any, path: str = "spec") -> list[str]:
    """The paths where two JSON documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += differences(old.get(key), new.get(key), f"{path}.{key}")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            change
            for index, (a, b) in enumerate(zip(old, new, strict=True))
            for change in differences(a, b, f"{path}[{index}]")
        ]
    return [] if old == new else [path]


def resolve(
    accepted: dict[str, Any], current: dict[str, Any], previous: Spec | None = None
) -> tuple[Spec, str | None]:
    """The spec to run (accepted, plus the current changeable fields) and why, if at all,
    part of the current spec is refused. An invalid update keeps ``previous``, the spec
    that ran until now (else the accepted one)."""
    try:
        merged = parse_spec(_with_mutable_fields(accepted, current))
    except SpecError as error:
        kept = previous or parse_spec(accepted)
        return kept, f"the update is not valid, the previous spec is kept: {error}"
    try:
        wanted = parse_spec(current)
    except SpecError as error:
        return merged, f"the update is not valid: {error}"
    changed = differences(fixed_part(parse_spec(accepted)), fixed_part(wanted))
    if changed:
        return merged, (
            f"only {ALLOWED} may change while a tuning runs; refused changes to "
            f"{', '.join(changed)}"
        )
    return merged, None
