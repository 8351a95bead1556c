"""The S3 path against a real S3-compatible server over HTTP (moto's standalone server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import PROTOCOL, copy_ami, result_line, run_trial
from fault_proxy import Fault, FaultProxy

from diartune.spec.model import S3
from diartune.storage import MissingObject, Storage

pytestmark = pytest.mark.integration

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def upload(client, folder: Path, bucket: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def test_trial_reads_data_and_models_from_s3_and_writes_artifacts_there(
    s3_endpoint: str, models: tuple[Path, Path], tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("corpus", "models", "artifacts"):
        client.create_bucket(Bucket=bucket)
    database = copy_ami(tmp_path / "ami", dev_includes_non_ascii=True)
    upload(client, database.parent, "corpus", "ami-debug")
    for path in models:
        client.upload_file(str(path), "models", path.name)
    request = {
        "name": "s3-trial",
        "stage": "clustering",
        "data": {
            "database": "s3://corpus/ami-debug/database.yml",
            "protocol": PROTOCOL,
            "s3": {"endpoint": s3_endpoint},
        },
        "pipeline": {
            "segmentation": "s3://models/segmentation.ckpt",
            "embedding": "s3://models/embedding.ckpt",
        },
        "params": {"clustering.threshold": 0.3, "clustering.min_cluster_size": 2},
        "tuned": ["clustering.threshold"],
        "output": "s3://artifacts/default/ami/s3-trial",
        "cache": "s3://artifacts/default/ami/cache",
    }
    env = {"DIARTUNE_CACHE": str(tmp_path / "scratch")}
    code, output = run_trial(request, tmp_path, **env)
    assert code == 0, output[-3000:]
    line = result_line(output)
    assert line["artifacts"] == "s3://artifacts/default/ami/s3-trial"
    keys = {item["Key"] for item in client.list_objects_v2(Bucket="artifacts")["Contents"]}
    assert {"default/ami/s3-trial/result.json", "default/ami/s3-trial/hypothesis.rttm"} <= keys
    assert sum(key.startswith("default/ami/cache/") for key in keys) == 3  # dev00, dev01, trñ00
    rttm = client.get_object(Bucket="artifacts", Key="default/ami/s3-trial/hypothesis.rttm")
    assert "trñ00" in rttm["Body"].read().decode("utf-8")
    assert (tmp_path / "scratch/data").is_dir()  # the corpus was mirrored into the cache

    request["output"] = "s3://artifacts/default/ami/s3-trial-again"
    code, output = run_trial(request, tmp_path, **env)
    assert code == 0 and result_line(output)["timings"]["cache_hits"] == 3


def test_missing_object_is_named(s3_endpoint: str, tmp_path: Path) -> None:
    storage = Storage(S3(endpoint=s3_endpoint))
    storage.client.create_bucket(Bucket="empty")
    with pytest.raises(MissingObject, match=r"s3://empty/nothing\.wav: no such object"):
        storage.download("s3://empty/nothing.wav", tmp_path / "x.wav")


def test_a_trial_survives_s3_faults(
    s3_endpoint: str, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """5xx bursts, a stall, a truncated body and a reset between the trial and S3: the trial
    retries and scores exactly what it scores without them."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("faulty", "faulty-models", "faulty-artifacts"):
        client.create_bucket(Bucket=bucket)
    database = copy_ami(tmp_path / "ami")
    upload(client, database.parent, "faulty", "ami")
    for path in models:
        client.upload_file(str(path), "faulty-models", path.name)

    def request(endpoint: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "stage": "clustering",
            "data": {
                "database": "s3://faulty/ami/database.yml",
                "protocol": PROTOCOL,
                "s3": {"endpoint": endpoint},
            },
            "pipeline": {
                "segmentation": "s3://faulty-models/segmentation.ckpt",
                "embedding": "s3://faulty-models/embedding.ckpt",
            },
            "params": {"clustering.threshold": 0.3},
            "tuned": ["clustering.threshold"],
            "output": f"s3://faulty-artifacts/{name}",
        }

    code, output = run_trial(
        request(s3_endpoint, "direct"), tmp_path, DIARTUNE_CACHE=str(tmp_path / "a")
    )
    assert code == 0, output[-3000:]
    expected = result_line(output)["der"]

    proxy = FaultProxy(s3_endpoint).start()
    try:
        objects = r"^/faulty(-models)?/[^?]+$"
        proxy.add(
            Fault("status", "GET", objects, status=503, times=3, body=SLOW_DOWN),
            Fault("truncate", "GET", r"^/faulty/ami/dev00\.wav$"),
            Fault("hang", "GET", r"^/faulty-models/embedding\.ckpt$", seconds=25),
            Fault("reset", "PUT", r"^/faulty-artifacts/"),
            Fault("status", "PUT", r"^/faulty-artifacts/", status=500, times=2),
        )
        code, output = run_trial(
            request(proxy.url, "proxied"), tmp_path, DIARTUNE_CACHE=str(tmp_path / "b")
        )
        hits = {fault.action + " " + fault.path: fault.hits for fault in proxy.faults}
    finally:
        proxy.stop()
    assert code == 0, output[-3000:]
    assert result_line(output)["der"] == pytest.approx(expected)
    assert all(hits.values()), hits
    assert (tmp_path / "b/data").is_dir()
