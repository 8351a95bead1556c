"""Run trials as local processes: ``python -m diartune trial --request FILE``.

Each process gets its own session (so Ctrl-C reaches only the tuner, which then
stops the trials), a log file, and a thread that waits for it; finished trials are
handed back through a queue, so waiting needs no polling.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diartune.records import ERROR_PREFIX, EXIT_BAD_INPUT, RESULT_PREFIX, TrialRequest


@dataclass(frozen=True)
class Outcome:
    """How a trial process ended."""

    name: str
    exit_code: int
    result: dict[str, Any] | None  # the result line's JSON, when it succeeded
    error: str | None
    seconds: float

    @property
    def bad_input(self) -> bool:
        """The trial failed on input that no retry can fix."""
        return self.exit_code == EXIT_BAD_INPUT


def parse_output(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The result JSON and the error message found in a trial's output."""
    result = error = None
    for line in text.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
        elif line.startswith(ERROR_PREFIX):
            error = json.loads(line[len(ERROR_PREFIX) :]).get("error")
    return result, error


class LocalExecutor:
    """Runs trial processes on this machine."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._done: queue.Queue[Outcome] = queue.Queue()

    @property
    def running(self) -> int:
        """Trials started and not yet handed back."""
        return len(self._processes)

    def start(self, request: TrialRequest) -> None:
        """Launch the trial process for ``request``."""
        request_file = self.workdir / f"{request.name}.request.json"
        request_file.write_text(request.model_dump_json(by_alias=True, indent=2))
        log = self.workdir / f"{request.name}.log"
        with log.open("wb") as stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "diartune", "trial", "--request", str(request_file)],
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._processes[request.name] = process
        threading.Thread(target=self._wait, args=(request.name, process, log), daemon=True).start()

    def _wait(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        start = time.monotonic()
        code = process.wait()
        result, error = parse_output(log.read_text(encoding="utf-8", errors="replace"))
        if code != 0 and error is None:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            error = f"exit code {code}: " + " | ".join(tail)
        self._done.put(Outcome(name, code, result, error, time.monotonic() - start))

    def wait(self) -> Outcome:
        """Block until a trial finishes, and hand it back."""
        outcome = self._done.get()
        self._processes.pop(outcome.name, None)
        return outcome

    def stop_all(self) -> None:
        """Stop every running trial (SIGTERM to its process group) and wait for them."""
        for process in self._processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes.values():
            process.wait()
        self._processes.clear()
