"""Score diarization with pyannote.metrics: total DER, its components, and per file."""

from __future__ import annotations

from typing import Any

from pyannote.core import Annotation
from pyannote.metrics.diarization import DiarizationErrorRate

from diartune.records import Components
from diartune.spec import Objective

_PARTS = {
    "missed": "missed detection",
    "false_alarm": "false alarm",
    "confusion": "confusion",
    "total": "total",
}


def _components(detail: dict[str, float]) -> Components:
    parts = {field: float(detail[key]) for field, key in _PARTS.items()}
    errors = parts["missed"] + parts["false_alarm"] + parts["confusion"]
    # A file with no reference speech has no DER of its own; it still adds its
    # false alarms to the total.
    der = errors / parts["total"] if parts["total"] > 0 else None
    return Components(der=der, **parts)


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
