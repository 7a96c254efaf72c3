"""Background refreshes for :class:`~cacheplug.cache.ShardedTTLCache`, and their lifecycle.

A refresh is a flight marked ``background``: at most one per key, run on the refresh
executor (sync factories) or as a task on the caller's loop (async ones), storing its
result through the same path as a foreground load. :meth:`close` abandons them.

``_RefreshMixin`` is a base class of ``ShardedTTLCache`` and uses the store and
:class:`~cacheplug._loading._LoadingMixin` through ``self``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from cacheplug._loading import _call_async
from cacheplug._shard import _NO_GENS, _Shard
from cacheplug.freshness import FreshnessPolicy, FreshnessStats, RefreshExecutor
from cacheplug.singleflight import Flight

if TYPE_CHECKING:
    from cacheplug.freshness import Refresher


class _RefreshMixin:
    """The background-refresh half of ``ShardedTTLCache``; see the module docstring."""

    # Set by ShardedTTLCache.__init__; declared here for readers and type checkers.
    _refresher: Refresher
    _shards: list[_Shard]
    _timer: Callable[[], float]

    # -- background refreshes ---------------------------------------------------------------

    def _claim_refresh(
        self, shard: _Shard, key: Hashable, tags: tuple[Hashable, ...]
    ) -> Flight | None:
        """Register a background flight for ``key``; None if one runs or the cache closed."""
        with shard.lock:
            if self._refresher.closed or key in shard.flights:
                return None
            flight = Flight(self._gens_for(tags) if tags else _NO_GENS, background=True)
            shard.flights[key] = flight
            return flight

    def _refresh_in_thread(
        self,
        key: Hashable,
        factory: Callable[[], Any],
        ttl: float | None,
        tags: tuple[Hashable, ...],
        policy: FreshnessPolicy,
    ) -> None:
        shard = self._shard_for(key)
        flight = self._claim_refresh(shard, key, tags)
        if flight is None:
            return
        run = functools.partial(self._run_refresh, shard, key, flight, factory, ttl, tags, policy)
        if not self._refresher.submit(run):
            self._finish_flight(shard, key, flight, retry=True)

    def _run_refresh(
        self,
        shard: _Shard,
        key: Hashable,
        flight: Flight,
        factory: Callable[[], Any],
        ttl: float | None,
        tags: tuple[Hashable, ...],
        policy: FreshnessPolicy,
    ) -> None:
        """A sync background refresh, on the refresh executor. Never raises."""
        if self._refresher.closed:  # queued before close(): abandon without calling factory
            self._finish_flight(shard, key, flight, retry=True)
            return
        started = self._timer()
        try:
            value = factory()
        except Exception as exc:
            self._load_failed(shard, key, flight, exc, tags, policy, background=True)
            return
        except BaseException:
            self._finish_flight(shard, key, flight, retry=True)
            raise
        self._load_done(shard, key, flight, value, ttl, tags, policy, self._timer() - started)

    def _refresh_as_task(
        self,
        key: Hashable,
        factory: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[Hashable, ...],
        policy: FreshnessPolicy,
    ) -> None:
        shard = self._shard_for(key)
        flight = self._claim_refresh(shard, key, tags)
        if flight is None:
            return
        coro = self._arun_refresh(shard, key, flight, factory, ttl, tags, policy)
        if not self._refresher.spawn(coro):
            self._finish_flight(shard, key, flight, retry=True)

    async def _arun_refresh(
        self,
        shard: _Shard,
        key: Hashable,
        flight: Flight,
        factory: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[Hashable, ...],
        policy: FreshnessPolicy,
    ) -> None:
        """An async background refresh, as a task on the loop that asked for it."""
        started = self._timer()
        try:
            value = await _call_async(factory)
        except Exception as exc:
            self._load_failed(shard, key, flight, exc, tags, policy, background=True)
            return
        except BaseException:  # cancelled by close(): store nothing, let waiters retry
            self._finish_flight(shard, key, flight, retry=True)
            raise
        self._load_done(shard, key, flight, value, ttl, tags, policy, self._timer() - started)

    # -- lifecycle of background refreshes --------------------------------------------------

    def set_refresh_executor(self, executor: RefreshExecutor | None) -> None:
        """Run sync background refreshes on ``executor`` (``submit(fn)``); the runtime's
        deferred worker. None returns to the cache's own small pool."""
        self._refresher.executor = executor

    def freshness_stats(self) -> FreshnessStats:
        """Counters of stale reads and background refreshes (see :class:`FreshnessStats`)."""
        return self._refresher.stats()

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop background refreshes; the cache stays usable as a plain cache.

        Refreshes running now finish their factory but store nothing; queued ones
        return without calling their factory; async ones are cancelled; the cache's own
        refresh threads are joined. Afterwards ``get_or_set`` serves no stale value and
        starts no refresh: a caller past expiry loads in the foreground. Idempotent.

        :returns: False if a refresh thread was still running after ``timeout``.
        """
        self._abandon_refreshes()
        return self._refresher.close(timeout)

    async def aclose(self, timeout: float | None = 5.0) -> bool:
        """:meth:`close`, then await the cancelled refresh tasks of the running loop."""
        self._abandon_refreshes()
        return await self._refresher.aclose(timeout)

    def _abandon_refreshes(self) -> None:
        refresher = self._refresher
        refresher.closed = True  # before the sweep: no background flight starts after it
        for shard in self._shards:
            with shard.lock:
                for flight in shard.flights.values():
                    if flight.background and not flight.stale:
                        flight.stale = True
                        refresher.abandoned += 1
