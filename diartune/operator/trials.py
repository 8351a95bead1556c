"""The running trials of one tuning as the cluster shows them: their DiarizationTrials,
Jobs and pods.

``Trials`` holds all that the operator keeps per trial between passes (the Job events not
looked at yet, each trial's state as last written, the trials that need a Job, why a pod
cannot start) and does every API call about a trial: adopt them at load, launch, create
and re-create Jobs, read finished Jobs, stop. The study decides which trials run; this
module only follows its decisions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from kubernetes.client import ApiException

from diartune.operator.api import LABEL_TRIAL
from diartune.operator.errors import StaleTrial
from diartune.operator.kube import Kube
from diartune.operator.manifests import (
    Manifest,
    finished_condition,
    job_manifest,
    job_outcomes,
    job_trials,
    pod_waiting,
    resource_name,
    result_lost,
    trial_manifest,
    trial_of,
    trial_status,
)
from diartune.operator.policy import TrialPolicy
from diartune.operator.settings import JobDefaults
from diartune.operator.status import Conditions
from diartune.records import Trial, TrialRecord
from diartune.search.study import Study
from diartune.spec.model import Spec


class Note(Protocol):
    """Post an event on the tuning, and log it (as its controller does)."""

    def __call__(
        self, reason: str, message: str, trial: str | None = None, warning: bool = False
    ) -> None: ...


class Log(Protocol):
    """Log a line about the tuning or one of its trials (as its controller does)."""

    def __call__(
        self, message: str, trial: str | None = None, level: int = logging.INFO
    ) -> None: ...


#: Record a finished trial in the study (and say so).
Finish = Callable[[Trial, TrialRecord], Awaitable[None]]
#: Whether the tuning is gone (a deleted Job is then not created again).
Gone = Callable[[], Awaitable[bool]]


class Trials:
    """The per-trial state of one tuning, and the API calls that keep it.

    Parameters
    ----------
    kube
        The API client.
    namespace, tuning
        The tuning's namespace and name.
    defaults, policy
        The chart's trial Job defaults and trial policy.
    note, log
        How the tuning posts events and logs lines.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        tuning: str,
        defaults: JobDefaults,
        policy: TrialPolicy,
        note: Note,
        log: Log,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.tuning = tuning
        self.defaults = defaults
        self.policy = policy
        self.note = note
        self.log = log
        #: Job events not looked at yet, by Job: (event type, Job).
        self.changed_jobs: dict[str, tuple[str | None, Manifest]] = {}
        #: The Job that runs each running trial (a Job may run several in turn).
        self.job_of: dict[str, str] = {}
        #: Each running trial's state as last written to its DiarizationTrial.
        self.states: dict[str, str] = {}
        #: Running trials whose Job is to be created (again).
        self.jobless: set[str] = set()
        #: Why a trial's pod cannot start, from its pod's events; and those warned of.
        self.waiting: dict[str, str] = {}
        self.warned: set[str] = set()

    def reset(self) -> None:
        """Forget what the next load rebuilds from the cluster (Jobs, states, missing Jobs).
        The pods' waiting reasons are kept: only a pod's next event would tell them again."""
        self.changed_jobs.clear()
        self.job_of.clear()
        self.states.clear()
        self.jobless.clear()

    # -- what the handlers hand over --------------------------------------------------

    def take_job(self, event_type: str | None, job: Manifest) -> bool:
        """Note that one of the tuning's Jobs changed (or was deleted); whether it runs
        trials."""
        trials = job_trials(job)
        if trials:
            self.changed_jobs[job["metadata"]["name"]] = (event_type, job)
        return bool(trials)

    def take_pod(self, pod: Manifest) -> bool:
        """Note why a trial pod cannot start, if so; whether that is news."""
        trial = pod["metadata"].get("labels", {}).get(LABEL_TRIAL)
        waiting = pod_waiting(pod)
        if trial and waiting and trial not in self.waiting:
            self.waiting[trial] = waiting
            return True
        return False

    # -- load -------------------------------------------------------------------------

    async def adopt(self, uid: str) -> tuple[list[TrialRecord], list[Trial]]:
        """The tuning's finished trials and running ones, from its DiarizationTrials (those
        owned by ``uid``) and their Jobs; each running trial's Job is looked at on the next
        pass, or created if missing."""
        records: list[TrialRecord] = []
        running: list[Trial] = []
        jobs = _jobs_of_trials(await self.kube.list_jobs(self.namespace, self.tuning))
        for resource in await self.kube.list_trials(self.namespace, self.tuning):
            if not owned_by(resource, uid):  # left from an earlier tuning of this name
                continue
            trial = trial_of(resource)
            status = trial_status(resource)
            record = status.record(trial)
            name = resource["metadata"]["name"]
            job = jobs.get(trial.name)
            if record is not None and not _active(job):
                records.append(record)
                continue
            running.append(trial)
            self.states[trial.name] = "Running" if record else status.state or "Pending"
            if record is not None:  # a status patched by hand: the outcome is its Job's
                message = f"{name}: its status says {status.state}, but its Job still runs"
                self.note("TrialStatusIgnored", message, name, warning=True)
            if job is None:  # lost between the trial's creation and its Job's
                self.jobless.add(trial.name)
            else:
                self.job_of[trial.name] = job["metadata"]["name"]
                self.take_job(None, job)
        return records, running

    async def resync(self, study: Study) -> None:
        """Look at every Job of the running trials, as if each had sent an event."""
        jobs = await self.kube.list_jobs(self.namespace, self.tuning)
        for job in jobs:
            self.take_job(None, job)
        names = {job["metadata"]["name"] for job in jobs}
        self.jobless |= {trial for trial in study.running if self.job_of.get(trial) not in names}

    # -- Jobs -------------------------------------------------------------------------

    async def take_jobs(self, study: Study, finish: Finish, gone: Gone) -> None:
        """Record the trials whose Jobs finished (``finish``); follow the others' progress."""
        changed, self.changed_jobs = self.changed_jobs, {}
        for name, (event_type, job) in changed.items():
            # A trial listed by an earlier Job that it no longer runs in is not its business.
            trials = [
                study.running[trial]
                for trial in job_trials(job)
                if trial in study.running and self.job_of.get(trial, name) == name
            ]
            if not trials:
                continue
            try:
                await self._take_job(trials, event_type, job, finish, gone)
            except BaseException:
                self.changed_jobs.setdefault(name, (event_type, job))  # retried next pass
                raise

    async def _take_job(
        self,
        trials: list[Trial],
        event_type: str | None,
        job: Manifest,
        finish: Finish,
        gone: Gone,
    ) -> None:
        name = job["metadata"]["name"]
        condition = finished_condition(job)
        if event_type == "DELETED":
            if not await gone():
                # created again: each trial reports what it wrote
                self.jobless.update(trial.name for trial in trials)
        elif condition is not None:
            pods = await self.kube.job_pods(self.namespace, job["metadata"]["uid"])
            if result_lost(job, pods):
                await self.kube.delete_job(self.namespace, name)
                self.jobless.update(trial.name for trial in trials)
                return
            outcomes = job_outcomes(job, pods, self.waiting.get(trials[0].name))
            for trial in trials:
                outcome = outcomes.get(trial.name)
                if outcome is None:  # its pod ended before it did: it runs again
                    self.jobless.add(trial.name)
                else:
                    await finish(trial, trial.record(outcome))
        elif (job.get("status") or {}).get("ready"):
            for trial in trials:
                if self.states.get(trial.name) in (None, "Pending"):
                    self.states[trial.name] = "Running"
                    await self.kube.patch_trial_status(
                        self.namespace,
                        resource_name(self.tuning, trial.name),
                        {"state": "Running"},
                    )

    def finished(self, trial: str) -> None:
        """Forget a trial that is no longer running (finished, or deleted by hand)."""
        self.states.pop(trial, None)
        self.job_of.pop(trial, None)
        self.waiting.pop(trial, None)
        self.warned.discard(trial)

    def warn_waiting(self, study: Study) -> None:
        """Warn, once per trial, of a running trial whose pod cannot start: it would
        otherwise wait, silent, until its Job's activeDeadlineSeconds."""
        for trial, waiting in self.waiting.items():
            if trial in study.running and trial not in self.warned:
                self.warned.add(trial)
                name = resource_name(self.tuning, trial)
                message = f"{name}: its pod cannot start: {waiting}"
                self.note("TrialPodWaiting", message, name, warning=True)

    async def ensure_jobs(self, study: Study, conditions: Conditions) -> None:
        """Create the Job of every running trial that has none (never created, deleted,
        or lost with its result): a trial whose Job runs again reports the result it
        already wrote instead of running twice."""
        pending, self.jobless = self.jobless, set()
        found: list[tuple[Trial, Manifest]] = []
        for name in sorted(pending):
            trial = study.running.get(name)
            if trial is None:
                continue
            resource = await self.kube.get_trial(self.namespace, resource_name(self.tuning, name))
            if resource is None:  # deleted by hand: its slot goes to a new trial
                study.forget(name)
                self.finished(name)
            else:
                found.append((trial, resource))
        resources = dict((trial.name, resource) for trial, resource in found)
        for batch in pod_batches(study.spec, [trial for trial, _ in found]):
            await self._create_job(study, batch, resources[batch[0].name], conditions)

    # -- the study's decisions ---------------------------------------------------------

    async def stop(self, records: list[TrialRecord]) -> None:
        """Delete the Jobs of the trials the study stopped, and mark them failed."""
        for record in records:
            name = resource_name(self.tuning, record.name)
            await self.kube.delete_job(self.namespace, self.job_of.get(record.name, name))
            await self.kube.patch_trial_status(
                self.namespace, name, {"state": "Failed", "message": record.message}
            )
            self.states.pop(record.name, None)

    async def launch(
        self, study: Study, trials: list[Trial], tuning: Manifest, conditions: Conditions
    ) -> None:
        """Create the DiarizationTrial of each trial (owned by ``tuning``), then one Job
        that runs them in turn (``pod_batches``)."""
        resources: list[Manifest] = []
        job = resource_name(self.tuning, trials[0].name)
        for trial in trials:
            resource = await self.kube.create_trial(trial_manifest(tuning, trial))
            if not owned_by(resource, tuning["metadata"]["uid"]):
                # Left from an earlier tuning of the same name: remove it, retry the pass.
                await self.kube.delete_trial(self.namespace, resource["metadata"]["name"])
                raise StaleTrial(f"{resource['metadata']['name']} belongs to an earlier tuning")
            self.states[trial.name] = "Pending"
            name = resource["metadata"]["name"]
            await self.kube.patch_trial_status(
                self.namespace, name, {"state": "Pending", "job": job}
            )
            resources.append(resource)
        await self._create_job(study, trials, resources[0], conditions)
        for resource in resources:
            name = resource["metadata"]["name"]
            self.log(f"{name}: launched", name)

    async def _create_job(
        self, study: Study, trials: list[Trial], resource: Manifest, conditions: Conditions
    ) -> None:
        """Create the Job that runs ``trials`` in turn, named after the first, whose
        DiarizationTrial is ``resource`` (an existing one is adopted); a template the API
        server refuses becomes the TrialTemplateInvalid condition and is retried on change."""
        names = [trial.name for trial in trials]
        if self.refused_by_policy(study.spec, conditions):
            # a re-created Job runs the current trialTemplate
            self.jobless.update(names)
            return
        requests = [study.request(trial) for trial in trials]
        manifest = job_manifest(resource, self.tuning, study.spec, requests, self.defaults)
        try:
            job = await self.kube.create_job(manifest)
        except ApiException as error:
            if error.status != 422:
                raise
            conditions.mark_template(f"the API server refused its Job: {_api_message(error)}")
            self.jobless.update(names)
            return
        conditions.mark_template(None)
        if not owned_by(job, resource["metadata"]["uid"]):
            # Left by an earlier trial of the same name (a deleted tuning's, not yet
            # garbage-collected): remove it, and create this trial's on the retried pass.
            self.jobless.update(names)
            await self.kube.delete_job(self.namespace, job["metadata"]["name"])
            raise StaleTrial(f"Job {job['metadata']['name']} belongs to an earlier trial")
        # A Job of this name found in place (a 409) runs what it lists; the rest get a Job
        # of their own on the next pass.
        runs = set(job_trials(job))
        for name in names:
            if name in runs:
                self.job_of[name] = job["metadata"]["name"]
            else:
                self.jobless.add(name)

    def refused_by_policy(self, spec: Spec, conditions: Conditions) -> bool:
        """Whether the chart's trial policy refuses the trialTemplate (then say why)."""
        refused = self.policy.refusals(spec, self.defaults)
        if refused:
            conditions.mark_template("; ".join(refused))
        return bool(refused)


def pod_batches(spec: Spec, trials: list[Trial]) -> list[list[Trial]]:
    """The trials in the groups that one pod each runs in turn, in order: search trials of
    a stage by its ``pod_size`` (``trialsPerPod``), each evaluation alone."""
    batches: list[list[Trial]] = []
    for trial in trials:
        last = batches[-1] if batches else []
        size = 1 if trial.is_evaluation else spec.stage(trial.stage).pod_size
        if last and last[0].stage == trial.stage and not last[0].is_evaluation and len(last) < size:
            last.append(trial)
        else:
            batches.append([trial])
    return batches


def _jobs_of_trials(jobs: list[Manifest]) -> dict[str, Manifest]:
    """The Job of each trial: of the Jobs that list it, one that runs, else the newest (a
    trial left out of a finished Job's results is listed again by the Job created for it)."""
    found: dict[str, Manifest] = {}

    def rank(job: Manifest) -> tuple[bool, str, str]:
        meta = job["metadata"]
        return _active(job), meta.get("creationTimestamp") or "", meta["name"]

    for job in sorted(jobs, key=rank):
        for trial in job_trials(job):
            found[trial] = job
    return found


def owned_by(resource: Manifest, uid: str) -> bool:
    """Whether ``resource`` has an owner reference to ``uid``."""
    references = resource["metadata"].get("ownerReferences") or []
    return any(reference.get("uid") == uid for reference in references)


def _active(job: Manifest | None) -> bool:
    """Whether a Job exists and has not finished (nor is being deleted)."""
    if job is None or job["metadata"].get("deletionTimestamp"):
        return False
    return finished_condition(job) is None


def _api_message(error: ApiException) -> str:
    """The API server's own message in an error response."""
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)
