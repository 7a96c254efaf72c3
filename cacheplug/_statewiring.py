"""The persistence wiring of ``CachePlug``: state store, write-ahead-log buffer, snapshots.

``CachePlug`` inherits :class:`StateWiring`. The cache's journal
(:meth:`ShardedTTLCache.set_journal`, installed by :meth:`StateWiring._install_journal`)
appends each logged write to ``_wal_buffer`` under the lock that ordered the write, so
the log replays writes in the order they were applied. The cache listener
(``CachePlug._on_cache_event``) then calls ``_wal_kick``; everything after that
(draining the buffer into the store, snapshots, taking over as writer) is here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cacheplug import events

if TYPE_CHECKING:
    from cacheplug.bus import EventBus
    from cacheplug.cache import ShardedTTLCache
    from cacheplug.worker import DeferredWorker

__all__ = ("StateWiring",)

logger = logging.getLogger("cacheplug.runtime")


class StateWiring:
    """Open, load, append to and snapshot the state store of a ``CachePlug``.

    A mixin: the host provides ``config``, ``name``, ``cache``, ``worker`` and ``bus``
    and calls :meth:`_init_state_wiring` in ``__init__``. Persistence is on once
    :meth:`_open_state_store` ran (``start()`` with ``state_dir`` set).
    """

    config: Mapping[str, Any]
    name: str
    cache: ShardedTTLCache
    worker: DeferredWorker
    bus: EventBus
    _tier: Any  # the Redis tier, or None

    def _init_state_wiring(self) -> None:
        self._store: Any = None
        self._append_lock = threading.Lock()  # orders appends; held across disk writes
        # WAL records in write order, six fields each laid end to end, added without a
        # lock (one list.extend is atomic); None while persistence is off.
        self._wal_buffer: list[Any] | None = None
        self._wal_scheduled = False  # a _drain_wal is queued (never set under "always")
        self._wal_kick: Callable[[], None] = self._schedule_wal_drain
        self.loaded_entries = 0

    def _schedule_wal_drain(self) -> None:
        self._wal_scheduled = True
        self.worker.submit(self._drain_wal)

    def _drain_wal(self) -> None:
        """Append every buffered record to the WAL as one batch (on the worker, or inline)."""
        store, buffer = self._store, self._wal_buffer
        if store is None or buffer is None:
            return
        # Holding the lock across the append keeps batches in order; writers only
        # wait for it under fsync="always", where waiting is the contract.
        with self._append_lock:
            # Reset before taking: a record appended after the take sees False and
            # schedules another drain, so none is left behind.
            self._wal_scheduled = False
            size = len(buffer)  # whole records: each extend() is atomic
            if not size:
                return
            try:
                # The store reads the records in place (writers only add after `size`);
                # one offset converts their timer-based expiry to wall clock.
                store.append_fields(buffer, time_offset=self._wall_offset(), count=size // 6)
            except Exception:
                logger.exception("cacheplug %r could not append to the write-ahead log", self.name)
            finally:
                del buffer[:size]  # records added meanwhile sit after `size`: kept
            if store.needs_compaction:
                self._save_snapshot()

    def _install_journal(self) -> None:
        """Hand the cache its journal: the WAL buffer's ``extend``, the tier's ``record``."""
        log = None if self._wal_buffer is None else self._wal_buffer.extend
        share = None if self._tier is None else self._tier.record
        if log is None or share is None:
            self.cache.set_journal(log or share)
            return

        def journal(record: tuple[Any, ...]) -> None:
            log(record)
            share(record)

        self.cache.set_journal(journal)

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
        from cacheplug._progress import LogProgress
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
        # A big snapshot can take seconds: say how far it got (INFO, from 2 s on).
        result = store.load(progress=LogProgress(logger, f"cacheplug {self.name!r}"))
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
        if self.config["fsync"] == "always":
            # group commit: each writer drains, and whoever drains writes everyone's records
            self._wal_kick = self._drain_wal
        self._wal_buffer = []
        self._install_journal()  # from now on the cache logs changes
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
        store = self._store
        started = time.perf_counter()
        to_wall = self._wall_offset()
        inf = math.inf
        # Plain tuples in StoredEntry field order: the store encodes them as they are.
        entries = [
            (key, value, None if expires_at == inf else expires_at + to_wall, tags, version)
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
