"""What a stored chunk may carry: checked when it is written, made safe when it is read.

Text and metadata end up in the store's payload and in every search answer that returns the
chunk, so a value that cannot be encoded (a lone surrogate: not UTF-8), a nesting too deep to
serialize, a number JSON cannot hold, or a huge blob would break every later search that finds
it. :func:`check_document` refuses such a document at ingest (an
:class:`~finerank.errors.InvalidInputError` naming the field); :func:`safe_metadata` turns a
point stored before these checks into something every search can return.

Example:
    >>> check_metadata({"title": "刑法", "tags": ["a", 1, 2.5, None], "n": {"k": True}})
    >>> check_metadata({"bad": "\\ud800"}, where="doc.jsonl#3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finerank.errors.InvalidInputError: doc.jsonl#3: metadata.bad is not valid UTF-8 text (...)
    >>> safe_metadata({"bad": "a\\ud800b", "deep": [[[1]]]}, max_depth=2)
    {'bad': 'a�b', 'deep': ['…']}
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from finerank.errors import InvalidInputError

MAX_METADATA_DEPTH = 16
"""Nesting levels below a document's metadata object (``{"a": [1]}`` is 2)."""
MAX_METADATA_BYTES = 64 * 1024
"""Size of a document's metadata as compact JSON."""
MAX_KEY_CHARS = 256
_INT64 = (-(2**63), 2**63 - 1)
_SURROGATES = re.compile("[\ud800-\udfff]")


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(text: str, field: str, *, where: str = "") -> None:
    """Raise :class:`InvalidInputError` unless ``text`` is a string encodable as UTF-8."""
    prefix = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise InvalidInputError(f"{prefix}{field} must be a string, got {type(text).__name__}")
    position = _surrogate_at(text)
    if position is not None:
        raise InvalidInputError(
            f"{prefix}{field} is not valid UTF-8 text (a lone surrogate at character {position})"
        )


def check_metadata(
    metadata: Any,
    *,
    where: str = "",
    max_depth: int = MAX_METADATA_DEPTH,
    max_bytes: int = MAX_METADATA_BYTES,
) -> None:
    """Raise :class:`InvalidInputError` unless ``metadata`` is a JSON object every search
    can return: string keys (at most 256 characters), values ``None``, booleans, 64-bit
    integers, finite floats, UTF-8 strings, lists and objects, at most ``max_depth`` levels
    deep and ``max_bytes`` bytes as compact JSON."""
    prefix = f"{where}: " if where else ""
    if not isinstance(metadata, dict):
        kind = type(metadata).__name__
        raise InvalidInputError(f"{prefix}metadata must be an object, got {kind}")
    # Iterative, so that a nesting of any depth is refused rather than overflowing the stack.
    stack: list[tuple[Any, str, int]] = [(metadata, "metadata", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= max_depth:
            raise InvalidInputError(
                f"{prefix}{path} is nested too deep: metadata may nest at most {max_depth} levels"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{prefix}{path} has a key that is not a string")
                check_text(key, f"a key of {path}", where=where)
                if len(key) > MAX_KEY_CHARS:
                    raise InvalidInputError(
                        f"{prefix}{path} has a key of {len(key)} characters (at most "
                        f"{MAX_KEY_CHARS})"
                    )
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            check_text(value, path, where=where)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise InvalidInputError(f"{prefix}{path} is outside the 64-bit integer range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInputError(f"{prefix}{path} must be a finite number, got {value}")
        else:
            raise InvalidInputError(
                f"{prefix}{path} must be a JSON value (string, number, boolean, null, list or "
                f"object), got {type(value).__name__}"
            )
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise InvalidInputError(
            f"{prefix}metadata is {size} bytes as JSON; at most {max_bytes} bytes per document "
            "(store big values elsewhere and keep a reference)"
        )


def check_document(source: str, text: str, metadata: Any) -> None:
    """Check what ingest stores of one document: its source, text and metadata."""
    check_text(source, "source")
    check_text(text, "text", where=source)
    check_metadata(metadata, where=source)


def safe_metadata(value: Any, *, max_depth: int = MAX_METADATA_DEPTH) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD, non-finite floats by ``None``, and
    anything nested deeper than ``max_depth`` by ``"…"``: what a search returns of a point
    stored before ingest checked metadata, so that one bad point cannot fail a search."""
    return _safe(value, max_depth)


def _safe(value: Any, depth_left: int) -> Any:
    if isinstance(value, str):
        return value if _surrogate_at(value) is None else safe_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list):
        if depth_left <= 0:
            return "…"
        if isinstance(value, dict):
            return {_safe(str(k), 1): _safe(v, depth_left - 1) for k, v in value.items()}
        return [_safe(v, depth_left - 1) for v in value]
    return value


def safe_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (a no-op for valid text)."""
    return _SURROGATES.sub("\ufffd", text)
