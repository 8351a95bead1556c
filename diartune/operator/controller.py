"""One DiarizationTuning driven through Kubernetes: what ``diartune tune`` does locally.

Each tuning has a ``TuningController`` with a worker task of its own (``registry``).
kopf's handlers only hand it what changed (the tuning, or one of its Jobs or pods) and
wake it; the worker reconciles, one pass at a time:

1. load: accept the spec and rebuild the study from the tuning's DiarizationTrials
   (``trials``: finished ones are its records, unfinished ones its running trials);
2. apply the latest spec (``diartune.spec.changes``: what may change is applied, the rest
   refused with a condition);
3. finish the trials whose Jobs finished (result from the pod's termination message);
4. act on the study's decisions: stop, launch, evaluate;
5. publish the status.

A pass that fails (an API error, a timeout, a ``TemporaryError``) is retried with backoff,
and every ``resync_seconds`` the worker looks at the Jobs of its running trials even
without an event, so that no transient error or missed event leaves a tuning unattended.
SMAC's asks and tells run in a worker thread; after each launch, the next trials are asked
of SMAC ahead in one background thread shared by all tunings, so that a freed slot gets
its successor without waiting for SMAC's surrogate to retrain.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes.client import ApiException

from diartune.operator.api import GROUP
from diartune.operator.config import OperatorSettings
from diartune.operator.errors import TEMPORARY, TemporaryError
from diartune.operator.kube import Kube
from diartune.operator.manifests import (
    Manifest,
    artifacts_root,
    record_status,
    resource_name,
    trial_of,
    trial_status,
)
from diartune.operator.metrics import RECONCILE_ERRORS, TuningFigures
from diartune.operator.status import Conditions, refused_status, tuning_status
from diartune.operator.trials import Trials, owned_by, pod_batches
from diartune.records import Trial, TrialRecord, percent
from diartune.search.space import check_spaces
from diartune.search.study import Phase, Study
from diartune.search.warm_start import WarmStart, warm_start
from diartune.spec.changes import accepted_part, check_accepted, resolve
from diartune.spec.file import parse_spec
from diartune.spec.model import Spec, SpecError
from diartune.spec.types import DNS_SUBDOMAIN

ACCEPTED_SPEC = f"{GROUP}/accepted-spec"
_SMAC_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diartune-smac")
logger = logging.getLogger(__name__)


class Lifecycle(enum.Enum):
    """Where a controller stands with its tuning."""

    NEW = "not loaded yet"
    ACTIVE = "driving its study"
    REFUSED = "its spec cannot run"
    GONE = "the tuning was deleted"


class TuningController:
    """The in-memory state of one tuning and its reconcile loop."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        namespace: str,
        name: str,
        leading: asyncio.Event | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.leading = leading
        self.namespace = namespace
        self.name = name
        self.lifecycle = Lifecycle.NEW
        self.body: Manifest | None = None
        self.wake = asyncio.Event()
        self.conditions = Conditions()
        self.accepted: dict[str, Any] = {}
        self.applied_generation: int | None = None
        self.root = ""
        self.study: Study | None = None
        self.trials = Trials(
            kube, namespace, name, settings.jobs, settings.policy, self._note, self._log
        )
        self.published: dict[str, Any] | None = None
        self.figures: TuningFigures | None = None
        self.phase: Phase | None = None
        self.preparing: Future[None] | None = None
        self.fields = {"namespace": namespace, "tuning": name}
        RECONCILE_ERRORS.labels(namespace, name)  # shown at 0 from the start

    # -- what the handlers hand over --------------------------------------------------

    def take_tuning(self, body: Manifest) -> None:
        """The tuning as last seen (created, found at startup, or changed)."""
        self.body = body
        self.wake.set()

    def take_job(self, event_type: str | None, job: Manifest) -> None:
        """One of the tuning's Jobs changed (or was deleted)."""
        if self.trials.take_job(event_type, job):
            self.wake.set()

    def take_pod(self, pod: Manifest) -> None:
        """One of the tuning's trial pods changed: note it if it cannot start."""
        if self.trials.take_pod(pod):
            self.wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile whenever woken, with a look at every Job each ``resync_seconds``
        (woken or not), until the tuning is gone."""
        if self.leading is not None:
            await self.leading.wait()  # a standby replica follows events but does not act
        pacing = self.settings.reconcile
        backoff = 1.0
        next_resync = time.monotonic() + pacing.resync_seconds
        while self.lifecycle is not Lifecycle.GONE:
            self.wake.clear()
            resync = time.monotonic() >= next_resync
            try:
                await self.reconcile(resync)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # retried from the cluster, the source of truth
                RECONCILE_ERRORS.labels(self.namespace, self.name).inc()
                delay = _delay(error, backoff)
                self._log_failure(error, delay)
                if self.lifecycle is Lifecycle.ACTIVE:
                    self._unload()
                await asyncio.sleep(delay)
                backoff = min(2 * backoff, pacing.max_backoff_seconds)
                self.wake.set()
                continue
            backoff = 1.0
            if resync:
                next_resync = time.monotonic() + pacing.resync_seconds
            # Woken by events or not, the Jobs are looked at every resync_seconds: a busy
            # tuning's events would otherwise put off the look for a missed one forever.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, next_resync - time.monotonic()))

    def _log_failure(self, error: Exception, delay: float) -> None:
        where = f"{self.namespace}/{self.name}"
        if isinstance(error, TEMPORARY):
            message = "%s: %s; retrying in %.0f s"
            logger.warning(message, where, _brief(error), delay, extra=self.fields)
        else:
            message = "%s: reconciling failed; retrying in %.0f s"
            logger.exception(message, where, delay, extra=self.fields)

    def _note(
        self, reason: str, message: str, trial: str | None = None, warning: bool = False
    ) -> None:
        """Post an event on the tuning, and log it."""
        post = kopf.warn if warning else kopf.info
        post(self._reference(), reason=reason, message=message)
        self._log(f"{reason}: {message}", trial, logging.WARNING if warning else logging.INFO)

    def _log(self, message: str, trial: str | None = None, level: int = logging.INFO) -> None:
        """Log a line about the tuning (or one of its trials, by its resource name), with
        their names as fields of the record (JSON logs show them as keys)."""
        fields = self.fields | ({"trial": trial} if trial else {})
        logger.log(level, "%s/%s: %s", self.namespace, self.name, message, extra=fields)

    def _unload(self) -> None:
        """Forget the in-memory state, to be rebuilt from the cluster on the next pass:
        a pass that failed half-way may have left a trial without its Job."""
        self.lifecycle = Lifecycle.NEW
        self.study = None
        self.trials.reset()

    async def reconcile(self, resync: bool = False) -> None:
        """One pass: load if needed, apply the spec, finish what finished, act, publish."""
        if self.lifecycle is Lifecycle.NEW:
            await self._load()
        if self.lifecycle is not Lifecycle.ACTIVE:
            return
        study = self.study
        assert study is not None
        self._apply_spec(study)
        if resync:
            await self.trials.resync(study)
        await self.trials.take_jobs(study, self._finish, self._tuning_deleted)
        if self.lifecycle is Lifecycle.ACTIVE:
            self.trials.warn_waiting(study)
            await self.trials.ensure_jobs(study, self.conditions)
            await self._act(study)
            await self._publish(study)

    # -- load -------------------------------------------------------------------------

    async def _load(self) -> None:
        """Accept the spec and rebuild the study from the tuning's trials and Jobs."""
        body = self.body or await self.kube.get_tuning(self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.lifecycle = Lifecycle.GONE
            return
        self.body = body
        meta = body["metadata"]
        status = body.get("status") or {}
        self.conditions = Conditions.load(status, meta.get("generation", 0))
        self.published = status
        self.phase = Phase(status["phase"]) if status.get("phase") in set(Phase) else None
        spec = await self._accept(body)
        if spec is None:
            return
        root = artifacts_root(spec, self.settings.jobs, self.namespace, self.name)
        if root is None:
            await self._refuse("no artifacts location: set spec.artifacts (an s3:// URI)")
            return
        self.root = root
        try:
            warm = await self._warm_start(spec)
        except SpecError as error:
            await self._refuse(str(error))
            return
        self.conditions.mark_created()
        records, running = await self.trials.adopt(meta["uid"])
        self.study = Study(spec, records, running, root=self.root, warm=warm)
        self.lifecycle = Lifecycle.ACTIVE

    async def _accept(self, body: Manifest) -> Spec | None:
        """The spec to run: the accepted one (kept in an annotation; the current spec on
        first sight, once its search spaces are checked) with the current changeable
        fields; None when the spec is refused."""
        annotations = body["metadata"].get("annotations") or {}
        saved = _readable_spec(annotations.get(ACCEPTED_SPEC))
        if saved is None:
            try:
                check_spaces(parse_spec(body["spec"]), "spec: ")
            except SpecError as error:
                await self._refuse(str(error))
                return None
            if ACCEPTED_SPEC in annotations:
                message = f"the {ACCEPTED_SPEC} annotation was unreadable: the current spec is now"
                self._note("AcceptedSpecRestored", message, warning=True)
            self.accepted = accepted_part(body["spec"])
            patch = {ACCEPTED_SPEC: json.dumps(self.accepted, sort_keys=True)}
            await self.kube.patch_tuning(
                self.namespace, self.name, {"metadata": {"annotations": patch}}
            )
        else:
            self.accepted = saved
        spec, _ = resolve(self.accepted, body["spec"])
        return spec

    async def _warm_start(self, spec: Spec) -> WarmStart:
        """The finished trials of the DiarizationTunings that ``spec.optimizer.warmStartFrom``
        names, in this namespace. The operator reads no folders and holds no S3 credentials,
        so a path or an S3 prefix is refused. A named tuning that is gone once this one has
        started is skipped with a warning (the operator restarted after it was deleted)."""
        sources: list[tuple[str, list[TrialRecord]]] = []
        for index, name in enumerate(spec.optimizer.warm_start_from):
            where = f"spec.optimizer.warmStartFrom[{index}]"
            if name == self.name or not re.fullmatch(DNS_SUBDOMAIN, name):
                raise SpecError(
                    f"{where}: {name!r}: expected the name of another DiarizationTuning in "
                    "this namespace (the operator reads no folders or S3 prefixes)"
                )
            earlier = await self.kube.get_tuning(self.namespace, name)
            if earlier is None and self.phase is None:
                raise SpecError(f"{where}: no DiarizationTuning {name!r} in {self.namespace}")
            if earlier is None:
                self._note("WarmStartGone", f"{where}: {name!r} is gone: skipped", warning=True)
                continue
            uid = earlier["metadata"]["uid"]
            records = [
                record
                for resource in await self.kube.list_trials(self.namespace, name)
                if owned_by(resource, uid)
                and (record := trial_status(resource).record(trial_of(resource))) is not None
            ]
            sources.append((name, records))
        return warm_start(spec, sources)

    async def _refuse(self, message: str) -> None:
        """Fail a tuning whose spec cannot run at all."""
        self.lifecycle = Lifecycle.REFUSED
        self.conditions.mark_invalid(message)
        self._note("SpecRejected", message, warning=True)
        await self.kube.patch_tuning_status(
            self.namespace, self.name, refused_status(message, self.conditions)
        )

    # -- apply ------------------------------------------------------------------------

    def _apply_spec(self, study: Study) -> None:
        """Follow the latest spec: its changeable fields apply, other changes are refused."""
        assert self.body is not None
        generation = self.body["metadata"].get("generation", 0)
        if generation == self.applied_generation:
            return
        self.applied_generation = generation
        self.conditions.generation = generation
        spec, refused = resolve(self.accepted, self.body["spec"], study.spec)
        rejected = self.conditions.items.get("SpecRejected", {})
        if refused and refused != rejected.get("message"):
            self._note("SpecRejected", refused, warning=True)
        self.conditions.mark_update(refused)
        study.spec = spec

    # -- finish -----------------------------------------------------------------------

    async def _finish(self, trial: Trial, record: TrialRecord) -> None:
        """Record a finished trial in its DiarizationTrial and the study, and say so."""
        study = self.study
        assert study is not None
        name = resource_name(self.name, trial.name)
        await self.kube.patch_trial_status(self.namespace, name, record_status(record))
        before = study.best()
        await asyncio.to_thread(study.record, record)
        self.trials.finished(trial.name)
        der = f"{record.subset} DER {percent(record.der)}"
        if record.state == "Failed":
            self._note("TrialFailed", f"{name}: {record.message}", name, warning=True)
        elif record.is_evaluation:
            self._note("Evaluated", f"{name}: {der}", name)
        elif before is None or (record.der or 0.0) < (before.der or 0.0):
            self._note("NewBest", f"{name}: {der}", name)
        else:
            self._log(f"{name}: {der}", name)
        stage = None if record.is_evaluation else study.spec.stage(trial.stage)
        if stage is not None and study.stage_complete(stage):
            best = study.best(stage.name)
            message = f"stage {stage.name} finished: best DER {percent(best.der if best else None)}"
            self._note("StageFinished", message)

    async def _tuning_deleted(self) -> bool:
        body = await self.kube.get_tuning(self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.lifecycle = Lifecycle.GONE
        return self.lifecycle is Lifecycle.GONE

    # -- act --------------------------------------------------------------------------

    async def _act(self, study: Study) -> None:
        """Stop, launch or evaluate, as the study decides."""
        assert self.body is not None
        await self.trials.stop(study.stop())
        # Nothing is launched until the trialTemplate allows it.
        if self.trials.refused_by_policy(study.spec, self.conditions):
            return
        planned = await asyncio.to_thread(study.plan)
        for batch in pod_batches(study.spec, planned):
            await self.trials.launch(study, batch, self.body, self.conditions)
            for trial in batch:
                if trial.is_evaluation and trial.export:
                    message = f"evaluating {trial.name} with the tuned pipeline"
                    self._note("Evaluating", message, resource_name(self.name, trial.name))
        if study.searching and not study.failure:
            self._prepare(study)

    def _prepare(self, study: Study) -> None:
        """Ask SMAC for the next trials in the background, unless it is already at it."""
        if self.preparing is None or self.preparing.done():
            count = min(self.settings.reconcile.prepared_trials, study.spec.parallel_trial_count)
            self.preparing = _SMAC_THREAD.submit(study.prepare, count)
            self.preparing.add_done_callback(_log_prepare_failure)

    # -- publish ----------------------------------------------------------------------

    async def _publish(self, study: Study) -> None:
        """Write the tuning's status if it changed; post an event when the phase changes."""
        summary = study.summary()
        self.conditions.mark_running(summary)
        self.conditions.mark_finished(summary)
        self.conditions.mark_exhausted(study.exhausted)
        best = study.best()
        best_name = resource_name(self.name, best.name) if best else None
        status = tuning_status(summary, best, best_name, self.conditions)
        # Before the status: whoever reads the new status then scrapes the same numbers.
        self.figures = TuningFigures.of(self.namespace, self.name, study, summary)
        if status != self.published:
            await self.kube.patch_tuning_status(self.namespace, self.name, status)
            self.published = status
        if summary.phase != self.phase:
            self.phase = summary.phase
            message = summary.message or ""
            if summary.phase is Phase.SUCCEEDED:
                self._note("TuningSucceeded", message)
            elif summary.phase is Phase.FAILED:
                self._note("TuningFailed", message, warning=True)

    def _reference(self) -> kopf.Body:
        """The tuning, as kopf's event poster wants it."""
        assert self.body is not None
        meta = self.body["metadata"]
        raw: Any = {
            "apiVersion": self.body["apiVersion"],
            "kind": self.body["kind"],
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": meta["uid"]},
        }
        return kopf.Body(raw)


def _readable_spec(annotation: str | None) -> Manifest | None:
    """The accepted spec in the annotation, or None if absent or unreadable (hand-edited)."""
    try:
        return check_accepted(json.loads(annotation or ""))
    except (ValueError, TypeError, SpecError):
        return None


def _delay(error: Exception, backoff: float) -> float:
    """How long to wait before the pass after one that failed with ``error``."""
    if isinstance(error, TemporaryError) and error.delay is not None:
        return error.delay
    return backoff


def _brief(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"API error {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def _log_prepare_failure(future: Future[None]) -> None:
    if future.exception() is not None:
        logger.error("asking SMAC ahead failed", exc_info=future.exception())
