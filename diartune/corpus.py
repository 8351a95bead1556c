"""A pyannote.database corpus: fetched (an S3 prefix is mirrored), and checked as text
before any trial runs for the lists, annotations, annotated regions and audio paths that
would make a DER lie.

pyannote.database matches URIs exactly, so a reference that names a file a little
differently (another Unicode normalization, a typo) leaves that file with an empty
reference, and a perfect hypothesis then scores over 100 % DER without a word. Each rule
here makes such a corpus bad input, naming the file and the line:

- a file listed twice in a subset's list;
- an RTTM line that is not ``SPEAKER <uri> <channel> <onset> <duration> ...`` with a
  finite onset >= 0 and duration > 0, or whose URI is not in the subset's list (both
  spellings are named when only the Unicode normalization differs);
- a listed file with no annotated region in the subset's UEM (when it declares one), and
  a UEM line that is not ``<uri> <channel> <start> <end>`` with 0 <= start < end;
- with ``confined``, an audio path (the database's template with a URI filled in) that
  leads outside the database's folder (a corpus mirrored from S3 stays in its mirror).

Files with no reference speech are allowed (they add their false alarms to the DER).
Audio itself (missing, empty, NaN or infinite samples) is checked when a trial decodes it.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diartune.spec.model import Data
from diartune.storage import MissingObject, Storage, is_s3

MAX_PROBLEMS = 20


class BadInput(ValueError):
    """Input that no retry can fix: the message names the file or field at fault."""


def fetch_database(data: Data, storage: Storage, cache_dir: Path) -> Path:
    """A local database.yml for ``data.database``: S3 prefixes are mirrored into the cache."""
    if not is_s3(data.database):
        path = Path(data.database)
        if not path.is_file():
            raise BadInput(f"spec.data.database: {path}: no such file")
        return path.resolve()
    prefix, _, name = data.database.rpartition("/")
    local = cache_dir / "data" / hashlib.sha256(prefix.encode()).hexdigest()[:16]
    try:
        storage.download_prefix(prefix, local)
    except MissingObject as error:
        raise BadInput(f"spec.data.database: {error}") from error
    if not (local / name).is_file():
        raise BadInput(f"spec.data.database: {data.database}: no such object")
    return local / name


@dataclass(frozen=True)
class Subset:
    """Where a protocol's subset keeps its list, annotations and annotated regions."""

    name: str
    uris: Path
    annotation: Path | None
    annotated: Path | None


def protocol_subsets(database: Path, protocol: str) -> list[Subset]:
    """The subsets that ``database`` declares for ``protocol``, in a fixed order."""
    config = yaml.safe_load(database.read_text(encoding="utf-8")) or {}
    corpus, task, name = protocol.split(".")
    entry = (((config.get("Protocols") or {}).get(corpus) or {}).get(task) or {}).get(name) or {}
    found = []
    for subset in ("train", "development", "test"):
        files = entry.get(subset)
        if isinstance(files, dict) and files.get("uri"):
            found.append(
                Subset(
                    subset,
                    database.parent / files["uri"],
                    database.parent / files["annotation"] if files.get("annotation") else None,
                    database.parent / files["annotated"] if files.get("annotated") else None,
                )
            )
    return found


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line.split()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _unknown_uri(uri: str, listed: set[str]) -> str:
    twins = [
        u for u in listed if unicodedata.normalize("NFC", u) == unicodedata.normalize("NFC", uri)
    ]
    if twins:
        return (
            f"URI {uri!r} differs from the listed {twins[0]!r} only by its Unicode "
            "normalization; write it exactly as listed"
        )
    return f"URI {uri!r} is not in the subset's list"


def list_problems(subset: Subset) -> tuple[list[str], list[str]]:
    """The listed URIs (in order) and the problems of the list."""
    uris, problems, seen = [], [], set()
    for number, fields in _lines(subset.uris):
        uri = " ".join(fields)
        if uri in seen:
            problems.append(f"{subset.uris}:{number}: {uri!r} is listed twice")
        seen.add(uri)
        uris.append(uri)
    return uris, problems


def rttm_problems(path: Path, listed: set[str]) -> list[str]:
    """What is wrong with each line of an RTTM file, against the subset's URIs (a URI that
    is not listed is named once, with the first of its lines and how many there are)."""
    problems = []
    unknown: dict[str, list[int]] = {}
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) < 8 or fields[0] != "SPEAKER":
            problems.append(f"{where}: expected SPEAKER <uri> <channel> <onset> <duration> ...")
            continue
        onset, duration = _number(fields[3]), _number(fields[4])
        if onset is None or onset < 0:
            problems.append(f"{where}: onset {fields[3]!r}: expected a finite number >= 0")
        if duration is None or duration <= 0:
            problems.append(f"{where}: duration {fields[4]!r}: expected a finite number > 0")
        if fields[1] not in listed:
            unknown.setdefault(fields[1], []).append(number)
    for uri, numbers in unknown.items():
        lines = f"{len(numbers)} lines from line {numbers[0]}" if len(numbers) > 1 else "1 line"
        problems.append(f"{path}:{numbers[0]}: {_unknown_uri(uri, listed)} ({lines})")
    return problems


def uem_problems(path: Path, listed: list[str]) -> list[str]:
    """What is wrong with a UEM file: bad lines, unknown URIs, listed files it misses."""
    problems, covered = [], set()
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) < 4:
            problems.append(f"{where}: expected <uri> <channel> <start> <end>")
            continue
        start, end = _number(fields[2]), _number(fields[3])
        if start is None or end is None or not 0 <= start < end:
            problems.append(
                f"{where}: expected finite 0 <= start < end, got {fields[2]} {fields[3]}"
            )
        if fields[0] not in listed:
            problems.append(f"{where}: {_unknown_uri(fields[0], set(listed))}")
        covered.add(fields[0])
    problems += [
        f"{path}: no annotated region for {uri!r}, which {path.name} must cover"
        for uri in listed
        if uri not in covered
    ]
    return problems


def path_problems(database: Path, uris: list[str]) -> list[str]:
    """Audio paths that the database's templates lead outside its folder."""
    config = yaml.safe_load(database.read_text(encoding="utf-8")) or {}
    templates: list[Any] = []
    for template in (config.get("Databases") or {}).values():
        templates += template if isinstance(template, list) else [template]
    folder = database.parent.resolve()
    problems = []
    for template in templates:
        for uri in uris:
            path = (database.parent / str(template).format(uri=uri)).resolve()
            if not path.is_relative_to(folder):
                problems.append(
                    f"{database}: audio path {str(template)!r} leads outside the database's "
                    f"folder for {uri!r}"
                )
    return problems


def corpus_problems(
    database: Path, protocol: str, confined: bool = False, subsets: tuple[str, ...] = ()
) -> list[str]:
    """The problems of the protocol's subsets (at most ``MAX_PROBLEMS``), file and line first.

    ``confined``: audio paths must stay in the database's folder (an S3 mirror);
    ``subsets``: only these (a trial checks the subsets it reads); all when empty.
    """
    problems: list[str] = []
    for subset in protocol_subsets(database, protocol):
        if subsets and subset.name not in subsets:
            continue
        listed, found = list_problems(subset)
        problems += found
        if subset.annotation is not None and subset.annotation.is_file():
            problems += rttm_problems(subset.annotation, set(listed))
        if subset.annotated is not None and subset.annotated.is_file():
            problems += uem_problems(subset.annotated, listed)
        if confined:
            problems += path_problems(database, listed)
    return problems[:MAX_PROBLEMS]
