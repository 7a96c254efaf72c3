"""Framework-agnostic HTTP response-caching policy (RFC 9111, RFC 9110, RFC 5861).

This module decides; it never stores, sends or imports a web framework. The ASGI
middleware, the Django page-cache middleware and the Flask ``@cached`` decorator all build
on it, so every rule lives here once.

Header forms (the one normalized input form, see ``docs/http-caching.md``):

* **Names** are lowercase ``str``; **values** are ``str`` decoded as latin-1 (that decode
  never fails, so any byte sequence survives the round trip to ASGI unchanged).
* **Request headers** are a :class:`~collections.abc.Mapping` ``name -> value``; repeated
  fields are joined with ``", "`` (``Cookie`` with ``"; "``). Build it with
  :func:`request_headers_from_asgi`, :func:`request_headers_from_environ` (WSGI, Django's
  ``request.META``) or :func:`request_header_map`.
* **Response headers** are a list of ``(name, value)`` pairs, order and repeats kept
  (``Set-Cookie`` repeats). Convert with :func:`decode_asgi_headers` and
  :func:`encode_asgi_headers`. The store path lowercases names itself, so a stray
  ``"Set-Cookie"`` is still seen.

Flow for an adapter::

    rd = policy.request_decision(method, req_headers)
    if rd.lookup:
        key = policy.primary_key(scheme, host, path, query_string, server=server_addr)
        entry = policy.select(cache.get(key), req_headers, rd, now) if key else None
        if entry is not None:
            status, headers, body = entry.respond(req_headers, now, head=method == "HEAD")
            ...  # send it; done
    ...  # call the app; add ("x-cache", rd.x_cache) to its headers
    sd = policy.response_store_decision(status, headers, req_headers, now)  # if rd.store
    buf = BodyBuffer(policy.max_body_bytes)  # feed() each chunk while streaming it through
    entry = policy.make_entry(status, headers, buf.body, req_headers, sd, now=now)
    if entry is not None:
        variants = add_variant(cache.get(key), entry, policy.max_variants, now)
        cache.set(key, variants, ttl=variants_ttl(variants, now))

Every function is pure and thread-safe; no function raises on malformed header content.
"""

from __future__ import annotations

from .decisions import (
    DEFAULT_CACHEABLE_STATUSES,
    REPLAYABLE_STATUSES,
    RequestDecision,
    StoreDecision,
)
from .directives import CacheControl, _rebuild_cache_control, parse_cache_control, parse_vary
from .entries import BodyBuffer, CachedResponse, add_variant, variants_ttl
from .etag import if_none_match_matches, make_etag, not_modified_headers
from .headers import (
    X_CACHE,
    X_CACHE_BYPASS,
    X_CACHE_HIT,
    X_CACHE_MISS,
    X_CACHE_STALE,
    EnvironHeaders,
    decode_asgi_headers,
    encode_asgi_headers,
    environ_key,
    request_header_map,
    request_headers_from_asgi,
    request_headers_from_environ,
)
from .headers import Headers as Headers
from .headers import RawHeaders as RawHeaders
from .keys import vary_key
from .policy import HttpCachePolicy
from .revalidate import REFRESH_DROPPED_HEADERS, RefreshGuard, refresh_environ
from .stale import select_stale, within_stale_if_error, within_stale_while_revalidate

__all__ = (
    "DEFAULT_CACHEABLE_STATUSES",
    "REFRESH_DROPPED_HEADERS",
    "REPLAYABLE_STATUSES",
    "X_CACHE",
    "X_CACHE_BYPASS",
    "X_CACHE_HIT",
    "X_CACHE_MISS",
    "X_CACHE_STALE",
    "BodyBuffer",
    "CacheControl",
    "CachedResponse",
    "EnvironHeaders",
    "HttpCachePolicy",
    "RefreshGuard",
    "RequestDecision",
    "StoreDecision",
    "add_variant",
    "decode_asgi_headers",
    "encode_asgi_headers",
    "environ_key",
    "if_none_match_matches",
    "make_etag",
    "not_modified_headers",
    "parse_cache_control",
    "parse_vary",
    "refresh_environ",
    "request_header_map",
    "request_headers_from_asgi",
    "request_headers_from_environ",
    "select_stale",
    "variants_ttl",
    "vary_key",
    "within_stale_if_error",
    "within_stale_while_revalidate",
)

# Pickles (snapshots, the WAL, a Redis tier) name the public path, not the module that
# happens to define a class, so stored entries survive any later reshuffle of this package.
for _obj in (CacheControl, _rebuild_cache_control, CachedResponse, RequestDecision, StoreDecision):
    _obj.__module__ = __name__
del _obj
