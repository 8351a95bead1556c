"""The search space of a stage, as a ConfigSpace ConfigurationSpace.

Each hyperparameter's default is pyannote's default (clipped into the user's range),
so the default configuration of the space is the warm start.
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


def stage_space(stage: Stage, seed: int) -> ConfigurationSpace:
    """The ConfigurationSpace of one stage."""
    space = ConfigurationSpace(seed=seed)
    for name, parameter in sorted(stage.search_space.items()):
        default = default_value(name, parameter)
        if isinstance(parameter, CategoricalParameter):
            hyperparameter: Any = CategoricalHyperparameter(
                name, list(parameter.choices), default_value=default
            )
        elif isinstance(parameter, IntParameter):
            hyperparameter = UniformIntegerHyperparameter(
                name, parameter.low, parameter.high, log=parameter.log, default_value=int(default)
            )
        else:
            hyperparameter = UniformFloatHyperparameter(
                name, parameter.low, parameter.high, log=parameter.log, default_value=float(default)
            )
        space.add(hyperparameter)
    return space


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
                stage_space(one, spec.optimizer.seed)
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
    """Configuration values as plain JSON types (no numpy scalars), sorted by name."""
    return json.loads(json.dumps({k: config[k] for k in sorted(dict(config))}, default=_scalar))


def _scalar(value: Any) -> Any:
    return value.item()
