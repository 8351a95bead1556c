"""What other libraries print stays off diartune's console: ``diartune.quiet.routed``
with lightning's real output (its tips and its accelerator lines), in a process of its own
so that what reaches its file descriptors 1 and 2 is seen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Lines lightning writes when a Trainer is made, and a warning as libraries raise them.
FOREIGN = ("GPU available", "💡 Tip", "UserWarning: a library's warning")

SCRIPT = """
import sys, warnings
from pathlib import Path
from diartune.quiet import routed

import lightning

print("diartune: before", flush=True)
with routed(Path(sys.argv[1]), verbose=sys.argv[2] == "verbose"):
    lightning.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    warnings.warn("a library's warning", UserWarning)
print("diartune: after", flush=True)
print("diartune: on stderr", file=sys.stderr)
"""


def run(log: Path, mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_other_libraries_output_goes_to_the_log_unless_verbose(tmp_path: Path, mode: str) -> None:
    log = tmp_path / "models.log"
    console = run(log, mode)
    for line in ("diartune: before", "diartune: after", "diartune: on stderr"):
        assert line in console, console
    shown = [text for text in FOREIGN if text in console]
    if mode == "quiet":
        assert shown == [], console
        logged = log.read_text("utf-8")
        assert all(text in logged for text in FOREIGN), logged
        assert "diartune:" not in logged
    else:
        assert shown == list(FOREIGN), console
        assert not log.exists()
