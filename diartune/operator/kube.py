"""The few Kubernetes API calls the operator makes, as coroutines over dicts.

The official client is synchronous; each call runs in a worker thread so that kopf's
event loop never blocks. Objects come back as plain camelCase dicts, like kopf's bodies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client, config

from diartune.operator.api import GROUP, LABEL_TUNING, TRIAL_PLURAL, TUNING_PLURAL, VERSION
from diartune.operator.manifests import Manifest

#: Seconds to connect, and to wait for an answer, on every call.
REQUEST_TIMEOUT = (10, 30)


def connect() -> client.ApiClient:
    """An API client: in-cluster credentials in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


class Kube:
    """Async access to tunings, trials, Jobs and pods of one cluster."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        # A request that hangs (a stalled connection) fails after a while and is retried,
        # instead of holding its tuning's worker forever.
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        result = await asyncio.to_thread(method, *args, **kwargs)
        return self.api.sanitize_for_serialization(result)

    async def get_tuning(self, namespace: str, name: str) -> Manifest | None:
        """The tuning, or None if it is gone."""
        try:
            return dict(
                await self._call(
                    self.custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    TUNING_PLURAL,
                    name,
                )
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    async def patch_tuning(self, namespace: str, name: str, patch: Manifest) -> None:
        """Merge-patch the tuning's metadata or spec."""
        await self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            TUNING_PLURAL,
            name,
            patch,
        )

    async def patch_tuning_status(self, namespace: str, name: str, status: Manifest) -> None:
        """Merge-patch the tuning's status (ignored if the tuning is gone)."""
        await self._patch_status(TUNING_PLURAL, namespace, name, status)

    async def list_trials(self, namespace: str, tuning: str) -> list[Manifest]:
        """The DiarizationTrials of a tuning."""
        listing = await self._call(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            TRIAL_PLURAL,
            label_selector=f"{LABEL_TUNING}={tuning}",
        )
        return list(listing["items"])

    async def create_trial(self, manifest: Manifest) -> Manifest:
        """Create a DiarizationTrial; return it as stored, or the one of that name that
        exists already."""
        meta = manifest["metadata"]
        arguments = (GROUP, VERSION, meta["namespace"], TRIAL_PLURAL)
        try:
            created = await self._call(
                self.custom.create_namespaced_custom_object, *arguments, manifest
            )
        except client.ApiException as error:
            if error.status != 409:
                raise
            created = await self._call(
                self.custom.get_namespaced_custom_object, *arguments, meta["name"]
            )
        return dict(created)

    async def get_trial(self, namespace: str, name: str) -> Manifest | None:
        """A DiarizationTrial, or None if it is gone."""
        try:
            found = await self._call(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                TRIAL_PLURAL,
                name,
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found)

    async def delete_trial(self, namespace: str, name: str) -> None:
        """Delete a DiarizationTrial (its Job goes with it, by garbage collection)."""
        await self._ignore_gone(
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            TRIAL_PLURAL,
            name,
            propagation_policy="Background",
        )

    async def patch_trial_status(self, namespace: str, name: str, status: Manifest) -> None:
        """Merge-patch a DiarizationTrial's status (ignored if it is gone)."""
        await self._patch_status(TRIAL_PLURAL, namespace, name, status)

    async def _patch_status(self, plural: str, namespace: str, name: str, status: Manifest) -> None:
        await self._ignore_gone(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": status},
        )

    async def list_jobs(self, namespace: str, tuning: str) -> list[Manifest]:
        """The Jobs of a tuning."""
        listing = await self._call(
            self.batch.list_namespaced_job, namespace, label_selector=f"{LABEL_TUNING}={tuning}"
        )
        return list(listing["items"])

    async def create_job(self, manifest: Manifest) -> Manifest:
        """Create a Job; return it as stored, or the one of that name that exists already."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            created = await self._call(self.batch.create_namespaced_job, namespace, manifest)
        except client.ApiException as error:
            if error.status != 409:
                raise
            created = await self._call(self.batch.read_namespaced_job, name, namespace)
        return dict(created)

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods."""
        await self._ignore_gone(
            self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
        )

    async def job_pods(self, namespace: str, job_uid: str) -> list[Manifest]:
        """The pods a Job created."""
        listing = await self._call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"batch.kubernetes.io/controller-uid={job_uid}",
        )
        return list(listing["items"])

    async def _ignore_gone(self, method: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await self._call(method, *args, **kwargs)
        except client.ApiException as error:
            if error.status != 404:
                raise
