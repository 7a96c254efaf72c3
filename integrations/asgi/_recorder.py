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
    add_variant,
    variants_ttl,
)
from cacheplug.http.entries import StorePlan

from ._types import Message, Send
from .endpoints import CACHE_TAGS, CACHE_TTL

if TYPE_CHECKING:
    from .middleware import CachePlugMiddleware

__all__ = ("ResponseRecorder",)

logger = logging.getLogger("cacheplug.asgi")

#: The ``X-Cache`` pairs of :attr:`RequestDecision.x_cache`, encoded once.
_MISS = (b"x-cache", X_CACHE_MISS.encode())
_BYPASS = (b"x-cache", X_CACHE_BYPASS.encode())


class ResponseRecorder:
    """The ``send`` the app gets on a cacheable miss (or an unsafe method's request).

    One per request; not shared between tasks.
    """

    __slots__ = (
        "_buffer",
        "_decision",
        "_extra",
        "_fallback",
        "_held",
        "_key",
        "_mw",
        "_plan",
        "_policy",
        "_req_headers",
        "_send",
        "_started",
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
        self._plan: StorePlan | None = None
        self._policy: HttpCachePolicy = mw.policy

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
            if self._plan is None:  # not storing this response
                await self._send(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            buffer = self._buffer
            if buffer is None and not more:  # the whole body in one message: no buffer
                await self._send(message)
                self._finish(body)
                return
            if buffer is None:
                buffer = self._buffer = BodyBuffer(self._policy.max_body_bytes)
            if not buffer.feed(body):
                self._plan = self._buffer = None  # too big: stream the rest through untouched
            await self._send(message)
            if not more and self._plan is not None:
                self._finish(buffer.body)
            return
        else:  # trailers, pathsend, anything unknown: never store what we cannot replay
            self._plan = self._buffer = None
        await self._send(message)

    def _on_start(self, message: Message) -> Message:
        if self._started:  # a second start is the app's (or server's) error to raise
            self._plan = self._buffer = None
            return message
        self._started = True
        status = message["status"]
        raw = message.get("headers") or ()
        decision = self._decision
        if decision.invalidate:
            # RFC 9111 §4.4: a successful unsafe request invalidates the stored URL.
            if status < 400:
                self._mw.cache.delete(self._key)
            if not self._extra:
                return message
            return {**message, "headers": [*raw, *self._extra]}
        if decision.store and not message.get("trailers"):
            self._decide(status, raw)
        return {**message, "headers": [*raw, *self._extra, _MISS if decision.lookup else _BYPASS]}

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
        """Plan the store (``self._plan``), or leave it None if the response is not storable."""
        try:
            ttl = request_context.get(CACHE_TTL)
            policy = self._policy if ttl is None else self._mw.policy_for(ttl)
            plan = policy.asgi_store_plan(status, raw, self._req_headers)
        except Exception:  # malformed headers from the app: pass through, never store
            logger.debug("response headers not storable", exc_info=True)
            return
        if plan is not None:
            self._policy = policy
            self._plan = plan

    def _finish(self, body: bytes) -> None:
        """Store the complete response (after it went out); failures are only logged."""
        plan = self._plan
        self._plan = self._buffer = None
        try:
            self._store_entry(plan, body)  # type: ignore[arg-type]
        except Exception:  # the client has its response; storing is best effort
            logger.warning("cacheplug could not store %s", self._key, exc_info=True)

    def _store_entry(self, plan: StorePlan, body: bytes) -> None:
        policy = self._policy
        now = policy.clock()
        tags = request_context.get(CACHE_TAGS) or ()
        if isinstance(tags, str):
            tags = (tags,)
        entry = policy.entry_from_plan(plan, body, self._req_headers, now=now, tags=tags)
        if entry is None:
            return
        mw = self._mw
        cache = mw.cache
        key = self._key
        old = None
        # Nothing stored under the key (the usual miss): no variants to merge, so skip the
        # locked re-read. With a Redis tier, get_entry may find them there: always ask.
        if not mw.local_only or cache.holds(key):
            current = cache.get_entry(key)
            old = current.value if current is not None else None
        if isinstance(old, tuple):
            variants = add_variant(old, entry, policy.max_variants, now)
            all_tags: Any = set()
            for variant in variants:
                all_tags.update(variant.tags)
            cache.set(key, variants, ttl=variants_ttl(variants, now), tags=all_tags or ())
            return
        swr, sie = entry.swr or 0, entry.sie or 0  # variants_ttl of the one variant, inlined
        ttl = entry.expires_at + (swr if swr > sie else sie) - now
        cache.set(key, (entry,), ttl=ttl, tags=entry.tags)
