"""The one place where errors become HTTP responses.

Every error body has one shape::

    {"error": {"type": "limit_exceeded", "message": "too many documents: ...", "code": 413,
               "limit": "max_documents_per_request", "limit_value": 1000, "value": 1001},
     "detail": "too many documents: ..."}

Domain errors (:mod:`finerank.errors`) map to a status by class; request validation errors
become 422 (400 for malformed JSON). Bad input is an :class:`~finerank.errors.InvalidInputError`
wherever it is found; a bare ``ValueError`` / ``TypeError`` (or anything else) is a bug: a 500
whose body hides internals, logged with its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from finerank.errors import (
    ConflictError,
    FinerankError,
    InsufficientStorageError,
    InvalidInputError,
    LimitExceededError,
    ModelLoadError,
    NotFoundError,
    QueueFullError,
    ServiceUnavailableError,
    UnknownModelError,
    is_disk_full,
)

logger = logging.getLogger(__name__)

# First match wins, so subclasses come before their bases.
DOMAIN_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (LimitExceededError, 413, "limit_exceeded"),
    (UnknownModelError, 404, "model_not_found"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (InsufficientStorageError, 507, "insufficient_storage"),
    (QueueFullError, 429, "queue_full"),
    (ServiceUnavailableError, 503, "service_unavailable"),
    (ModelLoadError, 503, "model_unavailable"),
    (InvalidInputError, 400, "invalid_request"),
    (FinerankError, 400, "invalid_request"),
)

_HTTP_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "limit_exceeded",
    415: "unsupported_media_type",
    422: "validation_error",
    499: "client_closed_request",
    507: "insufficient_storage",
}


class ClientDisconnectedError(Exception):
    """The client closed the connection before its answer was ready (logged as 499)."""


def error_response(
    status: int,
    message: str,
    error_type: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A response in the one error shape."""
    body = {
        "type": error_type or _HTTP_TYPES.get(status, "error"),
        "message": message,
        "code": status,
        **extra,
    }
    # "detail" (FastAPI's and Jina's field) too: llama-index, haystack and langchain read it.
    return JSONResponse({"error": body, "detail": message}, status_code=status, headers=headers)


def exception_response(exc: Exception) -> JSONResponse:
    """Map a domain exception to its response; anything else is a bug: a logged 500."""
    for cls, status, error_type in DOMAIN_STATUS:
        if isinstance(exc, cls):
            extra: dict[str, Any] = {}
            headers = None
            if isinstance(exc, LimitExceededError) and exc.limit_name:
                extra = {"limit": exc.limit_name, "limit_value": exc.limit, "value": exc.value}
            if isinstance(exc, QueueFullError):
                headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
            return error_response(status, str(exc), error_type, headers=headers, **extra)
    if is_disk_full(exc):  # the environment, not a bug; still worth the log
        logger.error("disk full", exc_info=exc)
        message = "no space left on device on the server; free some space and retry"
        return error_response(507, message, "insufficient_storage")
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal server error (see the server log)", "internal_error")


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    details: list[dict[str, Any]] = []
    parts: list[str] = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error") or error.get("msg", "invalid JSON")
            loc = [part for part in error.get("loc", ()) if part != "body"]
            where = f" at character {loc[-1]}" if loc else ""
            return 400, f"malformed JSON body: {reason}{where}", []
        # Drop "body" and union-member tags ("str", "DocumentIn") from the location.
        loc = [
            str(part)
            for part in error.get("loc", ())
            if part != "body"
            and not (isinstance(part, str) and part[:1].isupper())
            and part != "str"
        ]
        field = ".".join(loc) or "body"
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        details.append({"field": field, "message": message, "type": error.get("type")})
        parts.append(f"{field}: {message}")
    # Union types repeat one problem per alternative; show a few and count the rest.
    summary = "; ".join(dict.fromkeys(parts[:4]))
    if len(parts) > 4:
        summary += f" (and {len(parts) - 4} more)"
    return 422, f"invalid request: {summary}", details


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, details = _describe_validation(exc)
        extra = {"details": details} if details else {}
        return error_response(status, message, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        extra = getattr(exc, "extra", None) or {}
        return error_response(exc.status_code, message, headers=exc.headers, **extra)

    @app.exception_handler(ClientDisconnectedError)
    async def _gone(_: Request, exc: ClientDisconnectedError) -> JSONResponse:
        return error_response(499, "client closed the request")

    for cls in (FinerankError, Exception):

        @app.exception_handler(cls)
        async def _domain(_: Request, exc: Exception) -> JSONResponse:
            return exception_response(exc)
