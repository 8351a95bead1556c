"""Run trials as local processes, each exactly what ``diartune trial --request FILE`` runs.

Trial processes are forked from a multiprocessing fork server that has imported
torch and pyannote once: a clustering trial then takes about a second instead of
the 10-30 s that importing them costs in a fresh interpreter. Each trial still has
a process (and a log file) of its own, and a thread that waits for it; finished
trials are handed back through a queue, so waiting needs no polling.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from diartune.records import TrialOutcome, TrialRequest, parse_trial_output


class LocalExecutor:
    """Runs trial processes on this machine."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["diartune.trial.run"])
        self._processes: dict[str, Any] = {}
        self._done: queue.Queue[tuple[str, TrialOutcome]] = queue.Queue()

    @property
    def running(self) -> int:
        """Trials started and not yet handed back."""
        return len(self._processes)

    def start(self, request: TrialRequest) -> None:
        """Launch the trial process for ``request``."""
        (self.workdir / f"{request.name}.request.json").write_text(
            request.model_dump_json(by_alias=True, indent=2)
        )
        log = self.log(request.name)
        process = self._context.Process(
            target=_trial_process,
            args=(request.model_dump_json(by_alias=True), str(log)),
            name=f"diartune-{request.name}",
        )
        process.start()
        self._processes[request.name] = process
        threading.Thread(target=self._wait, args=(request.name, process, log), daemon=True).start()

    def log(self, name: str) -> Path:
        """The file that holds all that trial ``name`` printed."""
        return self.workdir / f"{name}.log"

    def _wait(self, name: str, process: Any, log: Path) -> None:
        start = time.monotonic()
        process.join()
        code = process.exitcode if process.exitcode is not None else -1
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        self._done.put((name, parse_trial_output(text, code, round(time.monotonic() - start, 2))))

    def wait(self) -> tuple[str, TrialOutcome]:
        """Block until a trial finishes; hand back its name and outcome."""
        name, outcome = self._done.get()
        self._processes.pop(name, None)
        return name, outcome

    def stop(self, names: list[str] | None = None) -> None:
        """Stop the named running trials, or all of them (SIGTERM), and wait for them."""
        stopping = [self._processes.pop(n) for n in names or list(self._processes)]
        for process in stopping:
            if process.is_alive():
                process.terminate()
        for process in stopping:
            process.join()


def _trial_process(request_json: str, log: str) -> None:
    """Body of a trial process: output to its log, then exit with the trial's code."""
    with open(log, "ab", buffering=0) as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    from diartune.records import TrialRequest
    from diartune.trial.run import main

    sys.exit(main(TrialRequest.model_validate_json(request_json), termination_log=None))
