"""Optional API keys: ``Authorization: Bearer KEY``, any of several keys, constant-time compare.

Example:
    >>> check = KeyChecker(["k1", "k2"])
    >>> check.valid("Bearer k2"), check.valid("Bearer nope"), check.valid(None)
    (True, False, False)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from fastapi import Request
from starlette.exceptions import HTTPException


def _digest(value: str) -> bytes:
    # Equal-length digests so compare_digest's time does not depend on the key's length.
    return hashlib.sha256(value.encode("utf-8")).digest()


class KeyChecker:
    """Validates ``Authorization`` headers against a set of keys (empty set: all allowed)."""

    def __init__(self, keys: Sequence[str]):
        self._digests = [_digest(key) for key in keys if key]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def valid(self, header: str | None) -> bool:
        if not self._digests:
            return True
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        candidate = _digest(token.strip())
        # Compare against every key (no early exit) so timing does not tell which one matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def api_key_dependency(keys: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency raising 401 unless the request carries a valid key."""
    checker = KeyChecker(keys)

    async def require_api_key(request: Request) -> None:
        if not checker.valid(request.headers.get("authorization")):
            raise HTTPException(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key
