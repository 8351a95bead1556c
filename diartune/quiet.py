"""Other libraries' output kept off diartune's console.

lightning, pyannote, torch and their warnings write straight to the process's standard
output and error (from Python or from C). diartune's console shows its own progress and
results only: a trial runs in a process of its own whose output goes to its log file
(``diartune.local.executor``), and work done in diartune's own process (the demo's models)
runs inside ``routed``. ``--verbose`` shows it all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def routed(log: Path, verbose: bool = False) -> Iterator[None]:
    """Send all that this process writes to its standard output and error to ``log``
    (appended) while the block runs, unless ``verbose``."""
    if verbose:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with log.open("ab") as stream:
            os.dup2(stream.fileno(), 1)
            os.dup2(stream.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for descriptor in saved:
            os.close(descriptor)
