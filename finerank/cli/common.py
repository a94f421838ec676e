"""Helpers shared by CLI commands: error reporting and reading documents from files."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TypeVar

import typer

from finerank.errors import FinerankError, InvalidInputError

F = TypeVar("F", bound=Callable)


def friendly_errors(func: F) -> F:
    """Print finerank / input errors as one red line and exit 2 instead of a traceback."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ImportError as exc:  # an optional dependency: name the extra that brings it
            from finerank.extras import missing_extra_hint

            hint = missing_extra_hint(exc)
            if hint is None:
                raise
            typer.secho(f"error: {hint}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except (FinerankError, TypeError, ValueError, OSError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def read_documents(path: Path) -> list[str]:
    """One document per line, or JSONL with a ``text`` field (detected per line)."""
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
            if not isinstance(record.get("text"), str):
                raise InvalidInputError(f"{path}:{number}: JSON line needs a string 'text' field")
            documents.append(record["text"])
        else:
            documents.append(line)
    return documents
