"""``diartune tune spec.yaml``: the study's trials as local processes, resumable.

The output folder is the durable state: the accepted spec (``spec.json``) and every
finished trial (``trials.json``). Rerunning the same command resumes: finished trials
are never run again, and a changed spec is held to the same rule as on Kubernetes
(``diartune.spec.changes``). Ctrl-C stops the running trials cleanly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from diartune.local.executor import LocalExecutor
from diartune.records import percent
from diartune.results.artifacts import read_records
from diartune.results.report import (
    ACCEPTED_SPEC,
    TRIALS_JSON,
    load_records,
    save_records,
    write_results,
)
from diartune.search.study import Study, Summary
from diartune.search.warm_start import WarmStart, warm_start
from diartune.spec.changes import check_accepted, resolve
from diartune.spec.model import DiarizationTuning, Spec, SpecError
from diartune.storage import StorageError


def accepted_spec(folder: Path, tuning: DiarizationTuning) -> Spec:
    """The spec to run in ``folder``: the one it was started with, plus what may change.

    A new folder accepts the given spec; SpecError when the given spec changes more
    than a running tuning may, or when the folder's spec.json cannot be read or is
    missing beside finished trials (which spec they ran is then unknown).
    """
    saved = folder / ACCEPTED_SPEC
    current = tuning.spec.model_dump(mode="json", by_alias=True)
    if not saved.exists() and not saved.is_symlink():
        if (folder / TRIALS_JSON).exists():
            raise SpecError(
                f"{saved}: no such file, but {TRIALS_JSON} holds the trials of an earlier "
                "run; expected the spec.json it started with (restore it, or use another "
                "--output)"
            )
        saved.write_text(json.dumps(current, indent=2, ensure_ascii=False), encoding="utf-8")
        return tuning.spec
    expected = "expected the spec.json that diartune tune writes"
    try:
        accepted = json.loads(saved.read_bytes().decode("utf-8"))
    except OSError as error:
        raise SpecError(f"{saved}: cannot be read ({error.strerror}); {expected}") from None
    except ValueError as error:  # not UTF-8, not JSON
        raise SpecError(f"{saved}: {str(error).splitlines()[0]}; {expected}") from None
    try:
        check_accepted(accepted, str(saved))
    except SpecError as error:  # edited by hand
        raise SpecError(f"{str(error).splitlines()[0]}; {expected}") from None
    spec, refused = resolve(accepted, current)
    if refused:
        raise SpecError(f"{folder} holds another tuning: {refused}. Use another --output.")
    return spec


def _make_folder(folder: Path) -> None:
    """Create the output folder; SpecError when ``--output`` cannot be one."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SpecError(f"{folder}: not a folder; expected --output to name a folder") from None
    except OSError as error:
        raise SpecError(f"{folder}: cannot be created ({error.strerror})") from None


def _warm_start(spec: Spec) -> WarmStart:
    """The trials of ``spec.optimizer.warmStartFrom``: output folders or S3 prefixes.

    Raises SpecError (one line naming the entry) when one cannot be read.
    """
    sources = []
    for index, location in enumerate(spec.optimizer.warm_start_from):
        try:
            sources.append((location, read_records(location, spec.data.s3)))
        except StorageError as error:
            raise SpecError(f"spec.optimizer.warmStartFrom[{index}]: {error}") from None
    return warm_start(spec, sources)


class LocalTuning:
    """One tuning run on this machine."""

    def __init__(
        self,
        tuning: DiarizationTuning,
        folder: Path,
        console: Console | None = None,
        verbose: bool = False,
    ):
        """``verbose``: also show each finished trial's log (what pyannote, lightning and
        torch printed), which is otherwise only in ``logs/<trial>.log``."""
        _make_folder(folder)
        self.verbose = verbose
        self.name = tuning.metadata.name
        self.spec = accepted_spec(folder, tuning)
        self.folder = folder
        self.console = console or Console(stderr=True)
        self.root = self.spec.artifacts or str(folder.resolve())
        self.study = Study(
            self.spec, load_records(folder), root=self.root, warm=_warm_start(self.spec)
        )
        self.executor = LocalExecutor(folder / "logs")

    def run(self) -> Summary:
        """Run trials until the study has nothing left to launch; return its summary."""
        start = time.monotonic()
        summary = self.study.summary()
        if summary.trials:
            self.console.print(f"resuming: {summary.trials} trials already finished")
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best DER {task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console) as progress:
            task = progress.add_task(
                self.name,
                total=summary.max_trials,
                completed=summary.trials,
                best=percent(summary.best_der),
            )
            try:
                self._loop(progress, task)
            except BaseException:
                self.executor.stop()
                raise
        return self.finish(time.monotonic() - start)

    def _loop(self, progress: Progress, task: Any) -> None:
        while True:
            for trial in self.study.plan():
                self.executor.start(self.study.request(trial))
            stopped = self.study.stop()
            if stopped:
                self.executor.stop([record.name for record in stopped])
                save_records(self.folder, self.study.records)
            if not self.executor.running:
                return
            name, outcome = self.executor.wait()
            if self.verbose:
                self._show_log(progress.console, name)
            running = self.study.running.get(name)
            if running is None:  # stopped meanwhile
                continue
            record = running.record(outcome)
            self.study.record(record)
            save_records(self.folder, self.study.records)
            if not record.is_evaluation:
                best = self.study.best()
                progress.update(task, advance=1, best=percent(best.der if best else None))
            state = f"DER {percent(record.der)}" if record.der is not None else record.message
            progress.console.print(f"{record.name}: {record.state}: {state}")

    def _show_log(self, console: Console, name: str) -> None:
        """Print a trial's log, each line prefixed by its name."""
        text = self.executor.log(name).read_text("utf-8", errors="replace")
        for line in text.splitlines():
            console.print(f"{name} | {line}", markup=False, highlight=False, soft_wrap=True)

    def finish(self, seconds: float) -> Summary:
        """Write the plot, best configuration, exported pipeline and summary."""
        summary, markdown = write_results(self.folder, self.name, self.study, seconds)
        self.console.print(markdown)
        return summary
