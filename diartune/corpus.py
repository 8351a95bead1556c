"""A pyannote.database corpus: fetched (an S3 prefix is mirrored), and checked as text
before any trial runs for the lists, annotations, annotated regions and audio paths that
would make a DER lie.

pyannote.database matches URIs exactly, so a reference that names a file a little
differently (another Unicode normalization, a typo) leaves that file with an empty
reference, and a perfect hypothesis then scores over 100 % DER without a word. Each rule
here makes such a corpus bad input, naming the file and the line:

- a database.yml that is not UTF-8 YAML holding a mapping, a protocol entry that is not
  a mapping, a list, RTTM or UEM it names that cannot be read;
- a file listed twice in a subset's list, and a URI that a reader reinterprets: one with
  whitespace (RTTM fields are split on it), one pandas reads as a missing value (``NA``,
  ``null``, ``nan``...: pyannote.database loads RTTMs with pandas) or as a number;
- an RTTM line that is not ``SPEAKER <uri> <channel> <onset> <duration> ...`` with a
  finite onset >= 0 and duration > 0 and at most 10 fields (more: a speaker label with
  whitespace), whose URI is not in the subset's list (both spellings are named when only
  the Unicode normalization differs), or whose speaker a reader reinterprets;
- a turn that ends more than ``END_TOLERANCE`` seconds past the end of its audio (its
  duration read from the audio file's header), or that lies wholly outside its file's
  annotated regions (it would never be scored);
- a speaker whose turns overlap each other in one file (its speech would count twice);
- a listed file with no annotated region in the subset's UEM (when it declares one), and
  a UEM line that is not ``<uri> <channel> <start> <end>`` with 0 <= start < end;
- an audio template without ``{uri}`` (every file would be one audio file) or with
  another placeholder; with ``confined``, an audio path (the database's template with a
  URI filled in) that leads outside the database's folder (a corpus mirrored from S3
  stays in its mirror).

Files with no reference speech are allowed (they add their false alarms to the DER), and
so are turns partly outside the annotated regions (scoring crops them to it). Audio
itself (missing, empty, NaN or infinite samples) is checked when a trial decodes it.
"""

from __future__ import annotations

import hashlib
import math
import string
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diartune.spec.file import TotalLoader, yaml_problem
from diartune.spec.model import Data, Spec
from diartune.spec.types import control_character
from diartune.storage import MissingObject, Storage, cache_root, is_s3

MAX_PROBLEMS = 20
#: Seconds a reference turn may end past the end of its audio (rounding of the RTTM).
END_TOLERANCE = 0.1
#: What pandas reads as a missing value (its default na_values), as pyannote.database does.
MISSING_WORDS = frozenset(
    {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }
)  # fmt: skip


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


def read_text(path: Path, named_by: str) -> str:
    """The UTF-8 text of a corpus file; BadInput naming it (and what names it) otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file (named by {named_by})") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot be read ({error.strerror}; named by {named_by})") from None
    except ValueError:  # the operating system takes no NUL in a path
        name = repr(str(path))
        raise BadInput(f"{name}: a NUL character; expected a file name ({named_by})") from None


def database_config(database: Path) -> dict[str, Any]:
    """The mapping of a database.yml; BadInput (one line naming it) when it is not one."""
    try:
        config = yaml.load(read_text(database, "spec.data.database"), Loader=TotalLoader)
    except yaml.YAMLError as error:
        raise BadInput(f"{database}: {yaml_problem(error)}") from None
    except RecursionError:
        raise BadInput(f"{database}: not valid YAML: nested too deeply") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise BadInput(
            f"{database}: expected a mapping of Protocols and Databases, got a "
            f"{type(config).__name__}"
        )
    return config


def _mapping(node: Any, database: Path, where: str) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise BadInput(f"{database}: {where}: expected a mapping, got a {type(node).__name__}")
    return node


def protocol_subsets(database: Path, protocol: str) -> list[Subset]:
    """The subsets that ``database`` declares for ``protocol``, in a fixed order."""
    node = database_config(database)
    where = ""
    for key in ("Protocols", *protocol.split(".")):
        where = f"{where}.{key}" if where else key
        node = _mapping(node.get(key), database, where)
    found = []
    for subset in ("train", "development", "test"):
        files = node.get(subset)
        if not (isinstance(files, dict) and files.get("uri")):
            continue
        paths = {}
        for key in ("uri", "annotation", "annotated"):
            value = files.get(key)
            if value is not None and not isinstance(value, str):
                raise BadInput(f"{database}: {where}.{subset}.{key}: expected a file name")
            paths[key] = database.parent / value if value else None
        uris = paths["uri"]
        assert uris is not None
        found.append(Subset(subset, uris, paths["annotation"], paths["annotated"]))
    return found


def _lines(path: Path, named_by: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(read_text(path, named_by).splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line.split()


def _reinterpreted(name: str) -> str | None:
    """Why a reader would take ``name`` (a URI or label) for something else, or None."""
    if name in MISSING_WORDS:
        return "pandas (and so pyannote.database) reads it as a missing value"
    control = control_character(name)
    if control:
        return f"it holds a control character ({control})"
    try:
        float(name)
    except ValueError:
        return None
    return "readers of tables and YAML take it for a number"


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
    for number, fields in _lines(subset.uris, f"the {subset.name} subset in database.yml"):
        uri = " ".join(fields)
        why = "it holds whitespace, which splits RTTM fields" if len(fields) > 1 else None
        why = why or _reinterpreted(uri)
        if why:
            problems.append(f"{subset.uris}:{number}: URI {uri!r}: {why}; rename the file")
        if uri in seen:
            problems.append(f"{subset.uris}:{number}: {uri!r} is listed twice")
        seen.add(uri)
        uris.append(uri)
    return uris, problems


def rttm_problems(
    path: Path,
    listed: set[str],
    durations: dict[str, float] | None = None,
    regions: dict[str, list[tuple[float, float]]] | None = None,
) -> list[str]:
    """What is wrong with each line of an RTTM file, against the subset's URIs (a URI that
    is not listed is named once, with the first of its lines and how many there are),
    each file's audio duration and its annotated regions, where known."""
    problems = []
    unknown: dict[str, list[int]] = {}
    turns: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for number, fields in _lines(path, "a subset's annotation in database.yml"):
        where = f"{path}:{number}"
        if len(fields) < 8 or fields[0] != "SPEAKER":
            problems.append(f"{where}: expected SPEAKER <uri> <channel> <onset> <duration> ...")
            continue
        if len(fields) > 10:
            problems.append(
                f"{where}: {len(fields)} fields; expected at most 10 (SPEAKER <uri> <channel> "
                "<onset> <duration> <NA> <NA> <speaker> <NA> <NA>): a speaker label with "
                "whitespace?"
            )
            continue
        uri, speaker = fields[1], fields[7]
        why = _reinterpreted(speaker)
        if why:
            problems.append(f"{where}: speaker {speaker!r}: {why}; rename the speaker")
        onset, duration = _number(fields[3]), _number(fields[4])
        if onset is None or onset < 0:
            problems.append(f"{where}: onset {fields[3]!r}: expected a finite number >= 0")
        if duration is None or duration <= 0:
            problems.append(f"{where}: duration {fields[4]!r}: expected a finite number > 0")
        if uri not in listed:
            unknown.setdefault(uri, []).append(number)
        elif onset is not None and duration is not None and onset >= 0 and duration > 0:
            turns.setdefault((uri, speaker), []).append((onset, onset + duration, number))
            problems += _turn_problems(where, uri, onset, onset + duration, durations, regions)
    problems += _self_overlaps(path, turns)
    for uri, numbers in unknown.items():
        lines = f"{len(numbers)} lines from line {numbers[0]}" if len(numbers) > 1 else "1 line"
        problems.append(f"{path}:{numbers[0]}: {_unknown_uri(uri, listed)} ({lines})")
    return problems


def _turn_problems(
    where: str,
    uri: str,
    onset: float,
    end: float,
    durations: dict[str, float] | None,
    regions: dict[str, list[tuple[float, float]]] | None,
) -> list[str]:
    problems = []
    length = (durations or {}).get(uri)
    if length is not None and end > length + END_TOLERANCE:
        problems.append(
            f"{where}: turn {onset:g}-{end:g} s ends past the end of {uri!r}'s audio "
            f"({length:g} s); expected turns within the audio"
        )
    annotated = (regions or {}).get(uri)
    if annotated is not None and not any(onset < stop and start < end for start, stop in annotated):
        problems.append(
            f"{where}: turn {onset:g}-{end:g} s lies outside {uri!r}'s annotated regions "
            "(UEM): it would never be scored"
        )
    return problems


def _self_overlaps(
    path: Path, turns: dict[tuple[str, str], list[tuple[float, float, int]]]
) -> list[str]:
    """A speaker's turns that start before its previous turn in that file ends: its speech
    would count more than once (1 microsecond of rounding is allowed)."""
    problems = []
    for (uri, speaker), spans in turns.items():
        latest, overlapping = -math.inf, []
        for onset, end, number in sorted(spans):
            if onset < latest - 1e-6:
                overlapping.append(number)
            latest = max(latest, end)
        if overlapping:
            problems.append(
                f"{path}:{overlapping[0]}: speaker {speaker!r} overlaps itself in {uri!r} "
                f"({len(overlapping)} turns start before its previous turn ends); merge them"
            )
    return problems


def uem_problems(
    path: Path, listed: list[str]
) -> tuple[list[str], dict[str, list[tuple[float, float]]]]:
    """What is wrong with a UEM file (bad lines, unknown URIs, listed files it misses),
    and the annotated regions of its valid lines, by URI."""
    problems: list[str] = []
    regions: dict[str, list[tuple[float, float]]] = {}
    for number, fields in _lines(path, "a subset's annotated in database.yml"):
        where = f"{path}:{number}"
        if len(fields) < 4:
            problems.append(f"{where}: expected <uri> <channel> <start> <end>")
            continue
        start, end = _number(fields[2]), _number(fields[3])
        if start is None or end is None or not 0 <= start < end:
            problems.append(
                f"{where}: expected finite 0 <= start < end, got {fields[2]} {fields[3]}"
            )
        else:
            regions.setdefault(fields[0], []).append((start, end))
        if fields[0] not in listed:
            problems.append(f"{where}: {_unknown_uri(fields[0], set(listed))}")
    problems += [
        f"{path}: no annotated region for {uri!r}, which {path.name} must cover"
        for uri in listed
        if uri not in regions
    ]
    return problems, regions


def audio_templates(database: Path, corpus: str) -> list[str]:
    """The audio path templates that ``database`` gives ``corpus`` (``Databases``)."""
    databases = _mapping(database_config(database).get("Databases"), database, "Databases")
    found = databases.get(corpus)
    templates = found if isinstance(found, list) else [] if found is None else [found]
    if not all(isinstance(template, str) for template in templates):
        raise BadInput(f"{database}: Databases.{corpus}: expected a path template or a list")
    return templates


def _fill(template: str, uri: str, corpus: str) -> str | None:
    """The template with a URI filled in as pyannote.database does; None if it cannot be
    (a placeholder other than a bare ``{uri}`` or ``{database}``: a format spec such as
    ``{uri:>999999999}`` would build a gigabyte path) or the path holds a NUL."""
    try:
        fields = [part[1:] for part in string.Formatter().parse(template) if part[1] is not None]
    except ValueError:
        return None
    if any(name not in ("uri", "database") or spec or convert for name, spec, convert in fields):
        return None
    filled = template.format(uri=uri, database=corpus)
    return None if "\x00" in filled else filled


def template_problems(database: Path, corpus: str) -> list[str]:
    """Audio templates that do not name one file per URI."""
    templates = audio_templates(database, corpus)
    if not templates:
        return [
            f"{database}: Databases.{corpus}: no audio path template; expected e.g. ./{{uri}}.wav"
        ]
    problems = []
    for template in templates:
        control = control_character(template)
        if control:
            problems.append(
                f"{database}: audio template {template!r}: a control character ({control}); "
                "expected a path"
            )
        elif _fill(template, "x", corpus) is None:
            problems.append(
                f"{database}: audio template {template!r}: expected {{uri}} (and {{database}}) "
                "as its only placeholders, with no format spec"
            )
        elif "{uri}" not in template:
            problems.append(
                f"{database}: audio template {template!r} has no {{uri}}: every file would "
                "resolve to the same audio"
            )
    return problems


def audio_durations(database: Path, corpus: str, uris: list[str]) -> dict[str, float]:
    """Each file's audio duration in seconds, from the header of the first file its
    templates name that soundfile reads (a missing one is the trial's to report)."""
    # Imported here: the operator's image runs the same CLI and has no soundfile.
    import soundfile

    durations = {}
    templates = audio_templates(database, corpus)
    for uri in uris:
        for template in templates:
            filled = _fill(template, uri, corpus)
            if filled is None:
                continue
            try:
                durations[uri] = soundfile.info(str(database.parent / filled)).duration
                break
            except (RuntimeError, OSError, ValueError, TypeError):
                continue
    return durations


def path_problems(database: Path, corpus: str, uris: list[str]) -> list[str]:
    """Audio paths that the database's templates lead outside its folder."""
    folder = database.parent.resolve()
    problems = []
    for template in audio_templates(database, corpus):
        for uri in uris:
            filled = _fill(template, uri, corpus)
            if filled is not None and not (database.parent / filled).resolve().is_relative_to(
                folder
            ):
                problems.append(
                    f"{database}: audio path {template!r} leads outside the database's "
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
    corpus = protocol.split(".")[0]
    problems = template_problems(database, corpus)
    for subset in protocol_subsets(database, protocol):
        if subsets and subset.name not in subsets:
            continue
        listed, found = list_problems(subset)
        problems += found
        annotated: list[str] = []
        regions = None
        if subset.annotated is not None:
            annotated, regions = uem_problems(subset.annotated, listed)
        if subset.annotation is not None:
            durations = audio_durations(database, corpus, listed)
            problems += rttm_problems(subset.annotation, set(listed), durations, regions)
        problems += annotated
        if confined:
            problems += path_problems(database, corpus, listed)
    return problems[:MAX_PROBLEMS]


def development_size(database: Path, protocol: str) -> int:
    """How many files the protocol's development subset lists (0 without one)."""
    for subset in protocol_subsets(database, protocol):
        if subset.name == "development":
            return len(list_problems(subset)[0])
    return 0


def budget_problems(spec: Spec, development: int, source: str) -> list[str]:
    """Files budgets whose smallest budget buys less than one of the ``development`` files
    (a trial scores at least one file, so smaller budgets would all be the same trial)."""
    problems = []
    for index, stage in enumerate(spec.stages):
        budget = spec.budget(stage)
        if budget is None or budget.kind != "files" or budget.min_budget is None or not development:
            continue
        if budget.min_budget * development / 100 < 1:
            given = (
                ""
                if stage.budget and stage.budget.min_budget
                else " (the default, maxBudget / eta^2)"
            )
            problems.append(
                f"{source}: spec.stages[{index}].budget.minBudget: {budget.min_budget:g} %"
                f"{given} of the {development} development files is less than one file; "
                "expected at least "
                f"{math.ceil(10000 / development) / 100:g}"
            )
    return problems


def check_corpus(spec: Spec, source: str) -> list[str]:
    """Everything wrong with the spec's corpus before any trial runs: its files (as
    ``corpus_problems``), a protocol without a development subset, and budgets smaller
    than one of its files. ``source`` names the spec. BadInput when it cannot be read."""
    data = spec.data
    database = fetch_database(data, Storage(data.s3), cache_root())
    problems = corpus_problems(database, data.protocol, confined=is_s3(data.database))
    development = development_size(database, data.protocol)
    if not development:
        problems.append(
            f"{database}: Protocols.{data.protocol}: expected a development subset with files "
            "(trials score on it)"
        )
    return problems + budget_problems(spec, development, source)
