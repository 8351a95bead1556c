"""Trial requests as the tests and benchmarks write them: flat, then nested as a
TrialRequest (the trial's own fields under ``trial``)."""

from __future__ import annotations

from typing import Any

TRIAL_KEYS = ("name", "stage", "subset", "export", "budget", "segmentationSha256")


def request_document(fields: dict[str, Any]) -> dict[str, Any]:
    """A TrialRequest document from the flat fields tests write: the trial's own (name,
    stage, params, tuned, subset, export) beside the request's (data, pipeline, output...)."""
    request = dict(fields)
    params = request.pop("params")
    tuned = request.pop("tuned", sorted(params))
    trial = {key: request.pop(key) for key in TRIAL_KEYS if key in request}
    trial |= {
        "number": 0,
        "params": {name: params[name] for name in tuned if name in params},
        "fullParams": params,
        "segmentation": request["pipeline"]["segmentation"],
    }
    return {"trial": trial, **request}
