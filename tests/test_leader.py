"""Leader election on the real API server: at most one replica holds the Lease."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from cluster import (
    Cluster,
    cluster_fixture,  # noqa: F401  (provides the session fixture "cluster")
)

from diartune.operator.leader import Leader, LeaseSettings

pytestmark = pytest.mark.cluster


def settings(namespace: str, identity: str) -> LeaseSettings:
    return LeaseSettings(
        namespace=namespace,
        identity=identity,
        name="lease-test",
        lease_seconds=2,
        renew_deadline=1.5,
        retry_seconds=0.2,
    )


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    return cluster.create_namespace(f"lease-{uuid.uuid4().hex[:8]}")


def test_one_holder_at_a_time_and_a_release_hands_over_at_once(
    cluster: Cluster, namespace: str
) -> None:
    first = Leader(cluster.api_client(), settings(namespace, "first"))
    second = Leader(cluster.api_client(), settings(namespace, "second"))
    assert first.try_acquire()
    assert first.try_acquire()  # renewing
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    assert not first.try_acquire()


def test_a_silent_holder_is_replaced_after_the_lease_expires(
    cluster: Cluster, namespace: str
) -> None:
    first = Leader(cluster.api_client(), settings(namespace, "first"))
    second = Leader(cluster.api_client(), settings(namespace, "second"))
    assert first.try_acquire()
    assert not second.try_acquire()  # observes the record: its clock starts now
    started = time.monotonic()
    second.acquire()
    waited = time.monotonic() - started
    assert waited >= 2.0  # the lease's duration, by the standby's own clock
    lost = threading.Event()
    first.keep(lost=lost.set)  # the old holder finds out and gives up
    assert lost.wait(10)
