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

This module holds the per-key store and its invariants. The class's other halves are
private base classes: ``_loading`` (``get_or_set`` and freshness), ``_refreshing``
(background refreshes, ``close``) and ``_bulk`` (glob deletes, export/import,
sampling); ``_shard`` holds the item layout and each shard's SIEVE queue.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from itertools import count
from typing import Any

from cacheplug._bulk import _BulkMixin
from cacheplug._loading import _LoadingMixin
from cacheplug._refreshing import _RefreshMixin
from cacheplug._shard import (
    _EXPIRES,
    _GENS,
    _KEY,
    _META,
    _MISSING,
    _NO_GENS,
    _SLOT,
    _VALUE,
    _VERSION,
    _VISITED,
    _delete_record,
    _Gens,
    _Item,
    _public_expiry,
    _Shard,
    _tag_names,
    _touch_record,
)
from cacheplug.errors import ConfigurationError, UnhashableKeyError
from cacheplug.freshness import Backoff, Refresher, RefreshExecutor
from cacheplug.singleflight import Flight
from cacheplug.stats import CacheStats

__all__ = ("NO_EXPIRY", "CacheListener", "Entry", "ShardedTTLCache")

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

#: ``journal(record)``, called with every ``set``, ``touch``, ``delete``,
#: ``invalidate_tags`` and ``clear`` as one tuple ``(event, key, value, expires_at, tags,
#: version)`` while the lock that ordered the write is held: the order of its calls is
#: the order the writes were applied in, which the listener's, called after the lock,
#: is not. A ``touch`` carries no value. It must be quick and must not touch the cache
#: (the runtime passes ``list.extend`` of its write-ahead-log buffer and the Redis
#: tier's ``record``). See :meth:`ShardedTTLCache.set_journal`.
Journal = Callable[[tuple[Any, ...]], object]


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


class ShardedTTLCache(_LoadingMixin, _RefreshMixin, _BulkMixin, MutableMapping[Hashable, Any]):
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
        self._data: dict[Hashable, _Item] = {}
        self._shards = [_Shard(base + (i < extra), self._data) for i in range(shards)]
        self._mask = shards - 1
        self._maxsize = maxsize
        self._ttl = math.inf if ttl is None else float(ttl)
        self._timer = timer
        self._listener = listener
        self._journal: Journal | None = None
        self._refresher = Refresher(refresh_executor)
        self._rng = rng if rng is not None else random.random
        self._backoff = retry_backoff if retry_backoff is not None else Backoff()
        if not callable(self._rng) or not isinstance(self._backoff, Backoff):
            raise ConfigurationError("rng must be callable and retry_backoff a Backoff")
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

    def set_journal(self, journal: Journal | None) -> None:
        """Install (or remove, with None) the write journal (see :data:`Journal`).

        Used by the runtime: its write-ahead log and its Redis tier must see one key's
        writes in the order they were applied.
        """
        self._journal = journal

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
            journal = self._journal
            if journal is not None:
                if item is not None and (not gens or self._tags_current(gens)):
                    journal(("set", key, value, expires_at, tags, item[_VERSION]))
                elif item is not None or removed is not None:
                    # A delete (ttl <= 0), or a tag invalidated since gens were read: the
                    # entry is dead here and must not come back in the log or elsewhere.
                    journal(_delete_record(key))
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
            if self._journal is not None:
                self._journal(
                    _touch_record(item, expires_at) if expires_at > now else _delete_record(key)
                )
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
                # _Shard.drop, inlined for the hot path
                shard.queue[item[_SLOT]] = None
                shard.holes += 1
                shard.size -= 1
                shard.deletes += 1
                if shard.holes > 32 and shard.holes > shard.size:
                    shard.maybe_compact()
                if self._journal is not None:
                    self._journal(_delete_record(key))
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
        """Make every entry carrying any of ``tags`` read as a miss, in O(len(tags) + shards).

        Nothing is scanned: each tag's generation goes up, and entries stored under an
        older generation are dead from now on. :meth:`expire` frees their memory.
        """
        if not tags:
            return
        # Every shard lock, as clear() takes them: a write storing a tagged entry now
        # sees the new generations before or after this, never between, so the journal
        # records it on the side of the invalidation it was applied on.
        with self._every_shard_locked(), self._tag_lock:
            gens = self._tag_gens
            for tag in tags:
                gens[tag] = gens.get(tag, 0) + 1
            if self._journal is not None:
                self._journal(("invalidate_tags", None, None, None, tags, 0))
        if self._listener is not None:
            self._listener("invalidate_tags", None, None, 0, None, tags)

    def clear(self) -> None:
        """Remove every entry. Loads running now return their values but store nothing."""
        with self._every_shard_locked():
            self._data.clear()
            for shard in self._shards:
                shard.queue = []
                shard.hand = shard.size = shard.holes = 0
                for flight in shard.flights.values():
                    flight.stale = True
            if self._journal is not None:
                self._journal(("clear", None, None, None, (), 0))
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
                        shard.drop(item)
                        shard.expirations += 1
                        removed.append(item)
                shard.maybe_compact()
        for item in removed:
            self._notify("expire", item)
        return len(removed)

    # -- freshness invariants of the store -------------------------------------------------

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

    @contextlib.contextmanager
    def _every_shard_locked(self) -> Iterator[None]:
        """Hold every shard lock, taken in shard order (the one order: no deadlock)."""
        for shard in self._shards:
            shard.lock.acquire()
        try:
            yield
        finally:
            for shard in reversed(self._shards):
                shard.lock.release()

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
                evicted = shard.evict(now, self._alive)
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

    def _unlink_locked(self, shard: _Shard, key: Hashable) -> _Item | None:
        """Remove ``key`` if stored (live or not) and mark its in-flight load stale."""
        if shard.flights:
            flight = shard.flights.get(key)
            if flight is not None:
                flight.stale = True
        item = self._data.get(key)
        if item is None:
            return None
        shard.drop(item)
        shard.deletes += 1
        shard.maybe_compact()
        return item

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
            shard.drop(item)
            shard.expirations += 1
            shard.maybe_compact()
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
