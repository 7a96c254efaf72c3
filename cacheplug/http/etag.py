"""Strong ETags, ``If-None-Match`` matching and the headers of a 304."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .headers import Headers

__all__ = ("if_none_match_matches", "make_etag", "not_modified_headers")

#: Fields a 304 carries (RFC 9110 §15.4.5), in the order they are emitted.
_NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)


#: An empty blake2b-128 state, copied per ETag: cheaper than building one with options.
_BLAKE2B_128 = hashlib.blake2b(digest_size=16)


def make_etag(body: bytes) -> str:
    """Return a strong, quoted ETag for ``body``: ``'"' + blake2b-128 hex + '"'``.

    Deterministic across processes and machines (never ``hash()``, which is salted per
    process), so every worker agrees and a 304 survives a restart.
    """
    hasher = _BLAKE2B_128.copy()  # never updated itself: safe to share between threads
    hasher.update(body)
    return f'"{hasher.hexdigest()}"'


def _entity_tags(value: str) -> list[str] | None:
    """Opaque tags (quotes kept, ``W/`` dropped) of an ``If-None-Match`` list, or None."""
    tags: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch in " \t,":
            i += 1
            continue
        if value.startswith("W/", i):
            i += 2
        if i >= n or value[i] != '"':
            return None
        end = value.find('"', i + 1)
        if end < 0:
            return None
        tags.append(value[i : end + 1])
        i = end + 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] != ",":
            return None
    return tags


def if_none_match_matches(header_value: str | None, etag: str | None) -> bool:
    """True if ``If-None-Match: header_value`` matches ``etag`` (weak comparison).

    RFC 9110 §13.1.2: ``*`` matches any current representation; otherwise each listed tag
    is compared with ``W/`` ignored on both sides. Identical strings always match;
    otherwise a malformed header or ``etag`` never matches, so the full response is sent.
    """
    if not header_value or not etag:
        return False
    if header_value == etag:
        return True
    value = header_value.strip(" \t")
    if value == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    if len(opaque) < 2 or opaque[0] != '"' or opaque[-1] != '"' or '"' in opaque[1:-1]:
        return False
    tags = _entity_tags(value)
    return tags is not None and opaque in tags


def not_modified_headers(stored_headers: Iterable[tuple[str, str]]) -> Headers:
    """The headers of a 304 for a stored response (RFC 9110 §15.4.5).

    Keeps ``ETag``, ``Cache-Control``, ``Vary``, ``Date``, ``Expires`` and
    ``Content-Location``; drops the body's fields (``Content-Length``, ``Content-Type``,
    ...). The caller adds ``Age`` and ``X-Cache``.
    """
    return [(n, v) for n, v in stored_headers if n.lower() in _NOT_MODIFIED_FIELDS]
