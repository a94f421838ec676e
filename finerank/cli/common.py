"""Helpers shared by CLI commands: settings from flags, error reporting, documents files."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from finerank.errors import FinerankError
from finerank.jsonl import parse_documents_text, read_documents

if TYPE_CHECKING:
    from finerank.settings import Settings

__all__ = [
    "cli_settings",
    "friendly_errors",
    "parse_documents_text",
    "read_documents",
    "user_error_message",
]

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


def cli_settings(**flags: Any) -> Settings:
    """Settings from the flags that were given (``None`` = not given); the rest come from
    ``FINERANK_*`` environment variables, then the defaults. Every command builds its
    configuration this way, so ``FINERANK_*`` works for all of them."""
    from finerank.settings import Settings

    return Settings(**{name: value for name, value in flags.items() if value is not None})


def serve_until_stopped(serving: Coroutine[Any, Any, None]) -> None:
    """Run a uvicorn serve loop (``serving``) until SIGTERM/SIGINT stops it gracefully.

    uvicorn re-raises the signal it shut down on once it is done; with these handlers in
    place the re-raise is a no-op, so a graceful stop exits 0 instead of dying by the signal.
    """
    import asyncio
    import signal

    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        asyncio.run(serving)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bound_port(server, default: int) -> int:
    """The port a started uvicorn ``server`` listens on (``default`` if it has no socket)."""
    sockets = [s for srv in server.servers for s in srv.sockets]
    return sockets[0].getsockname()[1] if sockets else default
