"""The fault scenarios that fit CI's time: every trial exactly once, whatever fails.

Each runs a tuning on the real control plane (KWOK's fake GPU nodes end the trial pods,
see tests/workload.py), injects faults (tests/fault_scenarios.py), and checks from the
API server's audit log and from what the pods did that no trial was lost or run twice
and that the tuning finished with the right counts, without a human. bench/faults.py
runs every scenario and publishes the table (docs/reliability.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fault_scenarios as scenarios
import pytest
from cluster import (
    Cluster,
    cluster_fixture,  # noqa: F401  (provides the session fixture "cluster")
)
from faults import POOL

pytestmark = pytest.mark.cluster

CRDS = Path(__file__).resolve().parent.parent / "charts" / "diartune" / "crds"


@pytest.fixture(scope="module")
def pool(cluster: Cluster) -> None:
    """The CRDs and three fake GPU nodes for the scenarios' trial pods."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.add_gpu_nodes(3, gpus_per_node=2, prefix="faults-gpu-", labels=POOL)


def exactly_once(row: dict[str, Any], trials: int, failed: int = 0) -> None:
    """The tuning finished every trial once, lost none, ran none twice, and the operator
    logged the faults as warnings, without a traceback."""
    text = json.dumps(row, default=str)
    assert row["phase"] == "Succeeded", text
    assert (row["trials"], row["lost"], row["duplicated"], row["failed"]) == (
        trials,
        0,
        0,
        failed,
    ), text
    assert row["runs"] == trials - failed + row["evaluations"], text
    assert row["tracebacks"] == 0, text


def test_api_errors_timeouts_and_expired_watches(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.api_errors(cluster, tmp_path)
    exactly_once(row, 6)
    assert row["job_creations"] == row["trials"] + row["evaluations"], row
    assert all(row["facts"]["faults_hit"].values()), row["facts"]


def test_operator_killed_right_after_each_kind_of_write(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.crash_points(cluster, tmp_path)
    exactly_once(row, 6, failed=1)
    assert all(row["facts"]["kills"].values()), row["facts"]
    assert row["restarts"] == len(row["facts"]["kills"]), row
    assert row["facts"]["states"]["clustering-001"] == "Failed", row["facts"]
    assert row["job_creations"] == row["trials"] + row["evaluations"], row


def test_pod_fates_out_of_memory_infrastructure_and_preemption(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.pod_fates(cluster, tmp_path)
    exactly_once(row, 6, failed=1)
    states, attempts = row["facts"]["states"], row["facts"]["attempts"]
    assert states["clustering-001"]["state"] == "Failed"
    assert states["clustering-001"]["message"].startswith("out of memory (OOMKilled)")
    assert states["clustering-002"]["state"] == states["clustering-003"]["state"] == "Succeeded"
    assert attempts["fates/clustering-001"] == 1  # not retried to the backoff limit
    assert attempts["fates/clustering-002"] == 2  # exit 75: retried by its Job
    assert attempts["fates/clustering-003"] == 2  # preempted: replaced without counting


def test_a_pod_of_several_trials_killed_mid_batch_keeps_what_it_finished(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.batch_killed(cluster, tmp_path)
    exactly_once(row, 8, failed=1)
    facts = row["facts"]
    states, attempts = facts["states"], facts["attempts"]
    assert facts["jobs"]["killed-clustering-000"] == [f"clustering-00{n}" for n in range(4)]
    # Finished before the kill: recorded from its termination message, never run again.
    assert states["clustering-000"]["state"] == states["clustering-001"]["state"] == "Succeeded"
    assert attempts["killed/clustering-000"] == attempts["killed/clustering-001"] == 1
    # Running at the kill: failed, as a one-trial pod killed so is.
    assert states["clustering-002"]["state"] == "Failed", states
    assert "exit code 137" in states["clustering-002"]["message"], states
    # Never started: run once later, in a Job named after it.
    assert states["clustering-003"]["state"] == "Succeeded", states
    assert attempts["killed/clustering-003"] == 2, attempts
    assert "clustering-003" in facts["jobs"]["killed-clustering-003"], facts["jobs"]


def test_a_pod_of_several_trials_evicted_mid_batch_reports_what_it_finished(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.batch_evicted(cluster, tmp_path)
    exactly_once(row, 8)
    facts = row["facts"]
    assert facts["jobs"]["evicted-clustering-000"] == [f"clustering-00{n}" for n in range(4)]
    assert all(facts["attempts"][f"evicted/clustering-00{n}"] == 2 for n in range(4)), facts
    # The second pod reported the two finished trials' result.json and ran the other two.
    assert facts["reports"] == {"evicted/clustering-000": 1, "evicted/clustering-001": 1}, facts
    search = {job: trials for job, trials in facts["jobs"].items() if job[-1].isdigit()}
    assert search == {
        "evicted-clustering-000": [f"clustering-00{n}" for n in range(4)],
        "evicted-clustering-004": [f"clustering-00{n}" for n in range(4, 8)],
    }, facts["jobs"]


def test_a_pod_that_cannot_pull_its_image_is_named_and_fails_at_its_deadline(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.image_pull_deadline(cluster, tmp_path)
    exactly_once(row, 6, failed=1)
    failed = row["facts"]["states"]["clustering-001"]
    assert failed["state"] == "Failed", failed
    assert failed["message"].startswith("DeadlineExceeded"), failed
    assert 'ImagePullBackOff: Back-off pulling image "diartune-trial:faults"' in failed["message"]
    [warning] = row["facts"]["events"]["TrialPodWaiting"]
    assert "deadline-clustering-001" in warning and "diartune-trial:faults" in warning, warning


def test_hand_edits_and_a_pod_lost_before_its_result_was_read(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.hand_edits(cluster, tmp_path)
    exactly_once(row, 6)
    facts = row["facts"]
    assert facts["reports"] == {"edits/clustering-001": 1}  # reported, not run again
    assert facts["attempts"]["edits/clustering-000"] == 2  # its Job was deleted mid-run
    assert "AcceptedSpecRestored" in facts["events"]
    assert facts["annotation_restored"]


def test_a_deleted_trial_gives_its_slot_away_and_a_forged_status_is_not_taken(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.trial_edits(cluster, tmp_path)
    exactly_once(row, 6)
    facts = row["facts"]
    assert facts["patched_der"] == pytest.approx(facts["expected_der"]), facts  # not 0.01
    assert "TrialStatusIgnored" in facts["events"], facts
    assert facts["attempts"]["trials/clustering-000"] == 2, facts  # deleted, then a new one
    assert row["job_creations"] == row["trials"] + row["evaluations"] + 1, row


def test_two_replicas_act_one_at_a_time_and_the_standby_takes_over(
    cluster: Cluster, pool: None, tmp_path: Path
) -> None:
    row = scenarios.two_replicas(cluster, tmp_path)
    exactly_once(row, 8)
    assert row["job_creations"] == row["trials"] + row["evaluations"], row
