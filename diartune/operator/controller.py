"""One DiarizationTuning driven through Kubernetes: what ``diartune tune`` does locally.

A ``TuningController`` holds a tuning's ``Study`` in memory, rebuilt at any time from
the tuning's DiarizationTrials: finished ones are its records, unfinished ones are
adopted as running trials (their Job is recreated only if it is missing). A trial's
DiarizationTrial is created before its Job, so no trial is ever lost or run twice.

Everything a controller does happens under its lock, in reaction to a change of the
tuning or of one of its Jobs; SMAC's asks and tells run in a worker thread. After each
launch, the next trials are asked of SMAC ahead, in one background thread shared by all
tunings, so that a freed slot gets its successor without waiting for SMAC's surrogate
to retrain (seconds, after hundreds of trials).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import kopf

from diartune.crd import GROUP
from diartune.executors.kubernetes import (
    EVALUATION,
    LABEL_TRIAL,
    JobDefaults,
    JobOutcome,
    Manifest,
    Owner,
    artifacts_root,
    finished_condition,
    job_manifest,
    job_outcome,
    planned_trial,
    resource_name,
    trial_manifest,
    trial_record_of,
    trial_status,
)
from diartune.operator.kube import Kube
from diartune.operator.spec_changes import parse_spec, resolve
from diartune.operator.status import TERMINAL_PHASES, Conditions, tuning_status
from diartune.records import TrialRecord
from diartune.spec import Spec, SpecError
from diartune.storage import join
from diartune.study import PlannedTrial, Study, evaluation_request, trial_record, trial_request

ACCEPTED_SPEC = f"{GROUP}/accepted-spec"
STOPPED = "stopped: the tuning failed"
#: Trials asked of SMAC ahead of need: as many as SMAC itself hands out per surrogate
#: fit (its retrain_after), so prepared trials are no staler than SMAC's own batches.
PREPARED_TRIALS = 8
_SMAC_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diartune-smac")
logger = logging.getLogger(__name__)


def _percent(der: float | None) -> str:
    return "-" if der is None else f"{100 * der:.2f} %"


class TuningController:
    """The in-memory state of one tuning and the reactions to its changes."""

    def __init__(self, kube: Kube, defaults: JobDefaults, namespace: str, name: str) -> None:
        self.kube = kube
        self.defaults = defaults
        self.namespace = namespace
        self.name = name
        self.lock = asyncio.Lock()
        self.loaded = False
        self.gone = False
        self.phase: str | None = None  # set once Succeeded or Failed
        self.owner: Owner | None = None
        self.generation = 0
        self.conditions = Conditions()
        self.accepted: dict[str, Any] = {}
        self.rejected: str | None = None
        self.root = ""
        self.study: Study | None = None
        self.trial_states: dict[str, str] = {}
        self.evaluating = False
        self.test: dict[str, Any] = {}
        self.published: dict[str, Any] | None = None
        self.preparing: Future[None] | None = None

    # -- loading ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the tuning still runs (not finished, failed, rejected or deleted)."""
        return self.loaded and not self.gone and self.phase is None and self.study is not None

    def _reference(self) -> kopf.Body:
        """The tuning, as kopf's event poster wants it."""
        assert self.owner is not None
        raw: Any = {
            "apiVersion": self.owner.api_version,
            "kind": self.owner.kind,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.owner.uid},
        }
        return kopf.Body(raw)

    async def load(self, body: Manifest) -> None:
        """Rebuild the study from the tuning and its DiarizationTrials and Jobs."""
        self.loaded = True
        self.owner = Owner.of(body)
        meta = body["metadata"]
        self.generation = meta.get("generation", 0)
        status = body.get("status") or {}
        self.conditions = Conditions.load(status)
        self.test = {k: status[k] for k in ("testDer", "testComponents", "pipeline") if k in status}
        saved = (meta.get("annotations") or {}).get(ACCEPTED_SPEC)
        if status.get("phase") in TERMINAL_PHASES:
            self.phase = status["phase"]
            return
        if saved is None:
            try:
                parse_spec(body["spec"])
            except SpecError as error:
                await self._refuse(str(error))
                return
            annotations = {ACCEPTED_SPEC: json.dumps(body["spec"], sort_keys=True)}
            await self.kube.patch_tuning(
                self.namespace, self.name, {"metadata": {"annotations": annotations}}
            )
        self.accepted = json.loads(saved) if saved is not None else body["spec"]
        spec, self.rejected = resolve(self.accepted, body["spec"])
        root = artifacts_root(spec, self.defaults, self.namespace, self.name)
        if root is None:
            await self._refuse("no artifacts location: set spec.artifacts (an s3:// URI)")
            return
        self.root = root
        self.conditions.set("Created", True, "Created", "trials are launched", self.generation)
        await self._adopt(spec)

    async def _adopt(self, spec: Spec) -> None:
        trials = await self.kube.list_trials(self.namespace, self.name)
        jobs = {
            job["metadata"]["name"]: job
            for job in await self.kube.list_jobs(self.namespace, self.name)
        }
        records: list[TrialRecord] = []
        running: list[tuple[PlannedTrial, Manifest]] = []
        for resource in trials:
            record = trial_record_of(resource, spec)
            if record is not None:
                records.append(record)
            else:
                running.append((planned_trial(resource, spec), resource))
        self.study = Study(spec, records, [trial for trial, _ in running])
        for trial, resource in running:
            self.trial_states[trial.name] = (resource.get("status") or {}).get("state") or "Pending"
            job = jobs.get(resource["metadata"]["name"])
            if job is None:  # lost between the trial's creation and its Job's
                await self._create_job(trial, Owner.of(resource))
            elif finished_condition(job) is not None:  # it finished while nobody watched
                await self.job_changed(None, job)
        evaluation = jobs.get(resource_name(self.name, EVALUATION))
        self.evaluating = evaluation is not None
        if evaluation is not None:
            await self.job_changed(None, evaluation)

    async def _refuse(self, message: str) -> None:
        """Fail a tuning whose spec cannot run at all."""
        self.phase = "Failed"
        self.conditions.set("SpecRejected", True, "InvalidSpec", message, self.generation)
        self.conditions.set("Failed", True, "InvalidSpec", message, self.generation)
        kopf.warn(self._reference(), reason="SpecRejected", message=message)
        await self.kube.patch_tuning_status(
            self.namespace,
            self.name,
            {
                "phase": "Failed",
                "conditions": self.conditions.as_list(),
                "observedGeneration": self.generation,
            },
        )

    # -- changes ----------------------------------------------------------------------

    def update(self, body: Manifest) -> None:
        """Take a new spec: apply its mutable fields, refuse the rest (with a condition)."""
        self.generation = body["metadata"].get("generation", self.generation)
        if not self.active:
            return
        assert self.study is not None
        spec, rejected = resolve(self.accepted, body["spec"])
        if rejected and rejected != self.rejected:
            kopf.warn(self._reference(), reason="SpecRejected", message=rejected)
        self.rejected = rejected
        self.study.spec = spec

    async def job_changed(self, event_type: str | None, job: Manifest) -> None:
        """React to a change of one of the tuning's Jobs."""
        if not self.active:
            return
        assert self.study is not None
        name = job["metadata"]["labels"][LABEL_TRIAL]
        if name == EVALUATION:
            await self._evaluation_changed(event_type, job)
            return
        trial = self.study.running.get(name)
        if trial is None:
            return
        if finished_condition(job) is not None:
            pods = await self.kube.job_pods(self.namespace, job["metadata"]["uid"])
            await self._finish(trial, job_outcome(job, pods))
        elif event_type == "DELETED":
            if await self._tuning_deleted():
                return
            await self._finish(trial, JobOutcome(None, "its Job was deleted", False, None))
        elif (job.get("status") or {}).get("ready") and self.trial_states.get(name) == "Pending":
            self.trial_states[name] = "Running"
            await self.kube.patch_trial_status(
                self.namespace, resource_name(self.name, name), {"state": "Running"}
            )

    async def _tuning_deleted(self) -> bool:
        body = await self.kube.get_tuning(self.namespace, self.name)
        self.gone = body is None or bool(body["metadata"].get("deletionTimestamp"))
        return self.gone

    # -- trials -----------------------------------------------------------------------

    async def advance(self) -> None:
        """Launch the trials that fit, or evaluate the winner, or fail; then publish."""
        if not self.active:
            return
        study = self.study
        assert study is not None
        failure = study.failure
        if failure:
            await self._fail(failure)
        elif study.complete:
            if not (self.evaluating or study.spec.suspend):
                await self._evaluate()
        else:
            for trial in await asyncio.to_thread(study.plan):
                await self._launch(trial)
            self._prepare(study)
        await self.publish()

    def _prepare(self, study: Study) -> None:
        """Ask SMAC for the next trials in the background, unless it is already at it."""
        if self.preparing is None or self.preparing.done():
            count = min(PREPARED_TRIALS, study.spec.parallel_trial_count)
            self.preparing = _SMAC_THREAD.submit(study.prepare, count)
            self.preparing.add_done_callback(_log_failure)

    async def _launch(self, trial: PlannedTrial) -> None:
        assert self.owner is not None
        resource = await self.kube.create_trial(trial_manifest(self.owner, self.namespace, trial))
        self.trial_states[trial.name] = "Pending"
        await self._create_job(trial, Owner.of(resource))
        name = resource["metadata"]["name"]
        await self.kube.patch_trial_status(self.namespace, name, {"state": "Pending", "job": name})

    async def _create_job(self, trial: PlannedTrial, owner: Owner) -> None:
        assert self.study is not None
        spec = self.study.spec
        request = trial_request(spec, trial, self.root)
        manifest = job_manifest(owner, self.namespace, self.name, spec, request, self.defaults)
        await self.kube.create_job(manifest)

    async def _finish(self, trial: PlannedTrial, outcome: JobOutcome) -> None:
        study = self.study
        assert study is not None
        record = trial_record(
            trial, outcome.result, outcome.error, outcome.bad_input, outcome.seconds
        )
        name = resource_name(self.name, trial.name)
        await self.kube.patch_trial_status(self.namespace, name, trial_status(record))
        before = study.best()
        await asyncio.to_thread(study.record, record)
        self.trial_states.pop(trial.name, None)
        reference = self._reference()
        if record.state == "Failed":
            kopf.warn(reference, reason="TrialFailed", message=f"{name}: {record.message}")
        elif before is None or (record.der or 0.0) < (before.der or 0.0):
            kopf.info(reference, reason="NewBest", message=f"{name}: DER {_percent(record.der)}")
        stage = study.spec.stage(trial.stage)
        if len(study.finished(stage.name)) == stage.max_trial_count:
            best = study.best(stage.name)
            der = best.der if best else None
            message = f"stage {stage.name} finished: best DER {_percent(der)}"
            kopf.info(reference, reason="StageFinished", message=message)

    async def _fail(self, failure: str) -> None:
        """Fail the tuning and stop its running trials, so that nothing keeps running."""
        study = self.study
        assert study is not None
        for trial in list(study.running.values()):
            name = resource_name(self.name, trial.name)
            await self.kube.delete_job(self.namespace, name)
            await self.kube.patch_trial_status(
                self.namespace, name, {"state": "Failed", "message": STOPPED}
            )
            study.forget(trial.name)
        self.phase = "Failed"
        self.conditions.set("Failed", True, "TrialsFailed", failure, self.generation)
        kopf.warn(self._reference(), reason="TuningFailed", message=failure)

    # -- the test evaluation ----------------------------------------------------------

    async def _evaluate(self) -> None:
        """Run the best trial once on the test subset, exporting the tuned pipeline."""
        assert self.study is not None and self.owner is not None
        best = self.study.best()
        assert best is not None  # a complete study with no success has failed
        request = evaluation_request(self.study.spec, best, EVALUATION, self.root, export=True)
        manifest = job_manifest(
            self.owner, self.namespace, self.name, self.study.spec, request, self.defaults
        )
        await self.kube.create_job(manifest)
        self.evaluating = True
        message = f"evaluating {resource_name(self.name, best.name)} on the test subset"
        kopf.info(self._reference(), reason="Evaluating", message=message)

    async def _evaluation_changed(self, event_type: str | None, job: Manifest) -> None:
        assert self.study is not None
        if not self.study.complete:
            return
        if finished_condition(job) is None:
            if event_type == "DELETED" and not await self._tuning_deleted():
                self.evaluating = False  # run it again
            return
        outcome = job_outcome(job, await self.kube.job_pods(self.namespace, job["metadata"]["uid"]))
        reference = self._reference()
        if outcome.result is not None:
            result = outcome.result
            self.test = {
                "testDer": result["der"],
                "testComponents": result["components"],
                "pipeline": join(result["artifacts"], "pipeline"),
            }
            reason, message = "Succeeded", f"test DER {_percent(result['der'])}"
            kopf.info(reference, reason="TuningSucceeded", message=message)
        else:
            self.test = {"testDer": None}
            reason, message = "TestEvaluationFailed", f"test evaluation failed: {outcome.error}"
            kopf.warn(reference, reason="TestEvaluationFailed", message=message)
        self.phase = "Succeeded"
        self.conditions.set("Succeeded", True, reason, message, self.generation)
        await self.publish()

    # -- status -----------------------------------------------------------------------

    async def publish(self) -> None:
        """Write the tuning's status if it changed."""
        study = self.study
        if study is None or self.gone:
            return
        evaluating = self.evaluating and self.phase is None
        running = bool(study.running) or evaluating
        if self.phase is not None:
            phase = self.phase
        elif study.spec.suspend:
            phase = "Suspended"
        else:
            phase = "Running" if running else "Pending"
        current = study.current_stage
        stage = EVALUATION if evaluating else current.name if current else None
        generation = self.generation
        if study.running:
            reason, message = "TrialsRunning", f"{len(study.running)} trials running"
        elif evaluating:
            reason, message = "Evaluating", "the best trial runs on the test subset"
        else:
            reason, message = phase, f"no trial running ({phase})"
        self.conditions.set("Running", running, reason, message, generation)
        if self.rejected:
            self.conditions.set("SpecRejected", True, "ImmutableField", self.rejected, generation)
        elif "SpecRejected" in self.conditions.items:
            self.conditions.set(
                "SpecRejected", False, "Accepted", "the spec is applied", generation
            )
        best = study.best()
        status = tuning_status(
            study,
            phase,
            stage,
            self.conditions,
            generation,
            best_name=resource_name(self.name, best.name) if best else None,
            test=self.test,
        )
        if status != self.published:
            await self.kube.patch_tuning_status(self.namespace, self.name, status)
            self.published = status


def _log_failure(future: Future[None]) -> None:
    if future.exception() is not None:
        logger.error("asking SMAC ahead failed", exc_info=future.exception())


class Registry:
    """The controllers of the tunings this operator watches."""

    def __init__(self, kube: Kube, defaults: JobDefaults) -> None:
        self.kube = kube
        self.defaults = defaults
        self.controllers: dict[tuple[str, str], TuningController] = {}

    def _controller(self, namespace: str, name: str) -> TuningController:
        key = (namespace, name)
        if key not in self.controllers:
            self.controllers[key] = TuningController(self.kube, self.defaults, namespace, name)
        return self.controllers[key]

    @asynccontextmanager
    async def _locked(self, namespace: str, name: str) -> AsyncIterator[TuningController]:
        """The tuning's controller, alone; dropped on error, to be reloaded from the cluster."""
        controller = self._controller(namespace, name)
        async with controller.lock:
            try:
                yield controller
            except BaseException:
                if self.controllers.get((namespace, name)) is controller:
                    del self.controllers[namespace, name]
                raise

    async def tuning_changed(self, body: Manifest) -> None:
        """A tuning was created, found at startup, or its spec changed."""
        meta = body["metadata"]
        async with self._locked(meta["namespace"], meta["name"]) as controller:
            if controller.loaded:
                controller.update(body)
            else:
                await controller.load(body)
            await controller.advance()

    async def job_changed(
        self, namespace: str, tuning: str, event_type: str | None, job: Manifest
    ) -> None:
        """A Job of ``tuning`` changed (or was listed at startup, or deleted)."""
        async with self._locked(namespace, tuning) as controller:
            if not controller.loaded:
                body = await self.kube.get_tuning(namespace, tuning)
                if body is None:
                    self.forget(namespace, tuning)
                    return
                await controller.load(body)
            await controller.job_changed(event_type, job)
            await controller.advance()

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted tuning (its trials and Jobs go with it, by garbage collection)."""
        controller = self.controllers.pop((namespace, name), None)
        if controller is not None:
            controller.gone = True
