"""The operator's settings, read once at start-up: one dataclass per concern, as kopf's own
``OperatorSettings`` (which ``configure`` sets from them).

======================  ==============================  ==========================================
concern                 dataclass                       read from
======================  ==============================  ==========================================
trial Jobs              ``settings.JobDefaults``        the chart's ``trialDefaults`` (environment)
what trial pods may do  ``policy.TrialPolicy``          the chart's ``trialPolicy`` (environment)
leader election         ``leader.LeaseSettings``        ``POD_NAMESPACE``, ``POD_NAME``
each tuning's worker    ``ReconcileSettings``           fixed
kopf's watches          ``WatchSettings``               ``DIARTUNE_WATCH_TIMEOUT``
======================  ==============================  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import kopf

from diartune.operator.api import LABEL_TUNING
from diartune.operator.leader import LeaseSettings
from diartune.operator.policy import TrialPolicy
from diartune.operator.settings import JobDefaults, job_defaults


@dataclass(frozen=True)
class ReconcileSettings:
    """How each tuning's worker paces its passes.

    Attributes
    ----------
    resync_seconds
        How often the worker looks at every Job of its running trials, event or not, so
        that a missed event leaves no trial unattended.
    max_backoff_seconds
        The longest wait before a failed pass is tried again (the wait doubles from 1 s).
    prepared_trials
        Trials asked of SMAC ahead of need (at most the tuning's parallelTrialCount): as
        many as SMAC itself hands out per surrogate fit (its retrain_after), so prepared
        trials are no staler than SMAC's own batches.
    """

    resync_seconds: float = 60.0
    max_backoff_seconds: float = 60.0
    prepared_trials: int = 8


@dataclass(frozen=True)
class WatchSettings:
    """kopf's watches of tunings, Jobs and pods.

    Attributes
    ----------
    server_timeout
        Seconds after which a watch is reconnected, before the API server's own timeout
        cuts it (``DIARTUNE_WATCH_TIMEOUT``); an integer: the API server refuses "300.0".
    """

    server_timeout: int = 300


@dataclass(frozen=True)
class OperatorSettings:
    """All the operator's settings, built once at start-up (``from_environment``)."""

    lease: LeaseSettings
    jobs: JobDefaults = field(default_factory=JobDefaults)
    policy: TrialPolicy = field(default_factory=TrialPolicy)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    watching: WatchSettings = field(default_factory=WatchSettings)

    @classmethod
    def from_environment(
        cls, default_namespace: str, env: Mapping[str, str] = os.environ
    ) -> OperatorSettings:
        """The settings the chart passes as environment variables; ``default_namespace``
        holds the Lease when ``POD_NAMESPACE`` is not set. ValueError names a variable
        that is not valid."""
        return cls(
            lease=LeaseSettings.from_environment(default_namespace),
            jobs=job_defaults(env),
            policy=TrialPolicy.from_environment(env),
            watching=WatchSettings(server_timeout=int(env.get("DIARTUNE_WATCH_TIMEOUT", 300))),
        )


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Set kopf's settings explicitly rather than rely on its defaults."""
    # Only on.event handlers: kopf keeps no progress, diff base or finalizer on tunings.
    # Only our trial Jobs are streamed, filtered by the API server.
    kopf_settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_TUNING
    kopf_settings.watching.server_timeout = settings.watching.server_timeout
    kopf_settings.watching.client_timeout = settings.watching.server_timeout + 30
    kopf_settings.networking.request_timeout = 60
    kopf_settings.posting.enabled = True
    kopf_settings.posting.reporting_component = "diartune-operator"
    kopf_settings.posting.event_name_prefix = "diartune-"
    kopf_settings.execution.max_workers = 4
    # The CRDs come with the Helm chart and the namespaces are given: no scanning of
    # CRDs or namespaces, which in namespace mode the chart's RBAC does not allow.
    kopf_settings.scanning.disabled = True
