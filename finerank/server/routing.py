"""What every router shares: JSON bodies read whatever the Content-Type, JSON answers, TEI's
timing headers.

Routes parse their own body (``await parse_body(request, Model)``) instead of letting FastAPI
do it, so ``curl -d '{...}'`` (which sends ``application/x-www-form-urlencoded``) works on every
route; :func:`json_body` gives such a route its OpenAPI request body.

Example:
    >>> from finerank.server.schemas import SearchRequest
    >>> json_body(SearchRequest)["openapi_extra"]["requestBody"]["required"]
    True
    >>> from finerank.batching import RequestTimings
    >>> timing_headers(RequestTimings(0.0021, 0.0005, 0.0139, 0.0172))["x-inference-time"]
    '13'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from finerank.batching import RequestTimings

M = TypeVar("M", bound=BaseModel)

# TEI's per-request timing headers, in whole milliseconds.
TIMING_HEADERS = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time")

# Every model a route reads with parse_body: the OpenAPI schema lists them (see openapi_bodies).
_BODY_MODELS: dict[str, type[BaseModel]] = {}


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body whatever the Content-Type (curl -d sends a form type)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """Route keyword arguments declaring ``model`` as the JSON request body in OpenAPI."""
    _BODY_MODELS[model.__name__] = model
    return {
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            }
        }
    }


def openapi_bodies(components: dict[str, Any]) -> None:
    """Add the schemas of every :func:`json_body` model to OpenAPI ``components``."""
    for name, model in _BODY_MODELS.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[name] = body


def json_response(
    model: BaseModel,
    *,
    status_code: int = 200,
    exclude_none: bool = True,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``model`` as a JSON response (``None`` fields left out unless ``exclude_none=False``)."""
    return Response(
        model.model_dump_json(exclude_none=exclude_none),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def timing_headers(timings: RequestTimings) -> dict[str, str]:
    """TEI's response headers for one request: tokenize, queue, forward (``x-inference-time``)
    and total, in whole milliseconds, truncated as TEI sends them (so the phases never add up
    to more than the total)."""
    seconds = (timings.tokenize_s, timings.queue_s, timings.forward_s, timings.total_s)
    return {name: str(int(s * 1000)) for name, s in zip(TIMING_HEADERS, seconds, strict=True)}
