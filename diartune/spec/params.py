"""The tunable parameters diartune knows: their names, types and pyannote's defaults.

Names are ``<group>.<name>``: ``training.*`` parameters fine-tune the segmentation
model, ``segmentation.*`` and ``clustering.*`` are those of pyannote's
SpeakerDiarization pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Value = float | int | str | bool

AGGLOMERATIVE_METHODS = ("average", "centroid", "complete", "median", "single", "ward", "weighted")


@dataclass(frozen=True)
class Known:
    """What diartune knows of one parameter."""

    kinds: frozenset[str]  # the spec types it may take: float, int, categorical
    default: Value  # pyannote's default, the warm start
    choices: tuple[Value, ...] | None = None  # the values pyannote accepts, if a closed set
    clustering: str | None = None  # only for this clustering
    minimum: float | None = None  # values below are impossible


_NUMBER = frozenset({"float", "int", "categorical"})
_FLOAT = frozenset({"float", "categorical"})
_INT = frozenset({"int", "categorical"})

KNOWN: dict[str, Known] = {
    # Fine-tuning (pyannote's Model.configure_optimizers uses Adam with lr 1e-3).
    "training.learning_rate": Known(_FLOAT, 1e-3, minimum=0.0),
    "training.batch_size": Known(_INT, 32, minimum=1),
    "training.duration": Known(_FLOAT, 5.0, minimum=0.5),
    "training.augmentation": Known(_FLOAT, 0.0, minimum=0.0),
    "training.max_epochs": Known(_INT, 10, minimum=1),
    # SpeakerDiarization.default_parameters() of pyannote.audio 4.0.
    "segmentation.min_duration_off": Known(_FLOAT, 0.0, minimum=0.0),
    "segmentation.threshold": Known(_FLOAT, 0.5, minimum=0.0),
    "clustering.threshold": Known(_NUMBER, 0.6, minimum=0.0),
    # pyannote 4.0 gives no defaults for these two; these are pyannote 3.1's.
    "clustering.method": Known(
        frozenset({"categorical"}),
        "centroid",
        choices=AGGLOMERATIVE_METHODS,
        clustering="AgglomerativeClustering",
    ),
    "clustering.min_cluster_size": Known(_INT, 12, clustering="AgglomerativeClustering", minimum=1),
    "clustering.Fa": Known(_FLOAT, 0.07, clustering="VBxClustering", minimum=0.0),
    "clustering.Fb": Known(_FLOAT, 0.8, clustering="VBxClustering", minimum=0.0),
}


class _ParameterLike(Protocol):
    @property
    def type(self) -> str: ...


def check_parameter(
    name: str, parameter: _ParameterLike, clustering: str, fine_tunes: bool
) -> str | None:
    """Why ``parameter`` cannot be tuned under ``name``, or None when it can.

    Parameters
    ----------
    name
        The parameter's name, e.g. ``clustering.threshold``.
    parameter
        Its range or choices, as the spec gives them.
    clustering
        The pipeline's clustering: some parameters belong to one clustering only.
    fine_tunes
        Whether the stage fine-tunes (``training.*`` parameters need it).
    """
    known = KNOWN.get(name)
    if known is None:
        return f"unknown parameter; expected one of {', '.join(sorted(KNOWN))}"
    if known.clustering and known.clustering != clustering:
        return f"{clustering} has no parameter {name.split('.', 1)[1]!r}"
    if name.startswith("training.") and not fine_tunes:
        return "training.* parameters need fineTune in their stage"
    if parameter.type not in known.kinds:
        return f"type {parameter.type!r} not allowed; expected one of {sorted(known.kinds)}"
    values: list[Any] = list(getattr(parameter, "choices", None) or [])
    values += [getattr(parameter, bound) for bound in ("low", "high") if hasattr(parameter, bound)]
    if known.choices is not None:
        bad = [value for value in values if value not in known.choices]
        if bad:
            return f"unsupported values {bad}; expected some of {list(known.choices)}"
    elif any(isinstance(value, str | bool) for value in values):
        return f"expected numbers, got {values}"
    elif known.minimum is not None and any(value < known.minimum for value in values):
        return f"values must be at least {known.minimum}, got {values}"
    return None


def canonical(value: Any) -> Any:
    """``value`` with every number a float, recursively: JSON stores ``1.0`` as ``1`` (the
    Kubernetes API server does), and the same configuration must stay the same."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value


def pipeline_defaults(clustering: str) -> dict[str, Value]:
    """pyannote's defaults for every pipeline parameter, with ``clustering``."""
    return {
        name: known.default
        for name, known in KNOWN.items()
        if not name.startswith("training.") and known.clustering in (None, clustering)
    }


def with_defaults(clustering: str, params: Mapping[str, Value]) -> dict[str, Value]:
    """Every pipeline parameter with ``clustering``: its value in ``params``, else
    pyannote's default (and the training parameters of ``params``)."""
    return {**pipeline_defaults(clustering), **params}
