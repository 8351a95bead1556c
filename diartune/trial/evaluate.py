"""Score diarization with pyannote.metrics: total DER, its components, and per file."""

from __future__ import annotations

from typing import Any

from pyannote.core import Annotation
from pyannote.metrics.diarization import DiarizationErrorRate

from diartune.records import Components
from diartune.spec.model import Objective

#: The arguments of ``Components.of``, by pyannote.metrics' names of the same numbers.
_PARTS = {
    "missed_speech": "missed detection",
    "false_alarm": "false alarm",
    "confusion": "confusion",
    "reference_speech": "total",
}


def _components(detail: dict[str, float]) -> Components:
    # A file with no reference speech has no DER of its own; it still adds its
    # false alarms to the total.
    return Components.of(**{part: float(detail[key]) for part, key in _PARTS.items()})


def score(
    files: list[dict[str, Any]], hypotheses: dict[str, Annotation], objective: Objective
) -> tuple[Components, dict[str, Components]]:
    """Total and per-file DER of ``hypotheses`` against the files' references."""
    metric = DiarizationErrorRate(collar=objective.collar, skip_overlap=objective.skip_overlap)
    per_file = {}
    totals = dict.fromkeys(_PARTS.values(), 0.0)
    for file in files:
        detail = metric(
            file["annotation"], hypotheses[file["uri"]], uem=file["annotated"], detailed=True
        )
        per_file[file["uri"]] = _components(detail)
        for key in totals:
            totals[key] += detail[key]
    return _components(totals), per_file
