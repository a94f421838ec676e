"""Domain errors raised by finerank's service, engine and backends.

The HTTP layer maps each class to one status code in one place
(``finerank.server.errors``); the CLI prints the message. Every message says what to fix.
"""

from __future__ import annotations


class FinerankError(Exception):
    """Base class of every error finerank raises on purpose."""


class ModelLoadError(FinerankError):
    """A model could not be found, read or recognised."""


class UnsupportedModelError(ModelLoadError):
    """The model's architecture is not one of the supported families."""


class InvalidInputError(FinerankError, ValueError):
    """The caller passed a value finerank cannot score (wrong type, bad range)."""


class LimitExceededError(FinerankError):
    """A request is over a configured limit (documents, tokens, body size)."""

    def __init__(self, message: str, *, limit_name: str = "", limit: int = 0, value: int = 0):
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.value = value


class UnknownModelError(FinerankError):
    """A request named a model this process does not serve."""


class ServiceUnavailableError(FinerankError):
    """The model is not loaded yet, or the service is shutting down."""


class QueueFullError(FinerankError):
    """The scheduling queue is full; the client should retry later."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsufficientStorageError(FinerankError):
    """The disk holding the store is (about to be) full; nothing was half-written."""


class NotFoundError(FinerankError):
    """A named resource (collection, document) does not exist."""


class ConflictError(FinerankError):
    """The request conflicts with stored state (e.g. a collection built by another model)."""


_DISK_FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk is full: ``ENOSPC`` / ``EDQUOT``, or
    the text a Qdrant server or SQLite gives it.

    Example:
        >>> import errno
        >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
        True
        >>> is_disk_full(ValueError("bad value"))
        False
    """
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current).lower() for text in _DISK_FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False
