"""The kopf handlers: they only hand each change to the tuning's controller.

Run with ``diartune operator`` (or ``kopf run -m diartune.operator.handlers``).
Every handler is an ``on.event`` handler that makes no API call and cannot fail: the
controllers' workers do the work and retry it. So kopf keeps no per-object state of its
own (no progress or last-handled-configuration annotations, which would copy the spec),
and deletion needs no handler and no finalizer: the DiarizationTrials and Jobs carry
owner references, so the garbage collector removes them even while the operator is down.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from diartune.operator.api import GROUP, LABEL_TUNING, TUNING_PLURAL, VERSION
from diartune.operator.config import OperatorSettings, configure
from diartune.operator.kube import Kube, connect
from diartune.operator.leader import Leader, exit_lost_leadership
from diartune.operator.metrics import LEADING, serve
from diartune.operator.registry import Registry


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Read the operator's settings, configure kopf, connect to the cluster, serve the
    metrics, and stand by until this replica leads."""
    ours = OperatorSettings.from_environment(memo.lease_namespace)
    configure(settings, ours)
    api = connect()
    memo.registry = Registry(Kube(api), ours)
    memo.leader = Leader(api, ours.lease)
    memo.metrics = (
        await serve(memo.metrics_port, memo.registry.figures) if memo.metrics_port else None
    )
    loop = asyncio.get_running_loop()
    LEADING.set(0)

    def lead() -> None:
        memo.leader.acquire()
        memo.leader.keep(lost=exit_lost_leadership)
        LEADING.set(1)
        loop.call_soon_threadsafe(memo.registry.leading.set)

    threading.Thread(target=lead, name="diartune-election", daemon=True).start()


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    """Stop the controllers' workers and the metrics, hand the Lease back and close the API
    client."""
    await memo.registry.stop()
    if memo.metrics is not None:
        await memo.metrics.cleanup()
    await asyncio.to_thread(memo.leader.release)
    memo.registry.kube.api.close()


@kopf.on.event(GROUP, VERSION, TUNING_PLURAL)
async def tuning_event(type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """A tuning was created, found at startup, changed or deleted."""
    memo.registry.tuning_changed(type, dict(event["object"]))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TUNING: kopf.PRESENT})
async def job_event(
    type: str | None,
    event: kopf.RawEvent,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    """A trial Job changed: a result to read, a pod now running, or a Job gone.

    Parameters
    ----------
    type
        The watch event's type (None when listed at startup).
    event
        The raw event; its object is the Job.
    namespace
        The Job's namespace.
    labels
        The Job's labels; ``diartune.io/tuning`` names its tuning.
    memo
        kopf's memo, holding the registry.
    """
    if namespace:
        memo.registry.job_changed(namespace, labels[LABEL_TUNING], type, dict(event["object"]))


@kopf.on.event("", "v1", "pods", labels={LABEL_TUNING: kopf.PRESENT})
async def pod_event(
    type: str | None,
    event: kopf.RawEvent,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    """A trial pod changed: one whose container cannot start (an image that cannot be
    pulled) is named in a warning on its tuning, and in its trial's failure."""
    if namespace and type != "DELETED":
        memo.registry.pod_changed(namespace, labels[LABEL_TUNING], dict(event["object"]))
