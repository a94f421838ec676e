"""Helpers shared by CLI commands: error reporting and reading documents from files."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TypeVar

import typer

from finerank.errors import FinerankError, InvalidInputError

F = TypeVar("F", bound=Callable)
logger = logging.getLogger("finerank.cli")


def friendly_errors(func: F) -> F:
    """Errors as one red line on stderr instead of a traceback.

    Bad input, bad settings and the environment (files, disk, network; :mod:`finerank.errors`,
    invalid settings, ``OSError``) exit 2 with their message. Anything else is a bug: one line
    saying so (exit 1), the traceback in the log at debug level, or in full with
    ``FINERANK_DEBUG=1``.
    """

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs below
            user_error = user_error_message(exc)
            if user_error is not None:
                typer.secho(f"error: {user_error}", fg=typer.colors.RED, err=True)
                raise typer.Exit(2) from None
            if os.environ.get("FINERANK_DEBUG"):
                raise
            logger.debug("unexpected error", exc_info=exc)
            typer.secho(
                f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in finerank; "
                "run with FINERANK_DEBUG=1 for the traceback and please report it)",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of an error the user can fix, or ``None`` for a bug."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        return "invalid setting " + "; ".join(problems)
    if isinstance(exc, ImportError):  # an optional dependency: name the extra that brings it
        from finerank.extras import missing_extra_hint

        return missing_extra_hint(exc)
    if isinstance(exc, (FinerankError, OSError, typer.BadParameter)):
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


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
