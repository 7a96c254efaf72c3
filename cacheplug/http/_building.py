"""Building the entries :class:`~cacheplug.http.HttpCachePolicy` stores.

The second half of the policy, kept apart from the decisions: once a response may be
stored, which of its headers are kept, what ``Content-Length`` and ``ETag`` are added,
and the :class:`CachedResponse` that results. :meth:`asgi_store_plan` memoizes the
header work per response shape for the ASGI miss path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .decisions import StoreDecision
from .entries import CachedResponse, StorePlan
from .etag import make_etag
from .headers import Headers, RawHeaders, decode_asgi_headers
from .keys import vary_key

__all__ = ("EntryBuilding",)

_UNPLANNED = object()


class EntryBuilding:
    """The entry-building methods of :class:`~cacheplug.http.HttpCachePolicy`.

    A base class without state of its own: it reads the policy's options and memos.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # provided by HttpCachePolicy
        max_body_bytes: int
        max_variants: int
        clock: Callable[[], float]
        _never_stored: frozenset[str]
        _asgi_memo: dict[tuple[object, ...], StorePlan | None]

        def response_store_decision(
            self,
            status: int,
            response_headers: Iterable[tuple[str, str]],
            request_headers: Mapping[str, str],
            now: float | None = None,
        ) -> StoreDecision: ...

        def _private(self, request_headers: Mapping[str, str]) -> bool: ...

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
        plan = self._plan(status, response_headers, decision)
        if plan is None:
            return None
        return self.entry_from_plan(plan, body, request_headers, now=now, tags=tags)

    def asgi_store_plan(
        self,
        status: int,
        raw_headers: Iterable[tuple[bytes, bytes]],
        request_headers: Mapping[str, str],
    ) -> StorePlan | None:
        """:meth:`response_store_decision` and the header half of :meth:`make_entry` for
        ASGI ``(bytes, bytes)`` response headers: the plan, or ``None`` if not storable.

        Memoized per (status, exact header bytes, request ``Cache-Control``, presence of
        a ``private_request_headers`` field): every input of both steps, so a repeat
        endpoint's miss skips decoding and deciding. Responses with ``Expires`` or
        ``Age`` (clock-dependent or rare) and large header sets are decided afresh.
        Never raises on header content.
        """
        raw = tuple(raw_headers)
        memo_key = (
            status,
            raw,
            request_headers.get("cache-control"),
            self._private(request_headers),
        )
        try:
            plan = self._asgi_memo.get(memo_key, _UNPLANNED)
        except TypeError:  # pairs given as lists (valid ASGI): unhashable, decide afresh
            return self._asgi_plan(status, raw, request_headers)[0]
        if plan is _UNPLANNED:
            plan, memoizable = self._asgi_plan(status, raw, request_headers)
            if memoizable:
                if len(self._asgi_memo) >= 256:
                    self._asgi_memo.clear()
                self._asgi_memo[memo_key] = plan
        return plan  # type: ignore[return-value]

    def _asgi_plan(
        self,
        status: int,
        raw: Sequence[tuple[bytes, bytes]],
        request_headers: Mapping[str, str],
    ) -> tuple[StorePlan | None, bool]:
        """The plan of :meth:`asgi_store_plan`, and whether it may be memoized."""
        headers = decode_asgi_headers(raw)
        decision = self.response_store_decision(status, headers, request_headers)
        plan = self._plan(status, headers, decision) if decision.store else None
        size = 0
        for name, value in headers:
            if name == "expires" or name == "age":
                return plan, False
            size += len(name) + len(value)
        return plan, size <= 4096

    def _plan(
        self, status: int, response_headers: Iterable[tuple[str, str]], decision: StoreDecision
    ) -> StorePlan | None:
        """The stored headers of a storable response, or None if ``Content-Length`` repeats."""
        drop: frozenset[str] | set[str] = self._never_stored
        pairs = [(n.lower(), v) for n, v in response_headers]
        for name, value in pairs:
            if name == "connection":  # rare: the fields it names are hop-by-hop too
                drop = set(drop)
                drop.update(t.strip(" \t").lower() for t in value.split(","))
        headers: Headers = []
        raw: RawHeaders = []
        length = None
        for name, value in pairs:
            if name in drop:
                continue
            if name == "content-length":
                if length is not None:
                    return None
                length = value.strip(" \t")
            headers.append((name, value))
            raw.append((name.encode("latin-1"), value.encode("latin-1")))
        return StorePlan(status, decision, tuple(headers), tuple(raw), length)

    def entry_from_plan(
        self,
        plan: StorePlan,
        body: bytes,
        request_headers: Mapping[str, str],
        *,
        now: float | None = None,
        tags: Iterable[str] = (),
    ) -> CachedResponse | None:
        """Build the :class:`CachedResponse` of ``body`` under ``plan`` (see :meth:`make_entry`).

        ``None`` when the body is over ``max_body_bytes`` or disagrees with the app's
        ``Content-Length``.
        """
        size = len(body)
        if size > self.max_body_bytes:
            return None
        status = plan.status
        length = plan.length
        if length is None:
            added = size if status != 204 else None
        elif length != str(size):
            return None
        else:
            added = None
        decision = plan.decision
        etag = decision.etag
        generated = None
        if etag is None and 200 <= status < 300:
            etag = generated = make_etag(body)
        headers, raw = plan.complete(added, generated)
        if now is None:
            now = self.clock()
        ttl: float = decision.ttl  # type: ignore[assignment]  # set whenever store is
        vary = decision.vary
        return CachedResponse(
            status,
            headers,
            body,
            etag or "",
            now,
            ttl,
            now + ttl - decision.initial_age,
            decision.initial_age,
            vary,
            vary_key(vary, request_headers) if vary else (),
            decision.cache_control,
            decision.swr,
            decision.sie,
            tuple(tags),
            raw,
        )
