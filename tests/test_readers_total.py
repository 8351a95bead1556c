"""Every reader of user files is total: generated documents and raw bytes give a value or
the project's one-line error (``SpecError``, ``BadInput``), never another exception.

Hypothesis writes specs, database.yml, LST, RTTM and UEM files (mostly plausible, partly
arbitrary bytes) and calls the readers in-process. The example budget is fixed and
derandomized, so a run is reproducible and short (docs/security.md "Hostile specs").
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diartune.corpus import (
    BadInput,
    corpus_problems,
    development_size,
    list_problems,
    protocol_subsets,
    rttm_problems,
    uem_problems,
)
from diartune.spec.file import load_tuning, parse_tuning, parse_yaml
from diartune.spec.model import SpecError

BUDGET = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROTOCOL = "X.SpeakerDiarization.debug"

SPEC = {
    "apiVersion": "diartune.io/v1alpha1",
    "kind": "DiarizationTuning",
    "metadata": {"name": "t", "namespace": "speech"},
    "spec": {
        "data": {"database": "database.yml", "protocol": PROTOCOL},
        "stages": [
            {
                "name": "clustering",
                "params": {"clustering.threshold": {"type": "float", "low": 0.1, "high": 0.9}},
                "maxTrialCount": 4,
            }
        ],
    },
}

# Text a reader could trip on: YAML indicators, RTTM fields, numbers, Unicode breaks.
WORDS = st.sampled_from(
    [
        "SPEAKER", "a", "NA", "null", "~", "1", "-1", "0.5", "1e400", "nan", "inf", "1:30",
        "yes", "2020-99-99", "2001-12-14t21:59:43.10-05:00", "!!binary", "!!python/none",
        "&a", "*a", "<<", "? ", "[", "]", "{", "}", ":", "-", "|", ">", "'", '"', "#", "%",
        "{uri}", "{uri!z}", "{0}", "\\0", "\u2028", "\u0085", "\ufeff", "\x00", "\t", " ",
        "\n", "\r", "ñ", "n\u0303",
    ]
)  # fmt: skip
TEXT = st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=30).map("".join)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    WORDS,
)


def _keys() -> st.SearchStrategy[str]:
    fields = ["apiVersion", "kind", "metadata", "spec", "data", "stages", "params", "name"]
    return st.one_of(st.sampled_from(fields), st.text(max_size=6))


DOCUMENT = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_keys(), inner, max_size=4)
    ),
    max_leaves=20,
)


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


def _mutated(document: Any, path: list[int], value: Any) -> Any:
    """``document`` with the node that ``path`` picks (index by index) replaced."""
    if not path or not isinstance(document, dict | list) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    copy: Any = dict(document) if isinstance(document, dict) else list(document)
    copy[key] = _mutated(document[key], path[1:], value)
    return copy


def assert_total(read: Callable[[], Any], errors: tuple[type[Exception], ...]) -> None:
    """``read()`` returns, or raises one of ``errors`` with a message without a traceback."""
    try:
        read()
    except errors as error:
        message = str(error)
        assert message.strip(), f"an empty {type(error).__name__}"
        assert "Traceback" not in message
        # One line per problem (a spec may have several), none empty.
        assert all(line.strip() for line in message.splitlines()), message


# -- the spec reader ---------------------------------------------------------------------


@BUDGET
@given(text=TEXT)
@example(text="a: 2020-99-99")
@example(text="? [a, b]: 1")
@example(text="spec: !!binary aGVsbG8=")
@example(text="spec: !!set {a, b}")
@example(text="spec: !!int x")
@example(text="spec:\n  data: !!timestamp 2020-99-99")
def test_any_text_is_a_spec_or_a_spec_error(text: str) -> None:
    assert_total(lambda: parse_tuning(parse_yaml(text, "t.yaml"), "t.yaml"), (SpecError,))


@BUDGET
@given(data=st.binary(max_size=300))
@example(data=b"\xef\xbb\xbfkind: x")
@example(data=b"\xff\xfe")
def test_any_bytes_are_a_spec_or_a_spec_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    assert_total(lambda: load_tuning(path), (SpecError,))


@BUDGET
@given(path=st.lists(st.integers(0, 7), max_size=6), value=DOCUMENT)
def test_a_spec_changed_anywhere_is_a_spec_or_a_spec_error(path: list[int], value: Any) -> None:
    text = _dump(_mutated(SPEC, path, value))
    assert_total(lambda: parse_tuning(parse_yaml(text, "t.yaml"), "t.yaml"), (SpecError,))


# -- the pyannote.database reader --------------------------------------------------------

LINE = st.lists(st.one_of(WORDS, st.text(string.printable, max_size=6)), max_size=10).map(" ".join)
LINES = st.lists(LINE, max_size=8).map("\n".join)
# RTTM lines that are mostly well formed, with any field replaced.
RTTM_LINE = st.tuples(
    st.sampled_from(["SPEAKER", "LEXEME", ""]),
    st.sampled_from(["f1", "f2", "NA", "f\u0303"]) | WORDS,
    st.sampled_from(["1", "A"]),
    st.one_of(st.floats(), st.sampled_from(["0", "1.5", "-0", "1_0", "0x1"]) | WORDS).map(str),
    st.one_of(st.floats(), st.sampled_from(["0", "2.5", "1e-300"]) | WORDS).map(str),
    st.sampled_from(["<NA> <NA>", "NA NA"]),
    st.sampled_from(["spk1", "spk 2", "1", "NA"]) | WORDS,
    st.sampled_from(["<NA> <NA>", "", "<NA> <NA> extra"]),
).map(" ".join)
UEM_LINE = st.tuples(
    st.sampled_from(["f1", "f2", "NA"]) | WORDS,
    st.sampled_from(["1", "NA"]),
    st.one_of(st.floats(), st.sampled_from(["0", "1"]) | WORDS).map(str),
    st.one_of(st.floats(), st.sampled_from(["30", "0"]) | WORDS).map(str),
).map(" ".join)


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _read_corpus(database: Path) -> None:
    """What ``diartune validate --data`` reads of a database (``check_corpus``)."""
    corpus_problems(database, PROTOCOL, confined=True)
    development_size(database, PROTOCOL)


DATABASE = {
    "Databases": {"X": "./{uri}.wav"},
    "Protocols": {
        "X": {
            "SpeakerDiarization": {
                "debug": {
                    "development": {
                        "uri": "dev.lst",
                        "annotation": "dev.rttm",
                        "annotated": "dev.uem",
                    }
                }
            }
        }
    },
}
NAMES = st.sampled_from(["dev.lst", "dev.rttm", "dev.uem", "missing.lst", ".", "a\x00b", ""])


@BUDGET
@given(data=st.one_of(st.binary(max_size=300), TEXT.map(str.encode)))
@example(data=b"Protocols: !!timestamp 2020-99-99")
@example(data=b"Databases: {X: !!float x}")
def test_any_database_yml_bytes_are_read_or_bad_input(tmp_path: Path, data: bytes) -> None:
    database = tmp_path / "database.yml"
    database.write_bytes(data)
    assert_total(lambda: _read_corpus(database), (BadInput,))


@BUDGET
@given(path=st.lists(st.integers(0, 7), max_size=6), value=st.one_of(NAMES, DOCUMENT))
@example(path=[1, 0, 0, 0, 0, 0], value="a\x00b")
@example(path=[0, 0], value="{uri:>99999999999999999999}")
@example(path=[0, 0], value="./{uri}\x00.wav")
def test_a_database_yml_changed_anywhere_is_read_or_bad_input(
    tmp_path: Path, path: list[int], value: Any
) -> None:
    database = tmp_path / "database.yml"
    _write(tmp_path, {"dev.lst": "f1\nf2\n", "dev.rttm": "", "dev.uem": "f1 1 0 30\nf2 1 0 30\n"})
    database.write_text(_dump(_mutated(DATABASE, path, value)), encoding="utf-8")
    assert_total(lambda: _read_corpus(database), (BadInput,))


@BUDGET
@given(
    lst=st.one_of(LINES, st.binary(max_size=120)),
    rttm=st.one_of(st.lists(RTTM_LINE, max_size=8).map("\n".join), LINES, st.binary(max_size=120)),
    uem=st.one_of(st.lists(UEM_LINE, max_size=4).map("\n".join), LINES, st.binary(max_size=120)),
)
@example(lst="f1\x00\n", rttm="", uem="")
def test_any_list_rttm_and_uem_are_read_or_bad_input(
    tmp_path: Path, lst: str | bytes, rttm: str | bytes, uem: str | bytes
) -> None:
    database = tmp_path / "database.yml"
    _write(tmp_path, {"dev.lst": lst, "dev.rttm": rttm, "dev.uem": uem})
    database.write_text(_dump(DATABASE), encoding="utf-8")
    assert_total(lambda: _read_corpus(database), (BadInput,))


@BUDGET
@given(rttm=st.lists(RTTM_LINE, max_size=12).map("\n".join), uem=st.lists(UEM_LINE, max_size=4))
def test_rttm_and_uem_lines_give_problems_not_exceptions(
    tmp_path: Path, rttm: str, uem: list[str]
) -> None:
    """The RTTM and UEM readers on their own, with durations and regions known."""
    (tmp_path / "a.rttm").write_text(rttm, encoding="utf-8")
    (tmp_path / "a.uem").write_text("\n".join(uem), encoding="utf-8")
    problems, regions = uem_problems(tmp_path / "a.uem", ["f1", "f2"])
    found = rttm_problems(tmp_path / "a.rttm", {"f1", "f2"}, {"f1": 30.0}, regions)
    assert all(isinstance(p, str) and "\n" not in p for p in problems + found)


def test_the_database_reader_names_subsets_of_the_plain_database(tmp_path: Path) -> None:
    """The generated corpus is read as intended when nothing is changed: the tests above
    reach the list, RTTM and UEM readers."""
    database = tmp_path / "database.yml"
    _write(tmp_path, {"dev.lst": "f1\n", "dev.rttm": "", "dev.uem": "f1 1 0 30\n"})
    database.write_text(_dump(DATABASE), encoding="utf-8")
    [subset] = protocol_subsets(database, PROTOCOL)
    assert list_problems(subset) == (["f1"], [])


def test_an_audio_template_with_a_format_spec_is_refused(tmp_path: Path) -> None:
    """``{uri:>999999999}`` would build a gigabyte path for each file: refused unfilled."""
    database = tmp_path / "database.yml"
    _write(tmp_path, {"dev.lst": "f1\n", "dev.rttm": "", "dev.uem": "f1 1 0 30\n"})
    template = "./{uri:>999999999}.wav"
    database.write_text(_dump(_mutated(DATABASE, [0, 0], template)), encoding="utf-8")
    [problem] = corpus_problems(database, PROTOCOL, confined=True)
    assert problem == (
        f"{database}: audio template {template!r}: expected {{uri}} (and {{database}}) "
        "as its only placeholders, with no format spec"
    )
