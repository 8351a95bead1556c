"""Artifacts and data in S3 or on local paths, behind one small interface.

A location is a URI: ``s3://bucket/prefix`` (served by the spec's S3 endpoint,
credentials from the usual AWS_* environment variables) or a local path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from diartune.spec.model import S3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


T = TypeVar("T")


@contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """A temporary file beside ``destination``, renamed over it once the block succeeds.

    The name is unique, so processes that write the same destination at once (parallel
    trials filling one cache) never see each other's partial files, and a reader sees
    either the old file or the whole new one.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """Local scratch for downloads: $DIARTUNE_CACHE, else ~/.cache/diartune."""
    return Path(os.environ.get("DIARTUNE_CACHE") or Path.home() / ".cache" / "diartune")


class StorageError(RuntimeError):
    """A location that cannot be read or written."""


class MissingObject(StorageError):
    """A location that does not exist."""


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names an S3 object or prefix."""
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a URI or a path."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


@cache
def _client(endpoint: str | None, region: str | None) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        # Retries with backoff on 5xx, throttling and broken connections; a stalled
        # connection fails after read_timeout and is retried too.
        config=Config(
            retries={"max_attempts": 8, "mode": "standard"},
            connect_timeout=10,
            read_timeout=20,
        ),
    )


ETAGS = ".diartune-etags.json"


def _read_etags(folder: Path) -> dict[str, str]:
    try:
        found = json.loads((folder / ETAGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def confined(folder: Path, relative: str, source: str) -> Path:
    """``folder / relative``, refused (StorageError) unless it stays inside ``folder``."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(
            f"{source}: key would be written outside {folder}; expected a plain relative key"
        )
    return folder.joinpath(*parts)


class Storage:
    """Reads and writes locations, with the S3 settings of a spec."""

    def __init__(self, s3: S3 | None = None) -> None:
        self.s3 = s3 or S3()

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client for the configured endpoint."""
        return _client(self.s3.endpoint, self.s3.region)

    def download(self, uri: str, destination: Path) -> Path:
        """Copy the object at ``uri`` to the file ``destination``, atomically."""
        with atomic_path(destination) as partial:
            if is_s3(uri):
                bucket, key = split_s3(uri)
                self._call(uri, lambda: self.client.download_file(bucket, key, str(partial)))
            else:
                shutil.copyfile(uri, partial)
        return destination

    def download_prefix(self, uri: str, destination: Path) -> Path:
        """Mirror every object under the prefix ``uri`` into ``destination``.

        An object is fetched again only when its ETag changed since it was mirrored
        (a same-size replacement included); the ETags are kept beside the files. A key
        that would land outside ``destination`` (``..``, an empty segment) is refused.
        """
        bucket, prefix = split_s3(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(uri, lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)))
        items = [item for page in pages for item in page.get("Contents", [])]
        mirrored = _read_etags(destination)
        for item in items:
            relative = item["Key"][len(prefix) :]
            target = confined(destination, relative, f"s3://{bucket}/{item['Key']}")
            if target.is_file() and mirrored.get(relative) == item["ETag"]:
                continue
            self.download(f"s3://{bucket}/{item['Key']}", target)
            mirrored[relative] = item["ETag"]
        with atomic_path(destination / ETAGS) as partial:
            partial.write_text(json.dumps(mirrored, sort_keys=True), encoding="utf-8")
        return destination

    def upload(self, source: Path, uri: str) -> str:
        """Copy the file ``source`` to ``uri``."""
        if not is_s3(uri):
            if Path(uri).resolve() != source.resolve():
                with atomic_path(Path(uri)) as partial:
                    shutil.copyfile(source, partial)
            return uri
        bucket, key = split_s3(uri)
        self._call(uri, lambda: self.client.upload_file(str(source), bucket, key))
        return uri

    def upload_tree(self, source: Path, uri: str, last: str | None = None) -> str:
        """Copy every file under the folder ``source`` to the prefix ``uri``.

        The file named ``last`` goes after all others: its presence then says that the
        whole tree is there (a trial's ``result.json`` says that its checkpoint is).
        """
        files = [path for path in sorted(source.rglob("*")) if path.is_file()]
        files.sort(key=lambda path: path.relative_to(source).as_posix() == last)
        for path in files:
            self.upload(path, join(uri, path.relative_to(source).as_posix()))
        return uri

    def delete(self, uri: str) -> None:
        """Remove the object or file at ``uri``, if there is one."""
        if not is_s3(uri):
            Path(uri).unlink(missing_ok=True)
            return
        bucket, key = split_s3(uri)
        self._call(uri, lambda: self.client.delete_object(Bucket=bucket, Key=key))

    def read_text(self, uri: str) -> str:
        """The text of the object or file at ``uri``; MissingObject if there is none."""
        if not is_s3(uri):
            try:
                return Path(uri).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise MissingObject(f"{uri}: no such file") from None
        bucket, key = split_s3(uri)
        response = self._call(uri, lambda: self.client.get_object(Bucket=bucket, Key=key))
        return response["Body"].read().decode("utf-8")

    @staticmethod
    def _call(uri: str, action: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise MissingObject(f"{uri}: no such object") from error
            raise StorageError(f"{uri}: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"{uri}: {error}") from error
