"""The Redis tier's reads: the shared L2 and the distributed ``get_or_set`` lease.

:class:`TierReads` is the part of :class:`~cacheplug.tier.RedisTier` that reads Redis on
a local miss and fills the local tier only when no write raced the read (the epochs of
``_tier_coherence``), and that runs a ``get_or_set`` factory once across every process
under a Redis lease (see ``_tier_scripts``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

from cacheplug import _tier_flags
from cacheplug._tier_coherence import TierCoherence
from cacheplug._tier_redis import NONE as _NONE
from cacheplug.freshness import CachedError, ExceptionTypes

__all__ = ("TierReads",)

# Bound by assignment, not by import (see _tier_coherence): ``_remote.get()`` stays a
# method call.
_remote = _tier_flags.remote
_local_only = _tier_flags.local_only
_context = _tier_flags.scoped

T = TypeVar("T")
_MISSING: Any = object()


class TierReads(TierCoherence):
    """Read Redis on a local miss; run ``get_or_set`` factories under a Redis lease.

    A mixin of :class:`~cacheplug.tier.RedisTier` (``lock_ttl`` is set there).
    """

    lock_ttl: float

    # -- L2 reads -----------------------------------------------------------------------

    def _fill(
        self, key: Hashable, value: Any, tags: tuple[Hashable, ...], pttl: int, guard: Any
    ) -> None:
        """Store an L2 value locally unless an invalidation or local write raced the read."""
        if pttl == -2 or pttl == 0:
            return
        if key in self._pending or self._pending_global or self._guard(key) != guard:
            self.stats_counters.fills_skipped += 1
            return
        ttl = math.inf if pttl < 0 else pttl / 1000.0
        token = _remote.set(True)
        try:
            self.cache.set(key, value, ttl, tags, if_version=0)  # never over a newer local write
            # An invalidation applied between the check and the set bumped the epoch
            # before deleting: seeing no bump now means it will delete after us.
            if self._guard(key) != guard:
                self.stats_counters.fills_skipped += 1
                self.cache.delete(key)
        finally:
            _remote.reset(token)

    def read(self, key: Hashable, default: Any) -> Any:
        """The miss hook: one round trip to Redis, then a guarded local fill."""
        if _local_only.get() or not self.breaker.allow() or self._unsent(key):
            return default
        guard = self._guard(key)
        found = self.link.get_many([key], self.stats_counters)
        if not found:
            return default
        value, tags, pttl = found[key]
        self._fill(key, value, tags, pttl, guard)
        return value

    def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        """Local hits, then one Redis round trip for the misses (filled locally)."""
        found: dict[Hashable, Any] = {}
        missed = []
        token = _local_only.set(True)
        try:
            for key in keys:
                value = self.cache.get(key, _MISSING)
                if value is _MISSING:
                    missed.append(key)
                else:
                    found[key] = value
        finally:
            _local_only.reset(token)
        missed = [key for key in missed if not self._unsent(key)]
        if not missed or not self.breaker.allow():
            return found
        guards = [self._guard(key) for key in missed]
        remote = self.link.get_many(missed, self.stats_counters)
        for key, guard in zip(missed, guards, strict=True):
            hit = remote.get(key)
            if hit is not None:
                found[key] = hit[0]
                self._fill(key, hit[0], hit[1], hit[2], guard)
        return found

    # -- distributed single-flight --------------------------------------------------------

    def get_or_set(
        self,
        key: Hashable,
        factory: Callable[[], T],
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        negative_ttl: float | None = None,
        negative_exceptions: ExceptionTypes = (),
    ) -> T:
        """Return the value for ``key``; on a miss everywhere, run ``factory`` once across
        every process and thread, under a Redis lease (see :meth:`CachePlug.get_or_set`).

        A ``None`` result is stored in Redis for ``negative_ttl`` when it is set; an
        exception in ``negative_exceptions`` is cached in this process only.
        """
        value = self.cache.get(key, _MISSING)
        if value is not _MISSING:
            return _unwrap(value) if negative_exceptions else value
        tags = tuple(tags)

        def load() -> T:
            value, stored = _MISSING, True
            if self._unsent(key):
                self.flush()  # Redis must see our delete before we read or lease the key
            lease = self.link.acquire(key, tags, self.lock_ttl)
            while lease.waiting:
                self.stats_counters.lock_waits += 1
                time.sleep(lease.delay())
                lease = self.link.acquire(key, tags, self.lock_ttl, lease)
            if lease.value is not _NONE:
                value = lease.value
            else:
                self.stats_counters.factory_runs += 1
                try:
                    with _context(_remote, False), _context(_local_only, False):
                        value = factory()
                except BaseException:
                    self.link.release(lease)
                    raise
                ttl_ms = self._redis_ttl(_ttl_for(value, ttl, negative_ttl))
                stored = self.link.store(lease, value, ttl_ms)
            if not stored:  # a delete raced us: return the value, cache it nowhere
                self.stats_counters.stale_sets_prevented += 1
                self.cache.delete(key)  # marks our own in-flight load stale
            return value

        with _context(_remote, True), _context(_local_only, True):
            return self.cache.get_or_set(
                key,
                load,
                ttl,
                tags,
                negative_ttl=negative_ttl,
                negative_exceptions=negative_exceptions,
            )

    async def aget_or_set(
        self,
        key: Hashable,
        factory: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        negative_ttl: float | None = None,
        negative_exceptions: ExceptionTypes = (),
    ) -> T:
        """The asyncio form of :meth:`get_or_set`; Redis calls run in a thread."""
        value = self.cache.get(key, _MISSING)
        if value is not _MISSING:
            return _unwrap(value) if negative_exceptions else value
        tags = tuple(tags)

        async def load() -> T:
            value, stored = _MISSING, True
            if self._unsent(key):
                await asyncio.to_thread(self.flush)
            lease = await asyncio.to_thread(self.link.acquire, key, tags, self.lock_ttl)
            while lease.waiting:
                self.stats_counters.lock_waits += 1
                await asyncio.sleep(lease.delay())
                lease = await asyncio.to_thread(self.link.acquire, key, tags, self.lock_ttl, lease)
            if lease.value is not _NONE:
                value = lease.value
            else:
                self.stats_counters.factory_runs += 1
                try:
                    with _context(_remote, False), _context(_local_only, False):
                        value = await factory()
                except BaseException:
                    await asyncio.to_thread(self.link.release, lease)
                    raise
                ttl_ms = self._redis_ttl(_ttl_for(value, ttl, negative_ttl))
                stored = await asyncio.to_thread(self.link.store, lease, value, ttl_ms)
            if not stored:
                self.stats_counters.stale_sets_prevented += 1
                self.cache.delete(key)
            return value

        with _context(_remote, True), _context(_local_only, True):
            return await self.cache.aget_or_set(
                key,
                load,
                ttl,
                tags,
                negative_ttl=negative_ttl,
                negative_exceptions=negative_exceptions,
            )

    def _redis_ttl(self, ttl: float | None) -> int:
        """Milliseconds for Redis (0: no expiry; -1: already expired, store nothing)."""
        seconds = self.cache.ttl if ttl is None else ttl
        if seconds is None or seconds == math.inf:
            return 0
        return max(1, math.ceil(seconds * 1000)) if seconds > 0 else -1


def _ttl_for(value: Any, ttl: float | None, negative_ttl: float | None) -> float | None:
    """The TTL a factory's result gets: ``negative_ttl`` for ``None`` when it is set."""
    return negative_ttl if value is None and negative_ttl is not None else ttl


def _unwrap(value: Any) -> Any:
    """A local hit as ``get_or_set`` returns it: a cached "not found" is raised again."""
    if value.__class__ is CachedError:
        raise value.fresh_error()
    return value
