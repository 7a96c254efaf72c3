"""``CachePlug``: the composition root every adapter uses.

One ``CachePlug`` owns one cache, one deferred worker, one event bus and, when
``state_dir`` is set, one state store. Requests touch only the cache; everything slow
(event delivery, write-ahead log appends, physical removal after tag and pattern
deletes, the expiry sweep) runs on the worker thread. ``start()`` loads saved state and
starts the worker; ``close()`` drains the worker, writes a final snapshot and stops
every thread it started.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cacheplug import events
from cacheplug.bus import EventBus
from cacheplug.cache import ShardedTTLCache
from cacheplug.context import RequestContext, request_context
from cacheplug.errors import ConfigurationError
from cacheplug.stats import CacheStats
from cacheplug.worker import DeferredWorker, PeriodicTask, WorkerStats

__all__ = ("CachePlug", "RuntimeStats")

logger = logging.getLogger("cacheplug.runtime")

FSYNC_POLICIES: Final = ("always", "everysec", "never")

#: Every option ``CachePlug`` accepts, with its default.
DEFAULTS: Final[Mapping[str, Any]] = {
    "maxsize": 100_000,
    "ttl": 300.0,
    "shards": 16,
    "timer": time.monotonic,
    "sweep_interval": 1.0,
    "queue_size": 10_000,
    "batch_size": 256,
    "put_timeout": 0.05,
    "state_dir": None,
    "secret": None,
    "fsync": "everysec",
    "wal_max_bytes": 64 << 20,
    "redis_url": None,
    "name": "default",
}

_SIGNALS: Final = {
    "set": events.cache_set,
    "touch": events.cache_set,
    "delete": events.cache_deleted,
    "evict": events.cache_evicted,
    "expire": events.cache_expired,
    "invalidate_tags": events.tags_invalidated,
    "clear": events.cache_cleared,
}


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot of everything a ``CachePlug`` counts."""

    cache: CacheStats
    worker: WorkerStats
    receiver_errors: int
    persistence: Any | None  # PersistenceStats when state_dir is set


class CachePlug:
    """Build and run the cache, worker, event bus and state store from one set of options.

    Use it as a context manager (``with``/``async with``) or call :meth:`start` and
    :meth:`close` (``astart``/``aclose`` in async code) from the framework's lifecycle.

    :param maxsize: the most cache entries (see :class:`ShardedTTLCache`).
    :param ttl: default seconds to live; None for no expiry.
    :param shards: cache shards, a power of two from 1 to 1024.
    :param timer: the cache's monotonic clock (inject a fake one in tests).
    :param sweep_interval: seconds between expiry sweeps on the worker; 0 turns them off.
    :param queue_size: the worker queue's bound; when full, work runs inline (never lost).
    :param batch_size: tasks the worker takes per wake-up.
    :param put_timeout: seconds a submit waits for room before running inline.
    :param state_dir: a directory for the snapshot and write-ahead log; None turns
        persistence off.
    :param secret: the key that signs saved state; defaults to ``$CACHEPLUG_SECRET``.
    :param fsync: ``"always"``, ``"everysec"`` (default) or ``"never"``.
    :param wal_max_bytes: WAL size that triggers a new snapshot and compaction.
    :param redis_url: reserved for the Redis tier, which is not built yet; must be None.
    :param name: a label for logs and metrics.
    :raises ConfigurationError: naming the option and its valid values.
    """

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise ConfigurationError(
                f"unknown CachePlug option(s) {sorted(unknown)}; valid options: {sorted(DEFAULTS)}"
            )
        config = {**DEFAULTS, **options}
        _validate(config)
        self.config: Mapping[str, Any] = config
        self.name: str = config["name"]
        self.cache = ShardedTTLCache(
            maxsize=config["maxsize"],
            ttl=config["ttl"],
            shards=config["shards"],
            timer=config["timer"],
        )
        self.worker = DeferredWorker(
            max_queue=config["queue_size"],
            batch_size=config["batch_size"],
            put_timeout=config["put_timeout"],
            name=f"cacheplug-worker-{self.name}",
        )
        self.bus = EventBus(self.worker)
        self.context: RequestContext = request_context
        self._store: Any = None
        self._wal_lock = threading.Lock()  # guards the buffer; held for microseconds
        self._append_lock = threading.Lock()  # orders appends; held across disk writes
        self._wal_buffer: list[tuple[Any, ...]] = []
        self._lifecycle_lock = threading.RLock()
        self._started = False
        self._closed = False
        self._periodic: list[PeriodicTask] = []
        self._purge_pending = False
        self.loaded_entries = 0
        self.cache.set_listener(self._on_cache_event)

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any], *, prefix: str = "") -> CachePlug:
        """Build from a mapping such as Flask's ``app.config`` or Django's ``OPTIONS``.

        Keys are matched case-insensitively after removing ``prefix`` (for example
        ``CACHEPLUG_``); keys without the prefix are ignored when one is given.
        """
        options = {}
        for key, value in mapping.items():
            if prefix:
                if not key.upper().startswith(prefix.upper()):
                    continue
                key = key[len(prefix) :]
            options[key.lower()] = value
        return cls(**options)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> CachePlug:
        """Load saved state (if ``state_dir`` is set) and start the worker. Idempotent.

        :raises RuntimeError: if the plug was closed.
        """
        with self._lifecycle_lock:
            if self._closed:
                raise RuntimeError(f"CachePlug {self.name!r} is closed; create a new one")
            if self._started:
                return self
            if self.config["state_dir"] is not None:
                self._open_state_store()
            self.worker.start()
            if self.config["sweep_interval"]:
                self._periodic.append(
                    self.worker.add_periodic(self.cache.expire, self.config["sweep_interval"])
                )
            if self._store is not None and self.config["fsync"] == "everysec":
                self._periodic.append(self.worker.add_periodic(self._sync_wal, 1.0))
            if self._store is not None and not self._store.is_writer:
                self._periodic.append(self.worker.add_periodic(self._take_over_writing, 2.0))
            self._started = True
            return self

    def close(self, timeout: float = 10.0) -> None:
        """Drain the worker, save a final snapshot and stop every thread. Safe to call twice.

        After it returns no cacheplug thread of this plug is running.
        """
        with self._lifecycle_lock:
            if self._closed:
                return
            self._closed = True
            for task in self._periodic:
                task.cancel()
            self._periodic.clear()
            self.worker.flush(timeout)
            self.worker.close(timeout)
            self._drain_wal()  # anything that raced the close
            if self._store is not None:
                self._save_snapshot()
                self._store.close()

    async def astart(self) -> CachePlug:
        """:meth:`start` without blocking the event loop (loading runs in a thread)."""
        await asyncio.to_thread(self.start)
        return self

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> CachePlug:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> CachePlug:
        return await self.astart()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran and :meth:`close` has not."""
        return self._started and not self._closed

    # -- operations that defer their slow part ------------------------------------------

    def invalidate_tags(self, *tags: Hashable) -> None:
        """Hide every entry carrying one of ``tags`` now (O(1)); the worker frees them later."""
        self.cache.invalidate_tags(*tags)
        self._schedule_purge()

    def delete_matching(self, pattern: str) -> None:
        """Hide every str key matching the glob ``pattern`` now; the worker removes them."""
        self.cache.delete_matching(pattern, defer=True)
        self._schedule_purge()

    def delete_many(self, keys: Iterable[Hashable]) -> int:
        """Delete ``keys`` now (each an O(1) unlink); events and logging go to the worker."""
        return self.cache.delete_many(keys)

    def stats(self) -> RuntimeStats:
        """Return the counters of the cache, the worker, the bus and the state store."""
        return RuntimeStats(
            cache=self.cache.stats(),
            worker=self.worker.stats(),
            receiver_errors=self.bus.receiver_errors,
            persistence=self._store.stats() if self._store is not None else None,
        )

    def save(self) -> Any:
        """Write a snapshot now (also done by :meth:`close`); returns the SnapshotInfo or None."""
        if self._store is None:
            return None
        self._drain_wal()
        return self._save_snapshot()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"<CachePlug {self.name!r} {state} {self.cache!r}>"

    # -- internals ----------------------------------------------------------------------

    def _schedule_purge(self) -> None:
        # Coalesce: one physical purge in the queue at a time is enough.
        if not self._purge_pending:
            self._purge_pending = True
            self.worker.submit(self._purge)

    def _purge(self) -> None:
        self._purge_pending = False
        self.cache.purge_hidden()
        self.cache.expire()

    def _on_cache_event(
        self,
        event: str,
        key: Any,
        value: Any,
        version: int,
        expires_at: float | None,
        tags: tuple[Hashable, ...],
    ) -> None:
        """The cache's listener: runs in the writing thread, right after the write."""
        if self._store is not None and event in _LOGGED:
            self._log_change(event, key, value, version, expires_at, tags)
        signal = _SIGNALS[event]
        if signal.receivers:
            self._publish(signal, event, key, version, expires_at, tags)

    def _publish(
        self,
        signal: Any,
        event: str,
        key: Any,
        version: int,
        expires_at: float | None,
        tags: tuple[Hashable, ...],
    ) -> None:
        if event in ("set", "touch"):
            ttl = None if expires_at is None else max(0.0, expires_at - self.cache.timer())
            self.bus.publish(signal, self.cache, key=key, version=version, ttl=ttl, tags=tags)
        elif event == "invalidate_tags":
            self.bus.publish(signal, self.cache, tags=frozenset(tags))
        elif event == "clear":
            self.bus.publish(signal, self.cache)
        else:
            self.bus.publish(signal, self.cache, key=key)

    def _log_change(
        self,
        event: str,
        key: Any,
        value: Any,
        version: int,
        expires_at: float | None,
        tags: tuple[Hashable, ...],
    ) -> None:
        """Buffer a WAL record in write order; the worker appends buffered records in bulk.

        The buffer (not the worker queue) holds the order: a task the worker runs inline
        under back-pressure could overtake queued ones, and a replayed "set" after its
        "delete" would resurrect the key.
        """
        record = (event, key, value, version, expires_at, tags)
        with self._wal_lock:
            self._wal_buffer.append(record)
            first = len(self._wal_buffer) == 1
        if self.config["fsync"] == "always":
            self._drain_wal()  # group commit: whoever drains writes everyone's records
        elif first:
            self.worker.submit(self._drain_wal)

    def _drain_wal(self) -> None:
        from cacheplug.persistence import Record

        store = self._store
        if store is None:
            return
        # Holding the lock across the append keeps batches in order; writers only
        # wait for it under fsync="always", where waiting is the contract.
        with self._append_lock:
            with self._wal_lock:
                pending, self._wal_buffer = self._wal_buffer, []
            if not pending:
                return
            to_wall = self._wall_offset()
            records = []
            for event, key, value, version, expires_at, tags in pending:
                wall = None if expires_at is None else expires_at + to_wall
                if event == "set":
                    records.append(Record("set", key, value, wall, tuple(tags), version))
                elif event == "touch":
                    records.append(Record("touch", key, None, wall))
                elif event == "invalidate_tags":
                    records.append(Record("invalidate_tags", tags=tuple(tags)))
                elif event == "clear":
                    records.append(Record("clear"))
                else:
                    records.append(Record("delete", key))
            try:
                store.append(records)
            except Exception:
                logger.exception("cacheplug %r could not append to the write-ahead log", self.name)
            if store.needs_compaction:
                self._save_snapshot()

    def _wall_offset(self) -> float:
        """Add this to a cache-timer time to get wall-clock time (saved state is wall-clock)."""
        return time.time() - self.cache.timer()

    def _take_over_writing(self) -> None:
        """When the writing process has exited, become the writer and save what we hold."""
        if not self._store.is_writer and self._store.try_become_writer():
            logger.info("cacheplug %r took over writing the state", self.name)
            self._save_snapshot()

    def _sync_wal(self) -> None:
        if self._store is not None:
            self._store.sync_if_due()

    def _open_state_store(self) -> None:
        from cacheplug.persistence import StateStore

        store = StateStore(
            self.config["state_dir"],
            secret=self.config["secret"],
            fsync=self.config["fsync"],
            wal_max_bytes=self.config["wal_max_bytes"],
        )
        started = time.perf_counter()
        # Acquire before loading: the writer repairs a torn WAL tail at acquisition, so
        # what it loads is exactly what its new records will follow.
        is_writer = store.acquire_writer()
        result = store.load()
        to_wall = self._wall_offset()
        self.loaded_entries = self.cache.import_entries(
            (
                entry.key,
                entry.value,
                math.inf if entry.expires_at is None else entry.expires_at - to_wall,
                entry.tags,
            )
            for entry in result.entries
        )
        for warning in result.warnings:
            logger.warning("cacheplug %r: %s", self.name, warning)
        if not is_writer:
            logger.info(
                "cacheplug %r: another process holds the state lock in %s; this one loaded "
                "the state and runs without writing until that process exits",
                self.name,
                self.config["state_dir"],
            )
        self._store = store
        seconds = time.perf_counter() - started
        logger.info(
            "cacheplug %r loaded %d entries from %s in %.3fs",
            self.name,
            self.loaded_entries,
            self.config["state_dir"],
            seconds,
        )
        self.bus.publish(events.state_loaded, store, entries=self.loaded_entries, seconds=seconds)

    def _save_snapshot(self) -> Any:
        from cacheplug.persistence import StoredEntry

        store = self._store
        started = time.perf_counter()
        to_wall = self._wall_offset()
        entries = [
            StoredEntry(
                key,
                value,
                None if expires_at == math.inf else expires_at + to_wall,
                tags,
                version,
            )
            for key, value, expires_at, tags, version in self.cache.export_entries()
        ]
        try:
            info = store.write_snapshot(entries)
        except Exception:
            logger.exception("cacheplug %r could not write a snapshot", self.name)
            return None
        if info.written:
            # At close() the worker is already closed and runs this delivery inline.
            seconds = time.perf_counter() - started
            self.bus.publish(events.state_saved, store, entries=info.entries, seconds=seconds)
        return info


_LOGGED: Final = frozenset(("set", "touch", "delete", "invalidate_tags", "clear"))


def _validate(config: dict[str, Any]) -> None:
    """Check the options ShardedTTLCache and DeferredWorker do not check themselves."""
    if config["fsync"] not in FSYNC_POLICIES:
        raise ConfigurationError(f"fsync must be one of {FSYNC_POLICIES}, got {config['fsync']!r}")
    interval = config["sweep_interval"]
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 0:
        raise ConfigurationError(
            f"sweep_interval must be seconds >= 0 (0 turns the sweep off), got {interval!r}"
        )
    if config["redis_url"] is not None:
        raise ConfigurationError(
            "redis_url: the Redis tier is not available in this version of cacheplug; leave it None"
        )
    if not isinstance(config["name"], str) or not config["name"]:
        raise ConfigurationError(f"name must be a non-empty str, got {config['name']!r}")
    wal_max = config["wal_max_bytes"]
    if not isinstance(wal_max, int) or isinstance(wal_max, bool) or wal_max < 4096:
        raise ConfigurationError(f"wal_max_bytes must be an int >= 4096, got {wal_max!r}")
    timer: Callable[[], float] = config["timer"]
    if not callable(timer):
        raise ConfigurationError(f"timer must be callable, got {timer!r}")
