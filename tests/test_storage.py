"""Storage writes are atomic: concurrent writers of one destination never break each other."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import boto3
import pytest

from diartune.spec.model import S3
from diartune.storage import ETAGS, Storage, StorageError, atomic_path


def test_interleaved_writers_of_one_file_both_succeed(tmp_path: Path) -> None:
    """Two trials filling the same cache entry: each writes its own partial file."""
    destination = tmp_path / "models" / "segmentation.ckpt"
    with atomic_path(destination) as first:
        first.write_bytes(b"first")
        with atomic_path(destination) as second:
            assert second != first
            second.write_bytes(b"second")
        assert destination.read_bytes() == b"second"
    assert destination.read_bytes() == b"first"
    assert [path.name for path in destination.parent.iterdir()] == ["segmentation.ckpt"]


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    destination = tmp_path / "entry.npz"
    destination.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(destination) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert destination.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [destination]


def _mirror(endpoint: str, destination: str) -> None:
    Storage(S3(endpoint=endpoint)).download_prefix("s3://mirror/corpus", Path(destination))


@pytest.mark.integration
def test_parallel_trials_mirror_one_prefix_into_one_cache(s3_endpoint: str, tmp_path: Path) -> None:
    """What parallel trials on one machine do with a cold cache (was: FileNotFoundError)."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="mirror")
    payloads = {f"corpus/file{index:02d}.wav": bytes([index]) * 500_000 for index in range(16)}
    for key, body in payloads.items():
        client.put_object(Bucket="mirror", Key=key, Body=body)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_mirror, args=(s3_endpoint, str(tmp_path / "cache")))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    for key, body in payloads.items():
        assert (tmp_path / "cache" / key.removeprefix("corpus/")).read_bytes() == body
    names = {path.name for path in (tmp_path / "cache").iterdir()}
    assert names == {key.removeprefix("corpus/") for key in payloads} | {ETAGS}  # no partials


@pytest.mark.integration
def test_the_mirror_refetches_replaced_objects_and_refuses_keys_outside_it(
    s3_endpoint: str, tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="replaced")
    client.put_object(Bucket="replaced", Key="corpus/a.wav", Body=b"first")
    storage = Storage(S3(endpoint=s3_endpoint))
    mirror = tmp_path / "mirror"
    storage.download_prefix("s3://replaced/corpus", mirror)
    client.put_object(Bucket="replaced", Key="corpus/a.wav", Body=b"other")  # same size
    storage.download_prefix("s3://replaced/corpus", mirror)
    assert (mirror / "a.wav").read_bytes() == b"other"

    client.put_object(Bucket="replaced", Key="corpus/../../escaped.wav", Body=b"x")
    with pytest.raises(StorageError, match=r"escaped\.wav: key would be written outside"):
        storage.download_prefix("s3://replaced/corpus", mirror)
    assert not list(tmp_path.rglob("escaped.wav"))
