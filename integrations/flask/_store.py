"""Storing a page at the WSGI level: the store plan, the environ's headers, the store.

Shared by the WSGI layer (:mod:`._wsgi`), the stale refresh (:mod:`._refresh`) and
``@cached`` (:mod:`.decorators`): the view leaves a :class:`StorePlan` in the environ,
and the layer or the refresh stores the final response with :func:`store_entry`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cacheplug.http import (
    CachedResponse,
    EnvironHeaders,
    HttpCachePolicy,
    RequestDecision,
    StoreDecision,
    add_variant,
    variants_ttl,
)

__all__ = (
    "STORE_PLAN",
    "EnvironHeaders",
    "StartResponse",
    "StorePlan",
    "WSGIApp",
    "content_length",
    "store_entry",
    "store_variant",
)

#: The environ key under which ``@cached`` leaves its :class:`StorePlan`.
STORE_PLAN = "cacheplug.store_plan"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def content_length(headers: list[tuple[str, str]]) -> int | None:
    """The response's ``Content-Length`` as an int, or None if absent or malformed."""
    for name, value in headers:
        if name.lower() == "content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


@dataclass(slots=True)
class StorePlan:
    """What ``@cached`` decided before its view ran; the WSGI layer acts on the response.

    :ivar key: the cache key of the URL's variants.
    :ivar decision: the policy's request decision (``X-Cache``, store, invalidate).
    :ivar policy: the policy to store with (its ``default_ttl`` is the view's timeout).
    :ivar tags: tags for the stored entry.
    """

    key: str
    decision: RequestDecision
    policy: HttpCachePolicy
    tags: tuple[str, ...] = ()


def store_entry(
    cache: Any,
    plan: StorePlan,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    request_headers: Mapping[str, str],
    decision: StoreDecision,
) -> None:
    """Store a response as *plan* says, if the policy makes an entry of it."""
    policy = plan.policy
    now = policy.clock()
    entry = policy.make_entry(
        status, headers, body, request_headers, decision, now=now, tags=plan.tags
    )
    if entry is not None:
        store_variant(cache, plan.key, entry, policy, now)


def store_variant(
    cache: Any, key: str, entry: CachedResponse, policy: HttpCachePolicy, now: float
) -> None:
    """Add ``entry`` to the variants under ``key``; the entry's tags cover them all."""
    old = cache.get(key)
    variants = add_variant(old if type(old) is tuple else None, entry, policy.max_variants, now)
    tags: set[Hashable] = set()
    for variant in variants:
        tags.update(variant.tags)
    cache.set(key, variants, ttl=variants_ttl(variants, now), tags=tags)
