"""The trial Job and DiarizationTrial manifests, result parsing and the bounded status."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from diartune.operator.manifests import (
    TRIALS_ANNOTATION,
    job_manifest,
    job_outcome,
    job_outcomes,
    job_trials,
    pod_waiting,
    record_status,
    resource_name,
    result_lost,
    trial_manifest,
    trial_of,
    trial_status,
)
from diartune.operator.policy import TrialPolicy
from diartune.operator.settings import JobDefaults, job_defaults
from diartune.operator.status import Conditions, tuning_status
from diartune.operator.trials import pod_batches
from diartune.records import (
    ERROR_PREFIX,
    RESULT_PREFIX,
    SECRET_VARIABLES_ENV,
    BatchReport,
    Components,
    FileScores,
    Trial,
    TrialOutcome,
    TrialRecord,
    TrialRequest,
    TrialResult,
    parse_trial_output,
)
from diartune.search.study import Study
from diartune.spec.model import Spec, TrialTemplate
from diartune.trial.run import scrub

TUNING = {
    "apiVersion": "diartune.io/v1alpha1",
    "kind": "DiarizationTuning",
    "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-0"},
}
TRIAL = Trial(
    name="clustering-003",
    stage="clustering",
    number=3,
    params={"clustering.threshold": 1.0},
    full_params={"clustering.threshold": 1.0, "clustering.min_cluster_size": 12},
    segmentation="s3://models/segmentation.ckpt",
)


#: A trial of a stage that fine-tunes, and the evaluation of its checkpoint on test.
FINE_TUNING = Trial(
    name="segmentation-000",
    stage="segmentation",
    number=0,
    params={"training.learning_rate": 1e-4},
    full_params={"training.learning_rate": 1e-4, "clustering.threshold": 0.7},
    segmentation="s3://models/segmentation.ckpt",
)
EVALUATION = FINE_TUNING.model_copy(
    update={"name": "segmentation-000-test", "number": -1, "subset": "test", "export": True}
)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def spec_document(**overrides: Any) -> dict[str, Any]:
    """A valid spec (as written in YAML), with top-level overrides."""
    document: dict[str, Any] = {
        "data": {
            "database": "s3://corpus/ami/database.yml",
            "protocol": "Debug.SpeakerDiarization.Debug",
            "s3": {"credentialsSecret": "s3-creds"},
        },
        "pipeline": {
            "segmentation": "s3://models/segmentation.ckpt",
            "embedding": "s3://models/embedding.ckpt",
            "tokenSecret": "hf",
        },
        "stages": [
            {
                "name": "clustering",
                "searchSpace": {"clustering.threshold": {"type": "float", "low": 0.1, "high": 1}},
                "maxTrialCount": 4,
            }
        ],
        "artifacts": "s3://artifacts",
    }
    return document | overrides


def two_stages(**overrides: Any) -> dict[str, Any]:
    """``spec_document`` with a fine-tuning stage before its clustering stage."""
    document = spec_document(**overrides)
    rate = {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}
    segmentation = {
        "name": "segmentation",
        "fineTune": {"maxEpochs": 2},
        "searchSpace": {"training.learning_rate": rate},
        "maxTrialCount": 2,
    }
    document["stages"] = [segmentation, *document["stages"]]
    return document


def trial_resource(trial: Trial = TRIAL) -> dict[str, Any]:
    """The DiarizationTrial of ``trial`` as the API server returns it (with a uid)."""
    resource = trial_manifest(TUNING, trial)
    resource["metadata"]["uid"] = "uid-1"
    return resource


def manifest(
    spec: Spec, defaults: JobDefaults | None = None, trial: Trial = TRIAL
) -> dict[str, Any]:
    """The Job of ``trial`` (TRIAL by default) in namespace ns of tuning demo."""
    request = Study(spec, root="s3://artifacts/ns/demo").request(trial)
    return job_manifest(trial_resource(trial), "demo", spec, [request], defaults or JobDefaults())


def container(job: dict[str, Any]) -> dict[str, Any]:
    """The trial container of a Job."""
    (found,) = job["spec"]["template"]["spec"]["containers"]
    return dict(found)


def test_the_command_is_exactly_the_trial_command() -> None:
    job = manifest(Spec.model_validate(spec_document()))
    command = container(job)["command"]
    assert command[:3] == ["diartune", "trial", "--request-json"]
    assert command[4:] == ["--termination-log", "/dev/termination-log"]
    request = TrialRequest.model_validate_json(command[3])
    assert request.name == "clustering-003"
    assert request.output == "s3://artifacts/ns/demo/trials/clustering-003"
    assert request.cache == "s3://artifacts/ns/demo/cache"
    assert request.params == TRIAL.full_params


def test_pod_failure_policy_fails_fast_on_bad_input_and_retries_disruption() -> None:
    spec = Spec.model_validate(spec_document(trialTemplate={"backoffLimit": 4}))
    job = manifest(spec)["spec"]
    fail, ignore, killed = job["podFailurePolicy"]["rules"]
    assert fail == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trial", "operator": "In", "values": [65]},
    }
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert killed == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trial", "operator": "In", "values": [137]},
    }
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["backoffLimit"] == 4
    assert job["activeDeadlineSeconds"] == 6 * 3600
    assert "ttlSecondsAfterFinished" not in job  # kept until the tuning is deleted
    assert container(manifest(spec))["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_credentials_and_token_come_from_secrets() -> None:
    env = container(manifest(Spec.model_validate(spec_document())))["env"]
    refs = {var["name"]: var["valueFrom"]["secretKeyRef"] for var in env if "valueFrom" in var}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"},
        "HF_TOKEN": {"name": "hf", "key": "HF_TOKEN"},
    }
    values = {var["name"]: var["value"] for var in env if "value" in var}
    assert values == {
        "HOME": "/tmp",
        "DIARTUNE_CACHE": "/tmp/diartune",
        SECRET_VARIABLES_ENV: "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,HF_TOKEN",
    }  # no secret inline; the trial masks the values of the variables named


def test_the_trial_masks_every_secret_variable_it_is_told_of(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = {"secretKeyRef": {"name": "ward", "key": "k"}}
    document = spec_document(trialTemplate={"env": [{"name": "WARD_KEY", "valueFrom": ref}]})
    env = container(manifest(Spec.model_validate(document)))["env"]
    canaries = []  # what the Secrets would hold: made here, never written in the source
    for var in env:
        value = var.get("value")
        if value is None:
            value = secrets.token_hex(8)
            canaries.append(value)
        monkeypatch.setenv(var["name"], value)
    assert len(canaries) == 4  # two S3 credentials, the HF token, WARD_KEY
    text = scrub(" ".join(["boom", *canaries, "/tmp"]))
    assert text == " ".join(["boom", *["***"] * len(canaries), "/tmp"])


def test_trial_pods_are_hardened_and_run_as_the_charts_service_account() -> None:
    defaults = JobDefaults(service_account="ops-diartune-trial")
    pod = manifest(Spec.model_validate(spec_document()), defaults)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops-diartune-trial"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container({"spec": {"template": {"spec": pod}}})["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    assert {"name": "scratch", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    resources = pod["containers"][0]["resources"]  # a clustering trial: CPU only
    assert resources == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}


def test_template_sets_resources_node_selector_tolerations_and_env() -> None:
    template = {
        "image": "registry.local/trial:1",
        "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "16Gi"}},
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
    }
    defaults = JobDefaults(image="default:1", node_selector={"zone": "a"}, tolerations=[{}])
    job = manifest(Spec.model_validate(spec_document(trialTemplate=template)), defaults)
    pod = job["spec"]["template"]["spec"]
    trial = container(job)
    assert trial["image"] == "registry.local/trial:1"
    assert trial["resources"] == {  # memory named: its request and limit are the template's
        "requests": {"cpu": "2"},
        "limits": {"nvidia.com/gpu": "2", "memory": "16Gi"},
    }
    assert pod["nodeSelector"] == {"zone": "a", "pool": "a100"}  # GPU asked: GPU nodes
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "default"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in trial["env"]


def test_chart_defaults_fill_what_the_template_leaves_out() -> None:
    defaults = job_defaults(
        {
            "DIARTUNE_TRIAL_IMAGE": "ghcr.io/diartune/trial:9",
            "DIARTUNE_GPU_RESOURCE": "amd.com/gpu",
            "DIARTUNE_TRIAL_NODE_SELECTOR": '{"gpu": "yes"}',
            "DIARTUNE_TRIAL_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
            "DIARTUNE_TRIAL_CPU_RESOURCES": '{"requests": {"cpu": "1", "memory": "2Gi"}}',
            "DIARTUNE_TRIAL_CPU_NODE_SELECTOR": '{"pool": "cpu"}',
            "DIARTUNE_TRIAL_CPU_TOLERATIONS": '[{"key": "spot", "operator": "Exists"}]',
            "DIARTUNE_S3_ENDPOINT": "http://minio:9000",
            "DIARTUNE_ARTIFACTS": "",
        }
    )
    document = two_stages()
    document["data"].pop("s3")
    spec = Spec.model_validate(document)
    job = manifest(spec, defaults, FINE_TUNING)
    pod = job["spec"]["template"]["spec"]
    trial = container(job)
    assert trial["image"] == "ghcr.io/diartune/trial:9"
    assert trial["resources"]["limits"] == {"memory": "16Gi", "amd.com/gpu": "1"}
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    request = json.loads(trial["command"][3])
    assert request["data"]["s3"]["endpoint"] == "http://minio:9000"
    assert defaults.artifacts is None
    pod = manifest(spec, defaults)["spec"]["template"]["spec"]  # a clustering trial
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "8Gi"},  # the default of the CPU limits, which it does not set
    }
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    for variable in ("DIARTUNE_TRIAL_TOLERATIONS", "DIARTUNE_TRIAL_CPU_RESOURCES"):
        with pytest.raises(ValueError, match=variable):
            job_defaults({variable: "[oops"})


def pod_of(spec: Spec, defaults: JobDefaults, trial: Trial) -> dict[str, Any]:
    """The pod spec of the Job of ``trial``."""
    return dict(manifest(spec, defaults, trial)["spec"]["template"]["spec"])


def test_a_clustering_trial_requests_no_gpu_and_a_fine_tuning_trial_one() -> None:
    """Fine-tuning gets the chart's GPU resources and GPU nodes; running the pipeline
    (a stage without fineTune, an evaluation even of a fine-tuned model) gets CPU and
    memory only, and none of the GPU nodes' selector or tolerations."""
    defaults = JobDefaults(
        node_selector={"accelerator": "a100"},
        tolerations=[GPU_TOLERATION],
        cpu_node_selector={"pool": "cpu"},
    )
    spec = Spec.model_validate(two_stages())
    fine = pod_of(spec, defaults, FINE_TUNING)
    assert fine["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert (fine["nodeSelector"], fine["tolerations"]) == (
        {"accelerator": "a100"},
        [GPU_TOLERATION],
    )
    for trial in (TRIAL, EVALUATION):
        pod = pod_of(spec, defaults, trial)
        assert pod["containers"][0]["resources"] == {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"memory": "8Gi"},
        }, trial.name
        assert (pod["nodeSelector"], pod["tolerations"]) == ({"pool": "cpu"}, []), trial.name


def test_a_stage_and_the_template_override_the_resources_of_its_kind() -> None:
    """The trialTemplate's resources come over every trial's defaults and a stage's over
    its search trials', a resource at a time (its request and limit together); whoever
    asks for a GPU gets the GPU nodes, whatever the stage."""
    document = two_stages(trialTemplate={"resources": {"limits": {"memory": "12Gi"}}})
    document["stages"][0]["resources"] = {"limits": {"nvidia.com/gpu": 0}}
    document["stages"][1]["resources"] = {"requests": {"cpu": 4}, "limits": {"nvidia.com/gpu": 1}}
    spec = Spec.model_validate(document)
    defaults = JobDefaults(node_selector={"accelerator": "a100"}, tolerations=[GPU_TOLERATION])
    fine = pod_of(spec, defaults, FINE_TUNING)  # told to fine-tune on a CPU
    assert fine["containers"][0]["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"memory": "12Gi", "nvidia.com/gpu": "0"},
    }
    assert (fine["nodeSelector"], fine["tolerations"]) == ({}, [])
    clustering = pod_of(spec, defaults, TRIAL)  # told to use a GPU
    assert clustering["containers"][0]["resources"] == {
        "requests": {"cpu": "4"},
        "limits": {"memory": "12Gi", "nvidia.com/gpu": "1"},
    }
    assert clustering["nodeSelector"] == {"accelerator": "a100"}
    assert clustering["tolerations"] == [GPU_TOLERATION]
    # An evaluation of a clustering trial takes the template's resources, not the stage's.
    update = {"name": "clustering-003-test", "number": -1, "subset": "test"}
    evaluation = TRIAL.model_copy(update=update)
    assert pod_of(spec, defaults, evaluation)["containers"][0]["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"memory": "12Gi"},
    }


def test_a_request_above_the_charts_limit_replaces_that_limit() -> None:
    """A template that raises a request over the chart's default limit gets a Job the API
    server admits: the layer that names a resource sets its request and limit together."""
    document = two_stages(trialTemplate={"resources": {"requests": {"memory": "16Gi"}}})
    spec = Spec.model_validate(document)
    resources = pod_of(spec, JobDefaults(), TRIAL)["containers"][0]["resources"]
    assert resources["requests"]["memory"] == "16Gi"
    assert "memory" not in resources.get("limits", {})


def test_owner_references_labels_and_names() -> None:
    job = manifest(Spec.model_validate(spec_document()))
    labels = {
        "diartune.io/tuning": "demo",
        "diartune.io/trial": "clustering-003",
        "diartune.io/stage": "clustering",
    }
    assert job["metadata"]["name"] == "demo-clustering-003"
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "diartune.io/v1alpha1",
            "kind": "DiarizationTrial",
            "name": "demo-clustering-003",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    trial = trial_manifest(TUNING, TRIAL)
    assert trial["metadata"]["name"] == "demo-clustering-003"
    assert trial["metadata"]["namespace"] == "ns"
    assert trial["metadata"]["labels"] == labels
    assert trial["metadata"]["ownerReferences"][0]["uid"] == "uid-0"
    assert trial["metadata"]["ownerReferences"][0]["kind"] == "DiarizationTuning"
    assert trial["spec"] == {
        "tuning": "demo",
        "name": "clustering-003",
        "stage": "clustering",
        "number": 3,
        "subset": "development",
        "params": TRIAL.params,
        "fullParams": TRIAL.full_params,
        "segmentation": TRIAL.segmentation,
        "export": False,
    }
    assert trial_of(trial) == TRIAL
    long = resource_name("t" * 63, "clustering-003")
    assert len(long) == 63 and long.endswith("-clustering-003")


def test_the_trial_policy_checks_the_image_the_job_runs() -> None:
    """A trialTemplate without an image runs the chart's image, else the template's own
    default: the policy checks that image, not none."""
    spec = Spec.model_validate(spec_document())
    policy = TrialPolicy(images=("registry.example/",), secrets=("s3-creds", "hf"))
    for chart_image, allowed in [(None, False), ("registry.example/trial:1", True)]:
        defaults = JobDefaults(image=chart_image)
        image = container(manifest(spec, defaults))["image"]
        assert image == chart_image or TrialTemplate().image
        refused = [f"spec.trialTemplate.image {image!r} is not one the chart allows"]
        assert policy.refusals(spec, defaults) == ([] if allowed else refused)
    assert TrialPolicy(secrets=("s3-creds", "hf")).refusals(spec, JobDefaults(image="a:1")) == []


def _job(kind: str, reason: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "reason": reason, "message": "why"}
    condition["lastTransitionTime"] = "2025-01-01T00:01:40Z"
    status = {"startTime": "2025-01-01T00:00:00Z", "conditions": [condition]}
    return {"metadata": {"name": "j", "uid": "u"}, "status": status}


def _pod(
    code: int, message: str, created: str = "2025-01-01T00:00:00Z", reason: str = "Error"
) -> dict[str, Any]:
    terminated = {"exitCode": code, "message": message, "reason": reason}
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "trial", "state": {"terminated": terminated}}]},
    }


def test_results_are_read_from_termination_messages() -> None:
    components = Components.of(1, 2, 2, 20).model_dump(by_alias=True)
    summary = {"name": "clustering-003", "der": 0.25, "components": components, "artifacts": "a"}
    success = job_outcome(_job("Complete"), [_pod(0, json.dumps(summary))])
    assert success.result is not None and success.result.der == 0.25
    assert (success.error, success.seconds) == (None, 100.0)

    bad = job_outcome(
        _job("Failed", "PodFailurePolicy"), [_pod(65, '{"error": "no audio", "badInput": true}')]
    )
    assert (bad.result, bad.error, bad.bad_input) == (None, "no audio", True)

    garbled = job_outcome(_job("Complete"), [_pod(0, '{"der": "not a result"}')])
    assert garbled.result is None
    assert garbled.error == "the trial left no result in its termination message"

    retried = [_pod(75, "Traceback: boom"), _pod(75, "OSError: disk", "2025-01-01T00:00:50Z")]
    crash = job_outcome(_job("Failed", "BackoffLimitExceeded"), retried)
    assert (crash.error, crash.bad_input) == ("exit code 75: OSError: disk", False)

    deadline = job_outcome(_job("Failed", "DeadlineExceeded"), [])
    assert deadline.error == "DeadlineExceeded: why"

    oom = job_outcome(_job("Failed", "PodFailurePolicy"), [_pod(137, "", reason="OOMKilled")])
    assert oom.error is not None and oom.error.startswith("out of memory (OOMKilled)")
    assert "resources.limits.memory" in oom.error and not oom.bad_input


def test_both_drivers_read_the_same_trial_output_alike() -> None:
    """``diartune tune`` reads a trial's output, the operator its termination message (the
    same JSON, or the output's tail when the trial could not write it): one outcome."""
    components = Components.of(1, 2, 2, 20).model_dump(by_alias=True)
    result = {"name": "clustering-003", "der": 0.25, "components": components, "artifacts": "a"}
    crash = "Traceback (most recent call last):\n  File x\nRuntimeError: boom"
    reports = [
        (0, f"{RESULT_PREFIX}{json.dumps(result)}", json.dumps(result)),
        (65, ERROR_PREFIX + '{"error": "no audio", "badInput": true}', None),
        (75, ERROR_PREFIX + '{"error": "OSError: S3 503"}', None),
        (1, ERROR_PREFIX + '{"error": "no such protocol", "badInput": true}', None),
        (1, crash, crash),
        (0, RESULT_PREFIX + '{"der": "not a result"}', None),
    ]
    for code, line, message in reports:
        output = f"diartune trial: starting\n{line}\n"
        if message is None:
            message = line.removeprefix(ERROR_PREFIX).removeprefix(RESULT_PREFIX)
        job = _job("Complete") if code == 0 else _job("Failed", "BackoffLimitExceeded")
        operator = job_outcome(job, [_pod(code, message)])
        local = parse_trial_output(output, code, operator.seconds)
        assert (local.result, local.bad_input) == (operator.result, operator.bad_input), line
        # A trial that exited with 0 but reported no result: each driver says where it looked.
        assert local.error == (None if code == 0 and not operator.result else operator.error)


def _waiting_pod(reason: str) -> dict[str, Any]:
    waiting = {"reason": reason, "message": 'Back-off pulling image "t:typo"'}
    return {"status": {"containerStatuses": [{"name": "trial", "state": {"waiting": waiting}}]}}


def test_a_pod_that_cannot_pull_its_image_names_it_in_the_deadlines_failure() -> None:
    stuck = _waiting_pod("ImagePullBackOff")
    pulled = 'ImagePullBackOff: Back-off pulling image "t:typo"'
    assert pod_waiting(stuck) == pulled
    assert pod_waiting(_waiting_pod("ContainerCreating")) is None  # on its way: not stuck
    assert pod_waiting({}) is None
    expected = f"DeadlineExceeded: why; its pod could not start: {pulled}"
    assert job_outcome(_job("Failed", "DeadlineExceeded"), [stuck]).error == expected
    # Once the deadline passed, the pod is gone: what the operator saw of it earlier.
    assert job_outcome(_job("Failed", "DeadlineExceeded"), [], pulled).error == expected


def test_a_complete_job_whose_succeeded_pod_is_gone_has_lost_its_result() -> None:
    retried = _pod(75, "OSError: S3 503")  # the first attempt failed, the second succeeded
    assert result_lost(_job("Complete"), [])
    assert result_lost(_job("Complete"), [retried])  # only the failed attempt's pod is left
    assert not result_lost(_job("Complete"), [retried, _pod(0, '{"der": "garbled"}')])
    assert not result_lost(_job("Failed", "BackoffLimitExceeded"), [retried])


def test_trial_status_round_trips_to_a_record() -> None:
    components = Components.of(1, 2, 3, 20)
    result = {"name": TRIAL.name, "der": 0.3, "components": components, "artifacts": "s3://a"}
    record = TRIAL.record(TrialOutcome.model_validate({"result": result, "seconds": 12.5}))
    resource = trial_manifest(TUNING, TRIAL)
    assert trial_status(resource).record(trial_of(resource)) is None  # not finished yet
    resource["status"] = record_status(record)
    assert trial_status(resource).record(trial_of(resource)) == record


def test_status_stays_small_with_a_thousand_trials() -> None:
    spec = Spec.model_validate(spec_document())
    records = [
        TrialRecord(
            name=f"clustering-{number:03d}",
            stage="clustering",
            number=number,
            params={"clustering.threshold": number / 1000},
            full_params={"clustering.threshold": number / 1000, "x" * 40: "y" * 200},
            segmentation="s3://models/segmentation.ckpt",
            state="Failed" if number % 7 == 0 else "Succeeded",
            der=None if number % 7 == 0 else 0.2 + number / 10_000,
            message="crash " * 100 if number % 7 == 0 else None,
        )
        for number in range(1000)
    ]
    conditions = Conditions(generation=3)
    conditions.mark_created()
    conditions.mark_update("m" * 5000)
    study = Study(spec, records)
    conditions.mark_running(study.summary())
    status = tuning_status(study.summary(), study.best(), "demo-x", conditions)
    size = len(json.dumps(status))
    assert size < 64 * 1024, size
    assert status["trialsDone"] == 1000 and status["trialsFailed"] == 143
    assert status["bestDer"] == pytest.approx(0.2001)


def test_a_request_digest_survives_the_api_servers_key_order() -> None:
    """A Job created again from the stored DiarizationTrial (keys sorted by the API server)
    must find the result its first run wrote."""
    spec = Spec.model_validate(spec_document())
    stored = json.loads(json.dumps(trial_manifest(TUNING, TRIAL), sort_keys=True))
    stored["spec"]["params"]["clustering.threshold"] = 1  # as JSON stores 1.0
    stored["spec"]["fullParams"]["clustering.threshold"] = 1
    again = trial_of(stored)
    assert list(again.full_params) != list(TRIAL.full_params)  # another order...
    first = Study(spec, root="s3://artifacts/ns/demo").request(TRIAL)
    assert Study(spec, root="s3://artifacts/ns/demo").request(again).digest == first.digest


def _trials(count: int, stage: str = "clustering") -> list[Trial]:
    return [
        TRIAL.model_copy(update={"name": f"{stage}-{number:03d}", "stage": stage, "number": number})
        for number in range(count)
    ]


def test_a_clustering_stage_runs_several_trials_per_pod_and_a_fine_tuning_stage_one() -> None:
    """By default a stage without fineTune gives a pod 4 trials, a stage with it 1, and
    each evaluation has a pod of its own; trialsPerPod overrides the default."""
    spec = Spec.model_validate(two_stages())
    assert [len(batch) for batch in pod_batches(spec, _trials(6))] == [4, 2]
    assert [len(batch) for batch in pod_batches(spec, _trials(2, "segmentation"))] == [1, 1]
    assert [len(b) for b in pod_batches(spec, [*_trials(2), EVALUATION, EVALUATION])] == [2, 1, 1]
    document = two_stages()
    document["stages"][1]["trialsPerPod"] = 3
    spec = Spec.model_validate(document)
    assert [len(batch) for batch in pod_batches(spec, _trials(7))] == [3, 3, 1]
    with pytest.raises(ValueError, match="trialsPerPod"):
        document["stages"][1]["trialsPerPod"] = 9  # more would not fit its message
        Spec.model_validate(document)


def test_a_job_of_several_trials_runs_each_request_in_turn_without_a_gpu() -> None:
    spec = Spec.model_validate(spec_document())
    study = Study(spec, root="s3://artifacts/ns/demo")
    trials = _trials(3)
    requests = [study.request(trial) for trial in trials]
    job = job_manifest(trial_resource(trials[0]), "demo", spec, requests, JobDefaults())
    assert job["metadata"]["name"] == "demo-clustering-000"
    assert job_trials(job) == ["clustering-000", "clustering-001", "clustering-002"]
    command = container(job)["command"]
    given = [command[i + 1] for i, arg in enumerate(command) if arg == "--request-json"]
    assert [TrialRequest.model_validate_json(text) for text in given] == requests
    assert "nvidia.com/gpu" not in json.dumps(container(job)["resources"])
    single = manifest(spec)  # one trial: no list, its label names it
    assert "annotations" not in single["metadata"] and job_trials(single) == ["clustering-003"]


def _batch(report: BatchReport, code: int, reason: str = "Error") -> dict[str, Any]:
    return _pod(code, report.message(), reason=reason)


def _batch_job(kind: str, reason: str = "") -> dict[str, Any]:
    job = _job(kind, reason)
    job["metadata"]["annotations"] = {TRIALS_ANNOTATION: "c-0,c-1,c-2,c-3"}
    return job


def test_a_pod_of_several_trials_reports_each_and_a_killed_one_what_it_finished() -> None:
    components = Components.of(1, 2, 2, 20)
    done = {
        name: TrialOutcome(
            result=TrialResult(name=name, der=0.25, components=components, artifacts=name),
            seconds=2.0,
        )
        for name in ("c-0", "c-1", "c-2", "c-3")
    }
    done["c-1"] = TrialOutcome(error="no audio", bad_input=True)
    complete = job_outcomes(_batch_job("Complete"), [_batch(BatchReport(trials=done), 0)])
    assert complete == done  # each its own outcome and seconds

    # SIGKILLed while it ran c-2: c-0 and c-1 keep what they reported, c-2 fails with
    # the Job (as a one-trial pod killed so does), c-3 never started and runs again.
    killed = BatchReport(trials={name: done[name] for name in ("c-0", "c-1")}, running="c-2")
    failed = _batch_job("Failed", "PodFailurePolicy")
    outcomes = job_outcomes(failed, [_batch(killed, 137, "OOMKilled")])
    assert sorted(outcomes) == ["c-0", "c-1", "c-2"]
    assert outcomes["c-0"] == done["c-0"]
    assert (outcomes["c-2"].error or "").startswith("out of memory (OOMKilled)")

    # Its pod never started (or died before its first trial): every trial fails with it.
    never = job_outcomes(_batch_job("Failed", "DeadlineExceeded"), [], "ImagePullBackOff: x")
    assert sorted(never) == ["c-0", "c-1", "c-2", "c-3"]
    assert (
        never["c-3"].error == "DeadlineExceeded: why; its pod could not start: ImagePullBackOff: x"
    )

    # Retried to its backoff limit on c-2's infrastructure error: c-3 runs again.
    crashed = BatchReport(trials={**killed.trials, "c-2": TrialOutcome(error="S3 503")})
    outcomes = job_outcomes(_batch_job("Failed", "BackoffLimitExceeded"), [_batch(crashed, 75)])
    assert sorted(outcomes) == ["c-0", "c-1", "c-2"] and outcomes["c-2"].error == "S3 503"


def test_a_batch_report_fits_a_termination_message_whatever_its_results() -> None:
    """Each result shrinks to its share (per-file scores, then timings, left out), and
    what still does not fit is left out: its trial runs again and reports its result.json."""
    per_file = {f"file-{n:04d}": Components.of(1, 2, 2, 20) for n in range(300)}
    trials = {}
    for number in range(8):
        name = f"clustering-{number:03d}"
        result = TrialResult(
            name=name,
            der=0.25,
            components=Components.of(1, 2, 2, 20),
            scores=FileScores.of(per_file),
            artifacts=f"s3://artifacts/{'n' * 63}/{'t' * 63}/trials/{name}",
            timings={f"phase-{n}": 1.0 for n in range(20)},
            request_digest="d" * 64,
        )
        trials[name] = TrialOutcome(result=result, seconds=3.0)
    text = BatchReport(trials=trials, running=None).message()
    assert len(text.encode()) <= 4000
    parsed = BatchReport.parse(text)
    assert 1 <= len(parsed.trials) < 8 and list(parsed.trials) == list(trials)[: len(parsed.trials)]
    first = parsed.trials["clustering-000"].result
    assert first is not None and (first.der, first.scores) == (0.25, None)
    assert BatchReport.parse("Traceback (most recent call last): ...") == BatchReport()
