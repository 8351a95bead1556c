"""What ``diartune validate`` accepts, the API server accepts, the study can plan, and the
trial Job it leads to passes the API server's admission: checked on generated specs.

Hypothesis changes a valid spec at random places with random values (names, numbers,
images, quantities, env, URIs); every spec the models accept must pass
``kubectl apply --dry-run=server`` against the CRD, plan a first trial, and give a Job
that passes ``--dry-run=server`` too.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import yaml
from cluster import (
    Cluster,
    cluster_fixture,  # noqa: F401  (provides the session fixture "cluster")
)
from hostile_specs import CASES, SPEC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diartune.operator.manifests import job_manifest, trial_manifest
from diartune.operator.settings import JobDefaults
from diartune.search.study import Study
from diartune.spec.file import parse_tuning
from diartune.spec.model import SpecError

pytestmark = pytest.mark.cluster

CRDS = "charts/diartune/crds"
# Random text and numbers, mixed with plausible ones so that many specs are accepted.
TEXT = st.one_of(
    st.text(alphabet="abcAB09-._/:@ ", max_size=12),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9](\.[a-z0-9]{1,4})?", fullmatch=True),
)
NUMBER = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=1, max_value=50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.01, max_value=2.0),
    TEXT,
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "metadata/name": TEXT,
    "spec/parallelTrialCount": NUMBER,
    "spec/maxFailedTrialCount": NUMBER,
    "spec/stages/0/name": TEXT,
    "spec/stages/0/maxTrialCount": NUMBER,
    "spec/stages/0/searchSpace/clustering.threshold/low": NUMBER,
    "spec/stages/0/searchSpace/clustering.threshold/high": NUMBER,
    "spec/stages/0/searchSpace/clustering.min_cluster_size/high": NUMBER,
    "spec/data/database": st.one_of(TEXT, st.just("s3://corpus/x.yml")),
    "spec/data/s3/endpoint": st.one_of(TEXT, st.just("http://minio:9000")),
    "spec/pipeline/segmentation": TEXT,
    "spec/optimizer": st.fixed_dictionaries({"seed": NUMBER, "initialDesignSize": NUMBER}),
    "spec/objective": st.fixed_dictionaries({"collar": NUMBER}),
    "spec/trialTemplate/image": TEXT,
    "spec/trialTemplate/resources": st.fixed_dictionaries(
        {"limits": st.dictionaries(TEXT, st.one_of(TEXT, NUMBER), max_size=2)}
    ),
    "spec/trialTemplate/nodeSelector": st.dictionaries(TEXT, TEXT, max_size=2),
    "spec/trialTemplate/env": st.lists(
        st.fixed_dictionaries({"name": TEXT, "value": TEXT}), max_size=2
    ),
    "spec/trialTemplate/activeDeadlineSeconds": NUMBER,
    "spec/trialTemplate/tolerations": st.lists(
        st.fixed_dictionaries({"key": TEXT, "operator": st.sampled_from(["Exists", "Equal"])}),
        max_size=1,
    ),
}


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(SPEC)
    for path, value in changes.items():
        *parents, last = path.split("/")
        node: Any = document
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    return document


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> str:
    cluster.kubectl("apply", "--server-side", "-f", CRDS)
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return cluster.create_namespace(f"parity-{uuid.uuid4().hex[:6]}")


def accepted_everywhere(cluster: Cluster, namespace: str, document: dict[str, Any]) -> None:
    """The API server takes the tuning and its first trial's Job; the study plans it."""
    tuning = parse_tuning(document)
    body = {**copy.deepcopy(document), "metadata": {**document["metadata"], "namespace": namespace}}
    server = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False
    )
    assert server.returncode == 0, server.stderr
    study = Study(tuning.spec, root="s3://runs/diartune")
    [trial] = study.plan()[:1] or [None]
    assert trial is not None
    owner = {**body, "metadata": {**body["metadata"], "uid": str(uuid.uuid4())}}
    resource = trial_manifest(owner, trial)
    resource["metadata"]["uid"] = str(uuid.uuid4())
    request = study.request(trial)
    job = job_manifest(resource, "ems", tuning.spec, [request], JobDefaults())
    admitted = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(job), check=False
    )
    assert admitted.returncode == 0, admitted.stderr


def test_every_accepted_case_of_the_corpus_is_accepted_everywhere(
    cluster: Cluster, namespace: str
) -> None:
    for case in CASES:
        if case.refused is None:
            accepted_everywhere(cluster, namespace, case.document())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1, max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({path: FIELDS[path] for path in chosen})
    )
)
def test_what_validate_accepts_the_api_server_accepts(
    cluster: Cluster, namespace: str, changes: dict[str, Any]
) -> None:
    document = changed(changes)
    try:
        parse_tuning(document)
    except SpecError:
        return  # refused with a message: the corpus checks the messages
    accepted_everywhere(cluster, namespace, document)
