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

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import lru_cache

from cacheplug.errors import ConfigurationError

__all__ = (
    "DEFAULT_CACHEABLE_STATUSES",
    "REPLAYABLE_STATUSES",
    "X_CACHE",
    "X_CACHE_BYPASS",
    "X_CACHE_HIT",
    "X_CACHE_MISS",
    "BodyBuffer",
    "CacheControl",
    "CachedResponse",
    "HttpCachePolicy",
    "RequestDecision",
    "StoreDecision",
    "add_variant",
    "decode_asgi_headers",
    "encode_asgi_headers",
    "if_none_match_matches",
    "make_etag",
    "not_modified_headers",
    "parse_cache_control",
    "parse_vary",
    "request_header_map",
    "request_headers_from_asgi",
    "request_headers_from_environ",
    "variants_ttl",
    "vary_key",
)

Headers = list[tuple[str, str]]
RawHeaders = list[tuple[bytes, bytes]]

#: Response header that reports what the cache did.
X_CACHE = "x-cache"
X_CACHE_HIT = "HIT"
X_CACHE_MISS = "MISS"
X_CACHE_BYPASS = "BYPASS"

#: Statuses cacheable by default (RFC 9110 §15.1) minus 206: ranges are not handled.
DEFAULT_CACHEABLE_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)
#: Final statuses this cache can replay. 1xx are interim; 206 needs range handling and
#: 304 only makes sense against a stored 200, so neither is ever stored.
REPLAYABLE_STATUSES: frozenset[int] = frozenset(range(200, 600)) - {206, 304}

#: RFC 9111 §1.2.2: a delta-seconds value too large to represent is 2**31.
_DELTA_MAX = 2**31
_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN_DELETE = str.maketrans("", "", _TCHARS)
#: Hop-by-hop and per-hop fields a cache must not store or replay (RFC 9110 §7.6.1,
#: RFC 9111 §3.1), plus the fields this cache computes itself on each hit.
_NEVER_STORED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authentication-info",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "age",
        X_CACHE,
    }
)
#: Fields a 304 carries (RFC 9110 §15.4.5), in the order they are emitted.
_NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)
#: Characters of a lowercased reg-name / IPv4 address and of an IPv6 literal.
_HOSTNAME_DELETE = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz0123456789.-_~!$&'()*+;=%")
_IPV6_DELETE = str.maketrans("", "", "0123456789abcdef:.")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_FRESHNESS = ("s-maxage", "max-age")


def _is_token(value: str) -> bool:
    """True if ``value`` is a non-empty RFC 9110 token (no regex: one C-level pass)."""
    return bool(value) and not value.translate(_TOKEN_DELETE)


# --------------------------------------------------------------------------- headers


def decode_asgi_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Convert ASGI ``[(b"Name", b"value")]`` to the normalized ``[("name", "value")]``.

    Names are lowercased; both halves are decoded as latin-1, which never fails.
    """
    return [(n.lower().decode("latin-1"), v.decode("latin-1")) for n, v in raw]


def encode_asgi_headers(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    """Convert normalized ``[("name", "value")]`` pairs back to ASGI bytes (latin-1).

    :raises UnicodeEncodeError: a value holds a character above U+00FF, which cannot
        appear in an HTTP header; values produced by this module never do.
    """
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


def request_header_map(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> dict[str, str]:
    """Build the request-header mapping from ``(name, value)`` pairs of str or bytes.

    Names are lowercased, bytes decoded as latin-1, surrounding whitespace stripped, and
    repeated fields joined with ``", "`` (``"; "`` for ``cookie``, RFC 9113 §8.2.3).
    """
    out: dict[str, str] = {}
    for name, value in pairs:
        n = name.lower().decode("latin-1") if isinstance(name, bytes) else name.lower()
        v = (value.decode("latin-1") if isinstance(value, bytes) else value).strip(" \t")
        prev = out.get(n)
        if prev is None:
            out[n] = v
        else:
            out[n] = prev + ("; " if n == "cookie" else ", ") + v
    return out


def request_headers_from_asgi(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Build the request-header mapping from an ASGI scope's ``headers`` list."""
    out: dict[str, str] = {}
    for name, value in raw:
        n = name.lower().decode("latin-1")
        v = value.decode("latin-1").strip(" \t")
        prev = out.get(n)
        out[n] = v if prev is None else prev + ("; " if n == "cookie" else ", ") + v
    return out


def request_headers_from_environ(environ: Mapping[str, object]) -> dict[str, str]:
    """Build the request-header mapping from a WSGI environ or Django's ``request.META``.

    ``HTTP_ACCEPT_ENCODING`` becomes ``accept-encoding``; ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH`` are included. PEP 3333 values are already latin-1 ``str``; anything
    that is not a ``str`` is skipped.
    """
    out: dict[str, str] = {}
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").lower()] = value.strip(" \t")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            out[key.replace("_", "-").lower()] = value.strip(" \t")
    return out


# --------------------------------------------------------------------------- parsing


class CacheControl(dict[str, str | None]):
    """Parsed ``Cache-Control``: lowercase directive name -> argument (``None`` if none).

    Quoted arguments are unquoted. :attr:`malformed` is true when any part could not be
    parsed (bad directive name, unbalanced quote, bad argument, or one directive given
    twice with different arguments); the store path then refuses to store.
    """

    __slots__ = ("malformed",)

    def __init__(self) -> None:
        super().__init__()
        self.malformed = False

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_cache_control, (dict(self), self.malformed))


def _rebuild_cache_control(items: dict[str, str | None], malformed: bool) -> CacheControl:
    cc = CacheControl()
    cc.update(items)
    cc.malformed = malformed
    return cc


def _split_quoted(value: str) -> list[str] | None:
    """Split on commas outside quoted strings; ``None`` if a quote is left open."""
    items: list[str] = []
    start = 0
    in_quote = escaped = False
    for i, ch in enumerate(value):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ",":
            items.append(value[start:i])
            start = i + 1
    if in_quote:
        return None
    items.append(value[start:])
    return items


def _unquote(arg: str) -> str | None:
    """Return the content of a quoted-string, or ``None`` if ``arg`` is not exactly one."""
    out: list[str] = []
    escaped = False
    for ch in arg[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return None
        else:
            out.append(ch)
    if escaped:
        return None
    return "".join(out)


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a ``Cache-Control`` value (repeated fields joined by commas); never raises.

    ``"public, max-age=60, private=\\"Set-Cookie, X\\""`` gives
    ``{"public": None, "max-age": "60", "private": "Set-Cookie, X"}``. Empty items are
    skipped. Quoted and token arguments are both accepted (RFC 9111 §5.2: "recipients
    ought to accept both forms"). Anything else sets :attr:`CacheControl.malformed`.
    """
    cc = CacheControl()
    if not value:
        return cc
    if '"' in value:
        items = _split_quoted(value)
        if items is None:
            cc.malformed = True
            return cc
    else:
        items = value.split(",")
    for item in items:
        name, sep, arg = item.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            if sep or item.strip(" \t"):
                cc.malformed = True
            continue
        if not _is_token(name):
            cc.malformed = True
            continue
        parsed: str | None = None
        if sep:
            arg = arg.strip(" \t")
            if arg[:1] == '"' and len(arg) >= 2 and arg[-1] == '"':
                parsed = _unquote(arg)
            elif _is_token(arg):
                parsed = arg
            if parsed is None:
                cc.malformed = True
                continue
        if name in cc:
            if cc[name] != parsed:
                cc.malformed = True  # RFC 9111 §4.2.1: conflicting duplicates
            continue
        cc[name] = parsed
    return cc


def _has_no_cache(pragma: str) -> bool:
    """True if a ``Pragma`` value lists ``no-cache`` (RFC 9111 §5.4)."""
    return any(p.strip(" \t").lower() == "no-cache" for p in pragma.split(","))


def _delta_seconds(arg: str | None) -> int | None:
    """Parse delta-seconds (RFC 9111 §1.2.2); ``None`` if absent-argument or invalid."""
    if arg is None or not arg.isascii() or not arg.isdigit():
        return None
    digits = arg.lstrip("0")
    if len(digits) > 10:  # also keeps int() clear of the 4300-digit limit
        return _DELTA_MAX
    return min(int(digits or "0"), _DELTA_MAX)


def parse_vary(value: str | None) -> tuple[str, ...] | None:
    """Parse ``Vary`` into sorted, de-duplicated lowercase names; never raises.

    ``()`` for no Vary, ``("*",)`` when ``*`` appears anywhere, ``None`` if an item is not
    a valid field name (the store path then refuses to store).
    """
    if not value:
        return ()
    names: set[str] = set()
    for item in value.split(","):
        name = item.strip(" \t").lower()
        if not name:
            continue
        if name == "*":
            return ("*",)
        if not _is_token(name):
            return None
        names.add(name)
    return tuple(sorted(names))


def _http_date(value: str) -> float | None:
    """Parse an HTTP-date to epoch seconds; ``None`` if invalid."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# --------------------------------------------------------------------------- ETags


def make_etag(body: bytes) -> str:
    """Return a strong, quoted ETag for ``body``: ``'"' + blake2b-128 hex + '"'``.

    Deterministic across processes and machines (never ``hash()``, which is salted per
    process), so every worker agrees and a 304 survives a restart.
    """
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


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


# --------------------------------------------------------------------------- keys


@lru_cache(maxsize=512)
def _normalize_authority(scheme: str, host: str) -> str | None:
    """``"HTTPS", "Example.COM:443"`` -> ``"https://example.com"``; None if unusable.

    A host is kept only if it is a reg-name, IPv4 or bracketed IPv6 literal with an
    optional numeric port, so no ``/``, ``?``, ``@`` or space can shift the key's parts.
    """
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        return None
    host = host.strip(" \t").lower()
    if not host or not host.isascii():
        return None
    if host.startswith("["):
        close = host.find("]")
        if close < 3:
            return None
        name, rest = host[: close + 1], host[close + 1 :]
        if rest and (rest[0] != ":" or not rest[1:].isdigit()):
            return None
        port = rest[1:]
        if name[1:-1].translate(_IPV6_DELETE):
            return None
    else:
        name, sep, port = host.partition(":")
        if sep and not port.isdigit():
            return None
        if not name or name.translate(_HOSTNAME_DELETE):
            return None
    if port and (scheme, port.lstrip("0")) in (("http", "80"), ("https", "443")):
        port = ""
    return f"{scheme}://{name}:{port}" if port else f"{scheme}://{name}"


def _param_name(param: str) -> str:
    return param.partition("=")[0]


_QUERY_MEMO: dict[str, str] = {}


def _sorted_query(query: str) -> str:
    """Sort ``a=1&b=2`` parameters by name (stable: repeated names keep their order).

    Empty parameters are dropped. Short queries are memoized (bounded) for the hit path.
    """
    if "&" not in query:
        return query
    done = _QUERY_MEMO.get(query)
    if done is not None:
        return done
    params = [p for p in query.split("&") if p]
    params.sort(key=_param_name)
    done = "&".join(params)
    if len(query) <= 512:
        if len(_QUERY_MEMO) >= 1024:
            _QUERY_MEMO.clear()
        _QUERY_MEMO[query] = done
    return done


def vary_key(
    vary_names: Sequence[str], request_headers: Mapping[str, str]
) -> tuple[str | None, ...]:
    """The secondary key: the request's value for each Vary name (``None`` if absent).

    ``vary_names`` are lowercase (as :func:`parse_vary` returns them); values are taken
    as the request-header mapping holds them (repeats already joined, whitespace
    stripped), so ``gzip`` and ``identity`` give different keys.
    """
    return tuple([request_headers.get(name) for name in vary_names])


# --------------------------------------------------------------------------- decisions


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


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """One stored variant, as adapters keep it in the cache (picklable, immutable).

    Build it with :meth:`HttpCachePolicy.make_entry`. ``headers`` exclude hop-by-hop
    fields, ``Age`` and ``X-Cache``, and include ``ETag``. Times are epoch seconds from
    the policy clock (wall time, so entries survive a restart with their age intact).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    etag: str
    stored_at: float
    ttl: float
    expires_at: float
    initial_age: int
    vary_names: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    cache_control: CacheControl
    swr: int | None = None
    sie: int | None = None
    tags: tuple[str, ...] = ()
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()
    not_modified: tuple[tuple[str, str], ...] = ()

    def age(self, now: float) -> int:
        """Whole seconds since the origin generated it (RFC 9111 §4.2.3, simplified)."""
        resident = int(now - self.stored_at)
        return self.initial_age + resident if resident > 0 else self.initial_age

    def is_fresh(self, now: float) -> bool:
        """True until ``expires_at``."""
        return now < self.expires_at

    def usable(self, decision: RequestDecision, now: float) -> bool:
        """Fresh, and within the request's ``max-age`` / ``min-fresh`` if it gave them."""
        if now >= self.expires_at:
            return False
        if decision.max_age is not None and self.age(now) > decision.max_age:
            return False
        return decision.min_fresh is None or self.expires_at - now >= decision.min_fresh

    def matches_vary(self, request_headers: Mapping[str, str]) -> bool:
        """True if the request has the same values for this variant's Vary names."""
        get = request_headers.get
        for name, value in zip(self.vary_names, self.vary_values, strict=True):
            if get(name) != value:
                return False
        return True

    def hit_headers(self, now: float) -> Headers:
        """Stored headers plus ``Age`` and ``X-Cache: HIT`` (normalized str form)."""
        return [*self.headers, ("age", str(self.age(now))), (X_CACHE, X_CACHE_HIT)]

    def hit_headers_asgi(self, now: float) -> RawHeaders:
        """:meth:`hit_headers` as ASGI bytes, from headers encoded once at build time."""
        resident = int(now - self.stored_at)
        age = self.initial_age + resident if resident > 0 else self.initial_age
        return [*self.raw_headers, (b"age", b"%d" % age), (b"x-cache", b"HIT")]

    def respond(
        self,
        request_headers: Mapping[str, str],
        now: float,
        *,
        head: bool = False,
        asgi: bool = False,
    ) -> tuple[int, list, bytes]:
        """``(status, headers, body)`` to send for a hit; a 304 when If-None-Match matches.

        The 304 is answered only for a stored 2xx (RFC 9110 §13.2.1) and carries the
        :func:`not_modified_headers` plus ``Age`` and ``X-Cache`` and no body. ``head``
        drops the body but keeps ``Content-Length``. ``asgi`` returns bytes headers.
        """
        inm = request_headers.get("if-none-match")
        if inm is not None and 200 <= self.status < 300 and if_none_match_matches(inm, self.etag):
            age = self.age(now)
            if asgi:
                return (
                    304,
                    [
                        *encode_asgi_headers(self.not_modified),
                        (b"age", b"%d" % age),
                        (b"x-cache", b"HIT"),
                    ],
                    b"",
                )
            return 304, [*self.not_modified, ("age", str(age)), (X_CACHE, X_CACHE_HIT)], b""
        headers = self.hit_headers_asgi(now) if asgi else self.hit_headers(now)
        return self.status, headers, b"" if head else self.body


def add_variant(
    variants: Sequence[CachedResponse] | None,
    entry: CachedResponse,
    max_variants: int,
    now: float,
) -> tuple[CachedResponse, ...]:
    """Return the variants to store under a primary key after storing ``entry``.

    Newest first (RFC 9111 §4.1: the most recent match wins); a variant with the same
    Vary names and values is replaced; variants past their freshness plus any RFC 5861
    stale window are dropped; at most ``max_variants`` are kept.
    """
    kept = [entry]
    for old in variants or ():
        if len(kept) >= max_variants:
            break
        if old.vary_names == entry.vary_names and old.vary_values == entry.vary_values:
            continue
        if now >= old.expires_at + max(old.swr or 0, old.sie or 0):
            continue
        kept.append(old)
    return tuple(kept)


def variants_ttl(variants: Sequence[CachedResponse], now: float) -> float:
    """Seconds the primary-key entry should live: the longest variant's fresh + stale time."""
    return max(
        (v.expires_at + max(v.swr or 0, v.sie or 0) - now for v in variants),
        default=0.0,
    )


class BodyBuffer:
    """Collects a response body while it streams through, up to ``limit`` bytes.

    :meth:`feed` returns False once the body exceeds the limit; the buffer is then freed
    and the caller stops buffering (it keeps streaming the body to the client untouched).
    Not thread-safe: one buffer per response.
    """

    __slots__ = ("_chunks", "limit", "overflowed", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.overflowed = False
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> bool:
        """Add ``chunk``; False (and drop everything) once more than ``limit`` bytes came."""
        if self.overflowed:
            return False
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflowed = True
            self._chunks.clear()
            return False
        if chunk:
            self._chunks.append(chunk)
        return True

    @property
    def body(self) -> bytes:
        """The collected body; ``b""`` after an overflow."""
        return b"".join(self._chunks)


# --------------------------------------------------------------------------- policy


def _check(ok: bool, option: str, value: object, valid: str) -> None:
    if not ok:
        raise ConfigurationError(f"HttpCachePolicy {option}={value!r} is invalid: {valid}")


@dataclass(frozen=True)
class HttpCachePolicy:
    """Options of the response cache, validated at construction; methods apply them.

    :param default_ttl: seconds to keep a default-cacheable response that states no
        freshness (``0 < default_ttl <= 2**31``).
    :param max_ttl: cap on any freshness lifetime, or ``None`` for no cap.
    :param max_body_bytes: larger bodies are streamed through and not stored (``>= 0``).
    :param max_variants: Vary variants kept per URL, newest first (1..1024).
    :param cacheable_statuses: statuses stored without explicit freshness; a subset of
        :data:`REPLAYABLE_STATUSES`. Other replayable statuses need ``max-age``,
        ``s-maxage`` or ``Expires``.
    :param private_request_headers: request headers (lowercase) that make a response
        storable only if it says ``public`` or ``s-maxage``; must include
        ``authorization``. Add ``cookie`` for Varnish-like caution.
    :param uncacheable_response_headers: response headers (lowercase) that forbid storing;
        must include ``set-cookie``.
    :param honor_request_no_cache: a request's ``no-cache``/``max-age=0``/``Pragma:
        no-cache`` skip the lookup; set False to shield the app from client reloads.
    :param clock: epoch-seconds clock used when ``now`` is not passed.
    :raises ConfigurationError: an option is out of range; the message names it.
    """

    default_ttl: float = 60.0
    max_ttl: float | None = None
    max_body_bytes: int = 1024 * 1024
    max_variants: int = 8
    cacheable_statuses: frozenset[int] = DEFAULT_CACHEABLE_STATUSES
    private_request_headers: frozenset[str] = frozenset({"authorization"})
    uncacheable_response_headers: frozenset[str] = frozenset({"set-cookie"})
    honor_request_no_cache: bool = True
    clock: Callable[[], float] = field(default=time.time, repr=False)
    _request_memo: dict[tuple[str, str | None, str | None], RequestDecision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        def num(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def count(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        ttl = self.default_ttl
        _check(num(ttl) and 0 < ttl <= _DELTA_MAX, "default_ttl", ttl, "a number in (0, 2**31]")
        mt = self.max_ttl
        _check(
            mt is None or (num(mt) and 0 < mt <= _DELTA_MAX),
            "max_ttl",
            mt,
            "None or a number in (0, 2**31]",
        )
        mb = self.max_body_bytes
        _check(count(mb) and mb >= 0, "max_body_bytes", mb, "an int >= 0")
        mv = self.max_variants
        _check(count(mv) and 1 <= mv <= 1024, "max_variants", mv, "an int in 1..1024")
        st = self.cacheable_statuses
        _check(
            isinstance(st, (set, frozenset))
            and all(count(s) and s in REPLAYABLE_STATUSES for s in st),
            "cacheable_statuses",
            st,
            "a set of ints in 200..599 excluding 206 and 304",
        )
        for option, must in (
            ("private_request_headers", "authorization"),
            ("uncacheable_response_headers", "set-cookie"),
        ):
            names = getattr(self, option)
            _check(
                isinstance(names, (set, frozenset))
                and all(isinstance(n, str) and _is_token(n) and n == n.lower() for n in names)
                and must in names,
                option,
                names,
                f"a set of lowercase header names that includes {must!r}",
            )
        _check(
            isinstance(self.honor_request_no_cache, bool),
            "honor_request_no_cache",
            self.honor_request_no_cache,
            "True or False",
        )
        _check(callable(self.clock), "clock", self.clock, "a callable returning epoch seconds")
        # Normalize sets to frozensets so the policy stays hashable and immutable.
        for option in ("cacheable_statuses", "private_request_headers"):
            object.__setattr__(self, option, frozenset(getattr(self, option)))
        object.__setattr__(
            self, "uncacheable_response_headers", frozenset(self.uncacheable_response_headers)
        )

    # ---------------------------------------------------------------- hit path

    def request_decision(self, method: str, request_headers: Mapping[str, str]) -> RequestDecision:
        """Decide, before calling the app, whether to look up and whether to store.

        Only ``GET`` and ``HEAD`` (exact, case-sensitive) are looked up; ``HEAD`` is
        served from the GET entry and its own response is never stored. Request
        ``no-store`` (or an unparsable ``Cache-Control``) bypasses both; ``no-cache``,
        ``max-age=0`` and ``Pragma: no-cache`` skip the lookup but store the fresh
        response. Unsafe methods set ``invalidate``. Never raises on header content.
        """
        if method == "GET":
            base = _GET
        elif method == "HEAD":
            base = _HEAD
        else:
            return _OTHER_SAFE if method in _SAFE_METHODS else _UNSAFE
        cc = request_headers.get("cache-control")
        pragma = request_headers.get("pragma")
        if cc is None and pragma is None:
            return base
        memo_key = (method, cc, pragma)
        decision = self._request_memo.get(memo_key)
        if decision is None:
            decision = self._request_decision_slow(base, cc, pragma)
            if len(self._request_memo) >= 256:
                self._request_memo.clear()
            self._request_memo[memo_key] = decision
        return decision

    def _request_decision_slow(
        self, base: RequestDecision, cc_value: str | None, pragma: str | None
    ) -> RequestDecision:
        cc = parse_cache_control(cc_value)
        if cc.malformed:
            return RequestDecision(False, False, reason="malformed request Cache-Control")
        if "no-store" in cc:
            return RequestDecision(False, False, reason="request no-store")
        if self.honor_request_no_cache:
            if "no-cache" in cc:
                return RequestDecision(False, base.store, reason="request no-cache")
            if pragma is not None and _has_no_cache(pragma):
                return RequestDecision(False, base.store, reason="request Pragma: no-cache")
            max_age = _delta_seconds(cc.get("max-age")) if "max-age" in cc else None
            if max_age == 0:
                return RequestDecision(False, base.store, reason="request max-age=0")
            min_fresh = _delta_seconds(cc.get("min-fresh")) if "min-fresh" in cc else None
            if max_age is not None or min_fresh is not None:
                return RequestDecision(
                    True, base.store, max_age=max_age, min_fresh=min_fresh, reason=base.reason
                )
        return base

    def primary_key(
        self,
        scheme: str,
        host: str | None,
        path: str | bytes,
        query_string: str | bytes = "",
        *,
        server: str | None = None,
    ) -> str | None:
        """The method-independent primary key ``scheme://host[:port]path[?sorted-query]``.

        ``host`` is the ``Host`` header (or HTTP/2 ``:authority``); when missing, the
        caller's ``server`` address (``"10.0.0.5:8000"``) is used; with neither, or with a
        host that is not a valid authority, the result is ``None``: do not cache. Scheme
        and host are lowercased and a default port is dropped. Query parameters are
        sorted by name (stable, so repeated names keep their order); empty ones dropped.
        ``%`` and ``?`` in a decoded path are escaped so path and query cannot collide; a
        path not starting with ``/`` gives ``None``.
        """
        authority = _normalize_authority(scheme, host or server or "")
        if authority is None:
            return None
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        if path[:1] != "/":
            return None
        if "%" in path or "?" in path:
            path = path.replace("%", "%25").replace("?", "%3F")
        if query_string:
            if isinstance(query_string, bytes):
                query_string = query_string.decode("latin-1")
            query = _sorted_query(query_string)
            if query:
                return f"{authority}{path}?{query}"
        return authority + path

    def select(
        self,
        variants: Sequence[CachedResponse] | None,
        request_headers: Mapping[str, str],
        decision: RequestDecision,
        now: float | None = None,
    ) -> CachedResponse | None:
        """The newest stored variant usable for this request, or ``None`` (a miss)."""
        if not variants or not decision.lookup:
            return None
        if now is None:
            now = self.clock()
        get = request_headers.get
        for entry in variants:
            names = entry.vary_names
            if names:  # inlined matches_vary: this is the hit path
                values = entry.vary_values
                if len(names) == 1:
                    if get(names[0]) != values[0]:
                        continue
                elif not entry.matches_vary(request_headers):
                    continue
            if now >= entry.expires_at:
                return None
            if decision.max_age is None and decision.min_fresh is None:
                return entry
            return entry if entry.usable(decision, now) else None
        return None

    # ---------------------------------------------------------------- store path

    def response_store_decision(
        self,
        status: int,
        response_headers: Iterable[tuple[str, str]],
        request_headers: Mapping[str, str],
        now: float | None = None,
    ) -> StoreDecision:
        """Decide from the status and headers whether the response may be stored.

        Call only when :attr:`RequestDecision.store` is true. Refuses (first rule wins):
        non-replayable status; request ``no-store``; any ``private`` (qualified too),
        ``no-store`` or ``no-cache`` (qualified too); unparsable ``Cache-Control`` or
        ``Vary``; ``Vary: *``; a header in ``uncacheable_response_headers``
        (``Set-Cookie``); a request header in ``private_request_headers``
        (``Authorization``) unless ``public`` or ``s-maxage``; a malformed, zero or
        conflicting freshness directive or ``Expires``; a status outside
        ``cacheable_statuses`` without explicit freshness; ``Content-Length`` above
        ``max_body_bytes``; already stale by its own ``Age``. Never raises on content.
        """
        if status not in REPLAYABLE_STATUSES:
            return _refuse(f"status {status} is never stored")
        req_cc = request_headers.get("cache-control")
        if req_cc and "no-store" in parse_cache_control(req_cc):
            return _refuse("request no-store")
        cc_parts: list[str] = []
        vary_parts: list[str] = []
        expires: list[str] = []
        date = etag = content_length = age = None
        blocked = None
        for raw_name, value in response_headers:
            name = raw_name.lower()
            if name == "cache-control":
                cc_parts.append(value)
            elif name == "vary":
                vary_parts.append(value)
            elif name == "expires":
                expires.append(value.strip(" \t"))
            elif name == "date":
                date = value
            elif name == "etag":
                etag = value.strip(" \t")
            elif name == "content-length":
                content_length = value.strip(" \t")
            elif name == "age":
                age = value.strip(" \t")
            elif name in self.uncacheable_response_headers and blocked is None:
                blocked = name
        cc = parse_cache_control(", ".join(cc_parts))
        for directive in ("no-store", "private", "no-cache"):
            if directive in cc:
                return _refuse(f"response Cache-Control: {directive}", cc)
        if cc.malformed:
            return _refuse("malformed response Cache-Control", cc)
        vary = parse_vary(", ".join(vary_parts))
        if vary is None:
            return _refuse("malformed Vary", cc)
        if vary == ("*",):
            return _refuse("Vary: *", cc)
        if blocked is not None:
            return _refuse(f"response has {blocked}", cc)
        if (
            "public" not in cc
            and "s-maxage" not in cc
            and any(h in request_headers for h in self.private_request_headers)
        ):
            return _refuse("request has Authorization and response is not public", cc)

        explicit = True
        if "s-maxage" in cc or "max-age" in cc:
            directive = "s-maxage" if "s-maxage" in cc else "max-age"
            for d in _FRESHNESS:
                if d in cc and _delta_seconds(cc[d]) is None:
                    return _refuse(f"malformed {d}", cc)
            lifetime: float = _delta_seconds(cc[directive]) or 0
            if lifetime <= 0:
                return _refuse(f"{directive}=0: must revalidate", cc)
        elif expires:
            if len(set(expires)) > 1:
                return _refuse("conflicting Expires", cc)
            directive = "Expires"
            expires_at = _http_date(expires[0])
            if expires_at is None:
                return _refuse("invalid Expires (already expired)", cc)
            if now is None:
                now = self.clock()
            origin_now = _http_date(date) if date else None
            lifetime = expires_at - (origin_now if origin_now is not None else now)
            if lifetime <= 0:
                return _refuse("Expires is not in the future", cc)
        else:
            explicit = False
            directive = "default_ttl"
            lifetime = self.default_ttl
        if not explicit and status not in self.cacheable_statuses:
            return _refuse(f"status {status} needs explicit freshness", cc)
        if self.max_ttl is not None:
            lifetime = min(lifetime, self.max_ttl)

        if content_length is not None:
            size = _delta_seconds(content_length)
            if size is None:
                return _refuse("malformed Content-Length", cc)
            if size > self.max_body_bytes:
                return _refuse("body larger than max_body_bytes", cc)
        initial_age = (_delta_seconds(age) or 0) if age is not None else 0
        if lifetime - initial_age <= 0:
            return _refuse("already stale (Age >= freshness lifetime)", cc)
        return StoreDecision(
            True,
            f"cacheable ({directive})",
            ttl=float(lifetime),
            vary=vary,
            swr=_delta_seconds(cc.get("stale-while-revalidate")),
            sie=_delta_seconds(cc.get("stale-if-error")),
            etag=etag or None,
            initial_age=initial_age,
            cache_control=cc,
        )

    def make_entry(
        self,
        status: int,
        response_headers: Iterable[tuple[str, str]],
        body: bytes,
        request_headers: Mapping[str, str],
        decision: StoreDecision,
        *,
        now: float | None = None,
        tags: Iterable[str] = (),
    ) -> CachedResponse | None:
        """Build the :class:`CachedResponse` to store, or ``None`` if it must not be.

        ``None`` when ``decision.store`` is false, the body is over ``max_body_bytes``, or
        ``Content-Length`` disagrees with ``len(body)`` (a truncated body or a HEAD
        response). Drops hop-by-hop fields (and those ``Connection`` names), ``Age`` and
        ``X-Cache``; adds ``Content-Length`` if missing (not for 204) and a strong
        :func:`make_etag` ETag to a 2xx without one. Records the request's values for the
        response's Vary names.
        """
        if not decision.store or decision.ttl is None or len(body) > self.max_body_bytes:
            return None
        if now is None:
            now = self.clock()
        pairs = [(n.lower(), v) for n, v in response_headers]
        drop = set(_NEVER_STORED) | self.uncacheable_response_headers
        for name, value in pairs:
            if name == "connection":
                drop.update(t.strip(" \t").lower() for t in value.split(","))
        headers: Headers = []
        has_length = False
        for name, value in pairs:
            if name in drop:
                continue
            if name == "content-length":
                if value.strip(" \t") != str(len(body)) or has_length:
                    return None
                has_length = True
            headers.append((name, value))
        if not has_length and status != 204:
            headers.append(("content-length", str(len(body))))
        etag = decision.etag
        if etag is None and 200 <= status < 300:
            etag = make_etag(body)
            headers.append(("etag", etag))
        ttl = decision.ttl
        return CachedResponse(
            status=status,
            headers=tuple(headers),
            body=body,
            etag=etag or "",
            stored_at=now,
            ttl=ttl,
            expires_at=now + ttl - decision.initial_age,
            initial_age=decision.initial_age,
            vary_names=decision.vary,
            vary_values=vary_key(decision.vary, request_headers),
            cache_control=decision.cache_control,
            swr=decision.swr,
            sie=decision.sie,
            tags=tuple(tags),
            raw_headers=tuple(encode_asgi_headers(headers)),
            not_modified=tuple(not_modified_headers(headers)),
        )
