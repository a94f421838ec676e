"""API keys: ``Authorization: Bearer KEY`` (any of several keys, constant-time compare), and
signed session cookies for browsers (the web page, the API docs).

A session is ``v1.<expiry>.<key id>.<signature>``: the signature is an HMAC over the expiry and
the key id under a secret derived from the key that logged in, so a session dies with its key
(remove the key, restart: its sessions no longer verify), every process holding the same keys
accepts the same sessions, and nothing in the cookie reveals a key.

Example:
    >>> check = KeyChecker(["k1", "k2"])
    >>> check.valid("Bearer k2"), check.valid("Bearer nope"), check.valid(None)
    (True, False, False)
    >>> cookie = check.issue_session("k1", now=1000.0, lifetime_s=60)
    >>> check.valid_session(cookie, now=1030.0), check.valid_session(cookie, now=1061.0)
    (True, False)
    >>> check.valid_session(cookie[:-1] + "x", now=1030.0)
    False
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

from fastapi import Request
from starlette.exceptions import HTTPException

SESSION_COOKIE = "finerank_session"
_SESSION_VERSION = "v1"


def _digest(value: str) -> bytes:
    # Equal-length digests so compare_digest's time does not depend on the key's length.
    return hashlib.sha256(value.encode("utf-8")).digest()


class _Key:
    def __init__(self, key: str):
        self.digest = _digest(key)
        secret = hmac.new(key.encode("utf-8"), b"finerank session secret", "sha256").digest()
        self.session_secret = secret
        self.id = hmac.new(secret, b"key id", "sha256").hexdigest()[:16]


class KeyChecker:
    """Validates ``Authorization`` headers and session cookies against a set of keys (an empty
    set: everything is allowed)."""

    def __init__(self, keys: Sequence[str]):
        self._keys = [_Key(key) for key in keys if key]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def matching(self, key: str) -> _Key | None:
        """The key equal to ``key``, compared against every key (no early exit) so timing
        does not tell which one matched."""
        candidate = _digest(key)
        found = None
        for known in self._keys:
            if hmac.compare_digest(candidate, known.digest):
                found = known
        return found

    def valid_key(self, key: str | None) -> bool:
        return not self._keys or (bool(key) and self.matching(key or "") is not None)

    def valid(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries a valid bearer key."""
        if not self._keys:
            return True
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return self.matching(token.strip()) is not None

    # ---- sessions ------------------------------------------------------------------------
    def issue_session(self, key: str, *, lifetime_s: float, now: float | None = None) -> str:
        """A session cookie value for a browser that presented ``key`` (which must be valid)."""
        known = self.matching(key)
        if known is None:
            raise ValueError("not a valid key")
        expiry = int((time.time() if now is None else now) + lifetime_s)
        payload = f"{_SESSION_VERSION}.{expiry}.{known.id}"
        return f"{payload}.{_sign(known.session_secret, payload)}"

    def valid_session(self, cookie: str | None, *, now: float | None = None) -> bool:
        """Whether ``cookie`` is an unexpired session signed for one of the keys."""
        if not self._keys:
            return True
        if not cookie or len(cookie) > 256:
            return False
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != _SESSION_VERSION or not parts[1].isdigit():
            return False
        version, expiry, key_id, signature = parts
        payload = f"{version}.{expiry}.{key_id}"
        matched = False
        for known in self._keys:  # every key, no early exit
            expected = _sign(known.session_secret, payload)
            same_id = hmac.compare_digest(known.id, key_id)
            matched |= same_id & hmac.compare_digest(expected, signature)
        return matched and int(expiry) > (time.time() if now is None else now)


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode("ascii"), "sha256").hexdigest()


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
