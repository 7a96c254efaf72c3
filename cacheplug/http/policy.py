"""``HttpCachePolicy``: validated options plus the request, lookup and store decisions."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cacheplug.errors import ConfigurationError

from ._building import EntryBuilding
from .decisions import (
    _GET,
    _HEAD,
    _OTHER_SAFE,
    _UNSAFE,
    DEFAULT_CACHEABLE_STATUSES,
    REPLAYABLE_STATUSES,
    RequestDecision,
    StoreDecision,
    _refuse,
)
from .directives import (
    _DELTA_MAX,
    CacheControl,
    _delta_seconds,
    _has_no_cache,
    _http_date,
    _is_token,
    parse_cache_control,
    parse_vary,
)
from .entries import CachedResponse, StorePlan
from .headers import X_CACHE
from .keys import _normalize_authority, _sorted_query

__all__ = ("HttpCachePolicy",)

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
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CACHEABLE = {d: f"cacheable ({d})" for d in ("s-maxage", "max-age", "Expires", "default_ttl")}
_FRESHNESS = ("s-maxage", "max-age")


def _check(ok: bool, option: str, value: object, valid: str) -> None:
    if not ok:
        raise ConfigurationError(f"HttpCachePolicy {option}={value!r} is invalid: {valid}")


@dataclass(frozen=True)
class HttpCachePolicy(EntryBuilding):
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
    # Parsed response Cache-Control values, shared by the entries that carry them (fewer
    # objects per stored page for the GC to walk); treated as read-only everywhere.
    _cc_memo: dict[str, CacheControl] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Store decisions per response-header shape, see _store_memo_key; read-only values.
    _store_memo: dict[tuple[object, ...], StoreDecision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # ASGI store plans per (status, raw headers, request flags), see asgi_store_plan.
    _asgi_memo: dict[tuple[object, ...], StorePlan | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _never_stored: frozenset[str] = field(
        default=frozenset(), init=False, repr=False, compare=False
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
        object.__setattr__(self, "_never_stored", _NEVER_STORED | self.uncacheable_response_headers)

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
            query = _sorted_query(query_string) if "&" in query_string else query_string
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
        cc_value = ", ".join(cc_parts)
        vary_value = ", ".join(vary_parts)
        private = self._private(request_headers)
        if expires or age is not None:  # depend on the clock or are rare: no memo
            decision = self._store_rules(
                status, cc_value, vary_value, blocked, private, expires, date, now, age
            )
        else:
            # Every input of _store_rules is in the key: the verdict of one header shape is
            # the same for every response of that shape. Content-Length and ETag (which
            # vary per response) are applied below, outside the memo.
            memo_key = (status, cc_value, vary_value, blocked, private)
            decision = self._store_memo.get(memo_key)  # type: ignore[assignment]
            if decision is None:
                decision = self._store_rules(
                    status, cc_value, vary_value, blocked, private, (), None, None, None
                )
                if len(cc_value) + len(vary_value) <= 512:
                    if len(self._store_memo) >= 256:
                        self._store_memo.clear()
                    self._store_memo[memo_key] = decision
        if not decision.store:
            return decision
        if content_length is not None:
            size = _delta_seconds(content_length)
            if size is None:
                return _refuse("malformed Content-Length", decision.cache_control)
            if size > self.max_body_bytes:
                return _refuse("body larger than max_body_bytes", decision.cache_control)
        if etag:
            d = decision
            return StoreDecision(
                True, d.reason, d.ttl, d.vary, d.swr, d.sie, etag, d.initial_age, d.cache_control
            )
        return decision

    def _private(self, request_headers: Mapping[str, str]) -> bool:
        """True if the request has a header of ``private_request_headers``."""
        for name in self.private_request_headers:  # noqa: SIM110 (usually one: faster than any())
            if name in request_headers:
                return True
        return False

    def _store_rules(
        self,
        status: int,
        cc_value: str,
        vary_value: str,
        blocked: str | None,
        private: bool,
        expires: Sequence[str],
        date: str | None,
        now: float | None,
        age: str | None,
    ) -> StoreDecision:
        """The header rules of :meth:`response_store_decision`, without Content-Length and
        ETag; a pure function of its arguments (``now``/``date`` used only with Expires)."""
        cc = self._response_cache_control(cc_value)
        for directive in ("no-store", "private", "no-cache"):
            if directive in cc:
                return _refuse(f"response Cache-Control: {directive}", cc)
        if cc.malformed:
            return _refuse("malformed response Cache-Control", cc)
        vary = parse_vary(vary_value)
        if vary is None:
            return _refuse("malformed Vary", cc)
        if vary == ("*",):
            return _refuse("Vary: *", cc)
        if blocked is not None:
            return _refuse(f"response has {blocked}", cc)
        if private and "public" not in cc and "s-maxage" not in cc:
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
        initial_age = (_delta_seconds(age) or 0) if age is not None else 0
        if lifetime - initial_age <= 0:
            return _refuse("already stale (Age >= freshness lifetime)", cc)
        return StoreDecision(
            True,
            _CACHEABLE[directive],
            ttl=float(lifetime),
            vary=vary,
            swr=_delta_seconds(cc.get("stale-while-revalidate")),
            sie=_delta_seconds(cc.get("stale-if-error")),
            initial_age=initial_age,
            cache_control=cc,
        )

    def _response_cache_control(self, value: str) -> CacheControl:
        """``parse_cache_control(value)``, memoized (bounded): responses repeat theirs."""
        cc = self._cc_memo.get(value)
        if cc is None:
            cc = parse_cache_control(value)
            if len(value) <= 256:
                if len(self._cc_memo) >= 256:
                    self._cc_memo.clear()
                self._cc_memo[value] = cc
        return cc
