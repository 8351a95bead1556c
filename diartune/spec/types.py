"""The constrained values of a spec: names, locations, numbers and Kubernetes values.

Each is checked here the way the API server (and the trial) will take it, so that what
``diartune validate`` accepts is accepted everywhere. The bounds (docs/spec.md):

- numbers are finite; numbers within +-1e6 (parameter bounds and choices);
- names follow Kubernetes: DNS labels and subdomains, label keys and values, env names;
- text (paths, URIs, env values) holds no control or format characters (Unicode Cc,
  Cf, Cs, Zl, Zp: U+0085, U+2028, bidirectional overrides, zero widths);
- a location is an ``s3://bucket/key`` URI or a local path, never another scheme; the
  bucket follows S3's naming rules (no ``..``, no IP address, no reserved prefix or suffix);
- a model is an ``s3://`` URI, a path (absolute, ``./`` or ``../`` relative, or a file
  with its extension), or a Hugging Face id ``org/name[@revision]``;
- an S3 endpoint is ``http(s)://host[:port]`` without credentials in it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_KEY = rf"^({DNS_SUBDOMAIN[1:-1]}/)?{_LABEL_NAME}$"
LABEL_VALUE = rf"^({_LABEL_NAME})?$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
RESOURCE_NAME = rf"^({DNS_SUBDOMAIN[1:-1]}/)?{_LABEL_NAME}$"
QUANTITY = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$"
_IMAGE_PART = r"[a-z0-9]+([._-][a-z0-9]+)*"
IMAGE = (
    rf"^{_IMAGE_PART}(:[0-9]+)?(/{_IMAGE_PART})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?$"
ENDPOINT = r"^https?://[^/@\s?#]+(/[^\s?#@]*)?$"
#: A file name with an extension: a path, never a hub id.
_FILE = re.compile(r"\.[A-Za-z0-9]{1,12}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: Unicode categories refused in text: controls (C0, DEL, C1 such as U+0085), format
#: characters (bidirectional overrides, zero widths), line and paragraph separators.
_CONTROLS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Bucket names S3 reserves (its bucket naming rules).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def control_character(text: str) -> str | None:
    """The first control or format character in ``text``, as ``U+0085, <name>``; or None."""
    for char in text:
        if unicodedata.category(char) in _CONTROLS:
            return f"U+{ord(char):04X}, {unicodedata.name(char, 'a control character')}"
    return None


def _no_controls(text: str) -> str:
    found = control_character(text)
    if found:
        raise ValueError(f"control characters are not allowed ({found})")
    return text


def _bucket_problem(bucket: str) -> str | None:
    """What S3's naming rules refuse in ``bucket`` beyond its characters and length."""
    if ".." in bucket:
        return "two adjacent periods"
    if re.fullmatch(r"[0-9]+(\.[0-9]+){3}", bucket):
        return "the form of an IP address"
    reserved = [p for p in _RESERVED_PREFIXES if bucket.startswith(p)]
    reserved += [s for s in _RESERVED_SUFFIXES if bucket.endswith(s)]
    return f"the reserved {reserved[0]!r}" if reserved else None


def _location(text: str) -> str:
    """An ``s3://bucket/key`` URI or a local path."""
    if text.startswith("s3://"):
        if not re.fullmatch(S3_URI, text):
            raise ValueError(f"expected s3://bucket/key with a valid bucket name, got {text!r:.80}")
        bucket = text.removeprefix("s3://").partition("/")[0]
        problem = _bucket_problem(bucket)
        if problem:
            raise ValueError(
                f"bucket {bucket!r} has {problem}; expected a name that S3's naming rules allow"
            )
        return text
    if _SCHEME.match(text):
        raise ValueError(f"expected an s3://bucket/key URI or a local path, got {text!r:.80}")
    return text


def _model(text: str) -> str:
    """An s3:// URI, a path, or a Hugging Face id (``org/name``): nothing in between."""
    text = _location(text)
    if text.startswith(("s3://", "/", "./", "../")) or text.endswith("/"):
        return text
    if re.fullmatch(HUB_ID, text) and not _FILE.search(text):
        return text
    if _FILE.search(text):
        return text  # a relative file: a path
    raise ValueError(
        f"expected an s3:// URI, a path (absolute, ./relative, or a file with its "
        f"extension) or a Hugging Face id org/name, got {text!r:.80}"
    )


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


def _annotations_size(annotations: dict[str, str]) -> dict[str, str]:
    size = sum(len(key) + len(value) for key, value in annotations.items())
    if size > 256 * 1024:
        raise ValueError(f"annotations hold {size} bytes; Kubernetes allows 262144")
    return annotations


Text = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_no_controls)]
Location = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    AfterValidator(_no_controls),
    AfterValidator(_location),
]
Model = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    AfterValidator(_no_controls),
    AfterValidator(_model),
]
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
ObjectName = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=316)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE, max_length=63)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME, max_length=256)]
SecretKey = Annotated[str, StringConstraints(pattern=SECRET_KEY, max_length=253)]
ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME, max_length=316)]
Quantity = (
    Annotated[str, StringConstraints(pattern=QUANTITY, max_length=64)]
    | Annotated[int, Field(ge=0, le=10**15)]
)
Image = Annotated[str, StringConstraints(pattern=IMAGE, min_length=1, max_length=512)]
Endpoint = Annotated[str, StringConstraints(pattern=ENDPOINT, max_length=1024)]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
FiniteFloat = Annotated[float, Field(ge=-1e6, le=1e6), AfterValidator(_finite)]
PositiveFloat = Annotated[float, Field(gt=0, le=1e6), AfterValidator(_finite)]
BoundedInt = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
Annotations = Annotated[dict[LabelKey, str], AfterValidator(_annotations_size)]
