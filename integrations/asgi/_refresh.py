"""Background refreshes for ``stale-while-revalidate`` (RFC 5861 §3).

When the middleware serves a stale entry inside its ``stale-while-revalidate`` window,
it asks :class:`Refresher` to fetch the URL again: one asyncio task per key at most
(single-flight), which calls the app with a copy of the request (conditional and
cache-control headers dropped) inside a fresh request-context scope, and stores the
response through the ordinary :class:`~._recorder.ResponseRecorder`, so every storage
rule applies. The tasks are cancelled on lifespan shutdown, before the plug closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from cacheplug.context import request_context
from cacheplug.http import REFRESH_DROPPED_HEADERS, request_headers_from_asgi

from ._ids import new_request_id
from ._recorder import ResponseRecorder
from ._types import Message, Scope

if TYPE_CHECKING:
    from .middleware import CachePlugMiddleware

__all__ = ("Refresher",)

logger = logging.getLogger("cacheplug.asgi")

#: Request headers the refresh drops, as ASGI bytes: the same set the WSGI adapters drop.
_DROPPED = frozenset(name.encode("latin-1") for name in REFRESH_DROPPED_HEADERS)
_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    """The refresh's client: nobody reads the response, the recorder stores it."""


class Refresher:
    """Single-flight background refreshes of stale entries, one asyncio task per key.

    Used from the event loop only (not thread-safe, like the tasks it holds).
    """

    __slots__ = ("__weakref__", "_closed", "_mw", "_tasks")

    def __init__(self, mw: CachePlugMiddleware) -> None:
        self._mw = mw
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def schedule(self, key: str, scope: Scope) -> None:
        """Start refreshing ``key`` from ``scope``'s URL, unless a refresh is running."""
        if self._closed or key in self._tasks:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._run(key, scope))
        except RuntimeError:  # not on an asyncio loop (trio): serve stale, skip the refresh
            logger.debug("no asyncio loop: stale entry %s is not refreshed", key)
            return
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _run(self, key: str, scope: Scope) -> None:
        mw = self._mw
        raw = [(n, v) for n, v in scope["headers"] if n.lower() not in _DROPPED]
        refresh: dict[str, Any] = {**scope, "method": "GET", "headers": raw}
        state = scope.get("state")
        refresh["state"] = dict(state) if state else {}
        headers = request_headers_from_asgi(raw)
        decision = mw.policy.request_decision("GET", headers)
        recorder = ResponseRecorder(mw, key, headers, decision, _discard, [])
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return _REQUEST
            await asyncio.Future()  # a client that never disconnects; ends by cancellation
            raise AssertionError("unreachable")

        try:
            with request_context.scope(request_id=new_request_id()):
                await mw.app(refresh, receive, recorder)
        except asyncio.CancelledError:
            raise
        except Exception:  # the stale entry stays until its window ends; nothing stored
            logger.warning("cacheplug: background refresh of %s failed", key, exc_info=True)

    async def wait(self) -> None:
        """Wait until every running refresh has finished (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop accepting refreshes, cancel the running ones and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def reopen(self) -> None:
        """Accept refreshes again (the plug was started again after a shutdown)."""
        self._closed = False
