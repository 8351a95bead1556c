"""The trial defaults of the Helm chart (the rest of the operator's settings: ``config``).

The chart passes its ``trialDefaults`` values as environment variables (DIARTUNE_TRIAL_IMAGE,
DIARTUNE_GPU_RESOURCE, DIARTUNE_TRIAL_NODE_SELECTOR and _TOLERATIONS as JSON, their CPU
counterparts DIARTUNE_TRIAL_CPU_RESOURCES, _CPU_NODE_SELECTOR and _CPU_TOLERATIONS,
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

from diartune.spec.model import TrialTemplate


@dataclass(frozen=True)
class JobDefaults:
    """Cluster-wide defaults of trial Jobs that a tuning's trialTemplate overrides.

    Attributes
    ----------
    image, image_pull_policy
        The trial image and its pull policy (the chart's ``image.trial``).
    gpu_resource
        The extended resource that schedules a GPU, requested once by a fine-tuning trial.
    node_selector, tolerations
        Where trial pods that request a GPU run.
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
        CPU and memory of fine-tuning trial containers (besides their GPU).
    cpu_requests, cpu_limits
        Resources of the containers of trials that only run the pipeline (stages without
        fineTune, evaluations): no GPU.
    cpu_node_selector, cpu_tolerations
        Where trial pods that request no GPU run.
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
    cpu_requests: dict[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "4Gi"})
    cpu_limits: dict[str, str] = field(default_factory=lambda: {"memory": "8Gi"})
    cpu_node_selector: dict[str, str] | None = None
    cpu_tolerations: list[dict[str, Any]] | None = None
    scratch_size: str = "20Gi"

    def without_gpu(self) -> JobDefaults:
        """These defaults for a trial pod that requests no GPU: the CPU resources and
        placement take the place of the GPU ones."""
        return dataclasses.replace(
            self,
            requests=self.cpu_requests,
            limits=self.cpu_limits,
            node_selector=self.cpu_node_selector,
            tolerations=self.cpu_tolerations,
        )


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
    cpu_resources = dict(document("DIARTUNE_TRIAL_CPU_RESOURCES", {}))
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
        cpu_requests=cpu_resources.get("requests", found.cpu_requests),
        cpu_limits=cpu_resources.get("limits", found.cpu_limits),
        cpu_node_selector=dict(document("DIARTUNE_TRIAL_CPU_NODE_SELECTOR", {})),
        cpu_tolerations=list(document("DIARTUNE_TRIAL_CPU_TOLERATIONS", [])),
        scratch_size=text("DIARTUNE_TRIAL_SCRATCH_SIZE") or found.scratch_size,
    )


def apply_template(template: TrialTemplate, defaults: JobDefaults) -> TrialTemplate:
    """The trialTemplate over the chart's defaults: its image and pull policy where it
    gives them, else the chart's, else the template's own defaults. What the Job runs, and
    so what the trial policy checks."""
    given = template.model_fields_set
    chart = {"image": defaults.image, "image_pull_policy": defaults.image_pull_policy}
    return template.model_copy(
        update={key: value for key, value in chart.items() if value and key not in given}
    )
