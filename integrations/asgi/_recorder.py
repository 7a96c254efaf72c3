"""The miss path: a ``send`` wrapper that tags, passes on and, if allowed, stores a response.

Everything the app sends goes to the server unchanged but for two added headers
(``X-Cache`` and the request id). The body is buffered alongside, never held back; the
entry is stored only after the final ``http.response.body`` went out, so an app that
raises, stops half-way or streams past ``max_body_bytes`` leaves nothing in the cache.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cacheplug.context import request_context
from cacheplug.http import (
    BodyBuffer,
    HttpCachePolicy,
    RequestDecision,
    StoreDecision,
    add_variant,
    decode_asgi_headers,
    variants_ttl,
)

from ._types import Message, Send
from .endpoints import CACHE_TAGS, CACHE_TTL

if TYPE_CHECKING:
    from .middleware import CachePlugMiddleware

__all__ = ("ResponseRecorder",)

logger = logging.getLogger("cacheplug.asgi")


class ResponseRecorder:
    """The ``send`` the app gets on a cacheable miss (or an unsafe method's request).

    One per request; not shared between tasks.
    """

    __slots__ = (
        "_buffer",
        "_decision",
        "_extra",
        "_headers",
        "_key",
        "_mw",
        "_policy",
        "_req_headers",
        "_send",
        "_started",
        "_status",
        "_store",
    )

    def __init__(
        self,
        mw: CachePlugMiddleware,
        key: str,
        req_headers: dict[str, str],
        decision: RequestDecision,
        send: Send,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        self._mw = mw
        self._key = key
        self._req_headers = req_headers
        self._decision = decision
        self._send = send
        self._extra = extra
        self._started = False
        self._buffer: BodyBuffer | None = None
        self._store: StoreDecision | None = None
        self._policy: HttpCachePolicy = mw.policy
        self._status = 0
        self._headers: list[tuple[str, str]] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            message = self._on_start(message)
        elif kind == "http.response.body":
            buffer = self._buffer
            if buffer is not None and not buffer.feed(message.get("body", b"")):
                self._buffer = buffer = None  # too big: stream the rest through untouched
            await self._send(message)
            if buffer is not None and not message.get("more_body", False):
                self._buffer = None
                try:
                    self._store_entry(buffer.body)
                except Exception:  # the client has its response; storing is best effort
                    logger.warning("cacheplug could not store %s", self._key, exc_info=True)
            return
        else:  # trailers, pathsend, anything unknown: never store what we cannot replay
            self._buffer = None
        await self._send(message)

    def _on_start(self, message: Message) -> Message:
        if self._started:  # a second start is the app's (or server's) error to raise
            self._buffer = None
            return message
        self._started = True
        status = message["status"]
        raw = message.get("headers") or ()
        decision = self._decision
        if decision.invalidate:
            # RFC 9111 §4.4: a successful unsafe request invalidates the stored URL.
            if status < 400:
                self._mw.cache.delete(self._key)
            extra = self._extra
        else:
            extra = [*self._extra, (b"x-cache", decision.x_cache.encode())]
            if decision.store and not message.get("trailers"):
                self._decide(status, raw)
        if not extra:
            return message
        return {**message, "headers": [*raw, *extra]}

    def _decide(self, status: int, raw: Any) -> None:
        try:
            policy = self._mw.policy_for(request_context.get(CACHE_TTL))
            headers = decode_asgi_headers(raw)
            decision = policy.response_store_decision(status, headers, self._req_headers)
        except Exception:  # malformed headers from the app: pass through, never store
            logger.debug("response headers not storable", exc_info=True)
            return
        if decision.store:
            self._policy = policy
            self._store = decision
            self._status = status
            self._headers = headers
            self._buffer = BodyBuffer(policy.max_body_bytes)

    def _store_entry(self, body: bytes) -> None:
        policy = self._policy
        decision = self._store
        if decision is None:
            return
        now = policy.clock()
        tags = request_context.get(CACHE_TAGS) or ()
        if isinstance(tags, str):
            tags = (tags,)
        entry = policy.make_entry(
            self._status, self._headers, body, self._req_headers, decision, now=now, tags=tags
        )
        if entry is None:
            return
        cache = self._mw.cache
        current = cache.get_entry(self._key)
        old = current.value if current is not None else None
        variants = add_variant(
            old if isinstance(old, tuple) else None, entry, policy.max_variants, now
        )
        all_tags: set[Any] = set()
        for variant in variants:
            all_tags.update(variant.tags)
        cache.set(self._key, variants, ttl=variants_ttl(variants, now), tags=all_tags)
