"""Reading a DiarizationTuning from a file or a parsed document: one line per problem.

Whatever the input, the result is a validated model or a ``SpecError`` whose message has
one line per problem, naming the file and the field and saying what was expected: never
a traceback, never a hang. So a file is read only when it is a regular file of at most
``MAX_BYTES`` (Kubernetes keeps objects under 1.5 MiB), decoded as UTF-8, parsed by a YAML
loader that refuses duplicate keys, anchors and aliases (a "billion laughs" document),
merge keys, keys that are not strings and nesting deeper than ``MAX_DEPTH``, and that
reads scalars as kubectl does where YAML 1.1 and 1.2 differ (docs/spec.md "YAML"); and
a document is validated as the API server takes it: camelCase field names only, and no
string for a number or a boolean.
"""

from __future__ import annotations

import re
import reprlib
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from diartune.spec.model import PROBLEMS, DiarizationTuning, Spec, SpecError

Model = TypeVar("Model", bound=BaseModel)
MAX_BYTES = 1 << 20
MAX_DEPTH = 32


class TotalLoader(yaml.SafeLoader):
    """PyYAML's safe loader, where a scalar that its tag cannot hold (``!!int x``,
    ``!!timestamp 2020-99-99``) is a ``YAMLError`` with its line, not a ``ValueError``."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as error:
            if isinstance(error, yaml.YAMLError):
                raise
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{str(node.value)!r:.40} is not a valid {node.tag.rpartition(':')[2]}",
                node.start_mark,
            ) from None


class _StrictLoader(TotalLoader):
    """YAML as a spec needs it: no duplicate keys, no aliases, no deep nesting, and
    numbers as kubectl reads them (``1e-5`` is a number, as in YAML 1.2)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not supported in a spec", event.start_mark
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not supported in a spec", key_node.start_mark
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a complex mapping key; expected a string", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r}: expected a string (quote it)", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml11_bool(self, node: Any) -> Any:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"unquoted {node.value!r} is a boolean to kubectl (YAML 1.1) and a string to "
            "YAML 1.2 readers; write true or false, or quote it",
            node.start_mark,
        )


_MERGE = "tag:yaml.org,2002:merge"
_YAML11_BREAK = re.compile("[\u0085\u2028\u2029]")
_YAML11_BOOL = "tag:diartune.io,2026:yaml11-bool"
# Resolved here instead: floats and ints without YAML 1.1's sexagesimals (kubectl reads
# 1:30 as a string, PyYAML as 90), booleans; timestamps stay strings, as in kubectl.
_REPLACED = {"tag:yaml.org,2002:" + kind for kind in ("float", "int", "bool", "timestamp")}
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_implicit_resolver(
    _YAML11_BOOL,
    re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$"),
    list("yYnNoO"),
)
_StrictLoader.add_constructor(_YAML11_BOOL, _StrictLoader.construct_yaml11_bool)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def read_text(path: Path) -> str:
    """The text of a spec file; SpecError when it is not a readable, small UTF-8 file."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(f"{path}: not a regular file; expected a YAML file")
        if info.st_size > MAX_BYTES:
            raise SpecError(f"{path}: {info.st_size} bytes; expected at most {MAX_BYTES}")
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except PermissionError:
        raise SpecError(f"{path}: not readable (permission denied)") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot be read ({error.strerror})") from None
    if len(data) > MAX_BYTES:
        raise SpecError(f"{path}: more than {MAX_BYTES} bytes; expected at most {MAX_BYTES}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def parse_yaml(text: str, source: str) -> Any:
    """The document in ``text``; SpecError (one line) when it is not the YAML a spec is."""
    found = _YAML11_BREAK.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise SpecError(
            f"{source}: line {line}: U+{ord(found.group()):04X} is a line break to YAML 1.1 "
            "readers and a character to YAML 1.2 ones; expected none in a spec"
        )
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: {yaml_problem(error)}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None


# The tags pydantic inserts in an error's location for a union's members.
_UNION_TAG = re.compile(r"^(float|int|categorical|str|bool|constrained-\w+|function-\w+\[.*\])$")


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _UNION_TAG.match(part):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


def format_errors(error: ValidationError, source: str) -> str:
    """One line per problem: ``source: field.path: what was expected``.

    Cross-field validators report several problems as ``@sub.path: message``, one per
    line (``PROBLEMS``), relative to the model that raised them.
    """
    problems: dict[str, list[str]] = {}  # by field: a union's alternatives join in one line
    for item in error.errors():
        path = _field_path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        for piece in message.split(PROBLEMS) if message.startswith("@") else [message]:
            where = path
            if piece.startswith("@"):
                sub, piece = piece[1:].split(": ", 1)
                where = f"{path}.{sub}" if path else sub
            found = problems.setdefault(where, [])
            if piece not in found:
                found.append(piece)
    return "\n".join(
        f"{source}: {where}: {' or '.join(pieces)}" if where else f"{source}: {' or '.join(pieces)}"
        for where, pieces in problems.items()
    )


def validate(model: type[Model], document: Any, source: str) -> Model:
    """``document`` as the API server takes it: camelCase names, no strings for numbers."""
    try:
        return model.model_validate(document, strict=True, by_alias=True, by_name=False)
    except ValidationError as error:
        raise SpecError(format_errors(error, source)) from None


def parse_tuning(document: Any, source: str = "<spec>") -> DiarizationTuning:
    """Validate a parsed YAML/JSON document; raise SpecError naming each bad field."""
    if not isinstance(document, dict):
        found = reprlib.repr(document)
        raise SpecError(f"{source}: expected a DiarizationTuning mapping, got {found}")
    return validate(DiarizationTuning, document, source)


def parse_spec(document: Any, source: str = "spec") -> Spec:
    """Validate a spec (a resource's ``spec``); raise SpecError naming each bad field."""
    return validate(Spec, document, source)


def load_tuning(path: str | Path) -> DiarizationTuning:
    """Load and validate a DiarizationTuning YAML file."""
    path = Path(path)
    return parse_tuning(parse_yaml(read_text(path), str(path)), str(path))


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: "not valid YAML (line L, column C): what"."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"not valid YAML{where}: {problem}"
