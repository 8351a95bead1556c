"""A fine-tuning's training state, kept in the trial's artifacts while it trains.

A trial pod that is preempted, evicted or loses its node starts again (its Job retries
it, and Kubernetes' pod failure policy does not count a disruption); a local trial whose
process was killed runs again when the tuning resumes. Either way the same request runs
again, finds the state its first run saved, and goes on from that epoch instead of
epoch 0. The state is saved every ``fineTune.checkpointEveryEpochs`` epochs as
``training/epoch-<n>.ckpt``, then ``training/state.json`` names it with its SHA-256 and
the request's digest: a file that is half written, of another request, or changed since
is never loaded.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from diartune.corpus import BadInput
from diartune.records import Checkpoint, Document, TrialRequest
from diartune.storage import MissingObject, Storage, join, sha256_file
from diartune.trial.models import fetch_checkpoint

STATE = "training/state.json"


class TrainingState(Document):
    """Where a trial's latest training state is, and for which request."""

    request_digest: str
    epochs: int
    checkpoint: Checkpoint


class StateKeeper:
    """Saves a trial's training state to its artifacts, and finds it after a restart."""

    def __init__(self, request: TrialRequest, storage: Storage, scratch: Path) -> None:
        self.request = request
        self.storage = storage
        self.scratch = scratch
        self._saved: TrainingState | None = None

    def save(self, path: Path, epochs: int) -> None:
        """Upload the checkpoint at ``path`` (after ``epochs`` epochs), then name it."""
        checkpoint = Checkpoint(
            uri=join(self.request.output, f"training/epoch-{epochs}.ckpt"),
            sha256=sha256_file(path),
        )
        self.storage.upload(path, checkpoint.uri)
        state = TrainingState(
            request_digest=self.request.digest, epochs=epochs, checkpoint=checkpoint
        )
        document = path.with_suffix(".json")
        document.write_text(state.model_dump_json(by_alias=True), encoding="utf-8")
        self.storage.upload(document, join(self.request.output, STATE))
        document.unlink()
        if self._saved is not None and self._saved.checkpoint.uri != checkpoint.uri:
            self.storage.delete(self._saved.checkpoint.uri)
        self._saved = state

    def load(self) -> Path | None:
        """The checkpoint an earlier run of this very request saved, fetched into the
        scratch folder and verified; None when there is none worth resuming from."""
        try:
            text = self.storage.read_text(join(self.request.output, STATE))
            state = TrainingState.model_validate_json(text)
        except (MissingObject, ValidationError):
            return None
        if state.request_digest != self.request.digest:
            return None
        try:
            local = fetch_checkpoint(state.checkpoint, self.storage, self.scratch)
        except (BadInput, FileNotFoundError, MissingObject) as error:
            print(f"{self.request.name}: not resuming, {error}", flush=True)
            return None
        print(f"{self.request.name}: resuming after epoch {state.epochs}", flush=True)
        self._saved = state
        return local

    def clear(self) -> None:
        """Remove the saved state (the trial finished: its checkpoint supersedes it)."""
        if self._saved is not None:
            self.storage.delete(join(self.request.output, STATE))
            self.storage.delete(self._saved.checkpoint.uri)
            self._saved = None
