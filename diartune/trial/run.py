"""One trial, end to end: data -> fine-tune -> pipeline -> DER -> artifacts.

This is what ``diartune trial`` runs, locally as a process and on Kubernetes as the
container command of a trial pod. It prints one ``DIARTUNE_RESULT {...}`` line, writes
the same small JSON to the termination-message file when there is one, and exits
with 0, EXIT_BAD_INPUT (65: no retry helps) or EXIT_INFRASTRUCTURE (75).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from pyannote.audio import Model
from pyannote.core import Annotation
from pydantic import ValidationError

from diartune.corpus import BadInput, fetch_database
from diartune.objective import objective_value
from diartune.records import (
    CHECKPOINT_FILE,
    ERROR_PREFIX,
    EXIT_BAD_INPUT,
    EXIT_INFRASTRUCTURE,
    MESSAGE_LIMIT,
    RECORD_FILE,
    RESULT_FILE,
    RESULT_PREFIX,
    SECRET_VARIABLES_ENV,
    BatchReport,
    FileScores,
    TrialOutcome,
    TrialRequest,
    TrialResult,
)
from diartune.spec.model import RESERVED_ENV
from diartune.spec.params import with_defaults
from diartune.storage import (
    MissingObject,
    Storage,
    StorageError,
    cache_root,
    is_s3,
    join,
    sha256_file,
)
from diartune.trial.cache import FeatureCache
from diartune.trial.data import budget_files, load_protocol, subset_files
from diartune.trial.device import device
from diartune.trial.evaluate import score
from diartune.trial.finetune import fine_tune
from diartune.trial.models import fetch_checkpoint, load_model, save_checkpoint
from diartune.trial.pipeline import (
    build_pipeline,
    diarize,
    export_pipeline,
    is_powerset,
    nested,
    pipeline_params,
)
from diartune.trial.plda import load_plda
from diartune.trial.progress import StateKeeper


def model_digest(model: Model) -> str:
    """Identity of a model's weights, whatever file or hub id they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Timings(dict[str, float]):
    """Seconds spent per phase of a trial."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block into ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


def _write_rttm(hypotheses: dict[str, Annotation], path: Path) -> None:
    with path.open("w", encoding="utf-8") as stream:
        for annotation in hypotheses.values():
            annotation.write_rttm(stream)


def run_trial(request: TrialRequest, workdir: Path) -> TrialResult:
    """Run one trial; artifacts go to ``request.output``."""
    timings = Timings()
    storage = Storage(request.data.s3)
    scratch = cache_root()
    token = os.environ.get("HF_TOKEN")
    with timings.phase("data"):
        database = fetch_database(request.data, storage, scratch)
        subsets = (request.trial.subset, *(("train",) if request.fine_tune else ()))
        confined = is_s3(request.data.database)
        protocol = load_protocol(database, request.data.protocol, subsets, confined)
        files = budget_files(subset_files(protocol, request.trial.subset), request.files)
    with timings.phase("models"):
        segmentation = load_model(
            request.pipeline.segmentation,
            storage,
            scratch,
            token,
            sha256=request.trial.segmentation_sha256,
        )
        embedding = load_model(request.pipeline.embedding, storage, scratch, token)
        plda_folder, plda = None, None
        if request.pipeline.plda:  # before fine-tuning: a PLDA that does not fit is bad input
            dimension = cast(int, embedding.dimension)
            plda_folder, plda = load_plda(request.pipeline.plda, storage, scratch, dimension, token)
    checkpoint = None
    keeper = StateKeeper(request, storage, scratch)
    if request.fine_tune is not None:
        subset_files(protocol, "train", load=False)
        with timings.phase("fine_tune"):
            resume = keeper.load()
            if resume is None and request.continue_from is not None:
                resume = fetch_checkpoint(request.continue_from, storage, scratch)
            checkpoint = fine_tune(
                segmentation,
                protocol,
                request.params,
                request.fine_tune,
                workdir / CHECKPOINT_FILE,
                resume=resume,
                save_state=keeper.save,
            )
            segmentation = load_model(str(checkpoint), storage, scratch)
    segmentation.eval()
    embedding.eval()
    params = with_defaults(request.pipeline.clustering, request.params)
    batch_sizes = (request.pipeline.segmentation_batch_size, request.pipeline.embedding_batch_size)
    pipeline = build_pipeline(
        segmentation,
        embedding,
        request.pipeline.clustering,
        params,
        tuned=set(request.tuned),
        plda=plda,
        batch_sizes=batch_sizes,
    )
    # After building: pyannote wraps the embedding model on the CPU unless told the device.
    pipeline.to(device())
    cache = None
    if request.cache:
        identity: dict[str, Any] = {
            "segmentation": model_digest(segmentation),
            "embedding": model_digest(embedding),
        }
        if not is_powerset(segmentation):
            identity["threshold"] = params["segmentation.threshold"]
        cache = FeatureCache(request.cache, storage, workdir, identity)
    with timings.phase("pipeline"):
        hypotheses = diarize(pipeline, files, cache, timings)
    with timings.phase("scoring"):
        total, per_file = score(files, hypotheses, request.objective)
    if total.der is None:
        raise BadInput(f"{request.data.protocol}: the {request.trial.subset} subset has no speech")
    artifacts = workdir / "artifacts"
    artifacts.mkdir()
    _write_rttm(hypotheses, artifacts / "hypothesis.rttm")
    checkpoint_uri = checkpoint_sha256 = None
    if checkpoint is not None:
        (artifacts / CHECKPOINT_FILE).write_bytes(checkpoint.read_bytes())
        checkpoint_uri = join(request.output, CHECKPOINT_FILE)
        checkpoint_sha256 = sha256_file(checkpoint)
    if request.trial.export:
        export_pipeline(
            artifacts / "pipeline",
            (
                save_checkpoint(segmentation, workdir / "export" / "segmentation.ckpt"),
                save_checkpoint(embedding, workdir / "export" / "embedding.ckpt"),
            ),
            request.pipeline.clustering,
            nested(pipeline_params(pipeline, params)),
            plda_folder,
            batch_sizes,
        )
    if cache is not None:
        timings["cache_hits"] = cache.hits
    scores = FileScores.of(per_file)
    result = TrialResult(
        name=request.name,
        der=total.der,
        objective=objective_value(scores, request.objective.aggregate),
        components=total,
        per_file=per_file,
        scores=scores,
        checkpoint=checkpoint_uri,
        checkpoint_sha256=checkpoint_sha256,
        artifacts=request.output,
        timings=dict(timings),
        request_digest=request.digest,
    )
    (artifacts / RESULT_FILE).write_text(result.model_dump_json(by_alias=True, indent=2))
    output = request.output if is_s3(request.output) else str(Path(request.output).resolve())
    storage.upload_tree(artifacts, output, last=RESULT_FILE)
    keeper.clear()
    return result


def earlier_result(request: TrialRequest, storage: Storage) -> TrialResult | None:
    """The result this very request already wrote, if any: a trial whose pod or process
    ran again (its Job recreated, its pod lost after finishing) reports it again instead
    of running twice. ``result.json`` is written last, so its checkpoint is there too."""
    try:
        text = storage.read_text(join(request.output, RESULT_FILE))
    except MissingObject:
        return None
    try:
        result = TrialResult.model_validate_json(text)
    except ValidationError:
        return None  # unreadable: run the trial and overwrite it
    return result if result.request_digest == request.digest else None


MAX_ERROR = 1000


def scrub(text: str) -> str:
    """An error message fit for a status or an event: secrets masked, length bounded."""
    listed = os.environ.get(SECRET_VARIABLES_ENV, "").split(",")
    for name in {*RESERVED_ENV, *listed}:
        value = os.environ.get(name) if name else None
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def _report(line: str, summary: dict[str, Any], termination_log: Path | None) -> None:
    text = json.dumps(summary, ensure_ascii=False)
    print(line + text, flush=True)
    _terminate_with(text[:MESSAGE_LIMIT], termination_log)


def _terminate_with(text: str, termination_log: Path | None) -> None:
    """Write the termination message (Kubernetes reads it however the container ends)."""
    if termination_log is not None:
        # Not in a pod, or no permission: the printed line is enough.
        with contextlib.suppress(OSError):
            termination_log.write_text(text, encoding="utf-8")


def _print_outcome(outcome: TrialOutcome, termination_log: Path | None) -> None:
    if outcome.result is not None:
        _report(RESULT_PREFIX, outcome.result.summary(), termination_log)
    else:
        document = {"error": outcome.error, **({"badInput": True} if outcome.bad_input else {})}
        _report(ERROR_PREFIX, document, termination_log)


def outcome_of(request: TrialRequest) -> tuple[TrialOutcome, int]:
    """Run a trial, or take the result this request already wrote (``earlier_result``);
    leave its record beside its artifacts. Its outcome and its exit code."""
    start = time.monotonic()
    storage = Storage(request.data.s3)
    try:
        result = earlier_result(request, storage)
        if result is not None:
            print(f"{request.name}: reporting the result it already wrote", flush=True)
        else:
            with tempfile.TemporaryDirectory(prefix="diartune-trial-") as workdir:
                result = run_trial(request, Path(workdir))
    except (BadInput, MissingObject) as error:
        outcome = TrialOutcome(error=scrub(str(error)), bad_input=True)
        code = EXIT_BAD_INPUT
    except Exception as error:
        outcome = TrialOutcome(error=scrub(f"{type(error).__name__}: {error}"))
        print(f"diartune trial: {outcome.error}", file=sys.stderr)
        code = EXIT_INFRASTRUCTURE
    else:
        outcome = TrialOutcome(result=result)
        code = 0
    outcome.seconds = round(time.monotonic() - start, 2)
    _leave_record(request, outcome, storage)
    return outcome, code


def main(request: TrialRequest, termination_log: Path | None) -> int:
    """Run a trial as a command: print its result line, leave its record beside its
    artifacts, and return its exit code."""
    outcome, code = outcome_of(request)
    _print_outcome(outcome, termination_log)
    return code


def main_batch(requests: list[TrialRequest], termination_log: Path | None) -> int:
    """Run several trials in turn in this process, which imported pyannote once: what a
    pod of several trials runs. Each trial prints its line and leaves its record as it
    ends, and the termination message (a ``BatchReport``) is written again as each trial
    starts and ends, so that a pod killed mid-batch still tells which trials it finished
    and which one it was running.

    Returns 0 once every trial has an outcome (a trial's bad input fails that trial
    alone), or EXIT_INFRASTRUCTURE at the first trial that failed so: the Job's next pod
    reports the trials finished before it (their result.json) and runs the rest."""
    report = BatchReport()
    for request in requests:
        report.running = request.name
        _terminate_with(report.message(), termination_log)
        outcome, code = outcome_of(request)
        _print_outcome(outcome, None)
        report.running = None
        report.trials[request.name] = outcome
        _terminate_with(report.message(), termination_log)
        if code == EXIT_INFRASTRUCTURE:
            return code
    return 0


def _leave_record(request: TrialRequest, outcome: TrialOutcome, storage: Storage) -> None:
    """Write the trial's record to ``<output>/record.json`` (best effort: a trial that
    cannot reach its storage still reports through its exit code and output)."""
    record = request.trial.record(outcome)
    with tempfile.TemporaryDirectory(prefix="diartune-record-") as folder:
        local = Path(folder) / RECORD_FILE
        local.write_text(record.model_dump_json(by_alias=True, indent=2), encoding="utf-8")
        try:
            storage.upload(local, join(request.output, RECORD_FILE))
        except (StorageError, OSError) as error:
            print(f"diartune trial: its record was not written: {scrub(str(error))}", flush=True)
