"""The operator's settings: kopf's, set explicitly, and the trial defaults of the Helm chart.

The chart passes its ``trialDefaults`` values as environment variables (DIARTUNE_TRIAL_IMAGE,
DIARTUNE_GPU_RESOURCE, DIARTUNE_TRIAL_NODE_SELECTOR and _TOLERATIONS as JSON,
DIARTUNE_S3_ENDPOINT, DIARTUNE_ARTIFACTS); a DiarizationTuning's ``trialTemplate``
overrides them field by field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from diartune.operator.api import LABEL_TUNING


@dataclass(frozen=True)
class JobDefaults:
    """Cluster-wide defaults of trial Jobs that a tuning's trialTemplate overrides.

    Attributes
    ----------
    image, image_pull_policy
        The trial image and its pull policy (the chart's ``image.trial``).
    gpu_resource
        The extended resource that schedules a GPU, requested once per trial by default.
    node_selector, tolerations
        Where trial pods may run.
    s3_endpoint
        The S3 endpoint when ``spec.data.s3.endpoint`` is not set.
    artifacts
        Where trials write artifacts when ``spec.artifacts`` is not set.
    service_account
        The service account of every trial pod (the chart's, with no API permission and
        no token mounted): a tuning cannot choose another.
    run_as_user
        The non-root user of trial containers (the images' 10001).
    requests, limits
        CPU and memory of trial containers, unless the trialTemplate gives them.
    scratch_size
        The emptyDir mounted on /tmp, the only place a trial writes (downloads, caches).

    Finished Jobs are kept, with their pods' logs, until their tuning is deleted: the
    operator never loses a result to a Job's time to live while it is down.
    """

    image: str | None = None
    image_pull_policy: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    s3_endpoint: str | None = None
    artifacts: str | None = None
    service_account: str = "default"
    run_as_user: int = 10001
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "8Gi"})
    limits: dict[str, str] = field(default_factory=lambda: {"memory": "16Gi"})
    scratch_size: str = "20Gi"


def job_defaults(env: Mapping[str, str] = os.environ) -> JobDefaults:
    """Trial Job defaults from the environment; empty variables mean 'no default'."""

    def text(name: str) -> str | None:
        return env.get(name) or None

    def document(name: str, empty: Any) -> Any:
        raw = text(name)
        try:
            return json.loads(raw) if raw else empty
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}: not valid JSON: {error}") from None

    resources = dict(document("DIARTUNE_TRIAL_RESOURCES", {}))
    found = JobDefaults(
        image=text("DIARTUNE_TRIAL_IMAGE"),
        image_pull_policy=text("DIARTUNE_TRIAL_IMAGE_PULL_POLICY"),
        gpu_resource=text("DIARTUNE_GPU_RESOURCE") or "nvidia.com/gpu",
        node_selector=dict(document("DIARTUNE_TRIAL_NODE_SELECTOR", {})),
        tolerations=list(document("DIARTUNE_TRIAL_TOLERATIONS", [])),
        s3_endpoint=text("DIARTUNE_S3_ENDPOINT"),
        artifacts=text("DIARTUNE_ARTIFACTS"),
        service_account=text("DIARTUNE_TRIAL_SERVICE_ACCOUNT") or "default",
    )
    return dataclasses.replace(
        found,
        requests=resources.get("requests", found.requests),
        limits=resources.get("limits", found.limits),
        scratch_size=text("DIARTUNE_TRIAL_SCRATCH_SIZE") or found.scratch_size,
    )


def configure(settings: kopf.OperatorSettings) -> None:
    """Set kopf's settings explicitly rather than rely on its defaults."""
    # Only on.event handlers: kopf keeps no progress, diff base or finalizer on tunings.
    # Only our trial Jobs are streamed, filtered by the API server.
    settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_TUNING
    # Reconnect watches before the API server's own timeout cuts them.
    # An integer: the API server refuses "300.0" as timeoutSeconds.
    settings.watching.server_timeout = int(os.environ.get("DIARTUNE_WATCH_TIMEOUT", 300))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.request_timeout = 60
    settings.posting.enabled = True
    settings.posting.reporting_component = "diartune-operator"
    settings.posting.event_name_prefix = "diartune-"
    settings.execution.max_workers = 4
    # The CRDs come with the Helm chart and the namespaces are given: no scanning of
    # CRDs or namespaces, which in namespace mode the chart's RBAC does not allow.
    settings.scanning.disabled = True
