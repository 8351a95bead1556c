"""At most one acting operator: a Lease (coordination.k8s.io) held by the replica that acts.

Every replica runs kopf and follows its tunings' events, but a tuning's worker only acts
once its replica holds the Lease, so a second replica (a rolling update, two replicas for
a fast takeover) is a hot standby. The holder renews the Lease every ``retry_seconds``;
one that cannot renew within ``renew_deadline`` exits (status 70) rather than risk acting
beside a new holder, and its pod restarts as a standby. A standby takes the Lease once
the record it observed has not changed for ``lease_seconds`` (its own clock only, as
client-go's leader election does, so clock skew between nodes does not matter). A
graceful stop releases the Lease, so that the standby takes over at once.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client

logger = logging.getLogger(__name__)

EXIT_LOST_LEADERSHIP = 70


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease lives and how it is held.

    Attributes
    ----------
    namespace
        The Lease's namespace: the operator's own (``POD_NAMESPACE``).
    identity
        This replica's name in the Lease (``POD_NAME``, else host and process).
    name
        The Lease's name.
    lease_seconds
        How long a standby waits, after the last renewal it saw, before taking over.
    renew_deadline
        How long the holder keeps trying to renew before it gives up and exits.
    retry_seconds
        How often the holder renews and a standby looks.
    """

    namespace: str
    identity: str
    name: str = "diartune-operator"
    lease_seconds: int = 15
    renew_deadline: float = 10.0
    retry_seconds: float = 2.0

    @classmethod
    def from_environment(cls, default_namespace: str) -> LeaseSettings:
        """The settings of this pod (``POD_NAMESPACE``, ``POD_NAME``) or process."""
        return cls(
            namespace=os.environ.get("POD_NAMESPACE") or default_namespace,
            identity=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Leader:
    """Holds, renews and releases the operator's Lease."""

    def __init__(self, api: client.ApiClient, settings: LeaseSettings) -> None:
        self.api = client.CoordinationV1Api(api)
        self.settings = settings
        self._observed: tuple[str | None, object] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()

    def try_acquire(self) -> bool:
        """Take or renew the Lease if it is free, expired or ours; False if another holds it."""
        settings = self.settings
        try:
            lease = self.api.read_namespaced_lease(settings.name, settings.namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
            return self._create()
        spec = lease.spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        ours = spec.holder_identity == settings.identity
        expired = time.monotonic() - self._observed_at > (spec.lease_duration_seconds or 0)
        if not (ours or expired or not spec.holder_identity):
            return False
        if not ours:
            spec.acquire_time = _now()
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = settings.identity
        spec.lease_duration_seconds = settings.lease_seconds
        spec.renew_time = _now()
        try:  # optimistic: fails (409) if another replica wrote it since our read
            self.api.replace_namespaced_lease(settings.name, settings.namespace, lease)
        except client.ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _create(self) -> bool:
        settings = self.settings
        now = _now()
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=settings.name, namespace=settings.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=settings.identity,
                lease_duration_seconds=settings.lease_seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(settings.namespace, lease)
        except client.ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def acquire(self) -> None:
        """Block until this replica holds the Lease (or ``stop`` is called)."""
        waiting = False
        while not self._stop.is_set():
            try:
                if self.try_acquire():
                    logger.info("leading: holding lease %s", self.settings.name)
                    return
            except (client.ApiException, OSError) as error:
                logger.warning("lease %s: %s", self.settings.name, error)
            if not waiting:
                logger.info("standing by: lease %s is held by another", self.settings.name)
                waiting = True
            self._stop.wait(self.settings.retry_seconds)

    def keep(self, lost: Callable[[], None]) -> threading.Thread:
        """Renew the Lease in a thread; call ``lost`` when it cannot be renewed in time."""

        def renew() -> None:
            renewed = time.monotonic()
            while not self._stop.wait(self.settings.retry_seconds):
                try:
                    if self.try_acquire():
                        renewed = time.monotonic()
                        continue
                except (client.ApiException, OSError) as error:
                    logger.warning("renewing lease %s: %s", self.settings.name, error)
                if time.monotonic() - renewed > self.settings.renew_deadline:
                    lost()
                    return

        thread = threading.Thread(target=renew, name="diartune-lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Stop renewing and hand the Lease back, so that a standby takes over at once."""
        self._stop.set()
        settings = self.settings
        try:
            lease = self.api.read_namespaced_lease(settings.name, settings.namespace)
            if lease.spec is not None and lease.spec.holder_identity == settings.identity:
                lease.spec.holder_identity = None
                self.api.replace_namespaced_lease(settings.name, settings.namespace, lease)
        except (client.ApiException, OSError) as error:
            logger.warning("releasing lease %s: %s", settings.name, error)


def exit_lost_leadership() -> None:
    """Leave at once: another replica may act from now on."""
    logger.error("lost the lease: exiting so that only one replica acts")
    logging.shutdown()
    os._exit(EXIT_LOST_LEADERSHIP)
