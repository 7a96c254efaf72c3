"""``get_or_set``/``aget_or_set`` for :class:`~cacheplug.cache.ShardedTTLCache`.

Single-flight loads (one factory call per missed key, shared by threads and asyncio
tasks) and the freshness options that decide what a read returns around expiry: early
refresh, stale reads and negative caching (``docs/freshness.md``). The policies, XFetch
and backoff live in :mod:`cacheplug.freshness`; background refreshes in
:mod:`cacheplug._refreshing`.

``_LoadingMixin`` is a base class of ``ShardedTTLCache``, not a cache on its own: its
methods use the store's attributes and helpers through ``self``, exactly as if they
were written in ``cache.py``, so that the hot paths pay no extra indirection.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from cacheplug._shard import (
    _EXPIRES,
    _META,
    _MISSING,
    _NO_GENS,
    _VALUE,
    _VERSION,
    _VISITED,
    _delete_record,
    _Item,
    _Shard,
)
from cacheplug.errors import UnhashableKeyError
from cacheplug.freshness import (
    CachedError,
    EntryMeta,
    ExceptionTypes,
    FreshnessPolicy,
    make_policy,
    xfetch_due,
)
from cacheplug.singleflight import Flight

if TYPE_CHECKING:
    from cacheplug.freshness import Backoff, Refresher

T = TypeVar("T")

# The logger name predates the split: keep it so that logging configuration still applies.
logger = logging.getLogger("cacheplug.cache")

_SAME: Any = object()  # _finish_flight: store the leader's value


def _unwrap(value: Any) -> Any:
    """A value as get_or_set returns it: a negatively cached exception is raised."""
    if value.__class__ is CachedError:
        raise value.fresh_error()
    return value


async def _call_async(factory: Callable[[], Awaitable[T]]) -> T:
    result = factory()
    if not inspect.isawaitable(result):
        raise TypeError(
            f"aget_or_set needs a factory returning an awaitable, got "
            f"{type(result).__name__}; use get_or_set for a plain function"
        )
    return await result


class _LoadingMixin:
    """The get_or_set half of ``ShardedTTLCache``; see the module docstring."""

    # Set by ShardedTTLCache.__init__; declared here for readers and type checkers.
    _data: dict[Hashable, _Item]
    _timer: Callable[[], float]
    _journal: Callable[[tuple[Any, ...]], object] | None
    _rng: Callable[[], float]
    _backoff: Backoff
    _refresher: Refresher
    _hits: int
    _misses: int

    # -- single-flight loads ---------------------------------------------------------------

    def get_or_set(
        self,
        key: Hashable,
        factory: Callable[[], T],
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        # Not keyword-only on purpose: CPython fills keyword-only defaults with a dict
        # lookup each, which made every hit ~20% slower. Pass them by keyword.
        early_refresh: float | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = None,
        negative_exceptions: ExceptionTypes = (),
    ) -> T:
        """Return the live value for ``key``, or compute it once with ``factory`` and store it.

        Single-flight across threads: concurrent misses on one key run ``factory``
        once, and the other callers wait for its result. If ``factory`` raises, every
        waiter gets that exception, nothing is cached, and the key is free for the
        next caller. If the key is deleted, overwritten or cleared while ``factory``
        runs, the result is returned but not stored.

        Freshness options (``docs/freshness.md``; all off by default, seconds on the
        cache's timer). Background refreshes of a sync ``factory`` run on the
        ``refresh_executor`` (the runtime's worker), never one thread per key:

        :param early_refresh: XFetch ``beta``: a hit shortly before expiry starts one
            background refresh, with a probability rising to 1 at expiry, scaled by how
            long ``factory`` took last time. ``1.0`` is the usual choice.
        :param stale_while_revalidate: for this long after expiry, return the expired
            value at once and refresh it in the background (one refresh per key).
        :param stale_if_error: for this long after expiry, if ``factory`` raises,
            return the expired value instead; retry in the background with exponential
            backoff and jitter (the cache's ``retry_backoff``), logging once per streak.
        :param negative_ttl: cache a ``None`` result (and ``negative_exceptions``) for
            this long instead of ``ttl``.
        :param negative_exceptions: exception types meaning "not found" (such as
            ``LookupError``): cached for ``negative_ttl`` and re-raised, as a fresh copy
            of the same type and args, to every caller until then.
        :raises UnhashableKeyError: if ``key`` is not hashable.
        :raises ConfigurationError: for an invalid freshness option.
        :raises Exception: whatever ``factory`` raised (unless a stale value is served).
        """
        if early_refresh is None:  # the hit path: one check more than get()
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                return _unwrap(value) if negative_exceptions else value
        policy, value, refresh = self._fresh_start(
            key,
            early_refresh,
            stale_while_revalidate,
            stale_if_error,
            negative_ttl,
            negative_exceptions,
        )
        if refresh:
            self._refresh_in_thread(key, factory, ttl, tuple(tags), policy)  # type: ignore[arg-type]
        if value is not _MISSING:
            return _unwrap(value)
        tags = tuple(tags)
        shard = self._shard_for(key)
        while True:
            flight, leader, value = self._join_flight(shard, key, tags)
            if value is not _MISSING:
                return value if policy is None else _unwrap(value)
            if not leader:
                flight.wait()
                if flight.retry:
                    continue
                if flight.error is not None:
                    return self._stale_or_raise(key, policy, flight.error)
                return flight.value
            started = self._timer()
            try:
                value = factory()
            except Exception as exc:
                return self._load_failed(shard, key, flight, exc, tags, policy)
            except BaseException:
                self._finish_flight(shard, key, flight, retry=True)
                raise
            self._load_done(shard, key, flight, value, ttl, tags, policy, self._timer() - started)
            return value

    async def aget_or_set(
        self,
        key: Hashable,
        factory: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        # Not keyword-only on purpose: CPython fills keyword-only defaults with a dict
        # lookup each, which made every hit ~20% slower. Pass them by keyword.
        early_refresh: float | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = None,
        negative_exceptions: ExceptionTypes = (),
    ) -> T:
        """The asyncio form of :meth:`get_or_set`: ``factory`` returns an awaitable.

        Waiters await a future, so no thread blocks in the event loop. Loads are shared
        with :meth:`get_or_set` callers in other threads. If the leading task is
        cancelled, one of the waiters takes over the load, and the others keep waiting.
        Background refreshes run as tasks on the running loop; :meth:`close` and
        :meth:`aclose` cancel them. The freshness options are those of :meth:`get_or_set`.

        :raises TypeError: if ``factory`` does not return an awaitable.
        """
        if early_refresh is None:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                return _unwrap(value) if negative_exceptions else value
        policy, value, refresh = self._fresh_start(
            key,
            early_refresh,
            stale_while_revalidate,
            stale_if_error,
            negative_ttl,
            negative_exceptions,
        )
        if refresh:
            self._refresh_as_task(key, factory, ttl, tuple(tags), policy)  # type: ignore[arg-type]
        if value is not _MISSING:
            return _unwrap(value)
        tags = tuple(tags)
        shard = self._shard_for(key)
        while True:
            flight, leader, value = self._join_flight(shard, key, tags)
            if value is not _MISSING:
                return value if policy is None else _unwrap(value)
            if not leader:
                waiter = flight.async_waiter()
                if waiter is not None:
                    await waiter
                if flight.retry:
                    continue
                if flight.error is not None:
                    return self._stale_or_raise(key, policy, flight.error)
                return flight.value
            started = self._timer()
            try:
                value = await _call_async(factory)
            except Exception as exc:
                return self._load_failed(shard, key, flight, exc, tags, policy)
            except BaseException:  # cancelled: let a waiter lead instead
                self._finish_flight(shard, key, flight, retry=True)
                raise
            self._load_done(shard, key, flight, value, ttl, tags, policy, self._timer() - started)
            return value

    def _join_flight(
        self, shard: _Shard, key: Hashable, tags: tuple[Hashable, ...]
    ) -> tuple[Flight, bool, Any]:
        """Under the shard lock: return a live value, or the flight to lead or to wait on."""
        with shard.lock:
            item = self._data.get(key)
            if item is not None and self._alive(item, self._timer()):
                item[_VISITED] = True
                return None, False, item[_VALUE]  # type: ignore[return-value]
            flight = shard.flights.get(key)
            if flight is not None:
                return flight, False, _MISSING
            flight = Flight(self._gens_for(tags) if tags else _NO_GENS)
            shard.flights[key] = flight
            return flight, True, _MISSING

    def _finish_flight(
        self,
        shard: _Shard,
        key: Hashable,
        flight: Flight,
        *,
        value: Any = None,
        error: BaseException | None = None,
        retry: bool = False,
        ttl: float | None = None,
        tags: tuple[Hashable, ...] = (),
        stored: Any = _SAME,
        meta: EntryMeta | None = None,
    ) -> None:
        """Store ``stored`` (by default the leader's value, if it succeeded) unless the
        flight went stale, then wake the waiters with ``value``/``error``/``retry``."""
        if stored is _SAME:
            stored = value if error is None and not retry else _MISSING
        item = evicted = None
        with shard.lock:
            if shard.flights.get(key) is flight:
                del shard.flights[key]
            if stored is not _MISSING and not flight.stale:
                now = self._timer()
                expires_at = now + self._ttl if ttl is None else self._expiry(ttl, now)
                if expires_at > now:
                    item, evicted = self._store_locked(
                        shard, key, stored, expires_at, flight.gens, now, flight
                    )
                    item[_META] = meta
                    if self._journal is not None:
                        gens = flight.gens
                        if not gens or self._tags_current(gens):
                            self._journal(("set", key, stored, expires_at, tags, item[_VERSION]))
                        else:  # a tag was invalidated during the load: stored dead
                            self._journal(_delete_record(key))
        flight.resolve(value, error, retry)
        if self._listener is not None:
            if evicted is not None:
                self._notify("evict", evicted)
            if item is not None:
                self._listener("set", key, stored, item[_VERSION], item[_EXPIRES], tags)

    # -- freshness: stale reads and failures (background refreshes: _refreshing.py) --------

    def _fresh_start(
        self,
        key: Hashable,
        early_refresh: float | None,
        stale_while_revalidate: float | None,
        stale_if_error: float | None,
        negative_ttl: float | None,
        negative_exceptions: ExceptionTypes,
    ) -> tuple[FreshnessPolicy | None, Any, bool]:
        """After get_or_set's hit check: ``(policy, value or _MISSING, refresh?)``.

        Without ``early_refresh`` the caller's ``get`` already counted (and missed) the
        read; with it, the read happens here so that a hit can see the entry's metadata.
        """
        if (
            early_refresh is None
            and stale_while_revalidate is None
            and stale_if_error is None
            and negative_ttl is None
            and not negative_exceptions
        ):
            return None, _MISSING, False
        policy = make_policy(
            early_refresh, stale_while_revalidate, stale_if_error, negative_ttl, negative_exceptions
        )
        value, refresh = self._fresh_lookup(key, policy, counted=early_refresh is None)
        return policy, value, refresh

    def _fresh_lookup(
        self, key: Hashable, policy: FreshnessPolicy, counted: bool
    ) -> tuple[Any, bool]:
        """Return ``(value or _MISSING, start_a_background_refresh)`` under ``policy``.

        Lock-free like :meth:`get`. A fresh hit may ask for an early (XFetch) refresh; an
        expired entry within its stale window is returned (it counts as a miss, and in
        ``stale_served``) and asks for a refresh unless one failed recently (backoff).
        ``counted``: a ``get`` just counted this read; otherwise misses go through ``get``.
        """
        try:
            item = self._data.get(key)
        except TypeError:
            raise UnhashableKeyError(key) from None
        if item is not None and self._usable(item):
            now = self._timer()
            expires_at = item[_EXPIRES]
            meta = item[_META]
            if expires_at > now:
                if not counted:
                    if not item[_VISITED]:
                        item[_VISITED] = True
                    self._hits += 1
                refresh = (
                    policy.early_refresh > 0
                    and meta is not None
                    and meta.retry_at <= now
                    and xfetch_due(now, expires_at, meta.delta, policy.early_refresh, self._rng)
                )
                return item[_VALUE], refresh
            refresher = self._refresher
            if meta is not None and not refresher.closed:
                age = now - expires_at
                if age < policy.stale_while_revalidate or (
                    meta.failures and age < policy.stale_if_error
                ):
                    if not counted:
                        self._misses += 1
                    refresher.stale_served += 1
                    return item[_VALUE], meta.retry_at <= now
        if counted:
            return _MISSING, False
        # A miss: get() counts it, drops a dead entry and may ask a second tier.
        return self.get(key, _MISSING), False

    def _load_done(
        self,
        shard: _Shard,
        key: Hashable,
        flight: Flight,
        value: Any,
        ttl: float | None,
        tags: tuple[Hashable, ...],
        policy: FreshnessPolicy | None,
        took: float,
    ) -> None:
        """Store a factory's result: ``None`` for ``negative_ttl``, else with its metadata."""
        if policy is None:
            self._finish_flight(shard, key, flight, value=value, ttl=ttl, tags=tags)
        elif value is None and policy.negative_ttl is not None:
            self._finish_flight(shard, key, flight, value=None, ttl=policy.negative_ttl, tags=tags)
        else:
            meta = policy.meta(took)
            self._finish_flight(shard, key, flight, value=value, ttl=ttl, tags=tags, meta=meta)

    def _load_failed(
        self,
        shard: _Shard,
        key: Hashable,
        flight: Flight,
        error: Exception,
        tags: tuple[Hashable, ...],
        policy: FreshnessPolicy | None,
        *,
        background: bool = False,
    ) -> Any:
        """Handle a factory's exception; return a stale value to serve, or raise ``error``.

        A "not found" exception is cached for ``negative_ttl``. Otherwise the failure
        is counted on the entry (backoff before the next refresh), and within
        ``stale_if_error`` the stale value is returned instead. In the background
        nothing is raised: the failure is logged once per streak.
        """
        if policy is not None and policy.is_negative(error):
            cached = CachedError(error)
            self._finish_flight(
                shard, key, flight, error=error, stored=cached, ttl=policy.negative_ttl, tags=tags
            )
        else:
            stale = _MISSING
            if policy is not None:
                stale = self._note_failure(shard, key, policy, error, background)
            if stale is not _MISSING and not background:
                self._finish_flight(shard, key, flight, value=stale, stored=_MISSING)
                return _unwrap(stale)
            self._finish_flight(shard, key, flight, error=error)
        if background:
            return None
        raise error

    def _note_failure(
        self,
        shard: _Shard,
        key: Hashable,
        policy: FreshnessPolicy,
        error: Exception,
        background: bool,
    ) -> Any:
        """Count a failed load on the stored entry; return its value if it may be served."""
        now = self._timer()
        stale = _MISSING
        failures = 0
        with shard.lock:
            item = self._data.get(key)
            if item is not None and item[_META] is not None and self._usable(item):
                meta = item[_META]
                meta.failures = failures = meta.failures + 1
                meta.retry_at = now + self._backoff.delay(failures, self._rng)
                age = now - item[_EXPIRES]
                if age < 0 or age < policy.stale_if_error:
                    stale = item[_VALUE]
        if background:
            self._refresher.refresh_failures += 1
        if background or stale is not _MISSING:
            level = logging.WARNING if failures <= 1 else logging.DEBUG
            logger.log(
                level,
                "cacheplug: loading %r failed (%s: %s); %s, next retry after backoff",
                key,
                type(error).__name__,
                error,
                "serving the stale value" if stale is not _MISSING else "keeping what is cached",
                exc_info=level == logging.WARNING,
            )
        return stale

    def _stale_or_raise(
        self, key: Hashable, policy: FreshnessPolicy | None, error: BaseException
    ) -> Any:
        """For a waiter whose flight failed: the stale value under ``stale_if_error``, or raise."""
        if policy is not None and policy.stale_if_error and not policy.is_negative(error):
            item = self._data.get(key)
            if (
                item is not None
                and item[_META] is not None
                and self._usable(item)
                and self._timer() - item[_EXPIRES] < policy.stale_if_error
            ):
                return _unwrap(item[_VALUE])
        raise error
