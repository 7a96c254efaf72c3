"""``ShardedTTLCache``: a thread-safe, bounded, in-process cache with per-entry expiry.

How it is built, and why:

* **One index, many shards.** Every live entry sits in one ``dict`` (the index), so a
  read is a single ``dict.get``: atomic in CPython, including the free-threaded build,
  and it needs neither a lock nor shard arithmetic. Writes take the lock of the key's
  shard (``hash(key) & (shards - 1)``), which also owns that shard's eviction queue,
  its size bound and its in-flight loads.
* **SIEVE eviction** ("SIEVE is Simpler than LRU", NSDI 2024). A hit only sets a
  ``visited`` flag, with no reordering and no lock. When a shard is full, a hand sweeps
  its queue from oldest to newest: it clears visited flags and evicts the first
  unvisited entry. SIEVE's hit ratio matches or beats LRU's on web workloads. Each shard
  evicts on its own, so the global order is approximate, as in every sharded cache.
* **Expiry** is checked against the injected monotonic ``timer`` on every read. An
  expired entry is never returned. It is removed lazily by the read that finds it, by
  eviction, or by :meth:`ShardedTTLCache.expire`.
* **Tags** use generations. ``invalidate_tags`` bumps a counter per tag in O(1), and an
  entry whose stored generation is older reads as a miss. ``expire()`` removes such
  entries physically.
* **Versions** come from one process-wide counter, so an entry's version grows on
  every write and :meth:`ShardedTTLCache.set` can compare-and-set with ``if_version``.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import logging
import math
import random
import re
import threading
import time
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
)
from dataclasses import dataclass
from itertools import count
from typing import Any, TypeVar

from cacheplug.errors import ConfigurationError, UnhashableKeyError
from cacheplug.freshness import (
    Backoff,
    CachedError,
    EntryMeta,
    ExceptionTypes,
    FreshnessPolicy,
    FreshnessStats,
    Refresher,
    RefreshExecutor,
    make_policy,
    xfetch_due,
)
from cacheplug.singleflight import Flight
from cacheplug.stats import CacheStats

__all__ = ("NO_EXPIRY", "CacheListener", "Entry", "ShardedTTLCache")

T = TypeVar("T")

logger = logging.getLogger("cacheplug.cache")

#: Pass as ``ttl`` to store an entry that never expires.
NO_EXPIRY: float = math.inf

MAX_SHARDS = 1024

#: ``listener(event, key, value, version, expires_at, tags)``, called after a write,
#: outside every lock, in the writing thread; the runtime uses it to feed the event bus
#: and the write-ahead log. ``event`` is one of ``"set"``, ``"touch"``, ``"evict"``,
#: ``"expire"`` (every field filled; ``expires_at`` in timer units, None for never),
#: ``"delete"`` (only ``key``), ``"invalidate_tags"`` (only ``tags``) and ``"clear"``
#: (nothing). Fields not filled are None, 0 or ().
CacheListener = Callable[[str, Any, Any, int, "float | None", "tuple[Hashable, ...]"], None]

_MISSING: Any = object()
_SAME: Any = object()  # _finish_flight: store the leader's value
_NO_GENS: tuple[tuple[Hashable, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """A read-only copy of one stored entry, as :meth:`ShardedTTLCache.get_entry` returns.

    ``expires_at`` is in the cache's ``timer`` units; None for an entry that never
    expires.
    """

    key: Hashable
    value: Any
    version: int
    expires_at: float | None
    tags: tuple[Hashable, ...]


# An item is a small list, not a class instance: creating a list is ~5x cheaper than
# running a __slots__ class's __init__, reads cost the same, and set-new pays for every
# allocation. These names index it; nothing outside this module sees an item.
_VALUE, _EXPIRES, _GENS, _VISITED, _VERSION, _SLOT, _KEY = range(7)
# Freshness metadata (EntryMeta) of entries stored by get_or_set with freshness options;
# None otherwise. A plain write resets it.
_META = 7
_Item = list  # [value, expires_at, gens, visited, version, slot, key, meta]
_Gens = tuple[tuple[Hashable, int], ...]


def _tag_names(gens: _Gens) -> tuple[Hashable, ...]:
    """The tags of an item, without the generations they were stored under."""
    return tuple(tag for tag, _ in gens)


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


def _public_expiry(expires_at: float) -> float | None:
    """An item's expiry as the public API gives it: None instead of infinity."""
    return None if expires_at == math.inf else expires_at


class _Shard:
    """A write lock, a SIEVE queue and counters for one slice of the key space.

    The queue is a list, oldest first, with ``None`` holes where entries left. It is
    compacted when holes outnumber live entries, so removal stays O(1) amortized.
    """

    __slots__ = (
        "capacity",
        "deletes",
        "evictions",
        "expirations",
        "flights",
        "hand",
        "holes",
        "lock",
        "queue",
        "sets",
        "size",
    )

    def __init__(self, capacity: int) -> None:
        self.lock = threading.Lock()
        self.capacity = capacity
        self.queue: list[_Item | None] = []
        self.hand = 0
        self.size = 0
        self.holes = 0
        self.flights: dict[Hashable, Flight] = {}
        self.sets = self.deletes = self.evictions = self.expirations = 0


class ShardedTTLCache(MutableMapping[Hashable, Any]):
    """A thread-safe, sharded, bounded cache with per-entry expiry and tags.

    Reads take no lock; writes lock one shard. It is a ``MutableMapping`` that
    ``cachetools.cached(cache=...)`` accepts (``cache[key]`` raises ``KeyError`` on a
    miss).

    Expiry, for ``ttl`` arguments and the constructor's default:

    * ``ttl=None`` in a call means the cache's default ``ttl``. A default of None means
      entries never expire.
    * A positive number of seconds (in ``timer`` units) sets the entry to expire then.
    * ``ttl=NO_EXPIRY`` (``math.inf``) stores an entry that never expires. It leaves
      only by delete, eviction, tag invalidation or clear.
    * ``ttl=0`` or a negative ``ttl`` means "already expired": ``set`` stores nothing
      and removes any existing entry, as Django does for a timeout of 0.

    :param maxsize: the most entries held at once, 1 to 2**31. It is split evenly
        across the shards, and each shard evicts on its own when full.
    :param ttl: the default time to live in seconds, or None for no expiry.
    :param shards: the number of shards, a power of two from 1 to 1024. It is lowered
        to the largest power of two not above ``maxsize``, so that no shard is empty.
    :param timer: a monotonic clock returning seconds. Inject a fake one in tests.
    :param refresh_executor: runs background refreshes of sync factories (see
        ``docs/freshness.md``); the runtime passes its deferred worker. Without one the
        cache starts a small pool of its own on first need; :meth:`close` stops it.
    :param rng: ``random()``-like source in [0, 1) for early refresh and backoff
        jitter; inject a seeded one in tests.
    :param retry_backoff: the :class:`~cacheplug.freshness.Backoff` between retries
        of a failing refresh under ``stale_if_error``.
    :param listener: called after every write, outside every lock (see
        :data:`CacheListener`).
    :raises ConfigurationError: (a ``ValueError``) for an option out of range.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        maxsize: int = 100_000,
        ttl: float | None = 300.0,
        shards: int = 16,
        timer: Callable[[], float] = time.monotonic,
        listener: CacheListener | None = None,
        *,
        refresh_executor: RefreshExecutor | None = None,
        rng: Callable[[], float] | None = None,
        retry_backoff: Backoff | None = None,
    ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or not 1 <= maxsize <= 2**31:
            raise ConfigurationError(f"maxsize must be an int from 1 to 2**31, got {maxsize!r}")
        if (
            not isinstance(shards, int)
            or isinstance(shards, bool)
            or not 1 <= shards <= MAX_SHARDS
            or shards & (shards - 1)
        ):
            raise ConfigurationError(
                f"shards must be a power of two from 1 to {MAX_SHARDS}, got {shards!r}"
            )
        if ttl is not None and (not isinstance(ttl, int | float) or not ttl > 0):
            raise ConfigurationError(
                f"ttl must be a positive number of seconds or None (no expiry), got {ttl!r}"
            )
        if not callable(timer):
            raise ConfigurationError(f"timer must be a callable returning seconds, got {timer!r}")
        while shards > maxsize:
            shards //= 2
        base, extra = divmod(maxsize, shards)
        self._shards = [_Shard(base + (i < extra)) for i in range(shards)]
        self._mask = shards - 1
        self._maxsize = maxsize
        self._ttl = math.inf if ttl is None else float(ttl)
        self._timer = timer
        self._listener = listener
        self._refresher = Refresher(refresh_executor)
        self._rng = rng if rng is not None else random.random
        self._backoff = retry_backoff if retry_backoff is not None else Backoff()
        if not callable(self._rng) or not isinstance(self._backoff, Backoff):
            raise ConfigurationError("rng must be callable and retry_backoff a Backoff")
        self._data: dict[Hashable, _Item] = {}
        self._versions = count(1)
        self._tag_gens: dict[Hashable, int] = {}
        self._tag_lock = threading.Lock()
        # Glob patterns deleted with defer=True and not yet purged: (match, watermark).
        self._hidden: tuple[tuple[Callable[[str], Any], int], ...] = ()
        self._hits = 0
        self._misses = 0
        #: None, or the second tier's miss hook: ``hook(key, default)`` and
        #: ``hook.get_many(keys)``; installed by the runtime when ``redis_url`` is set.
        self._on_miss: Any = None

    # -- configuration ----------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The most entries the cache holds (cachetools' name)."""
        return self._maxsize

    @property
    def currsize(self) -> int:
        """Entries stored now, including expired ones not yet removed (cachetools' name)."""
        return len(self._data)

    @property
    def ttl(self) -> float | None:
        """The default time to live in seconds; None means no expiry."""
        return _public_expiry(self._ttl)

    @property
    def shard_count(self) -> int:
        """The number of shards in use."""
        return len(self._shards)

    @property
    def timer(self) -> Callable[[], float]:
        """The clock that expiry times are measured on."""
        return self._timer

    def set_listener(self, listener: CacheListener | None) -> None:
        """Install (or remove, with None) the write listener. Used by the runtime."""
        self._listener = listener

    # -- reads --------------------------------------------------------------------------

    def get(self, key: Hashable, default: Any = None) -> Any:
        """Return the live value for ``key``, or ``default`` on a miss.

        Takes no lock. An expired or tag-invalidated entry counts as a miss.

        :raises UnhashableKeyError: (a ``TypeError``) if ``key`` is not hashable.
        """
        try:
            item = self._data.get(key)
        except TypeError:
            raise UnhashableKeyError(key) from None
        if (
            item is not None
            and item[_EXPIRES] > self._timer()
            and (not item[_GENS] or self._tags_current(item[_GENS]))
        ):
            if not item[_VISITED]:  # a read, not a write, on the hot path: no dirty line
                item[_VISITED] = True
            self._hits += 1
            return item[_VALUE]
        self._misses += 1
        if item is not None:
            self._remove_dead(item)
        if self._on_miss is not None:  # a second tier (Redis) may have it
            return self._on_miss(key, default)
        return default

    def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        """Return a dict of the live values among ``keys``; misses are left out."""
        if self._on_miss is not None:  # local reads, then one round trip for the misses
            return self._on_miss.get_many(keys)
        found = {}
        for key in keys:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                found[key] = value
        return found

    def get_entry(self, key: Hashable) -> Entry | None:
        """Return a copy of the live entry for ``key`` (value, version, expiry, tags), or None.

        The copy is taken under the shard lock, so value and version belong together.
        Does not count as a hit or miss and does not mark the entry as recently used.
        """
        entry = self._read_entry(key)
        if (
            entry is None
            and self._on_miss is not None
            and self._on_miss(key, _MISSING) is not _MISSING
        ):
            entry = self._read_entry(key)  # filled from the second tier
        return entry

    def _read_entry(self, key: Hashable) -> Entry | None:
        shard = self._shard_for(key)
        with shard.lock:
            item = self._data.get(key)
            if item is None or not self._alive(item, self._timer()):
                return None
            return Entry(
                key,
                item[_VALUE],
                item[_VERSION],
                _public_expiry(item[_EXPIRES]),
                _tag_names(item[_GENS]),
            )

    def __contains__(self, key: object) -> bool:
        """True if ``key`` has a live entry. Touches no counter."""
        try:
            item = self._data.get(key)  # type: ignore[call-overload]
        except TypeError:
            raise UnhashableKeyError(key) from None
        return item is not None and self._alive(item, self._timer())

    def holds(self, key: Hashable) -> bool:
        """True if an entry for ``key`` is still stored, live or expired-but-not-removed.

        Adapters that mirror a backend whose ``delete`` reports expired entries as
        deleted (Django's LocMemCache, cachelib's SimpleCache) need this; every read
        treats an expired entry as absent. Lock-free, touches no counter.
        """
        try:
            return key in self._data
        except TypeError:
            raise UnhashableKeyError(key) from None

    def __getitem__(self, key: Hashable) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __len__(self) -> int:
        """Entries stored now. Expired entries not yet removed are counted until
        a read, an eviction or :meth:`expire` removes them."""
        return len(self._data)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.keys())

    def items(self) -> list[tuple[Hashable, Any]]:  # type: ignore[override]
        """Return a snapshot list of live ``(key, value)`` pairs.

        The list is a copy taken at one instant (one atomic ``dict.copy``), so it is
        safe to iterate while other threads write, and to delete keys while looping.
        """
        now = self._timer()
        alive = self._alive
        return [(key, item[_VALUE]) for key, item in self._data.copy().items() if alive(item, now)]

    def keys(self) -> list[Hashable]:  # type: ignore[override]
        """Return a snapshot list of live keys (see :meth:`items`)."""
        return [key for key, _ in self.items()]

    def values(self) -> list[Any]:  # type: ignore[override]
        """Return a snapshot list of live values (see :meth:`items`)."""
        return [value for _, value in self.items()]

    # -- writes -------------------------------------------------------------------------

    def set(
        self,
        key: Hashable,
        value: Any,
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        *,
        if_version: int | None = None,
    ) -> bool:
        """Store ``value`` under ``key`` and return True; with ``if_version``, only if it matches.

        :param ttl: seconds to live. See the class docstring for None, 0 and NO_EXPIRY.
        :param tags: hashable tags (usually str) for :meth:`invalidate_tags`.
        :param if_version: compare-and-set. Store only if the live entry's version
            equals this number, or, with ``0``, only if there is no live entry.
            Return False otherwise.
        :raises UnhashableKeyError: if ``key`` is not hashable.
        :raises TypeError: if ``ttl`` is not a number.
        """
        now = self._timer()
        expires_at = now + self._ttl if ttl is None else self._expiry(ttl, now)
        try:
            shard = self._shards[hash(key) & self._mask]
        except TypeError:
            raise UnhashableKeyError(key) from None
        if tags.__class__ is not tuple:  # once: a generator would be used up by _gens_for
            tags = tuple(tags)
        gens = self._gens_for(tags) if tags else _NO_GENS
        evicted = removed = None
        with shard.lock:
            if if_version is not None and self._version_locked(key, now) != if_version:
                return False
            item = self._data.get(key)
            if expires_at <= now:
                if item is not None or shard.flights:
                    removed = self._unlink_locked(shard, key)
                item = None
            elif item is not None and not shard.flights:
                # The hot overwrite path, inlined: update in place, keep the queue slot.
                item[_EXPIRES] = expires_at
                item[_GENS] = gens
                item[_VERSION] = next(self._versions)
                item[_VALUE] = value
                item[_META] = None
                shard.sets += 1
            else:
                item, evicted = self._store_locked(shard, key, value, expires_at, gens, now, None)
        listener = self._listener
        if listener is not None:
            if evicted is not None:
                self._notify("evict", evicted)
            if item is not None:
                listener("set", key, value, item[_VERSION], expires_at, tags)
            elif removed is not None:
                listener("delete", key, None, 0, None, ())
        return True

    def set_many(self, mapping: Mapping[Hashable, Any], ttl: float | None = None) -> None:
        """Store every pair of ``mapping`` with the same ``ttl``."""
        for key, value in mapping.items():
            self.set(key, value, ttl)

    def touch(self, key: Hashable, ttl: float | None = None) -> bool:
        """Give a live entry a new expiry; return False if there is no live entry.

        The entry keeps its value and version. A ``ttl`` of 0 or less expires it now.
        """
        now = self._timer()
        expires_at = now + self._ttl if ttl is None else self._expiry(ttl, now)
        shard = self._shard_for(key)
        with shard.lock:
            item = self._data.get(key)
            if item is None or not self._alive(item, now):
                return False
            if expires_at > now:
                item[_EXPIRES] = expires_at  # one store: readers see the old or the new
            else:
                self._unlink_locked(shard, key)
        if self._listener is not None:
            if expires_at > now:
                self._notify("touch", item)
            else:
                self._listener("delete", key, None, 0, None, ())
        return True

    def delete(self, key: Hashable) -> bool:
        """Remove ``key`` now; return True if a live entry was removed.

        The next ``get`` in this process misses. A ``get_or_set`` for the key that is
        running now will still return its value to its callers, but will not store it.

        :raises UnhashableKeyError: if ``key`` is not hashable.
        """
        try:
            shard = self._shards[hash(key) & self._mask]
        except TypeError:
            raise UnhashableKeyError(key) from None
        with shard.lock:
            if shard.flights:
                flight = shard.flights.get(key)
                if flight is not None:
                    flight.stale = True  # a load running now must not store its value
            item = self._data.pop(key, None)
            if item is not None:
                # _drop_locked, inlined for the hot path
                shard.queue[item[_SLOT]] = None
                shard.holes += 1
                shard.size -= 1
                shard.deletes += 1
                if shard.holes > 32 and shard.holes > shard.size:
                    self._maybe_compact_locked(shard)
        if item is None:
            if self._on_miss is not None:  # other processes and Redis may still hold it
                self._on_miss.deleted(key)
            return False
        if self._listener is not None:
            self._listener("delete", key, None, 0, None, ())
        return self._alive(item, self._timer())

    def delete_many(self, keys: Iterable[Hashable]) -> int:
        """Remove every key in ``keys``; return how many live entries were removed."""
        return sum(self.delete(key) for key in keys)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Hashable) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def invalidate_tags(self, *tags: Hashable) -> None:
        """Make every entry carrying any of ``tags`` read as a miss, in O(len(tags)).

        Nothing is scanned: each tag's generation goes up, and entries stored under an
        older generation are dead from now on. :meth:`expire` frees their memory.
        """
        if not tags:
            return
        with self._tag_lock:
            gens = self._tag_gens
            for tag in tags:
                gens[tag] = gens.get(tag, 0) + 1
        if self._listener is not None:
            self._listener("invalidate_tags", None, None, 0, None, tags)

    def delete_matching(self, pattern: str, *, defer: bool = False) -> int:
        """Remove every ``str`` key matching the glob ``pattern`` (``fnmatch``, case-sensitive).

        Without ``defer``, scans now and returns how many live entries were removed.
        With ``defer=True``, returns 0 at once without scanning: entries written before
        the call read as misses from now on, entries written after it are unaffected,
        and :meth:`purge_hidden` (the runtime's worker calls it) removes them later.
        Until then, reads take a slightly slower path.
        """
        match = re.compile(fnmatch.translate(pattern)).match
        watermark = next(self._versions)  # every entry written so far has a lower version
        if not defer:
            return self._purge_matching(match, watermark)
        with self._tag_lock:
            self._hidden = (*self._hidden, (match, watermark))
            # An instance attribute shadows the class's get(), so reads pay for the
            # pattern check only while a deferred delete is pending.
            self.get = self._get_while_hiding  # type: ignore[method-assign]
        return 0

    def purge_hidden(self) -> int:
        """Remove the entries hidden by deferred :meth:`delete_matching` calls; return the count."""
        hidden = self._hidden
        removed = sum(self._purge_matching(match, watermark) for match, watermark in hidden)
        with self._tag_lock:
            self._hidden = tuple(h for h in self._hidden if h not in hidden)
            if not self._hidden:
                self.__dict__.pop("get", None)
        return removed

    def _purge_matching(self, match: Callable[[str], Any], watermark: int) -> int:
        removed = []
        for shard in self._shards:
            with shard.lock:
                for item in shard.queue:
                    if (
                        item is not None
                        and item[_VERSION] < watermark
                        and isinstance(item[_KEY], str)
                        and match(item[_KEY])
                    ):
                        self._drop_locked(shard, item)
                        shard.deletes += 1
                        removed.append(item[_KEY])
                self._maybe_compact_locked(shard)
        if self._listener is not None:
            for key in removed:
                self._listener("delete", key, None, 0, None, ())
        return len(removed)

    def export_entries(self) -> list[tuple[Hashable, Any, float, tuple[Hashable, ...], int]]:
        """Return ``(key, value, expires_at, tags, version)`` per live entry, oldest write first.

        For snapshots: ``expires_at`` is in timer units (``math.inf`` for never), and
        the order (by version, which grows with every write) restores recency on import.
        """
        now = self._timer()
        alive = self._alive
        rows = [
            (key, item[_VALUE], item[_EXPIRES], item[_GENS], item[_VERSION])
            for key, item in self._data.copy().items()
            if alive(item, now)
        ]
        rows.sort(key=lambda row: row[4])
        return [(k, v, exp, _tag_names(gens), ver) for k, v, exp, gens, ver in rows]

    def import_entries(
        self, rows: Iterable[tuple[Hashable, Any, float, tuple[Hashable, ...]]]
    ) -> int:
        """Store ``(key, value, expires_at, tags)`` rows in order, without notifying the listener.

        ``expires_at`` is in timer units. Dead rows are skipped. Later rows are newer,
        so importing an :meth:`export_entries` list restores the recency order. Returns
        how many rows were stored.
        """
        listener, self._listener = self._listener, None
        stored = 0
        try:
            for key, value, expires_at, tags in rows:
                now = self._timer()
                if expires_at > now:
                    gens = self._gens_for(tags) if tags else _NO_GENS
                    shard = self._shard_for(key)
                    with shard.lock:
                        self._store_locked(shard, key, value, expires_at, gens, now, None)
                    stored += 1
        finally:
            self._listener = listener
        return stored

    def clear(self) -> None:
        """Remove every entry. Loads running now return their values but store nothing."""
        for shard in self._shards:
            shard.lock.acquire()
        try:
            self._data.clear()
            for shard in self._shards:
                shard.queue = []
                shard.hand = shard.size = shard.holes = 0
                for flight in shard.flights.values():
                    flight.stale = True
        finally:
            for shard in reversed(self._shards):
                shard.lock.release()
        if self._listener is not None:
            self._listener("clear", None, None, 0, None, ())

    def expire(self) -> int:
        """Remove expired and tag-invalidated entries now; return how many were removed.

        Locks one shard at a time. The deferred worker's sweeper calls this periodically.
        """
        removed: list[_Item] = []
        for shard in self._shards:
            with shard.lock:
                now = self._timer()
                for item in shard.queue:
                    if (
                        item is not None
                        and not self._alive(item, now)
                        and not self._retained(item, now)
                    ):
                        self._drop_locked(shard, item)
                        shard.expirations += 1
                        removed.append(item)
                self._maybe_compact_locked(shard)
        for item in removed:
            self._notify("expire", item)
        return len(removed)

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
        flight.resolve(value, error, retry)
        if self._listener is not None:
            if evicted is not None:
                self._notify("evict", evicted)
            if item is not None:
                self._listener("set", key, stored, item[_VERSION], item[_EXPIRES], tags)

    # -- freshness: stale reads, background refreshes, failures ----------------------------

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

    def _usable(self, item: _Item) -> bool:
        """Not invalidated by tags or a deferred pattern delete (expiry not checked)."""
        return (not item[_GENS] or self._tags_current(item[_GENS])) and not (
            self._hidden and self._is_hidden(item)
        )

    def _retained(self, item: _Item, now: float) -> bool:
        """Whether an expired entry is still kept for stale reads (its meta's ``keep``)."""
        meta = item[_META]
        return (
            meta is not None
            and meta.keep > 0
            and item[_EXPIRES] + meta.keep > now
            and self._usable(item)
        )

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

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Return a snapshot of the counters (see :class:`CacheStats` for exactness)."""
        shards = self._shards
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            sets=sum(s.sets for s in shards),
            deletes=sum(s.deletes for s in shards),
            evictions=sum(s.evictions for s in shards),
            expirations=sum(s.expirations for s in shards),
            size=len(self._data),
            maxsize=self._maxsize,
        )

    def shard_sizes(self) -> list[int]:
        """Entries per shard, for dashboards and for judging the key distribution."""
        return [shard.size for shard in self._shards]

    def shard_evictions(self) -> list[int]:
        """Evictions per shard since creation (capacity evictions, not expirations)."""
        return [shard.evictions for shard in self._shards]

    def sample_keys(self, n: int, rng: random.Random | None = None) -> list[Hashable]:
        """Return up to ``n`` keys drawn at random (with replacement), without locking.

        The cost is O(n) whatever the cache's size: it picks random slots of the shard
        queues, weighted by shard size. A key may be expired but not yet removed.
        For dashboards that estimate the key mix; not an exact census.
        """
        pick = rng or random
        shards = [shard for shard in self._shards if shard.size]
        if n <= 0 or not shards:
            return []
        weights = [shard.size for shard in shards]
        rand = pick.random
        keys: list[Hashable] = []
        tries = 0
        # Holes never outnumber live entries for long (compaction), so 3n tries suffice.
        while len(keys) < n and tries < 3 * n:
            batch = pick.choices(shards, weights, k=n - len(keys))
            tries += len(batch)
            for shard in batch:
                queue = shard.queue  # a compaction swaps in a new list; this one stays valid
                if queue:
                    item = queue[int(rand() * len(queue))]
                    if item is not None:
                        keys.append(item[_KEY])
        return keys

    # A cache is a container with identity, not a value: compare and hash by identity
    # (Mapping would compare contents and make the cache unhashable).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(maxsize={self._maxsize}, ttl={self.ttl}, "
            f"shards={len(self._shards)}, size={len(self._data)})"
        )

    # -- internals ----------------------------------------------------------------------

    def _shard_for(self, key: Hashable) -> _Shard:
        try:
            return self._shards[hash(key) & self._mask]
        except TypeError:
            raise UnhashableKeyError(key) from None

    def _expiry(self, ttl: float, now: float) -> float:
        try:
            expires_at = now + ttl
        except TypeError:
            raise TypeError(f"ttl must be a number of seconds or None, got {ttl!r}") from None
        if expires_at != expires_at:  # NaN would silently mean "expired"
            raise ValueError("ttl must be a number of seconds or None, got nan")
        return expires_at

    def _gens_for(self, tags: Iterable[Hashable]) -> _Gens:
        gens = self._tag_gens
        return tuple((tag, gens.get(tag, 0)) for tag in tags)

    def _tags_current(self, item_gens: _Gens) -> bool:
        gens = self._tag_gens
        return all(gens.get(tag, 0) == gen for tag, gen in item_gens)

    def _alive(self, item: _Item, now: float) -> bool:
        return (
            item[_EXPIRES] > now
            and (not item[_GENS] or self._tags_current(item[_GENS]))
            and not (self._hidden and self._is_hidden(item))
        )

    def _is_hidden(self, item: _Item) -> bool:
        key = item[_KEY]
        return isinstance(key, str) and any(
            item[_VERSION] < watermark and match(key) for match, watermark in self._hidden
        )

    def _get_while_hiding(self, key: Hashable, default: Any = None) -> Any:
        """``get`` while a deferred ``delete_matching`` is pending: hidden keys miss."""
        try:
            item = self._data.get(key)
        except TypeError:
            raise UnhashableKeyError(key) from None
        if item is not None and self._hidden and self._is_hidden(item):
            self._misses += 1
            return default
        return ShardedTTLCache.get(self, key, default)

    def _version_locked(self, key: Hashable, now: float) -> int:
        item = self._data.get(key)
        return item[_VERSION] if item is not None and self._alive(item, now) else 0

    def _store_locked(
        self,
        shard: _Shard,
        key: Hashable,
        value: Any,
        expires_at: float,
        gens: _Gens,
        now: float,
        from_flight: Flight | None,
    ) -> tuple[_Item, _Item | None]:
        """Insert or overwrite ``key``; return the item and the item evicted, if any.

        An overwrite updates the item in place, keeping its queue slot and visited
        bit: a concurrent reader sees the old value or the new one.
        """
        version = next(self._versions)
        item = self._data.get(key)
        evicted = None
        if item is None:
            if shard.size >= shard.capacity:
                evicted = self._evict_locked(shard, now)
            queue = shard.queue
            item = [value, expires_at, gens, False, version, len(queue), key, None]
            queue.append(item)
            shard.size += 1
            self._data[key] = item
        else:
            item[_EXPIRES] = expires_at
            item[_GENS] = gens
            item[_VERSION] = version
            item[_VALUE] = value
            item[_META] = None
        shard.sets += 1
        if shard.flights:
            flight = shard.flights.get(key)
            if flight is not None and flight is not from_flight:
                flight.stale = True
        return item, evicted

    def _evict_locked(self, shard: _Shard, now: float) -> _Item:
        """Evict one entry by SIEVE, taking any dead entry the hand meets on its way."""
        queue = shard.queue
        hand = shard.hand
        end = len(queue)
        while True:
            if hand >= end:
                hand = 0
            item = queue[hand]
            if item is None:
                hand += 1
                continue
            alive = self._alive(item, now)
            if alive and item[_VISITED]:
                item[_VISITED] = False
                hand += 1
                continue
            self._drop_locked(shard, item)
            if alive:
                shard.evictions += 1
            else:
                shard.expirations += 1
            shard.hand = hand + 1
            self._maybe_compact_locked(shard)
            return item

    def _unlink_locked(self, shard: _Shard, key: Hashable) -> _Item | None:
        """Remove ``key`` if stored (live or not) and mark its in-flight load stale."""
        if shard.flights:
            flight = shard.flights.get(key)
            if flight is not None:
                flight.stale = True
        item = self._data.get(key)
        if item is None:
            return None
        self._drop_locked(shard, item)
        shard.deletes += 1
        self._maybe_compact_locked(shard)
        return item

    def _drop_locked(self, shard: _Shard, item: _Item) -> None:
        del self._data[item[_KEY]]
        shard.queue[item[_SLOT]] = None
        shard.holes += 1
        shard.size -= 1

    def _maybe_compact_locked(self, shard: _Shard) -> None:
        """Squeeze the holes out of the queue once they outnumber the live entries."""
        if shard.holes <= 32 or shard.holes <= shard.size:
            return
        queue, hand = shard.queue, shard.hand
        live = [item for item in queue if item is not None]
        shard.hand = sum(1 for item in queue[:hand] if item is not None)
        for slot, item in enumerate(live):
            item[_SLOT] = slot
        shard.queue = live
        shard.holes = 0

    def _remove_dead(self, item: _Item) -> None:
        """Lazily remove an entry that a read found expired or invalidated."""
        if item[_META] is not None and self._retained(item, self._timer()):
            return  # kept for stale reads; checked first so that those take no lock
        key = item[_KEY]
        shard = self._shard_for(key)
        with shard.lock:
            # Re-check under the lock: a writer may have replaced or revived it.
            now = self._timer()
            if self._data.get(key) is not item or self._alive(item, now):
                return
            if item[_META] is not None and self._retained(item, now):  # kept for stale reads
                return
            self._drop_locked(shard, item)
            shard.expirations += 1
            self._maybe_compact_locked(shard)
        self._notify("expire", item)

    def _notify(self, event: str, item: _Item) -> None:
        listener = self._listener
        if listener is not None:
            listener(
                event,
                item[_KEY],
                item[_VALUE],
                item[_VERSION],
                _public_expiry(item[_EXPIRES]),
                _tag_names(item[_GENS]),
            )
