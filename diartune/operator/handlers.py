"""The kopf handlers: they only hand each change to the tuning's controller.

Run with ``diartune operator`` (or ``kopf run -m diartune.operator.handlers``).
Deletion needs no handler and no finalizer: the DiarizationTrials and Jobs carry owner
references, so the garbage collector removes them even while the operator is down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from diartune.crd import GROUP, VERSION
from diartune.executors.kubernetes import LABEL_TUNING, TUNING_PLURAL
from diartune.operator.controller import Registry
from diartune.operator.kube import Kube, connect
from diartune.operator.settings import configure, job_defaults


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Configure kopf and connect to the cluster."""
    configure(settings)
    memo.registry = Registry(Kube(connect()), job_defaults())


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    """Close the API client."""
    memo.registry.kube.api.close()


@kopf.on.create(GROUP, VERSION, TUNING_PLURAL)
@kopf.on.resume(GROUP, VERSION, TUNING_PLURAL)
@kopf.on.update(GROUP, VERSION, TUNING_PLURAL, field="spec")
async def tuning_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tuning was created, found at startup, or its spec changed."""
    await memo.registry.tuning_changed(dict(body))


@kopf.on.event(GROUP, VERSION, TUNING_PLURAL)
async def tuning_event(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Forget a deleted tuning (kopf calls no deletion handler without a finalizer)."""
    if type == "DELETED" and namespace:
        memo.registry.forget(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TUNING: kopf.PRESENT})
async def job_event(
    type: str | None,
    event: kopf.RawEvent,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    """A trial Job changed: a result to read, a pod now running, or a Job gone."""
    if namespace:
        job = dict(event["object"])
        await memo.registry.job_changed(namespace, labels[LABEL_TUNING], type, job)
