"""Reading JSON Lines (and documents files) with errors that point at the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from finerank.errors import InvalidInputError


def parse_jsonl(lines: Iterable[str], source: object) -> Iterator[tuple[int, object]]:
    """Yield ``(line number, parsed value)`` for each non-blank line; callers check the shape.

    Example:
        >>> list(parse_jsonl(['{"text": "a"}', "", '{"text": "b"}'], "docs.jsonl"))
        [(1, {'text': 'a'}), (3, {'text': 'b'})]
        >>> list(parse_jsonl(["{oops"], "docs.jsonl"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        finerank.errors.InvalidInputError: docs.jsonl:1: invalid JSON (...)
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{source}:{number}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise InvalidInputError(f"{source}:{number}: JSON nested too deep") from None
        yield number, value


def read_documents(path: Path) -> list[str]:
    """One document per line, or JSONL with a ``text`` field (detected per line).

    Used by ``finerank rerank --docs-file``; the web page parses its uploads' bytes with
    :func:`parse_documents_text`.
    """
    if not path.is_file():
        raise FileNotFoundError(f"documents file not found: {path}")
    return parse_documents_text(path.read_text(encoding="utf-8"), path)


def parse_documents_text(text: str, path: object) -> list[str]:
    """The documents of a file's ``text`` (see :func:`read_documents`); ``path`` names it in
    errors."""
    documents: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            except RecursionError:
                raise InvalidInputError(f"{path}:{number}: JSON nested too deep") from None
            if not isinstance(record.get("text"), str):
                raise InvalidInputError(f"{path}:{number}: JSON line needs a string 'text' field")
            documents.append(record["text"])
        else:
            documents.append(line)
    return documents
