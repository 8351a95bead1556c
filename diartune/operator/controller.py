"""One DiarizationTuning driven through Kubernetes: what ``diartune tune`` does locally.

Each tuning has a ``TuningController`` with a worker task of its own. kopf's handlers
only hand it what changed (the tuning, or one of its Jobs) and wake it; the worker
reconciles, one pass at a time:

1. load: rebuild the study from the tuning's DiarizationTrials (owned by this tuning's
   UID): finished ones are its records, unfinished ones its running trials, whose Jobs
   are created if missing (a trial's DiarizationTrial is created before its Job);
2. take the latest spec (``diartune.spec.changes``: what may change is applied, the rest
   refused with a condition);
3. record the trials whose Jobs finished (result from the pod's termination message);
4. act on the study's decisions: stop, launch, evaluate;
5. publish the status.

A pass that fails (an API error, a timeout) is retried with backoff, and every
``resync_seconds`` the worker looks at the Jobs of its running trials even without an
event, so that no transient error or missed event leaves a tuning unattended. SMAC's
asks and tells run in a worker thread; after each launch, the next trials are asked of
SMAC ahead in one background thread shared by all tunings, so that a freed slot gets
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
from urllib3.exceptions import HTTPError

from diartune.operator.api import GROUP, LABEL_TRIAL
from diartune.operator.kube import Kube
from diartune.operator.manifests import (
    Manifest,
    artifacts_root,
    finished_condition,
    job_manifest,
    job_outcome,
    pod_waiting,
    record_status,
    resource_name,
    result_lost,
    trial_manifest,
    trial_of,
    trial_status,
)
from diartune.operator.metrics import RECONCILE_ERRORS, TuningFigures
from diartune.operator.policy import TrialPolicy
from diartune.operator.settings import JobDefaults
from diartune.operator.status import Conditions, refused_status, tuning_status
from diartune.records import Trial, TrialRecord, percent
from diartune.search.study import Phase, Study
from diartune.search.warm_start import WarmStart, warm_start
from diartune.spec.changes import MUTABLE_KEYS, resolve
from diartune.spec.file import parse_spec
from diartune.spec.model import Spec, SpecError
from diartune.spec.types import DNS_SUBDOMAIN

ACCEPTED_SPEC = f"{GROUP}/accepted-spec"
#: Trials asked of SMAC ahead of need: as many as SMAC itself hands out per surrogate
#: fit (its retrain_after), so prepared trials are no staler than SMAC's own batches.
PREPARED_TRIALS = 8
RESYNC_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 60.0
_SMAC_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diartune-smac")
logger = logging.getLogger(__name__)


class StaleTrial(RuntimeError):
    """A DiarizationTrial or Job of this name exists, left by an earlier tuning of the same
    name."""


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
        defaults: JobDefaults,
        namespace: str,
        name: str,
        leading: asyncio.Event | None = None,
        policy: TrialPolicy | None = None,
    ) -> None:
        self.kube = kube
        self.leading = leading
        self.policy = policy or TrialPolicy()
        self.defaults = defaults
        self.namespace = namespace
        self.name = name
        self.lifecycle = Lifecycle.NEW
        self.body: Manifest | None = None
        self.changed_jobs: dict[str, tuple[str | None, Manifest]] = {}
        self.wake = asyncio.Event()
        self.resync_seconds = RESYNC_SECONDS
        self.conditions = Conditions()
        self.accepted: dict[str, Any] = {}
        self.applied_generation: int | None = None
        self.root = ""
        self.study: Study | None = None
        self.trial_states: dict[str, str] = {}
        self.jobless: set[str] = set()
        #: Why a trial's pod cannot start, from its pod's events; and those warned of.
        self.waiting: dict[str, str] = {}
        self.warned: set[str] = set()
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
        trial = job["metadata"].get("labels", {}).get(LABEL_TRIAL)
        if trial:
            self.changed_jobs[trial] = (event_type, job)
            self.wake.set()

    def take_pod(self, pod: Manifest) -> None:
        """One of the tuning's trial pods changed: note it if it cannot start."""
        trial = pod["metadata"].get("labels", {}).get(LABEL_TRIAL)
        waiting = pod_waiting(pod)
        if trial and waiting and trial not in self.waiting:
            self.waiting[trial] = waiting
            self.wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile whenever woken, with a look at every Job each ``resync_seconds``
        (woken or not), until the tuning is gone."""
        if self.leading is not None:
            await self.leading.wait()  # a standby replica follows events but does not act
        backoff = 1.0
        next_resync = time.monotonic() + self.resync_seconds
        while self.lifecycle is not Lifecycle.GONE:
            self.wake.clear()
            resync = time.monotonic() >= next_resync
            try:
                await self.reconcile(resync)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # retried from the cluster, the source of truth
                RECONCILE_ERRORS.labels(self.namespace, self.name).inc()
                self._log_failure(error, backoff)
                if self.lifecycle is Lifecycle.ACTIVE:
                    self._unload()
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
                self.wake.set()
                continue
            backoff = 1.0
            if resync:
                next_resync = time.monotonic() + self.resync_seconds
            # Woken by events or not, the Jobs are looked at every resync_seconds: a busy
            # tuning's events would otherwise put off the look for a missed one forever.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, next_resync - time.monotonic()))

    def _log_failure(self, error: Exception, backoff: float) -> None:
        where = f"{self.namespace}/{self.name}"
        if isinstance(error, ApiException | HTTPError | OSError | TimeoutError | StaleTrial):
            message = "%s: %s; retrying in %.0f s"
            logger.warning(message, where, _brief(error), backoff, extra=self.fields)
        else:
            message = "%s: reconciling failed; retrying in %.0f s"
            logger.exception(message, where, backoff, extra=self.fields)

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
        self.changed_jobs.clear()
        self.trial_states.clear()
        self.jobless.clear()

    async def reconcile(self, resync: bool = False) -> None:
        """One pass: load if needed, take the spec and finished Jobs, act, publish."""
        if self.lifecycle is Lifecycle.NEW:
            await self._load()
        if self.lifecycle is not Lifecycle.ACTIVE:
            return
        self._apply_spec()
        if resync:
            await self._resync()
        await self._take_jobs()
        if self.lifecycle is Lifecycle.ACTIVE:
            self._warn_waiting()
            await self._ensure_jobs()
            await self._act()
            await self._publish()

    async def _resync(self) -> None:
        """Look at every Job of the running trials, as if each had sent an event."""
        assert self.study is not None
        jobs = await self.kube.list_jobs(self.namespace, self.name)
        for job in jobs:
            self.take_job(None, job)
        with_job = {job["metadata"].get("labels", {}).get(LABEL_TRIAL) for job in jobs}
        self.jobless |= set(self.study.running) - with_job

    # -- loading ----------------------------------------------------------------------

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
        saved = _readable_spec((meta.get("annotations") or {}).get(ACCEPTED_SPEC))
        if saved is None:
            try:
                parse_spec(body["spec"])
            except SpecError as error:
                await self._refuse(str(error))
                return
            if ACCEPTED_SPEC in (meta.get("annotations") or {}):
                message = f"the {ACCEPTED_SPEC} annotation was unreadable: the current spec is now"
                self._note("AcceptedSpecRestored", message, warning=True)
            self.accepted = _accepted_part(body["spec"])
            annotations = {ACCEPTED_SPEC: json.dumps(self.accepted, sort_keys=True)}
            await self.kube.patch_tuning(
                self.namespace, self.name, {"metadata": {"annotations": annotations}}
            )
        else:
            self.accepted = saved
        spec, _ = resolve(self.accepted, body["spec"])
        root = artifacts_root(spec, self.defaults, self.namespace, self.name)
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
        await self._adopt(spec, meta["uid"], warm)
        self.lifecycle = Lifecycle.ACTIVE

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
                if _owned_by(resource, uid)
                and (record := trial_status(resource).record(trial_of(resource))) is not None
            ]
            sources.append((name, records))
        return warm_start(spec, sources)

    async def _adopt(self, spec: Spec, uid: str, warm: WarmStart) -> None:
        records: list[TrialRecord] = []
        running: list[Trial] = []
        jobs = {
            job["metadata"]["name"]: job
            for job in await self.kube.list_jobs(self.namespace, self.name)
        }
        for resource in await self.kube.list_trials(self.namespace, self.name):
            if not _owned_by(resource, uid):  # left from an earlier tuning of this name
                continue
            trial = trial_of(resource)
            status = trial_status(resource)
            record = status.record(trial)
            name = resource["metadata"]["name"]
            job = jobs.get(name)
            if record is not None and not _active(job):
                records.append(record)
                continue
            running.append(trial)
            self.trial_states[trial.name] = "Running" if record else status.state or "Pending"
            if record is not None:  # a status patched by hand: the outcome is its Job's
                message = f"{name}: its status says {status.state}, but its Job still runs"
                self._note("TrialStatusIgnored", message, name, warning=True)
            if job is None:  # lost between the trial's creation and its Job's
                self.jobless.add(trial.name)
            else:
                self.take_job(None, job)
        self.study = Study(spec, records, running, root=self.root, warm=warm)

    async def _refuse(self, message: str) -> None:
        """Fail a tuning whose spec cannot run at all."""
        self.lifecycle = Lifecycle.REFUSED
        self.conditions.mark_invalid(message)
        self._note("SpecRejected", message, warning=True)
        await self.kube.patch_tuning_status(
            self.namespace, self.name, refused_status(message, self.conditions)
        )

    # -- changes ----------------------------------------------------------------------

    def _apply_spec(self) -> None:
        """Follow the latest spec: its changeable fields apply, other changes are refused."""
        assert self.body is not None and self.study is not None
        generation = self.body["metadata"].get("generation", 0)
        if generation == self.applied_generation:
            return
        self.applied_generation = generation
        self.conditions.generation = generation
        spec, refused = resolve(self.accepted, self.body["spec"], self.study.spec)
        rejected = self.conditions.items.get("SpecRejected", {})
        if refused and refused != rejected.get("message"):
            self._note("SpecRejected", refused, warning=True)
        self.conditions.mark_update(refused)
        self.study.spec = spec

    async def _take_jobs(self) -> None:
        """Record the trials whose Jobs finished; follow the others' progress."""
        assert self.study is not None
        changed, self.changed_jobs = self.changed_jobs, {}
        for name, (event_type, job) in changed.items():
            trial = self.study.running.get(name)
            if trial is None:
                continue
            try:
                await self._take_job(trial, event_type, job)
            except BaseException:
                self.changed_jobs.setdefault(name, (event_type, job))  # retried next pass
                raise

    async def _take_job(self, trial: Trial, event_type: str | None, job: Manifest) -> None:
        name = resource_name(self.name, trial.name)
        condition = finished_condition(job)
        if event_type == "DELETED":
            if not await self._tuning_deleted():
                self.jobless.add(trial.name)  # created again: the trial reports what it wrote
        elif condition is not None:
            pods = await self.kube.job_pods(self.namespace, job["metadata"]["uid"])
            outcome = job_outcome(job, pods, self.waiting.get(trial.name))
            if outcome.result is None and result_lost(job, pods):
                await self.kube.delete_job(self.namespace, name)
                self.jobless.add(trial.name)
                return
            await self._finish(trial, trial.record(outcome))
        elif (job.get("status") or {}).get("ready") and self.trial_states.get(trial.name) in (
            None,
            "Pending",
        ):
            self.trial_states[trial.name] = "Running"
            await self.kube.patch_trial_status(self.namespace, name, {"state": "Running"})

    def _warn_waiting(self) -> None:
        """Warn, once per trial, of a running trial whose pod cannot start: it would
        otherwise wait, silent, until its Job's activeDeadlineSeconds."""
        assert self.study is not None
        for trial, waiting in self.waiting.items():
            if trial in self.study.running and trial not in self.warned:
                self.warned.add(trial)
                name = resource_name(self.name, trial)
                message = f"{name}: its pod cannot start: {waiting}"
                self._note("TrialPodWaiting", message, name, warning=True)

    def _forget_waiting(self, trial: str) -> None:
        self.waiting.pop(trial, None)
        self.warned.discard(trial)

    async def _tuning_deleted(self) -> bool:
        body = await self.kube.get_tuning(self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.lifecycle = Lifecycle.GONE
        return self.lifecycle is Lifecycle.GONE

    # -- trials -----------------------------------------------------------------------

    async def _act(self) -> None:
        """Stop, launch or evaluate, as the study decides."""
        study = self.study
        assert study is not None
        for record in study.stop():
            name = resource_name(self.name, record.name)
            await self.kube.delete_job(self.namespace, name)
            await self.kube.patch_trial_status(
                self.namespace, name, {"state": "Failed", "message": record.message}
            )
            self.trial_states.pop(record.name, None)
        if self._refused_by_policy():  # nothing is launched until the trialTemplate allows it
            return
        for trial in await asyncio.to_thread(study.plan):
            await self._launch(trial)
            if trial.is_evaluation and trial.export:
                message = f"evaluating {trial.name} with the tuned pipeline"
                self._note("Evaluating", message, resource_name(self.name, trial.name))
        if study.searching and not study.failure:
            self._prepare(study)

    def _prepare(self, study: Study) -> None:
        """Ask SMAC for the next trials in the background, unless it is already at it."""
        if self.preparing is None or self.preparing.done():
            count = min(PREPARED_TRIALS, study.spec.parallel_trial_count)
            self.preparing = _SMAC_THREAD.submit(study.prepare, count)
            self.preparing.add_done_callback(_log_failure)

    async def _launch(self, trial: Trial) -> None:
        assert self.body is not None
        resource = await self.kube.create_trial(trial_manifest(self.body, trial))
        if not _owned_by(resource, self.body["metadata"]["uid"]):
            # Left from an earlier tuning of the same name: remove it, retry the pass.
            await self.kube.delete_trial(self.namespace, resource["metadata"]["name"])
            raise StaleTrial(f"{resource['metadata']['name']} belongs to an earlier tuning")
        self.trial_states[trial.name] = "Pending"
        name = resource["metadata"]["name"]
        await self.kube.patch_trial_status(self.namespace, name, {"state": "Pending", "job": name})
        await self._create_job(trial, resource)
        self._log(f"{name}: launched", name)

    async def _ensure_jobs(self) -> None:
        """Create the Job of every running trial that has none (never created, deleted,
        or lost with its result): a trial whose Job runs again reports the result it
        already wrote instead of running twice."""
        assert self.study is not None
        pending, self.jobless = self.jobless, set()
        for name in sorted(pending):
            trial = self.study.running.get(name)
            if trial is None:
                continue
            resource = await self.kube.get_trial(self.namespace, resource_name(self.name, name))
            if resource is None:  # deleted by hand: its slot goes to a new trial
                self.study.forget(name)
                self._forget_waiting(name)
            else:
                await self._create_job(trial, resource)

    async def _create_job(self, trial: Trial, resource: Manifest) -> None:
        """Create the trial's Job (an existing one is adopted); a template the API server
        refuses becomes the TrialTemplateInvalid condition and is retried on change."""
        assert self.study is not None
        if self._refused_by_policy():  # a re-created Job runs the current trialTemplate
            self.jobless.add(trial.name)
            return
        spec = self.study.spec
        request = self.study.request(trial)
        manifest = job_manifest(resource, self.name, spec, request, self.defaults)
        try:
            job = await self.kube.create_job(manifest)
        except ApiException as error:
            if error.status != 422:
                raise
            self.conditions.mark_template(f"the API server refused its Job: {_api_message(error)}")
            self.jobless.add(trial.name)
            return
        self.conditions.mark_template(None)
        if not _owned_by(job, resource["metadata"]["uid"]):
            # Left by an earlier trial of the same name (a deleted tuning's, not yet
            # garbage-collected): remove it, and create this trial's on the retried pass.
            self.jobless.add(trial.name)
            await self.kube.delete_job(self.namespace, job["metadata"]["name"])
            raise StaleTrial(f"Job {job['metadata']['name']} belongs to an earlier trial")

    def _refused_by_policy(self) -> bool:
        """Whether the chart's trial policy refuses the trialTemplate (then say why)."""
        assert self.study is not None
        refused = self.policy.refusals(self.study.spec, self.defaults.image)
        if refused:
            self.conditions.mark_template("; ".join(refused))
        return bool(refused)

    async def _finish(self, trial: Trial, record: TrialRecord) -> None:
        study = self.study
        assert study is not None
        name = resource_name(self.name, trial.name)
        await self.kube.patch_trial_status(self.namespace, name, record_status(record))
        before = study.best()
        await asyncio.to_thread(study.record, record)
        self.trial_states.pop(trial.name, None)
        self._forget_waiting(trial.name)
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

    # -- status -----------------------------------------------------------------------

    async def _publish(self) -> None:
        """Write the tuning's status if it changed; post an event when the phase changes."""
        study = self.study
        assert study is not None
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


def _accepted_part(spec: Manifest) -> Manifest:
    """What the accepted-spec annotation keeps: the spec without the fields that may
    change (which are always taken from the current spec), so that no trialTemplate
    (its env included) is copied into an annotation."""
    return {key: value for key, value in spec.items() if key not in MUTABLE_KEYS}


def _readable_spec(annotation: str | None) -> Manifest | None:
    """The accepted spec in the annotation, or None if absent or unreadable (hand-edited)."""
    try:
        document = json.loads(annotation or "")
        parse_spec({**document, "trialTemplate": {}})
    except (ValueError, TypeError, SpecError):
        return None
    return dict(document)


def _active(job: Manifest | None) -> bool:
    """Whether a Job exists and has not finished (nor is being deleted)."""
    if job is None or job["metadata"].get("deletionTimestamp"):
        return False
    return finished_condition(job) is None


def _owned_by(resource: Manifest, uid: str) -> bool:
    references = resource["metadata"].get("ownerReferences") or []
    return any(reference.get("uid") == uid for reference in references)


def _api_message(error: ApiException) -> str:
    """The API server's own message in an error response."""
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


def _brief(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"API error {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def _log_failure(future: Future[None]) -> None:
    if future.exception() is not None:
        logger.error("asking SMAC ahead failed", exc_info=future.exception())


class Registry:
    """The controllers of the tunings this operator watches, each with its worker task."""

    def __init__(self, kube: Kube, defaults: JobDefaults, policy: TrialPolicy) -> None:
        self.kube = kube
        self.defaults = defaults
        self.policy = policy
        self.controllers: dict[tuple[str, str], TuningController] = {}
        self.workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.leading = asyncio.Event()

    def controller(self, namespace: str, name: str) -> TuningController:
        """The tuning's controller, started if new."""
        key = (namespace, name)
        if key not in self.controllers:
            controller = TuningController(
                self.kube, self.defaults, namespace, name, self.leading, self.policy
            )
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
