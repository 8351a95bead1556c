"""The search space of a stage, as a ConfigSpace ConfigurationSpace.

Each hyperparameter's default is pyannote's default (clipped into the user's range),
so the default configuration of the space is the warm start.

A float parameter whose meaning depends on a categorical one (``PER_CHOICE``) is searched
as one copy per choice, each active with its choice only (a ConfigSpace condition), over
the range the user declared. Trials, records and the spec only ever see the declared name:
``plain`` and ``configuration`` translate.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

from ConfigSpace import (
    CategoricalHyperparameter,
    Configuration,
    ConfigurationSpace,
    EqualsCondition,
    UniformFloatHyperparameter,
    UniformIntegerHyperparameter,
)

from diartune.spec.model import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Spec,
    SpecError,
    Stage,
)
from diartune.spec.params import KNOWN, Value


def default_value(
    name: str, parameter: FloatParameter | IntParameter | CategoricalParameter
) -> Value:
    """pyannote's default for ``name``, moved into the range the user allows."""
    default = KNOWN[name].default
    if isinstance(parameter, CategoricalParameter):
        return default if default in parameter.choices else parameter.choices[0]
    assert isinstance(default, int | float), name
    clipped = min(max(default, parameter.low), parameter.high)
    if parameter.log and clipped <= 0:
        clipped = math.sqrt(parameter.low * parameter.high)
    return round(clipped) if isinstance(parameter, IntParameter) else float(clipped)


#: A float parameter searched per choice of a categorical one. scipy's ward linkage
#: merges at heights that grow with cluster size, the other linkages of unit-length
#: embeddings below 2: the good thresholds of ward and of, say, average linkage lie at
#: opposite ends of pyannote's range (BENCHMARKS.md, search), which one forest over both
#: learns slowly.
PER_CHOICE = {"clustering.threshold": "clustering.method"}
_COPY = "|"  # between a declared name and the choice its copy is for


def declared_space(stage: Stage, seed: int) -> ConfigurationSpace:
    """The ConfigurationSpace of one stage's parameters as declared, one hyperparameter each."""
    space = ConfigurationSpace(seed=seed)
    for name, parameter in sorted(stage.search_space.items()):
        space.add(_hyperparameter(name, parameter, default_value(name, parameter)))
    return space


def stage_space(stage: Stage, seed: int) -> ConfigurationSpace:
    """The ConfigurationSpace SMAC searches for one stage: the declared one, with a copy of
    each ``PER_CHOICE`` parameter per choice of its categorical parameter."""
    declared = declared_space(stage, seed)
    split = {
        name: (parameter, choices)
        for name, parent in PER_CHOICE.items()
        if isinstance(parameter := stage.search_space.get(name), FloatParameter)
        and isinstance(choices := stage.search_space.get(parent), CategoricalParameter)
    }
    if not split:
        return declared
    space = ConfigurationSpace(seed=seed)
    space.add([hyperparameter for name, hyperparameter in declared.items() if name not in split])
    for name, (parameter, choices) in split.items():
        default = default_value(name, parameter)
        for choice in choices.choices:
            copy = _hyperparameter(f"{name}{_COPY}{choice}", parameter, default)
            space.add(copy, EqualsCondition(copy, space[PER_CHOICE[name]], choice))
    return space


def configuration(space: ConfigurationSpace, params: dict[str, Value]) -> Configuration:
    """The Configuration of ``space`` for a trial's parameters (declared names)."""
    values = dict(params)
    for name, parent in PER_CHOICE.items():
        copy = f"{name}{_COPY}{params.get(parent)}"
        if name in values and copy in space:
            values[copy] = values.pop(name)
    return Configuration(space, values=values)


def _hyperparameter(
    name: str, parameter: FloatParameter | IntParameter | CategoricalParameter, default: Value
) -> Any:
    if isinstance(parameter, CategoricalParameter):
        return CategoricalHyperparameter(name, list(parameter.choices), default_value=default)
    if isinstance(parameter, IntParameter):
        return UniformIntegerHyperparameter(
            name, parameter.low, parameter.high, log=parameter.log, default_value=int(default)
        )
    assert isinstance(default, int | float), name
    return UniformFloatHyperparameter(
        name, parameter.low, parameter.high, log=parameter.log, default_value=float(default)
    )


def check_spaces(spec: Spec, prefix: str) -> None:
    """Build each stage's space as SMAC will; SpecError, one line per parameter that
    ConfigSpace refuses (choices equal as numbers, bounds it cannot scale), otherwise.

    ``prefix``: what each line starts with, up to the stages' field (``"tuning.yaml: spec."``).
    """
    problems = []
    for index, stage in enumerate(spec.stages):
        for name, parameter in sorted(stage.search_space.items()):
            one = stage.model_copy(update={"search_space": {name: parameter}})
            try:
                declared_space(one, spec.optimizer.seed)
            except ValueError as error:
                given = parameter.model_dump(exclude={"type"})
                problems.append(
                    f"{prefix}stages[{index}].searchSpace.{name}: refused by ConfigSpace, "
                    f"which SMAC samples from ({str(error).splitlines()[0]}): got {given}"
                )
    if problems:
        raise SpecError("\n".join(problems))


def all_configurations(space: ConfigurationSpace) -> Iterator[dict[str, Value]]:
    """Every configuration of a space without float parameters, in a fixed order."""
    names = sorted(space.keys())
    values = []
    for name in names:
        hyperparameter = space[name]
        if isinstance(hyperparameter, CategoricalHyperparameter):
            values.append(list(hyperparameter.choices))
        else:
            assert isinstance(hyperparameter, UniformIntegerHyperparameter), name
            values.append(list(range(hyperparameter.lower, hyperparameter.upper + 1)))
    for combination in itertools.product(*values):
        yield plain(dict(zip(names, combination, strict=True)))


def plain(config: Configuration | dict[str, Any]) -> dict[str, Value]:
    """Configuration values by declared name, as plain JSON types (no numpy scalars),
    sorted by name."""
    values = {name.split(_COPY)[0]: config[name] for name in dict(config)}
    return json.loads(json.dumps(dict(sorted(values.items())), default=_scalar))


def _scalar(value: Any) -> Any:
    return value.item()
