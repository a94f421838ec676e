"""The HTTP connection as finerank runs it under uvicorn: a request head must arrive in time.

uvicorn closes idle keep-alive connections, but a connection that sends part of a request
head (a byte now and then, the "slowloris" pattern) is held open for ever: any data cancels
the keep-alive timer and nothing re-arms it until a response is sent. :class:`GuardedH11`
closes a connection whose request head is not complete ``header_timeout_s`` after the
connection opened (or after the previous response); the body has its own limit
(``body_timeout_s``, :class:`~finerank.server.metrics.ObservedApp`).

Example:
    >>> config = uvicorn_config(object(), Settings(), log_level="warning")
    >>> config.http.__name__
    'GuardedH11'
"""

from __future__ import annotations

import asyncio
from typing import Any

from finerank.settings import Settings


def guarded_h11(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline for each request head."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            # Still waiting for a complete request head (h11 stays IDLE until it has one).
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

    return GuardedH11


def uvicorn_config(app: Any, settings: Settings, **options: Any):
    """``uvicorn.Config`` for ``app`` bound as ``settings`` say, with :func:`guarded_h11`."""
    import uvicorn

    options.setdefault("host", settings.host)
    options.setdefault("port", settings.port)
    return uvicorn.Config(app, http=guarded_h11(settings.header_timeout_s), **options)
