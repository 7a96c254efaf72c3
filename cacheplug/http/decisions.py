"""The policy's verdicts: :class:`RequestDecision` and :class:`StoreDecision`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .directives import CacheControl
from .headers import X_CACHE_BYPASS, X_CACHE_MISS

__all__ = (
    "DEFAULT_CACHEABLE_STATUSES",
    "REPLAYABLE_STATUSES",
    "RequestDecision",
    "StoreDecision",
)

#: Statuses cacheable by default (RFC 9110 §15.1) minus 206: ranges are not handled.
DEFAULT_CACHEABLE_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)
#: Final statuses this cache can replay. 1xx are interim; 206 needs range handling and
#: 304 only makes sense against a stored 200, so neither is ever stored.
REPLAYABLE_STATUSES: frozenset[int] = frozenset(range(200, 600)) - {206, 304}


@dataclass(frozen=True, slots=True)
class RequestDecision:
    """What the policy allows for one request, before the app runs.

    :ivar lookup: a stored response may be served.
    :ivar store: the response may be stored (subject to :class:`StoreDecision`).
    :ivar invalidate: an unsafe method; RFC 9111 §4.4 says drop the stored entries of this
        URL's primary key when the response status is below 400.
    :ivar max_age: the request's ``max-age``: serve only entries at most this old.
    :ivar min_fresh: the request's ``min-fresh``: serve only entries fresh this much longer.
    :ivar reason: short text for logs and tests.
    """

    lookup: bool
    store: bool
    invalidate: bool = False
    max_age: int | None = None
    min_fresh: int | None = None
    reason: str = "cacheable"

    @property
    def x_cache(self) -> str:
        """``X-Cache`` value for a response not served from cache: MISS or BYPASS."""
        return X_CACHE_MISS if self.lookup else X_CACHE_BYPASS


_GET = RequestDecision(True, True)
_HEAD = RequestDecision(True, False, reason="HEAD: served from the GET entry, never stored")
_OTHER_SAFE = RequestDecision(False, False, reason="method not cacheable")
_UNSAFE = RequestDecision(False, False, invalidate=True, reason="unsafe method")


@dataclass(frozen=True, slots=True)
class StoreDecision:
    """Whether and for how long to store a response, decided from its headers.

    :ivar store: the response may be stored.
    :ivar reason: why not (or ``"cacheable"``); names the rule.
    :ivar ttl: freshness lifetime in seconds (``None`` when not storing).
    :ivar vary: lowercase header names of ``Vary`` (the secondary key's parts).
    :ivar swr: RFC 5861 ``stale-while-revalidate`` seconds, or ``None``.
    :ivar sie: RFC 5861 ``stale-if-error`` seconds, or ``None``.
    :ivar etag: the app's own ``ETag``, or ``None`` (one is generated when storing).
    :ivar initial_age: the response's own ``Age`` header, if valid, else 0.
    :ivar cache_control: the parsed response ``Cache-Control``.
    """

    store: bool
    reason: str
    ttl: float | None = None
    vary: tuple[str, ...] = ()
    swr: int | None = None
    sie: int | None = None
    etag: str | None = None
    initial_age: int = 0
    cache_control: CacheControl = field(default_factory=CacheControl)


def _refuse(reason: str, cc: CacheControl | None = None) -> StoreDecision:
    return StoreDecision(False, reason, cache_control=cc if cc is not None else CacheControl())
