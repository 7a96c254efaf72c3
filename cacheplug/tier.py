"""``RedisTier``: keep the in-process caches of many processes coherent through Redis.

A local hit never touches Redis. What the tier adds (see ``docs/redis.md``):

* **Invalidation broadcast.** Every local set (an overwrite makes other copies stale),
  delete, tag invalidation and clear is published, batched by the deferred worker, on
  the namespace's channel, signed and tagged with this process's origin id. Every
  process runs one subscriber thread that drops its local copies and ignores its own
  messages. Evictions and expirations are local decisions and are never published.
* **Shared L2.** A local miss reads Redis in one round trip (one script call for
  ``get_many``) and fills the local tier with the remaining TTL. Writes reach Redis on
  the worker (write-behind, the default) or inside the call (``write_through=True``).
* **No stale fills.** A fill is stored locally only if no invalidation or local write of
  that key happened while it was in flight; ``get_or_set`` stores in Redis only under a
  lease that every write and delete revokes (see ``_tier_scripts``).
* **Faults.** Every call is bounded by the socket timeout; failures feed a circuit
  breaker; while it is open the tier is skipped and the app serves from the local tier.
  When Redis answers again the local tier is flushed (invalidations were missed) and
  the writes dropped meanwhile are replayed as deletes.

Thread-safe. Nothing in a request path raises a Redis error.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

from cacheplug._tier_breaker import CircuitBreaker
from cacheplug._tier_codec import TamperedValueError, TierCodec
from cacheplug._tier_redis import NONE as _NONE
from cacheplug._tier_redis import RedisLink, TierStats
from cacheplug.cache import ShardedTTLCache
from cacheplug.freshness import CachedError, ExceptionTypes

__all__ = ("RedisTier", "TierStats")

logger = logging.getLogger("cacheplug.tier")

T = TypeVar("T")
_MISSING: Any = object()
_STRIPES = 256  # fill guards: one epoch per stripe of keys, one for tags/clear/patterns
_MAX_MISSED = 10_000  # keys remembered while Redis is down; beyond that, flush the namespace
#: per-key ops; "drop" is a delete everywhere but here (a local CachedError was stored)
_KEY_OPS = frozenset(("set", "del", "touch", "drop"))

# Context-local, so a flag set in one thread or asyncio task never affects another.
#: set while applying a remote invalidation or a fill: the listener must not publish it
_remote: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cacheplug_tier_remote", default=False
)
#: set while reading the local tier only (get_many, inside get_or_set)
_local_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cacheplug_tier_local_only", default=False
)


class RedisTier:
    """The Redis tier of one :class:`~cacheplug.CachePlug`; built by the runtime.

    :param cache: the local tier; the tier installs its miss hook on it.
    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL.
    :param secret: signs every value and message (HMAC-SHA256).
    :param prefix: the namespace; apps sharing one Redis use distinct prefixes.
    :param submit: runs a callable later (the deferred worker's ``submit``).
    :param write_through: write to Redis inside the call instead of on the worker.
    :param socket_timeout: seconds any Redis call may take (connect and read).
    :param breaker_threshold: consecutive failures that open the breaker.
    :param breaker_reset: seconds before an open breaker lets a probe through.
    :param lock_ttl: seconds a ``get_or_set`` lease lasts; a crashed holder blocks
        others at most this long.
    :param cluster: use redis-py's cluster client.
    :param name: label for the subscriber thread and logs.
    """

    def __init__(
        self,
        cache: ShardedTTLCache,
        *,
        url: str,
        secret: str | bytes,
        prefix: str,
        submit: Callable[[Callable[[], object]], None],
        write_through: bool = False,
        socket_timeout: float = 0.25,
        breaker_threshold: int = 3,
        breaker_reset: float = 2.0,
        lock_ttl: float = 30.0,
        cluster: bool = False,
        name: str = "default",
    ) -> None:
        self.cache = cache
        self.codec = TierCodec(secret, prefix)
        self.write_through = write_through
        self.lock_ttl = lock_ttl
        self.name = name
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.breaker = CircuitBreaker(
            breaker_threshold,
            breaker_reset,
            on_recover=self._on_recover,
            on_open=self._on_open,
            name=name,
        )
        self._lost_mark = -1  # subscriber.lost when the breaker opened (-1: unknown)
        self.link = RedisLink(
            url,
            self.codec,
            socket_timeout=socket_timeout,
            cluster=cluster,
            breaker=self.breaker,
            name=name,
            on_message=self._on_message,
            on_resubscribe=self._flush_local,
        )
        self._submit = submit
        self._buffer: list[tuple[Any, ...]] = []
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.RLock()  # one batch at a time, in order
        self._pending: dict[Hashable, int] = {}  # keys with writes not yet in Redis
        self._pending_global = 0  # tags/clear/patterns not yet in Redis
        self._epochs = [0] * (_STRIPES + 1)
        self._missed_keys: set[Hashable] = set()
        self._missed_tags: set[Hashable] = set()
        self._missed_all = False
        self.stats_counters = TierStats()
        self._hook = _MissHook(self)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect, start the subscriber thread and install the miss hook.

        Never raises for an unreachable Redis: the breaker opens and the tier recovers
        by itself when Redis answers.
        """
        self.link.start()
        self.cache._on_miss = self._hook

    def close(self) -> None:
        """Write what is buffered, stop the subscriber thread, close every connection."""
        self.cache._on_miss = None
        self.flush()
        self.link.close()

    def stats(self) -> TierStats:
        """A snapshot of the tier's counters (see :class:`TierStats`)."""
        return self.stats_counters.snapshot(self.breaker, self.link)

    # -- the cache listener: local writes -----------------------------------------------

    def on_cache_event(
        self,
        event: str,
        key: Any,
        value: Any,
        version: int,
        expires_at: float | None,
        tags: tuple[Hashable, ...],
    ) -> None:
        """Queue a local write for Redis and for the other processes. Cheap; never raises."""
        if event == "evict" or event == "expire" or _remote.get():
            return  # local decisions, or a change that came from Redis
        if event == "set":
            if value.__class__ is CachedError:
                # A negatively cached exception stays in this process (it is a pickled
                # exception, and "not found" may differ per caller); the others only
                # drop what they hold for the key.
                op: tuple[Any, ...] = ("drop", key)
            else:
                op = ("set", key, value, expires_at, tags)
        elif event == "delete":
            op = ("del", key)
        elif event == "touch":
            op = ("touch", key, expires_at)
        elif event == "invalidate_tags":
            op = ("tags", tags)
        elif event == "clear":
            op = ("clear",)
        else:
            return
        self.enqueue(op)

    def delete_matching(self, pattern: str) -> None:
        """Delete every str key matching the glob ``pattern`` in Redis and in every process."""
        self.enqueue(("match", pattern))

    def enqueue(self, op: tuple[Any, ...]) -> None:
        """Register ``op`` as pending (fills must not race it) and send it."""
        with self._buffer_lock:
            if op[0] in _KEY_OPS:
                key = op[1]
                self._pending[key] = self._pending.get(key, 0) + 1
                self._bump(key)
            else:
                self._pending_global += 1
                self._bump(None)
            self._buffer.append(op)
            first = len(self._buffer) == 1
        if self.write_through:
            self.flush()
        elif first:
            self._submit(self.flush)

    def flush(self) -> None:
        """Send everything buffered to Redis in one pipeline; runs on the worker."""
        with self._flush_lock:
            with self._buffer_lock:
                ops, self._buffer = self._buffer, []
            if not ops:
                return
            try:
                if self.breaker.allow():
                    sent = self.link.send(ops, self.origin, self.cache.timer(), self.stats_counters)
                else:
                    sent = False
                if not sent:
                    self._remember_missed(ops)
            finally:
                self._settle(ops)

    def _settle(self, ops: list[tuple[Any, ...]]) -> None:
        """The ops are in Redis (or given up): drop local fills that raced them."""
        redelete = []
        with self._buffer_lock:
            for op in ops:
                if op[0] in _KEY_OPS:
                    key = op[1]
                    left = self._pending.get(key, 1) - 1
                    if left:
                        self._pending[key] = left
                    else:
                        self._pending.pop(key, None)
                        if op[0] == "del":
                            redelete.append(key)
                    self._bump(key)
                else:
                    self._pending_global -= 1
                    self._bump(None)
        if redelete:
            # A fill that read Redis before this delete reached it may have stored the
            # old value here, and our own broadcast never comes back to us.
            token = _remote.set(True)
            try:
                for key in redelete:
                    self.cache.delete(key)
            finally:
                _remote.reset(token)

    def _remember_missed(self, ops: list[tuple[Any, ...]]) -> None:
        stats = self.stats_counters
        stats.dropped += len(ops)
        for op in ops:
            if op[0] in _KEY_OPS:
                self._missed_keys.add(op[1])
            elif op[0] == "tags":
                self._missed_tags.update(op[1])
            else:
                self._missed_all = True
        if len(self._missed_keys) > _MAX_MISSED:
            self._missed_all = True
            self._missed_keys.clear()

    # -- recovery -----------------------------------------------------------------------

    def _on_open(self) -> None:
        sub = self.link.subscriber
        self._lost_mark = sub.lost if sub is not None and sub.subscribed else -1

    def _on_recover(self) -> None:
        """The breaker closed: Redis missed our writes, and our copies may be stale.

        The copies are stale only if invalidations were missed, that is if the
        subscriber lost its connection. When it stayed subscribed through the whole
        outage (Redis was slow, not gone: commands timed out under load), every
        invalidation was applied and flushing would only cause a stampede. A loss the
        subscriber has not noticed yet ends in a re-subscription, which flushes then.
        """
        self.stats_counters.recoveries += 1
        sub = self.link.subscriber
        if sub is None or not sub.subscribed or sub.lost != self._lost_mark:
            self._flush_local()
        self._submit(self._replay_missed)

    def _replay_missed(self) -> None:
        keys, self._missed_keys = self._missed_keys, set()
        tags, self._missed_tags = self._missed_tags, set()
        flush_all, self._missed_all = self._missed_all, False
        ops: list[tuple[Any, ...]] = [("clear",)] if flush_all else []
        ops += [("del", key) for key in keys]  # never re-send a value: it may be old
        if tags:
            ops.append(("tags", tuple(tags)))
        for op in ops:
            self.enqueue(op)

    def _flush_local(self) -> None:
        """Drop every local copy without publishing it (invalidations were missed)."""
        self.stats_counters.local_flushes += 1
        self._bump(None)
        token = _remote.set(True)
        try:
            self.cache.clear()
        finally:
            _remote.reset(token)

    # -- remote invalidations -----------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        stats = self.stats_counters
        try:
            origin, ops = self.codec.load_message(data)
        except TamperedValueError:
            stats.rejected += 1
            return
        if origin == self.origin:
            return
        stats.applied += 1
        token = _remote.set(True)
        try:
            for op in ops:
                kind = op[0]
                if kind == "del":
                    self._bump(op[1])  # before the delete: see _fill
                    self.cache.delete(op[1])
                elif kind == "tags":
                    self._bump(None)
                    self.cache.invalidate_tags(*op[1])
                elif kind == "match":
                    self._bump(None)
                    self.cache.delete_matching(op[1])
                elif kind == "clear":
                    self._bump(None)
                    self.cache.clear()
        finally:
            _remote.reset(token)
        stats.last_applied_ns = time.perf_counter_ns()

    # -- L2 reads -----------------------------------------------------------------------

    def _unsent(self, key: Hashable) -> bool:
        """Whether a local write, delete, tag or clear that covers ``key`` is not in Redis yet.

        Redis still holds what it replaces, so reading it would undo, in this very
        process, a delete that already returned (the next get must miss).
        """
        return bool(self._pending_global) or key in self._pending

    def _bump(self, key: Hashable | None) -> None:
        index = _STRIPES if key is None else hash(key) % _STRIPES
        self._epochs[index] += 1

    def _guard(self, key: Hashable) -> tuple[int, int]:
        return self._epochs[hash(key) % _STRIPES], self._epochs[_STRIPES]

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

    def __repr__(self) -> str:
        return f"<RedisTier {self.codec.prefix!r} breaker={self.breaker.state}>"


def _ttl_for(value: Any, ttl: float | None, negative_ttl: float | None) -> float | None:
    """The TTL a factory's result gets: ``negative_ttl`` for ``None`` when it is set."""
    return negative_ttl if value is None and negative_ttl is not None else ttl


def _unwrap(value: Any) -> Any:
    """A local hit as ``get_or_set`` returns it: a cached "not found" is raised again."""
    if value.__class__ is CachedError:
        raise value.fresh_error()
    return value


class _context:
    """Set a ContextVar for a ``with`` block (sync and async code alike)."""

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[bool], value: bool) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc_info: object) -> None:
        self._var.reset(self._token)


class _MissHook:
    """What ``ShardedTTLCache`` calls on a local miss (``cache._on_miss``)."""

    __slots__ = ("get_many", "tier")

    def __init__(self, tier: RedisTier) -> None:
        self.tier = tier
        self.get_many = tier.get_many

    def deleted(self, key: Hashable) -> None:
        """A delete of a key this process does not hold: still delete it everywhere.

        The cache calls no listener for a key it did not hold, so the tier hears it here.
        """
        if not _remote.get():
            self.tier.enqueue(("del", key))

    def __call__(self, key: Hashable, default: Any) -> Any:
        try:
            return self.tier.read(key, default)
        except TypeError:  # a key that cannot be named in Redis is simply not shared
            return default
