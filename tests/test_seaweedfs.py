"""diartune's storage on SeaweedFS's S3 gateway, and where SeaweedFS and moto differ.

The end-to-end tests in images run against SeaweedFS (tests/test_in_images.py); the fast
unit-level ones against moto. These tests pin down the differences found between the two,
so that a test written against moto is known to hold on a production server, or not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import S3_CREDENTIALS

from diartune.spec.model import S3
from diartune.storage import Storage


@pytest.fixture(params=["moto", "seaweedfs"])
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, endpoint) of each S3 server."""
    fixture = {"moto": "s3_endpoint", "seaweedfs": "seaweedfs_endpoint"}[request.param]
    return request.param, str(request.getfixturevalue(fixture))


def s3(endpoint: str, key_id: str = S3_CREDENTIALS["AWS_ACCESS_KEY_ID"]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def error_code(call: Callable[..., object], **kwargs: object) -> str | None:
    """The S3 error code of ``call(**kwargs)``, None when it succeeds."""
    try:
        call(**kwargs)
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return None


def test_storage_round_trip_and_mirror(server: tuple[str, str], tmp_path: Path) -> None:
    """What trials do: upload, download, list a prefix into a mirror, re-fetch a change."""
    name, endpoint = server
    client = s3(endpoint)
    client.create_bucket(Bucket=f"round-trip-{name}")
    storage = Storage(S3(endpoint=endpoint))
    source = tmp_path / "a.wav"
    source.write_bytes(b"first")
    storage.upload(source, f"s3://round-trip-{name}/corpus/a.wav")
    storage.upload(source, f"s3://round-trip-{name}/corpus/sub/b.wav")
    mirror = tmp_path / "mirror"
    storage.download_prefix(f"s3://round-trip-{name}/corpus", mirror)
    assert (mirror / "a.wav").read_bytes() == (mirror / "sub" / "b.wav").read_bytes() == b"first"
    source.write_bytes(b"other")  # same size: only the ETag tells
    storage.upload(source, f"s3://round-trip-{name}/corpus/a.wav")
    storage.download_prefix(f"s3://round-trip-{name}/corpus", mirror)
    assert (mirror / "a.wav").read_bytes() == b"other"


def test_differences(server: tuple[str, str]) -> None:
    """Credentials and '..' in keys: checked by SeaweedFS, not by moto."""
    name, endpoint = server
    client = s3(endpoint)
    checks = name == "seaweedfs"
    # Wrong credentials: moto accepts any signature.
    stranger = s3(endpoint, key_id="someone-else")
    assert error_code(stranger.list_buckets) == ("InvalidAccessKeyId" if checks else None)
    # A key with '..' segments (S3 itself stores it; diartune's mirror refuses to write it
    # outside its folder, which can only be tested on moto).
    client.create_bucket(Bucket=f"dots-{name}")
    code = error_code(client.put_object, Bucket=f"dots-{name}", Key="a/../../b", Body=b"x")
    assert code == ("InvalidRequest" if checks else None)
