"""The Redis side of the tier: connections, scripts, batched writes, leases, counters.

Every call here is bounded by the socket timeout, never retried by redis-py (the
breaker decides when to try again), and never lets a Redis error escape: failures go
to the breaker and the caller gets a miss, or ``False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from cacheplug import _tier_scripts as scripts
from cacheplug._tier_breaker import CircuitBreaker
from cacheplug._tier_codec import TamperedValueError, TierCodec
from cacheplug._tier_subscriber import Subscriber

__all__ = ("NONE", "Lease", "RedisLink", "TierStats")

logger = logging.getLogger("cacheplug.tier")

#: "no value" marker of a :class:`Lease` (None is a legitimate cached value)
NONE: Any = object()

_SCRIPTS = {name: getattr(scripts, name) for name in ("GET", "SET", "ACQUIRE", "STORE", "RELEASE")}
_SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in _SCRIPTS.items()}
_SCAN_BATCH = 500
#: Redis command of each pipelined method name. Queued with ``execute_command``: a
#: cluster pipeline refuses ``evalsha()`` and a multi-key ``delete()``, though the keys
#: share one slot.
_COMMANDS = {
    "evalsha": "EVALSHA",
    "delete": "DEL",
    "persist": "PERSIST",
    "pexpire": "PEXPIRE",
    "incr": "INCR",
    "publish": "PUBLISH",
}


@dataclass
class TierStats:
    """The Redis tier's counters; :meth:`RedisTier.stats` returns a copy.

    ``l2_hits``/``l2_misses``: local misses answered / not answered by Redis.
    ``fills_skipped``: L2 values not stored locally because an invalidation raced them.
    ``sent_ops``: writes sent to Redis; ``published``: invalidation messages sent.
    ``applied``: messages from other processes applied; ``rejected``: messages or values
    whose signature did not verify. ``errors``: failed Redis calls; ``dropped``: writes
    not sent because Redis was unavailable (replayed as deletes on recovery).
    ``recoveries``: times the breaker closed again; ``local_flushes``: local tier
    flushes (recovery, re-subscription). ``factory_runs``: factories this process ran
    in ``get_or_set``; ``lock_waits``: polls while another process held the lease;
    ``stale_sets_prevented``: leased fills refused because a write or delete raced them.
    """

    l2_hits: int = 0
    l2_misses: int = 0
    fills_skipped: int = 0
    sent_ops: int = 0
    published: int = 0
    applied: int = 0
    rejected: int = 0
    errors: int = 0
    dropped: int = 0
    recoveries: int = 0
    local_flushes: int = 0
    factory_runs: int = 0
    lock_waits: int = 0
    stale_sets_prevented: int = 0
    breaker_state: str = "closed"
    breaker_opened: int = 0
    subscriptions: int = 0
    subscribed: bool = False
    #: ``time.perf_counter_ns()`` when the last remote invalidation was applied
    last_applied_ns: int = 0

    def snapshot(self, breaker: CircuitBreaker, link: RedisLink) -> TierStats:
        """A copy with the breaker's and the subscriber's state filled in."""
        sub = link.subscriber
        return dataclasses.replace(
            self,
            errors=breaker.errors,
            breaker_state=breaker.state,
            breaker_opened=breaker.opened,
            subscriptions=sub.subscriptions if sub else 0,
            subscribed=bool(sub and sub.subscribed),
        )


@dataclass
class Lease:
    """The outcome of one ``ACQUIRE``: a value, a granted lease, or "wait"."""

    key: Hashable
    data_key: str
    lease_key: str
    tags: tuple[Hashable, ...] = ()
    token: str | None = None
    gens: str = ""
    value: Any = NONE
    waiting: bool = False
    deadline: float = 0.0
    waits: int = 0

    def delay(self) -> float:
        """Seconds to sleep before polling again: 2 ms doubling up to 50 ms."""
        self.waits += 1
        return min(0.002 * (2 ** min(self.waits, 5)), 0.05)


class RedisLink:
    """One redis-py client for commands plus the subscriber's own connection."""

    def __init__(
        self,
        url: str,
        codec: TierCodec,
        *,
        socket_timeout: float,
        cluster: bool,
        breaker: CircuitBreaker,
        name: str,
        on_message: Callable[[bytes], None],
        on_resubscribe: Callable[[], None],
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ImportError(
                "the Redis tier needs redis-py: pip install 'cacheplug[redis]'"
            ) from exc
        self._redis = redis
        self.url = url
        self.codec = codec
        self.socket_timeout = socket_timeout
        self.cluster = cluster
        self.breaker = breaker
        self.name = name
        self._on_message = on_message
        self._on_resubscribe = on_resubscribe
        # RedisClusterException (cluster unreachable, slots not covered) is no RedisError.
        self._errors = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
        # Scripts are loaded before the first pipeline and again after any failure (Redis
        # may have restarted empty): a pipeline that meets NoScriptError must be re-run
        # whole, which publishes its invalidations twice.
        self._scripts_ready = False
        self.client: Any = None
        self.subscriber: Subscriber | None = None
        #: cluster nodes ``(host, port)`` the subscriber's last client found
        self._seeds: frozenset[tuple[str, int]] = frozenset()
        self._warned_tampered = False

    def connect(self, seeds: Iterable[tuple[str, int]] = ()) -> Any:
        """A new client: bounded timeouts, no hidden retries (the breaker retries).

        :param seeds: cluster nodes ``(host, port)`` to discover the cluster from, besides
            the URL's node.
        """
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.cluster:
            from redis.cluster import ClusterNode, RedisCluster

            nodes = [ClusterNode(host, port) for host, port in seeds]
            return RedisCluster.from_url(self.url, startup_nodes=nodes, **options)
        return self._redis.Redis.from_url(self.url, **options)

    def _connect_subscriber(self) -> Any:
        """The subscriber's client; in a cluster, seeded with the nodes known right now.

        The URL's node may be the master that failed: a client that knows only that node
        could never find the promoted replica, and the subscriber would stay away for good.
        """
        if not self.cluster:
            return self.connect()
        seeds = self._seeds
        client = self.client
        if client is not None:
            try:
                seeds = seeds | {(node.host, node.port) for node in client.get_nodes()}
            except Exception:  # the command client is refreshing its topology
                pass
        subscriber_client = self.connect(sorted(seeds))
        # Replaced, never updated in place: other threads read it without a lock.
        self._seeds = frozenset((node.host, node.port) for node in subscriber_client.get_nodes())
        return subscriber_client

    def start(self) -> None:
        """Create the client and start the subscriber; waits briefly for the subscription."""
        try:
            self.client = self.connect()
        except self._errors as exc:  # cluster discovery connects at once
            self._failed(exc)
            self.client = None
        self.subscriber = Subscriber(
            self._connect_subscriber,
            self.codec.channel,
            self._on_message,
            self._on_resubscribe,
            self._failed,
            name=self.name,
        )
        self.subscriber.start()
        # Without a live subscription we would miss invalidations; wait a moment for it
        # but never block start() on a Redis that is down.
        self.subscriber.wait_subscribed(4 * self.socket_timeout + 0.5)

    def close(self) -> None:
        """Stop the subscriber thread and close the client's connections."""
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass

    def _client(self) -> Any:
        if self.client is None:  # start() could not reach a cluster; try again now
            self.client = self.connect(sorted(self._seeds))
        return self.client

    # -- scripts ----------------------------------------------------------------------

    def _eval(self, name: str, keys: list[str], args: Iterable[Any]) -> Any:
        client = self._client()
        try:
            return client.evalsha(_SHAS[name], len(keys), *keys, *args)
        except self._redis.exceptions.NoScriptError:  # a restarted Redis forgot them
            return client.eval(_SCRIPTS[name], len(keys), *keys, *args)

    def _load_scripts(self) -> None:
        client = self._client()
        if self.cluster:
            # A cluster pipeline refuses SCRIPT LOAD; the plain command goes to every
            # primary, so the scripts are there whichever node owns the namespace's slot.
            for src in _SCRIPTS.values():
                client.script_load(src)
        else:
            pipe = client.pipeline(transaction=False)
            for src in _SCRIPTS.values():
                pipe.script_load(src)
            pipe.execute()
        self._scripts_ready = True

    def _failed(self, exc: BaseException) -> None:
        """A Redis call failed: tell the breaker; reload the scripts on the next write."""
        self._scripts_ready = False
        self.breaker.failure(exc)

    # -- reads ------------------------------------------------------------------------

    def get_many(
        self, keys: list[Hashable], stats: TierStats
    ) -> dict[Hashable, tuple[Any, tuple[Hashable, ...], int]]:
        """Read ``keys`` in one round trip; return ``{key: (value, tags, pttl_ms)}`` for hits."""
        names = [self.codec.data_key(key) for key in keys]
        try:
            reply = self._eval("GET", names, ())
        except self._errors as exc:
            self._failed(exc)
            return {}
        self.breaker.success()
        found = {}
        for i, key in enumerate(keys):
            blob, pttl = reply[2 * i], reply[2 * i + 1]
            if blob is None:
                stats.l2_misses += 1
                continue
            try:
                value, tags = self.codec.load_value(names[i], blob)
            except TamperedValueError as exc:
                self._tampered(stats, names[i], exc)
                continue
            stats.l2_hits += 1
            found[key] = (value, tags, pttl)
        return found

    def _tampered(self, stats: TierStats, where: str, exc: Exception) -> None:
        stats.rejected += 1
        if not self._warned_tampered:
            self._warned_tampered = True
            logger.warning("cacheplug %s: refused %s from Redis: %s", self.name, where, exc)

    # -- batched writes ---------------------------------------------------------------

    def send(self, ops: list[tuple[Any, ...]], origin: str, now: float, stats: TierStats) -> bool:
        """Write ``ops`` to Redis and publish their invalidations; False if Redis failed."""
        codec = self.codec
        commands: list[tuple[str, tuple[Any, ...]]] = []
        messages: list[tuple[Any, ...]] = []
        for op in ops:
            kind = op[0]
            try:
                if kind == "set":
                    _, key, value, expires_at, tags = op
                    dk, lk = codec.data_key(key), codec.lease_key(key)
                    messages.append(("del", key))  # an overwrite makes other copies stale
                    ttl_ms = _ttl_ms(expires_at, now)
                    try:
                        blob = codec.dump_value(dk, value, tags)
                    except Exception as exc:  # unpicklable: drop the old shared value
                        logger.warning("cacheplug %s: cannot share %r: %s", self.name, key, exc)
                        blob = None
                    if blob is None or ttl_ms < 0:
                        commands.append(("delete", (dk, lk)))
                    else:
                        tag_keys = [codec.tag_key(tag) for tag in tags]
                        commands.append(
                            ("evalsha", (_SHAS["SET"], 2, dk, lk, blob, ttl_ms, *tag_keys))
                        )
                elif kind == "del" or kind == "drop":
                    key = op[1]
                    commands.append(("delete", (codec.data_key(key), codec.lease_key(key))))
                    messages.append(("del", key))
                elif kind == "touch":
                    ttl_ms = _ttl_ms(op[2], now)
                    dk = codec.data_key(op[1])
                    commands.append(
                        ("persist", (dk,)) if ttl_ms == 0 else ("pexpire", (dk, max(ttl_ms, 1)))
                    )
                elif kind == "tags":
                    commands.extend(("incr", (codec.tag_key(tag),)) for tag in op[1])
                    messages.append(("tags", tuple(op[1])))
                elif kind in ("clear", "match"):
                    pattern = "*" if kind == "clear" else "s:" + op[1]
                    commands.append(("@unlink_matching", (pattern,)))
                    messages.append(op)
            except TypeError as exc:  # a key that has no Redis name is not shared
                logger.debug("cacheplug %s: not shared: %s", self.name, exc)
        if messages:
            message = codec.dump_message(origin, messages)
            commands.append(("publish", (codec.channel, message)))
        try:
            self._run(commands)
        except self._errors as exc:
            self._failed(exc)
            return False
        self.breaker.success()
        stats.sent_ops += len(ops)
        stats.published += bool(messages)
        return True

    def _run(self, commands: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run ``commands`` in pipelines (split at namespace scans), in order."""
        client = self._client()
        if not self._scripts_ready:
            self._load_scripts()
        batch: list[tuple[str, tuple[Any, ...]]] = []
        for command in [*commands, ("@end", ())]:
            method, args = command
            # A cluster pipeline runs each node's share concurrently, so a PUBLISH in it
            # could overtake the writes it announces: send it once they are done.
            if not (method.startswith("@") or (self.cluster and method == "publish")):
                batch.append(command)
                continue
            if batch:
                self._pipeline(client, batch)
                batch = []
            if method == "@unlink_matching":
                self._unlink_matching(client, args[0])
            elif method == "publish":
                client.publish(*args)

    def _pipeline(self, client: Any, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            for method, args in batch:
                pipe.execute_command(_COMMANDS[method], *args)
            results = pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if not errors:
                return
            if attempt == 1 and any(
                isinstance(e, self._redis.exceptions.NoScriptError) for e in errors
            ):
                # Redis restarted unnoticed. Redo the whole batch: SET/DEL are idempotent,
                # a second INCR only invalidates more, and the PUBLISH must follow the writes.
                self._load_scripts()
                continue
            if any(
                isinstance(e, self._errors) and not isinstance(e, self._redis.ResponseError)
                for e in errors
            ):
                raise errors[0]
            logger.warning("cacheplug %s: Redis refused a write: %s", self.name, errors[0])
            return

    def _unlink_matching(self, client: Any, pattern: str) -> None:
        """Remove the namespace's values and leases matching ``pattern`` (SCAN, not KEYS)."""
        tag = self.codec.tag
        for prefix in (f"{tag}:d:", f"{tag}:l:"):
            batch = []
            for name in client.scan_iter(match=prefix + pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)

    # -- leases (distributed single-flight) ------------------------------------------

    def acquire(
        self,
        key: Hashable,
        tags: tuple[Hashable, ...],
        lock_ttl: float,
        previous: Lease | None = None,
    ) -> Lease:
        """Read ``key`` or take its lease; a "waiting" lease means another process holds it.

        Falls back to running the factory without a lease (``token=None``) when Redis
        is unavailable, the key has no Redis name, or the wait outlasted ``lock_ttl``.
        """
        try:
            lease = previous or Lease(
                key, self.codec.data_key(key), self.codec.lease_key(key), tags
            )
        except TypeError:
            return Lease(key, "", "", tags)
        lease.waiting = False
        if previous is None:
            lease.deadline = time.monotonic() + lock_ttl + self.socket_timeout
        elif time.monotonic() > lease.deadline or not self.breaker.allow():
            return lease  # give up waiting: compute here
        if previous is None and not self.breaker.allow():
            return lease
        token = os.urandom(16).hex()
        tag_keys = [self.codec.tag_key(tag) for tag in tags]
        try:
            kind, payload, _ = self._eval(
                "ACQUIRE",
                [lease.data_key, lease.lease_key],
                (token, math.ceil(lock_ttl * 1000), *tag_keys),
            )
        except self._errors as exc:
            self._failed(exc)
            return lease
        self.breaker.success()
        if kind == 2:
            try:
                lease.value, _ = self.codec.load_value(lease.data_key, payload)
            except TamperedValueError:
                pass  # compute it ourselves, without a lease
        elif kind == 1:
            lease.token, lease.gens = (
                token,
                payload.decode() if isinstance(payload, bytes) else payload,
            )
        else:
            lease.waiting = True
        return lease

    def store(self, lease: Lease, value: Any, ttl_ms: int) -> bool:
        """Store a leased fill; False if a write or delete revoked the lease meanwhile."""
        if lease.token is None:  # degraded (no Redis, unnamed key, wait gave up): local only
            return True
        if ttl_ms < 0:
            self.release(lease)
            return True
        try:
            blob = self.codec.dump_value(lease.data_key, value, lease.tags)
        except Exception:
            self.release(lease)
            return True
        try:
            stored = self._eval(
                "STORE", [lease.data_key, lease.lease_key], (lease.token, blob, ttl_ms, lease.gens)
            )
        except self._errors as exc:
            self._failed(exc)
            return False
        self.breaker.success()
        return bool(stored)

    def release(self, lease: Lease) -> None:
        """Give the lease back early (the factory raised). Best effort."""
        if lease.token is None:
            return
        try:
            self._eval("RELEASE", [lease.lease_key], (lease.token,))
        except self._errors as exc:
            self._failed(exc)


def _ttl_ms(expires_at: float | None, now: float) -> int:
    """Remaining milliseconds for Redis: 0 means no expiry, -1 already expired."""
    if expires_at is None or expires_at == math.inf:
        return 0
    remaining = math.ceil((expires_at - now) * 1000)
    return remaining if remaining > 0 else -1
