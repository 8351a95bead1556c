"""The tuning worker's loop, without a cluster: when it looks at every Job (resync)."""

from __future__ import annotations

import asyncio

from diartune.operator.config import OperatorSettings, ReconcileSettings
from diartune.operator.controller import Lifecycle, TuningController
from diartune.operator.leader import LeaseSettings


class Counting(TuningController):
    """A worker whose passes only count, and which stops after ``resyncs`` resyncs."""

    def __init__(self, resyncs: int) -> None:
        settings = OperatorSettings(
            LeaseSettings("ns", "test"), reconcile=ReconcileSettings(resync_seconds=0.2)
        )
        super().__init__(None, settings, "ns", "busy")  # type: ignore[arg-type]
        self.wanted = resyncs
        self.passes = self.resyncs = 0

    async def reconcile(self, resync: bool = False) -> None:
        self.passes += 1
        self.resyncs += resync
        if self.resyncs == self.wanted:
            self.lifecycle = Lifecycle.GONE


def test_a_busy_tuning_still_looks_at_every_job_each_resync_period() -> None:
    """Events every 10 ms used to put off the resync forever: a missed Job event then
    waited for a quiet minute that a busy tuning never has."""

    async def busy() -> Counting:
        worker = Counting(resyncs=3)

        async def events() -> None:
            while True:
                worker.wake.set()
                await asyncio.sleep(0.01)

        waker = asyncio.create_task(events())
        try:
            await asyncio.wait_for(worker.run(), timeout=60)
        finally:
            waker.cancel()
        return worker

    worker = asyncio.run(busy())
    assert worker.resyncs == 3
    assert worker.passes > worker.resyncs  # events were handled between the resyncs
