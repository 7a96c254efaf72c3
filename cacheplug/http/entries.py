"""Stored responses: :class:`CachedResponse`, the variant list and :class:`BodyBuffer`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .decisions import RequestDecision, StoreDecision
from .directives import CacheControl
from .etag import if_none_match_matches, not_modified_headers
from .headers import X_CACHE, X_CACHE_HIT, Headers, RawHeaders, encode_asgi_headers

__all__ = ("BodyBuffer", "CachedResponse", "StorePlan", "add_variant", "variants_ttl")


_FIELDS = (
    "status",
    "headers",
    "body",
    "etag",
    "stored_at",
    "ttl",
    "expires_at",
    "initial_age",
    "vary_names",
    "vary_values",
    "cache_control",
    "swr",
    "sie",
    "tags",
    "raw_headers",
)


class CachedResponse:
    """One stored variant, as adapters keep it in the cache (picklable; read-only).

    Build it with :meth:`HttpCachePolicy.make_entry`. ``headers`` exclude hop-by-hop
    fields, ``Age`` and ``X-Cache``, and include ``ETag``; ``raw_headers`` are the same
    pairs as ASGI bytes (encoded from ``headers`` when not given). Times are epoch
    seconds from the policy clock (wall time, so entries survive a restart with their
    age intact). Equality compares every field.

    Entries are shared by every request that hits them: never assign to an attribute.
    A plain ``__slots__`` class, not a frozen dataclass, because the miss path builds
    one per stored page and a frozen ``__init__`` (one ``object.__setattr__`` per field)
    cost more than all the rest of building the entry.
    """

    __slots__ = _FIELDS
    __hash__ = None  # type: ignore[assignment]  # cache_control is a dict: never hashable

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        etag: str,
        stored_at: float,
        ttl: float,
        expires_at: float,
        initial_age: int,
        vary_names: tuple[str, ...],
        vary_values: tuple[str | None, ...],
        cache_control: CacheControl,
        swr: int | None = None,
        sie: int | None = None,
        tags: tuple[str, ...] = (),
        raw_headers: tuple[tuple[bytes, bytes], ...] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.etag = etag
        self.stored_at = stored_at
        self.ttl = ttl
        self.expires_at = expires_at
        self.initial_age = initial_age
        self.vary_names = vary_names
        self.vary_values = vary_values
        self.cache_control = cache_control
        self.swr = swr
        self.sie = sie
        self.tags = tags
        self.raw_headers = (
            tuple(encode_asgi_headers(headers)) if raw_headers is None else raw_headers
        )

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __reduce__(self) -> tuple[object, ...]:
        # Positional, by the public class path: compact, and independent of __slots__.
        return (CachedResponse, self._fields())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not CachedResponse:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (
            f"CachedResponse(status={self.status!r}, etag={self.etag!r}, "
            f"stored_at={self.stored_at!r}, expires_at={self.expires_at!r}, "
            f"vary={dict(zip(self.vary_names, self.vary_values, strict=False))!r}, "
            f"body=<{len(self.body)} bytes>)"
        )

    @property
    def not_modified(self) -> tuple[tuple[str, str], ...]:
        """The stored headers a 304 carries (:func:`not_modified_headers`), built on use."""
        return tuple(not_modified_headers(self.headers))

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

    def hit_headers(self, now: float, x_cache: str = X_CACHE_HIT) -> Headers:
        """Stored headers plus ``Age`` and ``X-Cache: HIT`` (normalized str form)."""
        return [*self.headers, ("age", str(self.age(now))), (X_CACHE, x_cache)]

    def hit_headers_asgi(self, now: float, x_cache: str = X_CACHE_HIT) -> RawHeaders:
        """:meth:`hit_headers` as ASGI bytes, from headers encoded once at build time."""
        resident = int(now - self.stored_at)
        age = self.initial_age + resident if resident > 0 else self.initial_age
        return [*self.raw_headers, (b"age", b"%d" % age), (b"x-cache", x_cache.encode())]

    def respond(
        self,
        request_headers: Mapping[str, str],
        now: float,
        *,
        head: bool = False,
        asgi: bool = False,
        x_cache: str = X_CACHE_HIT,
    ) -> tuple[int, list, bytes]:
        """``(status, headers, body)`` to send for a hit; a 304 when If-None-Match matches.

        The 304 is answered only for a stored 2xx (RFC 9110 §13.2.1) and carries the
        :func:`not_modified_headers` plus ``Age`` and ``X-Cache`` and no body. ``head``
        drops the body but keeps ``Content-Length``. ``asgi`` returns bytes headers.
        ``x_cache`` is the ``X-Cache`` value: ``"HIT"``, or ``"STALE"`` for a response
        served stale under RFC 5861.
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
                        (b"x-cache", x_cache.encode()),
                    ],
                    b"",
                )
            return 304, [*self.not_modified, ("age", str(age)), (X_CACHE, x_cache)], b""
        if asgi:
            return self.status, self.hit_headers_asgi(now, x_cache), b"" if head else self.body
        return self.status, self.hit_headers(now, x_cache), b"" if head else self.body


class StorePlan:
    """How to store responses of one status and header set: the verdict plus the stored
    headers, without the parts each body adds (``Content-Length`` if the app sent none,
    a generated ``ETag``).

    Built by :meth:`HttpCachePolicy.asgi_store_plan` (memoized, shared by every response
    of that shape) or per response by :meth:`HttpCachePolicy.make_entry`; turned into a
    :class:`CachedResponse` by :meth:`HttpCachePolicy.entry_from_plan`. Read-only once
    built, but for the one-slot memo of :meth:`complete`.
    """

    __slots__ = ("_last", "decision", "headers", "length", "raw", "status")

    def __init__(
        self,
        status: int,
        decision: StoreDecision,
        headers: tuple[tuple[str, str], ...],
        raw: tuple[tuple[bytes, bytes], ...],
        length: str | None,
    ) -> None:
        self.status = status
        self.decision = decision
        self.headers = headers
        self.raw = raw
        #: The app's own ``Content-Length`` (stripped), which the body must match.
        self.length = length
        self._last: tuple[object, ...] | None = None

    def complete(
        self, size: int | None, etag: str | None
    ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[bytes, bytes], ...]]:
        """The stored ``(headers, raw_headers)``: these plus ``Content-Length: size`` and
        ``ETag: etag`` when not None, in that order.

        The last answer is kept (one slot, replaced atomically), so a page stored again
        with the same body, or one body under many URLs, shares its header tuples: fewer
        objects per stored entry for the garbage collector to walk.
        """
        last = self._last
        if last is not None and last[0] == size and last[1] == etag:
            return last[2], last[3]  # type: ignore[return-value]
        headers, raw = self.headers, self.raw
        if size is not None:
            headers += (("content-length", str(size)),)
            raw += ((b"content-length", b"%d" % size),)
        if etag is not None:
            headers += (("etag", etag),)
            raw += ((b"etag", etag.encode("latin-1")),)
        self._last = (size, etag, headers, raw)
        return headers, raw


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
    if len(variants) == 1:  # the usual case, without a generator
        v = variants[0]
        swr, sie = v.swr or 0, v.sie or 0
        return v.expires_at + (swr if swr > sie else sie) - now
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
