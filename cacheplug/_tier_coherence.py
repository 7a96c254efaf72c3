"""The Redis tier's coherence: local writes out to Redis, remote invalidations in.

:class:`TierCoherence` is the part of :class:`~cacheplug.tier.RedisTier` that turns
each local write into an op, batches the ops to Redis on the worker (or inline with
``write_through``), remembers what an open breaker dropped and replays it as deletes on
recovery, and applies the other processes' invalidations. It also keeps the epochs and
pending counts that let a read from Redis (``_tier_reads``) tell whether a write raced it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from cacheplug import _tier_flags
from cacheplug._tier_breaker import CircuitBreaker
from cacheplug._tier_codec import TamperedValueError, TierCodec
from cacheplug._tier_redis import RedisLink, TierStats
from cacheplug.cache import ShardedTTLCache
from cacheplug.freshness import CachedError

__all__ = ("TierCoherence",)

# Bound by assignment, not by import: CPython compiles ``name.get()`` on an imported name
# as an attribute load (a new bound method per call) instead of a method call.
_remote = _tier_flags.remote

_STRIPES = 256  # fill guards: one epoch per stripe of keys, one for tags/clear/patterns
_MAX_MISSED = 10_000  # keys remembered while Redis is down; beyond that, flush the namespace
#: per-key ops; "drop" is a delete everywhere but here (a local CachedError was stored)
_KEY_OPS = frozenset(("set", "del", "touch", "drop"))


class TierCoherence:
    """Send local writes to Redis and the other processes; apply theirs here.

    A mixin of :class:`~cacheplug.tier.RedisTier`, which sets the attributes annotated
    below and calls :meth:`_init_coherence` before using it.
    """

    cache: ShardedTTLCache
    codec: TierCodec
    origin: str
    write_through: bool
    breaker: CircuitBreaker
    link: RedisLink
    stats_counters: TierStats

    def _init_coherence(self, submit: Callable[[Callable[[], object]], None]) -> None:
        self._lost_mark = -1  # subscriber.lost when the breaker opened (-1: unknown)
        self._submit = submit
        self._buffer: list[tuple[Any, ...]] = []
        self._flush_due = False  # ops queued and no flush submitted for them yet
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.RLock()  # one batch at a time, in order
        self._pending: dict[Hashable, int] = {}  # keys with writes not yet in Redis
        self._pending_global = 0  # tags/clear/patterns not yet in Redis
        self._epochs = [0] * (_STRIPES + 1)
        self._missed_keys: set[Hashable] = set()
        self._missed_tags: set[Hashable] = set()
        self._missed_all = False

    # -- the cache journal: local writes ------------------------------------------------

    def record(self, record: tuple[Any, ...]) -> None:
        """Queue a local write for Redis and the other processes (the cache's journal).

        Called with the cache's lock for the write held, so one key's ops are queued in
        the order its writes were applied; :meth:`kick` sends them after the lock.
        Cheap; never raises.
        """
        if _remote.get():
            return  # a change that came from Redis
        event, key, value, expires_at, tags, _ = record
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
        self._queue(op)

    def kick(self) -> None:
        """Send what :meth:`record` queued: now with ``write_through``, else on the worker."""
        if self.write_through:
            self.flush()
        elif self._flush_due:
            self._flush_due = False
            self._submit(self.flush)

    def delete_matching(self, pattern: str) -> None:
        """Delete every str key matching the glob ``pattern`` in Redis and in every process."""
        self.enqueue(("match", pattern))

    def enqueue(self, op: tuple[Any, ...]) -> None:
        """Register ``op`` as pending (fills must not race it) and send it."""
        self._queue(op)
        self.kick()

    def _queue(self, op: tuple[Any, ...]) -> None:
        with self._buffer_lock:
            if op[0] in _KEY_OPS:
                key = op[1]
                self._pending[key] = self._pending.get(key, 0) + 1
                self._bump(key)
            else:
                self._pending_global += 1
                self._bump(None)
            self._buffer.append(op)
            if len(self._buffer) == 1:
                self._flush_due = True  # the first op of a batch: kick() submits a flush

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

    # -- fill guards: did a write race a read from Redis? ------------------------------

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
