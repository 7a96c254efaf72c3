"""RFC 5861 stale responses: which stored variant may be served after it expired, and how.

A stored response carrying ``stale-while-revalidate=N`` may be served for N seconds
after it went stale while the cache refreshes it in the background; one carrying
``stale-if-error=N`` may be served for N seconds after it went stale when the origin
fails (raises, or answers 5xx). Neither applies when the response says
``must-revalidate`` or ``proxy-revalidate`` (RFC 9111 §5.2.2.2, §5.2.2.8), nor when the
request limits staleness itself (``max-age``, ``min-fresh``, ``no-cache``: the
:class:`RequestDecision` then has ``lookup`` false or a limit set).

The policy decides; the adapter serves (``X-Cache: STALE``) and runs the refresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .decisions import RequestDecision
from .entries import CachedResponse
from .headers import X_CACHE_STALE

__all__ = (
    "X_CACHE_STALE",
    "select_stale",
    "within_stale_if_error",
    "within_stale_while_revalidate",
)

_NO_STALE = ("must-revalidate", "proxy-revalidate")


def select_stale(
    variants: Sequence[CachedResponse] | None,
    request_headers: Mapping[str, str],
    decision: RequestDecision,
    now: float,
) -> CachedResponse | None:
    """The newest variant matching the request's Vary values that is stale but may be
    served stale (within its ``stale-while-revalidate`` or ``stale-if-error`` window), or
    ``None``.

    Call it after :meth:`HttpCachePolicy.select` returned ``None``. Pure, never raises.
    """
    if not variants or not decision.lookup:
        return None
    if decision.max_age is not None or decision.min_fresh is not None:
        return None  # the client set its own staleness limits: honour them, serve nothing
    for entry in variants:
        if not entry.matches_vary(request_headers):
            continue
        if now < entry.expires_at:  # fresh, yet select() refused it: not ours to serve
            return None
        window = max(entry.swr or 0, entry.sie or 0)
        if window <= 0 or now >= entry.expires_at + window:
            return None
        cc = entry.cache_control
        if any(d in cc for d in _NO_STALE):
            return None
        return entry
    return None


def within_stale_while_revalidate(entry: CachedResponse, now: float) -> bool:
    """True if ``entry`` (stale) is still inside its ``stale-while-revalidate`` window."""
    return entry.swr is not None and now < entry.expires_at + entry.swr


def within_stale_if_error(entry: CachedResponse, now: float) -> bool:
    """True if ``entry`` (stale) is still inside its ``stale-if-error`` window."""
    return entry.sie is not None and now < entry.expires_at + entry.sie
