"""The miss path: a ``send`` wrapper that tags, passes on and, if allowed, stores a response.

Everything the app sends goes to the server unchanged but for two added headers
(``X-Cache`` and the request id). The body is buffered alongside, never held back; the
entry is stored only after the final ``http.response.body`` went out, so an app that
raises, stops half-way or streams past ``max_body_bytes`` leaves nothing in the cache.

With a ``stale-if-error`` fallback (RFC 5861 §4), a 5xx response start is held back and
its body dropped: the middleware then sends the stale entry instead
(:meth:`ResponseRecorder.send_fallback`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cacheplug.context import request_context
from cacheplug.http import (
    X_CACHE_BYPASS,
    X_CACHE_MISS,
    X_CACHE_STALE,
    BodyBuffer,
    CachedResponse,
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

#: ``X-Cache`` pairs by :attr:`RequestDecision.x_cache`, encoded once.
_X_CACHE = {value: (b"x-cache", value.encode()) for value in (X_CACHE_MISS, X_CACHE_BYPASS)}


class ResponseRecorder:
    """The ``send`` the app gets on a cacheable miss (or an unsafe method's request).

    One per request; not shared between tasks.
    """

    __slots__ = (
        "_buffer",
        "_decision",
        "_extra",
        "_fallback",
        "_headers",
        "_held",
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
        fallback: CachedResponse | None = None,
    ) -> None:
        self._mw = mw
        self._fallback = fallback
        self._held = False
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
        if self._held:  # a 5xx replaced by the stale entry: drop the rest of it
            return
        kind = message["type"]
        if kind == "http.response.start":
            if self._fallback is not None and not self._started and message["status"] >= 500:
                self._started = self._held = True
                return
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
            extra = [*self._extra, _X_CACHE[decision.x_cache]]
            if decision.store and not message.get("trailers"):
                self._decide(status, raw)
        if not extra:
            return message
        return {**message, "headers": [*raw, *extra]}

    @property
    def held(self) -> bool:
        """True if the app's 5xx start was held back for the stale fallback."""
        return self._held

    @property
    def replaceable(self) -> bool:
        """True if the stale fallback may still be sent: nothing, or only a held 5xx, went out."""
        return self._fallback is not None and (self._held or not self._started)

    async def send_fallback(self, head: bool) -> None:
        """Send the stale-if-error entry (``X-Cache: STALE``) in place of the app's answer."""
        entry = self._fallback
        assert entry is not None
        self._held = True  # whatever the app still sends is dropped
        status, headers, body = entry.respond(
            self._req_headers,
            self._policy.clock(),
            head=head,
            asgi=True,
            x_cache=X_CACHE_STALE,
        )
        if self._extra:
            headers.extend(self._extra)
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

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
        if len(variants) == 1:
            all_tags: Any = entry.tags
        else:
            all_tags = set()
            for variant in variants:
                all_tags.update(variant.tags)
        cache.set(self._key, variants, ttl=variants_ttl(variants, now), tags=all_tags or ())
