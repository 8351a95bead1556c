"""Named starting points of ``diartune simulate``: a ``source`` and an ``ems`` domain.

A preset is a set of option values (YAML keys, as in docs/simulate.md) that a caller's
own options are merged onto: ``merge_options(preset_options("ems"), mine)``. Sources,
splits, protocol and seed always come from the caller.
"""

from __future__ import annotations

import copy
from types import UnionType
from typing import Any, Literal, get_args

from pydantic import BaseModel

from diartune.simulate.options import SimulationOptions

PresetName = Literal["source", "ems"]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)

_PRESETS: dict[PresetName, dict[str, Any]] = {
    # Meeting-like: clean, mildly reverberant, long turns, little overlap, 2-3 speakers.
    "source": {
        "conversation": {
            "speakers": {2: 0.6, 3: 0.4},
            "turnSeconds": [2.0, 8.0],
            "pauseSeconds": [0.2, 1.0],
            "overlapProbability": 0.1,
            "overlapSeconds": [0.2, 0.6],
            "speakerGainDb": [-3.0, 3.0],
        },
        "noise": None,
        "reverb": {"probability": 0.5, "rt60Seconds": [0.15, 0.35], "drrDb": [5.0, 15.0]},
        "radio": None,
    },
    # The ambulance: engine always, sirens and squelch often, loud, reverberant, short
    # overlapping turns of 2-4 speakers near and far, a dispatcher on the radio in half.
    "ems": {
        "conversation": {
            "speakers": {2: 0.2, 3: 0.4, 4: 0.4},
            "turnSeconds": [0.5, 3.0],
            "pauseSeconds": [0.1, 0.8],
            "overlapProbability": 0.45,
            "overlapSeconds": [0.2, 1.0],
            "speakerGainDb": [-12.0, 6.0],
        },
        "noise": {
            "probability": {"engine": 1.0, "siren": 0.6, "squelch": 0.6},
            "snrDb": [0.0, 12.0],
        },
        "reverb": {"probability": 0.8, "rt60Seconds": [0.3, 0.8], "drrDb": [-3.0, 6.0]},
        "radio": {
            "probability": 0.5,
            "bandHz": [300.0, 3400.0],
            "clipDb": 3.0,
            "squelchSeconds": [0.1, 0.25],
            "squelchDb": 0.0,
        },
    },
}


def preset_options(name: PresetName) -> dict[str, Any]:
    """The option values of preset ``name`` (a fresh copy, camelCase keys)."""
    return copy.deepcopy(_PRESETS[name])


def _group(model: type[BaseModel], key: str) -> tuple[str, type[BaseModel] | None]:
    """``key`` as its YAML alias, and the options model of its group (None for a value)."""
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            union = isinstance(field.annotation, UnionType)  # Noise | None
            kinds = get_args(field.annotation) if union else (field.annotation,)
            groups = [
                kind for kind in kinds if isinstance(kind, type) and issubclass(kind, BaseModel)
            ]
            return field.alias or name, groups[0] if groups else None
    return key, None


def merge_options(
    base: dict[str, Any], override: dict[str, Any], model: type[BaseModel] = SimulationOptions
) -> dict[str, Any]:
    """``base`` with ``override`` on top: option groups merge key by key, values replace.

    A group (``conversation``, ``noise``, ``reverb``, ``radio``) given as a mapping on
    both sides is merged recursively; anything else, ``null`` and mappings that are
    values (``conversation.speakers``, ``noise.probability``) included, replaces the
    base's. snake_case keys count as their camelCase alias.

    Parameters
    ----------
    base
        Options underneath, e.g. ``preset_options("ems")``.
    override
        Options that win, e.g. a user's ``--config`` file.
    model
        The options model the mappings are of.
    """
    merged = {_group(model, key)[0]: value for key, value in base.items()}
    for key, value in override.items():
        alias, group = _group(model, key)
        below = merged.get(alias)
        if group is not None and isinstance(value, dict) and isinstance(below, dict):
            merged[alias] = merge_options(below, value, group)
        else:
            merged[alias] = value
    return merged
