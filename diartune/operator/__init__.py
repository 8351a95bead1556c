"""The Kubernetes operator: DiarizationTunings run their trials as Jobs (kopf).

``diartune operator`` runs it; ``handlers`` wires kopf to the per-tuning
``controller``, which drives the same ``Study`` as ``diartune tune``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def run(
    namespaces: Sequence[str],
    clusterwide: bool,
    liveness: str | None = None,
    metrics_port: int | None = None,
    log_format: str = "plain",
) -> None:
    """Run the operator until it is stopped.

    Replicas act one at a time: each holds the Lease in its own namespace (``POD_NAMESPACE``,
    else the first watched namespace) before acting (``diartune.operator.leader``); kopf's
    own peering is not used. ``metrics_port``: serve Prometheus metrics on it (all
    addresses); ``log_format``: plain text, or one JSON object per line.
    """
    import kopf

    from diartune.operator import handlers  # noqa: F401  (registers the handlers)

    level = os.environ.get("DIARTUNE_LOG_LEVEL", "info").lower()
    kopf.configure(
        debug=level == "debug",
        quiet=level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    kopf.run(
        standalone=True,
        namespaces=list(namespaces),
        clusterwide=clusterwide,
        liveness_endpoint=liveness,
        memo=kopf.Memo(
            lease_namespace=namespaces[0] if namespaces else "default", metrics_port=metrics_port
        ),
    )
