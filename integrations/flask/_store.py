"""Storing a page at the WSGI level: the store plan, the environ's headers, the store.

Shared by the WSGI layer (:mod:`._wsgi`), the stale refresh (:mod:`._refresh`) and
``@cached`` (:mod:`.decorators`): the view leaves a :class:`StorePlan` in the environ,
and the layer or the refresh stores the final response with :func:`store_entry`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cacheplug.http import (
    CachedResponse,
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

_ENVIRON_NAMES: dict[str, str] = {
    "content-type": "CONTENT_TYPE",
    "content-length": "CONTENT_LENGTH",
}


def _environ_name(name: str) -> str:
    """``"accept-encoding"`` -> ``"HTTP_ACCEPT_ENCODING"`` (memoized: few names recur)."""
    key = _ENVIRON_NAMES.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_NAMES) < 1024:
            _ENVIRON_NAMES[name] = key
    return key


class EnvironHeaders(Mapping[str, str]):
    """A read-only view of a WSGI environ as the policy's request-header mapping.

    Same names and values as :func:`cacheplug.http.request_headers_from_environ`, but
    nothing is copied: a lookup reads one environ key, which keeps the hit path cheap.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:  # the hot path: no exceptions
        value = self._environ.get(_environ_name(name))
        if value is None or not isinstance(value, str):
            return default
        return value.strip(" \t")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if not isinstance(value, str):
                continue
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)


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
