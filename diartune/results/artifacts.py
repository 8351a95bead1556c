"""A tuning read back from where it left its records: a local output folder or S3.

Two places hold a tuning's trials:

- the output folder of ``diartune tune``: ``spec.json`` (the accepted spec) and
  ``trials.json`` (every record), the trials' own artifacts wherever the records say;
- the operator's artifacts, ``<artifacts>/<namespace>/<tuning>`` in S3:
  ``trials/<trial>/record.json``, the record each trial writes of itself when it ends
  (``diartune.trial.run``), beside its ``result.json``. The operator holds no S3
  credentials, so no spec is kept there: give it with ``--spec`` (the YAML applied).

A finished trial's record says where its artifacts are; a successful trial's
``result.json`` there adds its DER per file.
"""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from diartune.records import RECORD_FILE, RESULT_FILE, Components, TrialRecord, TrialResult
from diartune.results.report import ACCEPTED_SPEC, TRIALS_JSON, load_records
from diartune.search.study import Study, Summary
from diartune.spec.file import format_errors
from diartune.spec.model import S3, Spec, SpecError
from diartune.storage import MissingObject, Storage, StorageError, is_s3, join, split_s3

TRIALS = "trials"
#: Parallel reads of small S3 objects (records and results), within boto3's 10 connections.
READERS = 8

T = TypeVar("T")
RECORD = TypeAdapter(TrialRecord)
RESULT = TypeAdapter(TrialResult)


class ArtifactsError(StorageError):
    """Artifacts that are missing, unreadable or do not belong together."""


class TuningArtifacts(BaseModel):
    """What a tuning left: its spec, its finished trials and their DER per file."""

    model_config = ConfigDict(frozen=True)

    name: str
    location: str
    spec: Spec
    records: list[TrialRecord]
    per_file: dict[str, dict[str, Components]] = Field(
        description="DER per file of each successful trial, by trial name."
    )
    missing: list[str] = Field(description="The result.json files of successful trials not found.")
    seconds: float = Field(description="From the tuning's start to its last record.")

    def study(self) -> Study:
        """The tuning's study, rebuilt from its finished trials (none counts as running)."""
        return Study(self.spec, self.records)

    def summary(self) -> Summary:
        """What the study found, from the finished trials alone."""
        return self.study().summary()


def _parse(adapter: TypeAdapter[T], text: str, source: str) -> T:
    """``text`` as JSON of ``adapter``'s type; ArtifactsError names the first bad field."""
    try:
        return adapter.validate_json(text)
    except ValidationError as error:
        raise ArtifactsError(format_errors(error, source).splitlines()[0]) from None


def _read_spec(storage: Storage, root: str) -> Spec:
    uri = join(root, ACCEPTED_SPEC)
    try:
        text = storage.read_text(uri)
    except MissingObject:
        raise ArtifactsError(
            f"{uri}: no such file: the tuning's spec is missing; give it with --spec"
        ) from None
    try:
        return Spec.model_validate_json(text)
    except ValidationError as error:
        raise SpecError(format_errors(error, uri)) from None


def _list_records(storage: Storage, root: str) -> dict[str, datetime.datetime]:
    """The URIs of ``<root>/trials/*/record.json`` and when each was written."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(join(root, TRIALS))
    prefix = key.rstrip("/") + "/"
    found: dict[str, datetime.datetime] = {}
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        for page in pages:
            for item in page.get("Contents", []):
                parts = item["Key"][len(prefix) :].split("/")
                if len(parts) == 2 and parts[1] == RECORD_FILE:
                    found[f"s3://{bucket}/{item['Key']}"] = item["LastModified"]
    except (BotoCoreError, ClientError) as error:
        raise ArtifactsError(f"{root}: cannot list its trials: {error}") from error
    return found


def _results(storage: Storage, records: list[TrialRecord]) -> dict[str, TrialResult | str]:
    """Each successful trial's result, or the URI of the result.json it lacks."""
    wanted = [r for r in records if r.state == "Succeeded" and r.artifacts]
    uris = [join(str(r.artifacts), RESULT_FILE) for r in wanted]

    def read(uri: str) -> TrialResult | str:
        try:
            return _parse(RESULT, storage.read_text(uri), uri)
        except MissingObject:
            return uri

    with ThreadPoolExecutor(READERS) as pool:
        return dict(zip([r.name for r in wanted], pool.map(read, uris), strict=True))


def _records_in_folder(folder: Path) -> tuple[list[TrialRecord], float]:
    """The records of ``diartune tune``'s output folder, and the time from its start to
    its last record."""
    trials = folder / TRIALS_JSON
    try:
        records = load_records(folder)
    except StorageError as error:
        raise ArtifactsError(str(error)) from None
    started = folder / ACCEPTED_SPEC
    first = started.stat().st_mtime if started.exists() else trials.stat().st_mtime
    return records, max(trials.stat().st_mtime - first, 0.0)


def _records_in_s3(storage: Storage, root: str) -> tuple[list[TrialRecord], float]:
    """The records under an S3 artifacts root, and the time from the start of its first
    trial to its last record."""
    written = _list_records(storage, root)
    uris = sorted(written)
    with ThreadPoolExecutor(READERS) as pool:
        texts = list(pool.map(storage.read_text, uris))
    records = [_parse(RECORD, text, uri) for uri, text in zip(uris, texts, strict=True)]
    ends = [written[uri].timestamp() for uri in uris]
    starts = [end - (r.seconds or 0.0) for end, r in zip(ends, records, strict=True)]
    return records, max(ends, default=0.0) - min(starts, default=0.0)


def read_records(location: str, s3: S3 | None = None) -> list[TrialRecord]:
    """The finished trials of the tuning at ``location`` (an output folder of ``diartune
    tune`` or an ``s3://`` artifacts prefix). Raises ArtifactsError naming the file."""
    return _records_at(Storage(s3), location.rstrip("/"))[0]


def _records_at(storage: Storage, location: str) -> tuple[list[TrialRecord], float]:
    """The records at an output folder or S3 prefix, and the time they span."""
    if is_s3(location):
        return _records_in_s3(storage, location)
    if not Path(location, TRIALS_JSON).is_file():
        raise ArtifactsError(
            f"{join(location, TRIALS_JSON)}: no such file: expected an output folder of "
            "diartune tune or an s3:// artifacts prefix"
        )
    return _records_in_folder(Path(location))


def read_tuning(
    location: str, s3: S3 | None = None, spec: Spec | None = None, name: str | None = None
) -> TuningArtifacts:
    """The tuning at ``location``: a local output folder, or an ``s3://`` artifacts prefix.

    Parameters
    ----------
    location
        ``diartune tune``'s output folder, or the operator's ``s3://.../<namespace>/<tuning>``.
    s3
        Where S3 URIs are served; by default, the spec's ``data.s3`` for the trials' results.
    spec
        The tuning's spec, instead of the ``spec.json`` kept at ``location``.
    name
        The tuning's name; by default the last part of ``location``.

    Raises ArtifactsError (a StorageError) or SpecError, naming the file at fault.
    """
    location = location.rstrip("/")
    storage = Storage(s3)
    records, seconds = _records_at(storage, location)
    spec = spec or _read_spec(storage, location)
    unknown = sorted({r.stage for r in records} - {stage.name for stage in spec.stages})
    if unknown:
        raise ArtifactsError(f"{location}: trials of stages {unknown}, which the spec lacks")
    results = _results(Storage(s3 or spec.data.s3), records)
    return TuningArtifacts(
        name=name
        or (location.rsplit("/", 1)[-1] if is_s3(location) else Path(location).resolve().name),
        location=location,
        spec=spec,
        records=records,
        per_file={n: r.per_file for n, r in results.items() if isinstance(r, TrialResult)},
        missing=sorted(r for r in results.values() if isinstance(r, str)),
        seconds=seconds,
    )
