"""The tunings this operator watches: one ``TuningController`` each, with its worker task.

kopf's handlers hand every change to the ``Registry``, which starts a tuning's controller
on its first event and drops it when the tuning is deleted.
"""

from __future__ import annotations

import asyncio

from diartune.operator.config import OperatorSettings
from diartune.operator.controller import Lifecycle, TuningController
from diartune.operator.kube import Kube
from diartune.operator.manifests import Manifest
from diartune.operator.metrics import RECONCILE_ERRORS, TuningFigures


class Registry:
    """The controllers of the tunings this operator watches, each with its worker task."""

    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.controllers: dict[tuple[str, str], TuningController] = {}
        self.workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: Set once this replica holds the Lease: workers act only then.
        self.leading = asyncio.Event()

    def controller(self, namespace: str, name: str) -> TuningController:
        """The tuning's controller, started if new."""
        key = (namespace, name)
        if key not in self.controllers:
            controller = TuningController(self.kube, self.settings, namespace, name, self.leading)
            self.controllers[key] = controller
            self.workers[key] = asyncio.create_task(controller.run(), name=f"{namespace}/{name}")
        return self.controllers[key]

    def tuning_changed(self, event_type: str | None, body: Manifest) -> None:
        """A tuning was created, found at startup, changed or deleted."""
        meta = body["metadata"]
        if event_type == "DELETED":
            self.forget(meta["namespace"], meta["name"])
        else:
            self.controller(meta["namespace"], meta["name"]).take_tuning(body)

    def pod_changed(self, namespace: str, tuning: str, pod: Manifest) -> None:
        """A trial pod of ``tuning`` changed (or was listed at startup)."""
        self.controller(namespace, tuning).take_pod(pod)

    def job_changed(
        self, namespace: str, tuning: str, event_type: str | None, job: Manifest
    ) -> None:
        """A Job of ``tuning`` changed (or was listed at startup, or deleted).

        Parameters
        ----------
        namespace, tuning
            The tuning the Job belongs to (its label).
        event_type
            ``ADDED``, ``MODIFIED``, ``DELETED``, or None when listed at startup.
        job
            The Job as the event carried it.
        """
        self.controller(namespace, tuning).take_job(event_type, job)

    def figures(self) -> list[TuningFigures]:
        """What each tuning's metrics say, as its controller last published them."""
        return [c.figures for c in self.controllers.values() if c.figures is not None]

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted tuning (its trials and Jobs go with it, by garbage collection)."""
        RECONCILE_ERRORS.remove(namespace, name)
        controller = self.controllers.pop((namespace, name), None)
        worker = self.workers.pop((namespace, name), None)
        if controller is not None:
            controller.lifecycle = Lifecycle.GONE
        if worker is not None:
            worker.cancel()

    async def stop(self) -> None:
        """Stop every worker."""
        for worker in self.workers.values():
            worker.cancel()
        await asyncio.gather(*self.workers.values(), return_exceptions=True)
