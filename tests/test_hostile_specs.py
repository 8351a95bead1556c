"""``diartune validate`` against the hostile-spec corpus (tests/hostile_specs.py), and
``validate --data`` / ``tune`` against hostile corpora and folders (tests/hostile_data.py).

Every case is refused with one line per problem naming the file and the field, or
accepted when it is valid: no traceback, no hang (each case has seconds), nothing
wrongly accepted. docs/security.md publishes the table (``python tests/hostile_specs.py``).
"""

from __future__ import annotations

from pathlib import Path

import hostile_data
import pytest
from hostile_data import DataCase
from hostile_specs import CASES, Case, judge, outcome


def test_the_corpus_is_large_and_covers_both_outcomes() -> None:
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES)
    assert sum(case.refused is None for case in CASES) >= 10


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_validate_refuses_cleanly_or_accepts(case: Case, tmp_path: Path) -> None:
    code, message = judge(case, tmp_path)
    assert outcome(case, code, message) in ("refused cleanly", "accepted"), message
    if case.refused is not None:
        for line in message.strip().splitlines():  # one line per problem, file first
            assert line.startswith(f"diartune: {tmp_path}") or line.startswith(
                "diartune: /dev/zero"
            ), line


def test_the_toy_corpus_is_valid(tmp_path: Path) -> None:
    code, message = hostile_data.judge(DataCase("valid", refused=""), tmp_path)
    assert code == 0, message


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", hostile_data.CASES, ids=[case.name for case in hostile_data.CASES])
def test_data_is_refused_cleanly_before_any_trial(case: DataCase, tmp_path: Path) -> None:
    code, message = hostile_data.judge(case, tmp_path)
    assert hostile_data.outcome(case, code, message) == "refused cleanly", message
    for line in message.strip().splitlines():  # one line per problem, naming the file
        assert line.startswith("diartune: ") and str(tmp_path) in line, line
