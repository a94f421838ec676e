"""Reading JSON Lines with errors that point at the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

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
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{source}:{number}: invalid JSON ({exc.msg})") from None
