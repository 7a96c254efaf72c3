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
import os
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
from cacheplug.freshness import ExceptionTypes
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
    "redis_prefix": None,
    "write_through": False,
    "redis_socket_timeout": 0.25,
    "redis_breaker_threshold": 3,
    "redis_breaker_reset": 2.0,
    "redis_lock_ttl": 30.0,
    "redis_cluster": False,
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
    tier: Any | None = None  # TierStats when redis_url is set


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
    :param redis_url: a ``redis://``/``rediss://``/``unix://`` URL turns on the Redis tier
        (shared L2 + invalidation broadcast, see ``docs/redis.md``); needs ``secret``.
    :param redis_prefix: the tier's namespace in Redis (default ``cacheplug:<name>``).
    :param write_through: write to Redis inside the call instead of on the worker.
    :param redis_socket_timeout: seconds any Redis call may take.
    :param redis_breaker_threshold: consecutive Redis failures that open the breaker.
    :param redis_breaker_reset: seconds before an open breaker tries Redis again.
    :param redis_lock_ttl: seconds a distributed ``get_or_set`` lease lasts.
    :param redis_cluster: use redis-py's Redis Cluster client for ``redis_url``.
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
        # Background refreshes of sync factories (stale_while_revalidate, early_refresh)
        # run on the worker: no thread of their own.
        self.cache.set_refresh_executor(self.worker)
        self.context: RequestContext = request_context
        self._store: Any = None
        self._append_lock = threading.Lock()  # orders appends; held across disk writes
        # WAL records in write order, six fields each laid end to end, added without a
        # lock (one list.extend is atomic); None while persistence is off.
        self._wal_buffer: list[Any] | None = None
        self._wal_scheduled = False  # a _drain_wal is queued (never set under "always")
        self._wal_kick: Callable[[], None] = self._schedule_wal_drain
        self._lifecycle_lock = threading.RLock()
        self._started = False
        self._closed = False
        self._periodic: list[PeriodicTask] = []
        self._purge_pending = False
        self.loaded_entries = 0
        self._tier: Any = None
        self.cache.set_listener(self._on_cache_event)
        if config["redis_url"] is not None:
            self._tier = self._build_tier()

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
        try:
            return cls(**options)
        except ConfigurationError as exc:
            if mapping is os.environ:  # strings and foreign variables: point at from_env
                raise ConfigurationError(
                    f"{exc}; to read environment variables use CachePlug.from_env(), which "
                    "converts their strings and ignores variables that are not options"
                ) from exc
            raise

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        prefix: str = "CACHEPLUG_",
        **defaults: Any,
    ) -> CachePlug:
        """Build from environment variables named ``<prefix><OPTION>``, such as ``CACHEPLUG_TTL``.

        Only variables named after an option (in upper case) are read; others sharing
        the prefix (``CACHEPLUG_DASHBOARD_TOKEN``) are ignored. Each string is converted
        by the option's type: int, float, bool (``1/0``, ``true/false``, ``yes/no``,
        ``on/off``), str; ``""`` or ``"none"`` give ``None`` where ``None`` is valid
        (``ttl``, ``state_dir``, ``secret``, ``redis_url``, ``redis_prefix``).

        :param environ: the variables to read; None reads ``os.environ``.
        :param prefix: the variables' common prefix.
        :param defaults: options for the variables that are not set (a variable wins).
        :raises ConfigurationError: naming the variable and the type it needs, or as
            :class:`CachePlug` for a converted value out of range.

        .. versionadded:: 0.1
        """
        environ = os.environ if environ is None else environ
        options = dict(defaults)
        for option in DEFAULTS:
            variable = prefix + option.upper()
            if variable in environ:
                options[option] = _from_env_string(option, variable, environ[variable])
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
            if self._tier is not None:
                self._tier.start()
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
            self.cache.close(timeout)  # abandon refreshes first: none stores after close
            for task in self._periodic:
                task.cancel()
            self._periodic.clear()
            self.worker.flush(timeout)
            self.worker.close(timeout)
            if self._tier is not None:
                self._tier.close()  # sends what raced the close, stops its thread
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
        await self.cache.aclose()  # cancel this loop's refresh tasks and wait for them
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
        if self._tier is not None:
            self._tier.delete_matching(pattern)

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
            tier=self._tier.stats() if self._tier is not None else None,
        )

    def save(self) -> Any:
        """Write a snapshot now (also done by :meth:`close`); returns the SnapshotInfo or None."""
        if self._store is None:
            return None
        self._drain_wal()
        return self._save_snapshot()

    @property
    def tier(self) -> Any:
        """The :class:`~cacheplug.tier.RedisTier`, or None when ``redis_url`` is not set."""
        return self._tier

    def get_or_set(
        self,
        key: Hashable,
        factory: Callable[[], Any],
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        *,
        early_refresh: float | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = None,
        negative_exceptions: ExceptionTypes = (),
    ) -> Any:
        """Return the value for ``key``, computing it once with ``factory`` on a miss.

        Without a Redis tier this is :meth:`ShardedTTLCache.get_or_set` (single-flight
        across threads) with every freshness option of ``docs/freshness.md``. With one,
        the lookup goes local -> Redis -> a Redis lease, so ``factory`` runs once across
        every process; the others wait for its value (a crashed holder blocks them at
        most ``redis_lock_ttl``). If a write or delete of ``key`` races the factory, its
        value is returned but cached nowhere. With the tier, ``negative_ttl`` applies
        everywhere (a ``None`` result is shared through Redis for ``negative_ttl``),
        ``negative_exceptions`` are cached in the process that raised them only, and
        the background-refresh options are refused (see ``docs/redis.md``).

        :raises ConfigurationError: for an invalid freshness option, or for
            ``early_refresh``, ``stale_while_revalidate`` or ``stale_if_error`` when
            ``redis_url`` is set.
        :raises Exception: whatever ``factory`` raised (nothing is cached, unless it is
            one of ``negative_exceptions``).
        """
        if self._tier is not None:
            _refuse_refresh_options(early_refresh, stale_while_revalidate, stale_if_error)
            return self._tier.get_or_set(key, factory, ttl, tags, negative_ttl, negative_exceptions)
        return self.cache.get_or_set(
            key,
            factory,
            ttl,
            tags,
            early_refresh=early_refresh,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            negative_ttl=negative_ttl,
            negative_exceptions=negative_exceptions,
        )

    async def aget_or_set(
        self,
        key: Hashable,
        factory: Callable[[], Any],
        ttl: float | None = None,
        tags: Iterable[Hashable] = (),
        *,
        early_refresh: float | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = None,
        negative_exceptions: ExceptionTypes = (),
    ) -> Any:
        """The asyncio form of :meth:`get_or_set`; ``factory`` returns an awaitable.

        :raises ConfigurationError: as :meth:`get_or_set`.
        """
        if self._tier is not None:
            _refuse_refresh_options(early_refresh, stale_while_revalidate, stale_if_error)
            return await self._tier.aget_or_set(
                key, factory, ttl, tags, negative_ttl, negative_exceptions
            )
        return await self.cache.aget_or_set(
            key,
            factory,
            ttl,
            tags,
            early_refresh=early_refresh,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            negative_ttl=negative_ttl,
            negative_exceptions=negative_exceptions,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"<CachePlug {self.name!r} {state} {self.cache!r}>"

    # -- internals ----------------------------------------------------------------------

    def _build_tier(self) -> Any:
        from cacheplug.tier import RedisTier

        config = self.config
        return RedisTier(
            self.cache,
            url=config["redis_url"],
            secret=config["secret"] or os.environ.get("CACHEPLUG_SECRET", ""),
            prefix=config["redis_prefix"] or f"cacheplug:{self.name}",
            submit=self.worker.submit,
            write_through=config["write_through"],
            socket_timeout=config["redis_socket_timeout"],
            breaker_threshold=config["redis_breaker_threshold"],
            breaker_reset=config["redis_breaker_reset"],
            lock_ttl=config["redis_lock_ttl"],
            cluster=config["redis_cluster"],
            name=self.name,
        )

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
        wal = self._wal_buffer
        if wal is not None and event in _LOGGED:
            # Buffered in write order, in Record field order; the times stay on the
            # cache's timer (the worker converts a batch with one offset). The buffer,
            # not the worker queue, holds the order: a task run inline under back-pressure
            # could overtake queued ones, and a "set" replayed after its "delete" would
            # resurrect the key.
            wal.extend((event, key, value, expires_at, tags, version))
            if not self._wal_scheduled:
                self._wal_kick()  # schedule a drain, or drain now under fsync="always"
        tier = self._tier
        if tier is not None:
            tier.on_cache_event(event, key, value, version, expires_at, tags)
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
        self._wal_buffer = []  # from now on the listener logs changes
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


_LOGGED: Final = frozenset(("set", "touch", "delete", "invalidate_tags", "clear"))

#: Options for which ``from_env`` reads ``""`` and ``"none"`` as None.
_NULLABLE: Final = frozenset(("ttl", "state_dir", "secret", "redis_url", "redis_prefix"))
_BOOLS: Final[Mapping[str, bool]] = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def _from_env_string(option: str, variable: str, text: str) -> Any:
    """Convert one environment string to the type of ``option``'s default."""
    word = text.strip().lower()
    if option in _NULLABLE and word in ("", "none"):
        return None
    default = DEFAULTS[option]
    try:
        # bool before int: bool is an int subclass
        if isinstance(default, bool):
            return _BOOLS[word]
        if isinstance(default, int):
            return int(word)
        if isinstance(default, float) and math.isfinite(number := float(word)):
            return number
        if default is None or isinstance(default, str):
            return text  # paths, URLs, secrets and names are used as written
    except (KeyError, ValueError):
        pass
    raise ConfigurationError(
        f"environment variable {variable}={text!r} is not valid: {option} needs {_env_type(option)}"
    )


def _env_type(option: str) -> str:
    """Describe the strings ``from_env`` accepts for ``option`` (for its error message)."""
    default = DEFAULTS[option]
    if isinstance(default, bool):
        return "a bool: 1/0, true/false, yes/no or on/off"
    if isinstance(default, int):
        return "an int, such as 10000"
    if isinstance(default, float):
        kind = "a finite number of seconds, such as 2.5"
        return kind + ", or '' or 'none' for None" if option in _NULLABLE else kind
    return "a callable, which an environment variable cannot hold; pass it in code"


def _refuse_refresh_options(
    early_refresh: float | None, stale_while_revalidate: float | None, stale_if_error: float | None
) -> None:
    """The Redis tier's get_or_set runs no background refreshes: say so, naming the options."""
    given = [
        name
        for name, value in (
            ("early_refresh", early_refresh),
            ("stale_while_revalidate", stale_while_revalidate),
            ("stale_if_error", stale_if_error),
        )
        if value is not None
    ]
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} not supported by CachePlug.get_or_set when redis_url is set: "
            "background refreshes and stale copies are per process and would bypass the "
            "Redis lease (distributed single-flight). Supported across processes: ttl, "
            "tags, negative_ttl, negative_exceptions. For a per-process load with these "
            "options, call plug.cache.get_or_set(...) (see docs/redis.md)"
        )


def _validate(config: dict[str, Any]) -> None:
    """Check the options ShardedTTLCache and DeferredWorker do not check themselves."""
    if config["fsync"] not in FSYNC_POLICIES:
        raise ConfigurationError(f"fsync must be one of {FSYNC_POLICIES}, got {config['fsync']!r}")
    # DeferredWorker calls it max_queue; check it here so the message says queue_size.
    queue_size = config["queue_size"]
    if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
        raise ConfigurationError(f"queue_size must be an int >= 1, got {queue_size!r}")
    interval = config["sweep_interval"]
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 0:
        raise ConfigurationError(
            f"sweep_interval must be seconds >= 0 (0 turns the sweep off), got {interval!r}"
        )
    if config["redis_url"] is not None:
        _validate_redis(config)
    if not isinstance(config["name"], str) or not config["name"]:
        raise ConfigurationError(f"name must be a non-empty str, got {config['name']!r}")
    wal_max = config["wal_max_bytes"]
    if not isinstance(wal_max, int) or isinstance(wal_max, bool) or wal_max < 4096:
        raise ConfigurationError(f"wal_max_bytes must be an int >= 4096, got {wal_max!r}")
    timer: Callable[[], float] = config["timer"]
    if not callable(timer):
        raise ConfigurationError(f"timer must be callable, got {timer!r}")


def _validate_redis(config: dict[str, Any]) -> None:
    """Check the Redis tier's options (only when ``redis_url`` is set)."""
    url = config["redis_url"]
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"redis_url must be a redis://, rediss:// or unix:// URL, got {url!r}"
        )
    if not (config["secret"] or os.environ.get("CACHEPLUG_SECRET")):
        raise ConfigurationError(
            "redis_url needs a secret to sign the values and messages it shares: pass "
            "secret=... or set CACHEPLUG_SECRET (the same in every process); unsigned "
            "pickles are never loaded from Redis"
        )
    prefix = config["redis_prefix"]
    if prefix is not None and (
        not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix
    ):
        raise ConfigurationError(
            f"redis_prefix must be a non-empty str without braces, got {prefix!r}"
        )
    for option, low in (
        ("redis_socket_timeout", 0.001),
        ("redis_breaker_reset", 0.001),
        ("redis_lock_ttl", 0.01),
    ):
        value = config[option]
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= low:
            raise ConfigurationError(
                f"{option} must be a number of seconds >= {low}, got {value!r}"
            )
    threshold = config["redis_breaker_threshold"]
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ConfigurationError(f"redis_breaker_threshold must be an int >= 1, got {threshold!r}")
    for option in ("write_through", "redis_cluster"):
        if not isinstance(config[option], bool):
            raise ConfigurationError(f"{option} must be True or False, got {config[option]!r}")
