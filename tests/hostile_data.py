"""The data counterpart of tests/hostile_specs.py: hostile corpora, output folders and
earlier tunings, and what ``diartune validate --data`` or ``diartune tune`` must answer.

Each case starts from a small valid corpus (two 10 s development files, written here)
and a valid spec for it, changes one file, and expects a refusal (exit code 2, one line
per problem naming the file) before any trial runs. Used by tests/test_hostile_specs.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml
from hostile_specs import DELETE, Case

from diartune.records import TrialRecord
from diartune.spec.file import load_tuning

DATABASE = """\
Protocols:
  Toy:
    SpeakerDiarization:
      Toy:
        development: {uri: dev.lst, annotation: dev.rttm, annotated: dev.uem}
Databases:
  Toy: ./{uri}.wav
"""
RTTM = (
    "SPEAKER a1 1 0.5 3.0 <NA> <NA> alice <NA> <NA>\nSPEAKER a2 1 1.0 2.0 <NA> <NA> bob <NA> <NA>\n"
)
FILES = {
    "database.yml": DATABASE,
    "dev.lst": "a1\na2\n",
    "dev.rttm": RTTM,
    "dev.uem": "a1 1 0.0 10.0\na2 1 0.0 10.0\n",
}
SECONDS = 10
PARAMS = {"clustering.threshold": 0.5, "clustering.min_cluster_size": 3}
#: A trial record as trials.json holds it (one finished clustering trial).
RECORD = TrialRecord(
    name="clustering-0",
    stage="clustering",
    number=0,
    params=PARAMS,
    full_params=PARAMS,
    segmentation="./missing.ckpt",
    state="Succeeded",
    der=0.3,
).model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class DataCase:
    """A corpus, output folder or earlier tuning, and what the command must answer."""

    name: str
    refused: str  # a substring of the one-line error
    files: dict[str, str | bytes | None] = field(default_factory=dict)  # None deletes
    spec: dict[str, Any] = field(default_factory=dict)  # changes, as Case.changes
    command: str = "validate"  # or "tune"
    prepare: Callable[[Path], None] | None = None  # called with the case's folder


def _write_corpus(folder: Path, changes: dict[str, str | bytes | None]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for uri in ("a1", "a2"):
        soundfile.write(folder / f"{uri}.wav", np.zeros(16000 * SECONDS), 16000)
    for name, content in {**FILES, **changes}.items():
        path = folder / name
        if content is None:
            path.unlink(missing_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _spec(folder: Path, changes: dict[str, Any]) -> Path:
    """The spec for the corpus in ``folder``, with ``changes`` ("{folder}" is replaced)."""
    base = {
        "spec/data": {
            "database": str(folder / "corpus" / "database.yml"),
            "protocol": "Toy.SpeakerDiarization.Toy",
        },
        "spec/artifacts": DELETE,
        "spec/pipeline": {"segmentation": "./missing.ckpt", "embedding": "./missing.ckpt"},
        "spec/maxFailedTrialCount": 0,
        "spec/parallelTrialCount": 1,
        "spec/stages/0/maxTrialCount": 1,
    }
    placed = json.loads(json.dumps(changes).replace("{folder}", str(folder)))
    document = Case("data", {**base, **placed}).document()
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def judge(case: DataCase, folder: Path) -> tuple[int, str]:
    """What the command answers: its exit code and what it printed on stderr."""
    from diartune.cli import main

    _write_corpus(folder / "corpus", case.files)
    spec = _spec(folder, case.spec)
    if case.prepare:
        case.prepare(folder)
    argv = ["validate", "--data", str(spec)]
    if case.command == "tune":
        argv = ["tune", str(spec), "--output", str(folder / "output")]
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, errors.getvalue()


def _output_trials(content: bytes | None, spec: bool = True) -> Callable[[Path], None]:
    """An earlier run of this spec's output folder: its spec.json (or none) and its
    trials.json bytes (a folder with None)."""

    def prepare(folder: Path) -> None:
        output = folder / "output"
        output.mkdir()
        if spec:
            accepted = load_tuning(folder / "spec.yaml").spec.model_dump(mode="json", by_alias=True)
            (output / "spec.json").write_text(json.dumps(accepted), encoding="utf-8")
        if content is None:
            (output / "trials.json").mkdir()
        else:
            (output / "trials.json").write_bytes(content)

    return prepare


def _earlier(content: bytes) -> Callable[[Path], None]:
    def prepare(folder: Path) -> None:
        (folder / "earlier").mkdir()
        (folder / "earlier" / "trials.json").write_bytes(content)

    return prepare


def _rttm_a_folder(folder: Path) -> None:
    (folder / "corpus" / "dev.rttm").unlink()
    (folder / "corpus" / "dev.rttm").mkdir()


def _spec_json_a_list(folder: Path) -> None:
    _output_trials(RECORDS)(folder)
    (folder / "output" / "spec.json").write_text("[1]", encoding="utf-8")


def _regular_file(folder: Path) -> None:
    (folder / "output").write_text("not a folder\n", encoding="utf-8")


def _uri(name: str) -> dict[str, str | None]:
    return {
        "dev.lst": f"a1\n{name}\n",
        "dev.rttm": RTTM.replace(" a2 ", f" {name} "),
        "dev.uem": f"a1 1 0.0 10.0\n{name} 1 0.0 10.0\n",
    }


def _renamed(folder: Path, name: str) -> None:
    os.replace(folder / "corpus" / "a2.wav", folder / "corpus" / f"{name}.wav")


RECORDS = json.dumps([RECORD]).encode()
MULTI_FIDELITY = {"spec/optimizer": {"facade": "multiFidelity"}}

CASES = [
    # budgets below one unit
    DataCase(
        "files budget below one file",
        "budget.minBudget: 10 % of the 2 development files is less than one file",
        spec={**MULTI_FIDELITY, "spec/stages/0/budget": {"kind": "files", "minBudget": 10}},
    ),
    DataCase(
        "default files budget below one file, tune",
        "(the default, maxBudget / eta^2) of the 2 development files",
        spec=MULTI_FIDELITY,
        command="tune",
    ),
    # pyannote.database files
    DataCase(
        "database.yml naming a missing LST",
        "dev.lst: no such file (named by the development subset",
        files={"dev.lst": None},
    ),
    DataCase(
        "database.yml not YAML",
        "database.yml: not valid YAML (line 2",
        files={"database.yml": "Protocols: [a\n"},
    ),
    DataCase(
        "database.yml a YAML list",
        "database.yml: expected a mapping of Protocols and Databases, got a list",
        files={"database.yml": "- 1\n- 2\n"},
    ),
    DataCase(
        "database.yml not UTF-8",
        "database.yml: not UTF-8 text",
        files={"database.yml": DATABASE.encode("utf-16")},
    ),
    DataCase(
        "protocol a list",
        "Protocols.Toy.SpeakerDiarization: expected a mapping, got a list",
        files={"database.yml": "Protocols: {Toy: {SpeakerDiarization: [1]}}\n"},
    ),
    DataCase(
        "no development subset",
        "expected a development subset with files",
        files={"database.yml": DATABASE.replace("development:", "train:")},
    ),
    DataCase(
        "an RTTM that is a folder",
        "dev.rttm: cannot be read (Is a directory",
        prepare=_rttm_a_folder,
    ),
    # earlier tunings
    DataCase(
        "warmStartFrom a Latin-1 trials.json",
        "earlier/trials.json: not UTF-8 text",
        spec={"spec/optimizer": {"warmStartFrom": ["{folder}/earlier"]}},
        command="tune",
        prepare=_earlier(
            json.dumps([{**RECORD, "name": "café"}], ensure_ascii=False).encode("latin-1")
        ),
    ),
    DataCase(
        "warmStartFrom a truncated trials.json",
        "earlier/trials.json: Invalid JSON",
        spec={"spec/optimizer": {"warmStartFrom": ["{folder}/earlier"]}},
        command="tune",
        prepare=_earlier(RECORDS[:-10]),
    ),
    # the output folder and resume state
    DataCase(
        "--output a regular file", "output: not a folder", command="tune", prepare=_regular_file
    ),
    DataCase(
        "trials.json truncated",
        "output/trials.json: Invalid JSON",
        command="tune",
        prepare=_output_trials(RECORDS[:-10]),
    ),
    DataCase(
        "trials.json a folder",
        "output/trials.json: cannot be read (Is a directory",
        command="tune",
        prepare=_output_trials(None),
    ),
    DataCase(
        "spec.json deleted, rerun with another space",
        "spec.json: no such file, but trials.json holds the trials of an earlier run",
        spec={
            "spec/stages/0/searchSpace": {
                "clustering.threshold": {"type": "float", "low": 0.2, "high": 0.9}
            }
        },
        command="tune",
        prepare=_output_trials(RECORDS, spec=False),
    ),
    DataCase(
        "spec.json edited into a list",
        "spec.json: Input should be a valid dictionary",
        command="tune",
        prepare=_spec_json_a_list,
    ),
    # references that lie
    DataCase(
        "turn past the end of the file",
        "turn 500-900 s ends past the end of 'a1''s audio (10 s)",
        files={"dev.rttm": RTTM + "SPEAKER a1 1 500 400 <NA> <NA> alice <NA> <NA>\n"},
    ),
    DataCase(
        "turn outside the UEM",
        "turn 6-8 s lies outside 'a1''s annotated regions",
        files={
            "dev.uem": "a1 1 0.0 5.0\na2 1 0.0 10.0\n",
            "dev.rttm": RTTM + "SPEAKER a1 1 6 2 <NA> <NA> alice <NA> <NA>\n",
        },
    ),
    DataCase(
        "200 overlapping turns of one speaker",
        "speaker 'alice' overlaps itself in 'a1' (200 turns",
        files={"dev.rttm": RTTM + "SPEAKER a1 1 1.0 2.0 <NA> <NA> alice <NA> <NA>\n" * 200},
    ),
    DataCase(
        "speaker label with a space",
        "11 fields; expected at most 10",
        files={"dev.rttm": RTTM.replace("alice", "alice smith")},
    ),
    DataCase(
        "speaker label NA",
        "speaker 'NA': pandas (and so pyannote.database) reads it as a missing value",
        files={"dev.rttm": RTTM.replace("alice", "NA")},
    ),
    DataCase(
        "URI NA",
        "URI 'NA': pandas (and so pyannote.database) reads it as a missing value",
        files=_uri("NA"),
        prepare=lambda folder: _renamed(folder, "NA"),
    ),
    DataCase(
        "URI null",
        "URI 'null': pandas",
        files=_uri("null"),
        prepare=lambda folder: _renamed(folder, "null"),
    ),
    DataCase(
        "URI 0042",
        "URI '0042': readers of tables and YAML take it for a number",
        files=_uri("0042"),
        prepare=lambda folder: _renamed(folder, "0042"),
    ),
    DataCase(
        "audio template without {uri}",
        "audio template './a1.wav' has no {uri}",
        files={"database.yml": DATABASE.replace("./{uri}.wav", "./a1.wav")},
    ),
    DataCase(
        "audio template with another placeholder",
        "audio template './{name}.wav': expected {uri}",
        files={"database.yml": DATABASE.replace("./{uri}.wav", "./{name}.wav")},
    ),
]


def outcome(case: DataCase, code: int, message: str) -> str:
    """As hostile_specs.outcome: refused cleanly, or how it was not."""
    if code == 0:
        return "wrongly accepted"
    clean = code == 2 and case.refused in message and "Traceback" not in message
    return "refused cleanly" if clean else f"refused with a flawed message: {message[:200]}"
