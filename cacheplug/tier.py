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

The tier is :class:`RedisTier` (its options, lifecycle and the cache's miss hook),
built from ``_tier_coherence`` (writes out, invalidations in, recovery) and
``_tier_reads`` (L2 reads and the ``get_or_set`` lease).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Hashable
from typing import Any

from cacheplug import _tier_flags
from cacheplug._tier_breaker import CircuitBreaker
from cacheplug._tier_codec import TierCodec
from cacheplug._tier_reads import TierReads
from cacheplug._tier_redis import RedisLink, TierStats
from cacheplug.cache import ShardedTTLCache

__all__ = ("RedisTier", "TierStats")

logger = logging.getLogger("cacheplug.tier")

# Bound by assignment, not by import (see _tier_coherence); both also stay importable
# from here, as before the split.
_remote = _tier_flags.remote
_context = _tier_flags.scoped


class RedisTier(TierReads):
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
        self._init_coherence(submit)
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

    def __repr__(self) -> str:
        return f"<RedisTier {self.codec.prefix!r} breaker={self.breaker.state}>"


class _MissHook:
    """What ``ShardedTTLCache`` calls on a local miss (``cache._on_miss``)."""

    __slots__ = ("get_many", "tier")

    def __init__(self, tier: RedisTier) -> None:
        self.tier = tier
        self.get_many = tier.get_many

    def deleted(self, key: Hashable) -> None:
        """A delete of a key this process does not hold: still delete it everywhere.

        The cache journals no delete for a key it did not hold, so the tier hears it here.
        """
        if not _remote.get():
            self.tier.enqueue(("del", key))

    def __call__(self, key: Hashable, default: Any) -> Any:
        try:
            return self.tier.read(key, default)
        except TypeError:  # a key that cannot be named in Redis is simply not shared
            return default
