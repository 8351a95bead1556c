"""The operator's Prometheus metrics, served on ``/metrics`` (``--metrics-port``).

Trial counts and DERs are read from what each tuning's controller published last
(``TuningFigures``, taken with its status), not counted as events: an operator that
restarts, or a replica that takes the lead, reports every tuning's totals at once, and
the numbers always agree with the tuning's status. Events with no place in a status
(SMAC's asks, failed reconcile passes) are counted as they happen. Everything is served
from kopf's event loop, the one thread that writes the figures.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from diartune.search.study import Study
from diartune.search.summary import Summary
from diartune.search.tuner import ASK_OBSERVERS

REGISTRY = CollectorRegistry()

RECONCILE_ERRORS = Counter(
    "diartune_reconcile_errors",
    "Reconcile passes of a tuning that failed (and were retried with backoff).",
    ["namespace", "tuning"],
    registry=REGISTRY,
)
SMAC_ASK_SECONDS = Histogram(
    "diartune_smac_ask_seconds",
    "Seconds SMAC took to propose one configuration (asked ahead or on demand).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
LEADING = Gauge(
    "diartune_leading",
    "1 when this replica holds the Lease and acts, 0 while it stands by.",
    registry=REGISTRY,
)
ASK_OBSERVERS.append(SMAC_ASK_SECONDS.observe)

#: Labels of the per-stage trial counts.
_TRIAL_LABELS = ["namespace", "tuning", "stage", "kind"]


@dataclass(frozen=True)
class StageKey:
    """Which trials a count is about: a stage's search trials or its evaluations."""

    stage: str
    kind: str  # "search" or "evaluation"


@dataclass(frozen=True)
class TuningFigures:
    """What a tuning's metrics say, taken when its status is published."""

    namespace: str
    tuning: str
    launched: dict[StageKey, int]
    succeeded: dict[StageKey, int]
    failed: dict[StageKey, int]
    running: dict[StageKey, int]
    best_der: float | None
    test_der: float | None

    @classmethod
    def of(cls, namespace: str, tuning: str, study: Study, summary: Summary) -> TuningFigures:
        """The figures of ``study``, whose summary is ``summary``."""

        def key(stage: str, evaluation: bool) -> StageKey:
            return StageKey(stage, "evaluation" if evaluation else "search")

        finished = Tally(key(r.stage, r.is_evaluation) for r in study.records)
        running = Tally(key(t.stage, t.is_evaluation) for t in study.running.values())
        succeeded = Tally(
            key(r.stage, r.is_evaluation) for r in study.records if r.state == "Succeeded"
        )
        every = {*finished, *running}
        return cls(
            namespace=namespace,
            tuning=tuning,
            launched={k: finished[k] + running[k] for k in every},
            succeeded={k: succeeded[k] for k in every},
            failed={k: finished[k] - succeeded[k] for k in every},
            running={k: running[k] for k in every},
            best_der=summary.best_der,
            test_der=summary.test_der,
        )


class TuningCollector(Collector):
    """The per-tuning metrics, from the figures the controllers published last."""

    def __init__(self, figures: Callable[[], Iterable[TuningFigures]]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        """The metric families of every tuning this replica drives."""
        counts = {
            "launched": ("diartune_trials_launched", "Trials launched (running or finished)."),
            "succeeded": ("diartune_trials_succeeded", "Trials that succeeded."),
            "failed": ("diartune_trials_failed", "Trials that failed."),
        }
        families = {
            field: CounterMetricFamily(name, text, labels=_TRIAL_LABELS)
            for field, (name, text) in counts.items()
        }
        running = GaugeMetricFamily(
            "diartune_trials_running", "Trials running now.", labels=_TRIAL_LABELS
        )
        best = GaugeMetricFamily(
            "diartune_best_der",
            "DER of the best trial on development, a fraction (as status.bestDer).",
            labels=["namespace", "tuning"],
        )
        test = GaugeMetricFamily(
            "diartune_test_der",
            "DER of the tuned pipeline on test, a fraction (as status.testDer).",
            labels=["namespace", "tuning"],
        )
        for found in self.figures():
            for field, family in families.items():
                for key, value in getattr(found, field).items():
                    family.add_metric([found.namespace, found.tuning, key.stage, key.kind], value)
            for key, value in found.running.items():
                running.add_metric([found.namespace, found.tuning, key.stage, key.kind], value)
            if found.best_der is not None:
                best.add_metric([found.namespace, found.tuning], found.best_der)
            if found.test_der is not None:
                test.add_metric([found.namespace, found.tuning], found.test_der)
        yield from families.values()
        yield from (running, best, test)


async def serve(port: int, figures: Callable[[], Iterable[TuningFigures]]) -> web.AppRunner:
    """Serve ``/metrics`` on ``port`` (all addresses) from the running event loop."""
    collector = TuningCollector(figures)
    REGISTRY.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def unregister(_: web.Application) -> None:
        REGISTRY.unregister(collector)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.on_cleanup.append(unregister)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
