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
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cacheplug import events
from cacheplug._config import DEFAULTS as DEFAULTS  # re-exported: adapters and docs read it
from cacheplug._config import FSYNC_POLICIES as FSYNC_POLICIES
from cacheplug._config import (
    build_config,
    options_from_env,
    options_from_mapping,
    refuse_refresh_options,
)
from cacheplug._statewiring import StateWiring
from cacheplug.bus import EventBus
from cacheplug.cache import ShardedTTLCache
from cacheplug.context import RequestContext, request_context
from cacheplug.errors import ConfigurationError
from cacheplug.freshness import ExceptionTypes
from cacheplug.stats import CacheStats
from cacheplug.worker import DeferredWorker, PeriodicTask, WorkerStats

__all__ = ("CachePlug", "RuntimeStats")

logger = logging.getLogger("cacheplug.runtime")

#: The events the write-ahead log records (evictions and expirations stay unlogged).
_LOGGED: Final = frozenset(("set", "touch", "delete", "invalidate_tags", "clear"))
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


class CachePlug(StateWiring):
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
        config = build_config(options)
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
        self._init_state_wiring()  # the state store and the WAL buffer, off until start()
        self._lifecycle_lock = threading.RLock()
        self._started = False
        self._closed = False
        self._periodic: list[PeriodicTask] = []
        self._purge_pending = False
        self._tier: Any = None
        self.cache.set_listener(self._on_cache_event)
        if config["redis_url"] is not None:
            self._tier = self._build_tier()
            self._install_journal()

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any], *, prefix: str = "") -> CachePlug:
        """Build from a mapping such as Flask's ``app.config`` or Django's ``OPTIONS``.

        Keys are matched case-insensitively after removing ``prefix`` (for example
        ``CACHEPLUG_``); keys without the prefix are ignored when one is given.
        """
        try:
            return cls(**options_from_mapping(mapping, prefix))
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
        return cls(**options_from_env(environ, prefix, defaults))

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
                self._wal_buffer = None
            self.cache.set_journal(None)  # later writes are neither logged nor shared

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
            refuse_refresh_options(early_refresh, stale_while_revalidate, stale_if_error)
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
            refuse_refresh_options(early_refresh, stale_while_revalidate, stale_if_error)
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
        # The cache has already handed the write to the journal (the WAL buffer and the
        # tier's queue) under the lock that ordered it; here, outside every lock, the
        # WAL drain is scheduled (or run now under fsync="always") and the tier sends.
        if event in _LOGGED:
            if not self._wal_scheduled and self._wal_buffer is not None:
                self._wal_kick()
            tier = self._tier
            if tier is not None:
                tier.kick()
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
