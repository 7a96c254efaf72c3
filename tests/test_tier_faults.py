"""The Redis tier when Redis dies: a redis-server of the test's own is SIGKILLed and
restarted on the same port. Requests keep succeeding from the local tier; afterwards
the tier recovers by itself, flushes the local tier and is coherent again."""

from __future__ import annotations

import time

import pytest

from cacheplug import CachePlug

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def wait_for(condition, timeout: float = 15.0, step=None) -> bool:
    """Poll ``condition`` (driving ``step`` between polls) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if step is not None:
            step()
        time.sleep(0.02)
    return condition()


def make(url: str, name: str) -> CachePlug:
    return CachePlug(
        redis_url=url,
        secret="fault-secret",
        redis_prefix="faults",
        name=name,
        sweep_interval=0,
        redis_socket_timeout=0.2,
        redis_breaker_reset=0.2,
        redis_breaker_threshold=2,
    ).start()


def test_redis_killed_then_restarted(own_redis):
    a, b = make(own_redis.url, "a"), make(own_redis.url, "b")
    try:
        a.cache.set("k1", "v1")
        a.worker.flush(5)
        # A's overwrite is broadcast as "drop k1"; pub/sub delivery is asynchronous, so
        # wait until B applied it, or it could drop the copy B is about to read.
        assert wait_for(lambda: b.stats().tier.applied >= a.stats().tier.published >= 1)
        assert b.cache.get("k1") == "v1"  # L2 -> now local in B
        assert "k1" in b.cache  # held locally (``in`` never reads Redis)
        assert b.stats().tier.local_flushes == 0
        own_redis.kill()

        # Redis is gone: nothing raises, local hits keep serving, misses are misses.
        for i in range(20):
            assert b.cache.get("k1") == "v1"
            assert b.cache.get(f"absent:{i}") is None
            a.cache.set(f"during:{i}", i)
            assert a.cache.get(f"during:{i}") == i
            a.cache.delete("k1")  # dropped while down; replayed as a delete later
            assert a.get_or_set(f"gos:{i}", lambda i=i: i * 2) == i * 2
        a.worker.flush(5)
        assert wait_for(lambda: a.tier.breaker.state != "closed", step=lambda: a.cache.get("x"))
        stats = a.stats().tier
        assert stats.errors >= 2
        assert stats.dropped >= 1
        assert stats.breaker_opened >= 1

        own_redis.start()  # same port, empty
        # The tier finds Redis again by itself (breaker probe + subscriber reconnect)...
        assert wait_for(
            lambda: (
                a.tier.breaker.state == "closed"
                and b.tier.breaker.state == "closed"
                and a.stats().tier.subscribed
                and b.stats().tier.subscribed
            ),
            step=lambda: (a.cache.get("probe"), b.cache.get("probe")),
        )
        # ...and flushed the local copies it could no longer trust.
        assert "k1" not in b.cache
        assert b.stats().tier.local_flushes >= 1

        # Coherence is back: writes travel, deletes reach the other process.
        a.cache.set("k2", "fresh")
        a.worker.flush(5)
        assert b.cache.get("k2") == "fresh"
        a.cache.delete("k2")
        a.worker.flush(5)
        assert wait_for(lambda: "k2" not in b.cache, timeout=5)
        assert b.cache.get("k2") is None
    finally:
        a.close()
        b.close()


def test_start_with_redis_down_serves_locally_and_connects_later(own_redis):
    url = own_redis.url
    own_redis.kill()
    plug = make(url, "late")
    try:
        plug.cache.set("k", 1)
        assert plug.cache.get("k") == 1
        assert plug.cache.get("missing") is None
        own_redis.start()
        assert wait_for(lambda: plug.stats().tier.subscribed, step=lambda: plug.cache.get("p"))
        plug.cache.set("k", 2)
        plug.worker.flush(5)
        other = make(url, "other")
        try:
            assert other.cache.get("k") == 2
        finally:
            other.close()
    finally:
        plug.close()


def test_slow_redis_opens_breaker_without_flushing_local_tier(own_redis):
    """Redis stalls (``CLIENT PAUSE``): commands time out and the breaker opens, but the
    subscriber stays connected, so no invalidation was missed and recovery keeps the
    local copies (a flush would only stampede the database). A lost subscription still
    flushes: see test_redis_killed_then_restarted."""
    import redis

    a, b = make(own_redis.url, "a"), make(own_redis.url, "b")
    control = redis.Redis.from_url(own_redis.url)
    try:
        b.cache.set("k", "local")
        b.worker.flush(5)
        control.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        assert wait_for(lambda: b.tier.breaker.state != "closed", step=lambda: b.cache.get("x"))
        assert b.cache.get("k") == "local"  # served locally while Redis stalls
        assert wait_for(lambda: b.tier.breaker.state == "closed", step=lambda: b.cache.get("x"))
        stats = b.stats().tier
        assert stats.breaker_opened >= 1
        assert stats.recoveries >= 1
        assert stats.subscriptions == 1  # never lost the channel
        assert stats.subscribed
        assert stats.local_flushes == 0
        assert "k" in b.cache
        # Still coherent: a delete elsewhere reaches the kept copy.
        a.cache.delete("k")
        a.worker.flush(5)
        assert wait_for(lambda: "k" not in b.cache, timeout=5)
    finally:
        control.close()
        a.close()
        b.close()


def test_first_write_to_a_fresh_redis_is_published_once(own_redis):
    """A fresh (or restarted) Redis has no scripts loaded. The tier loads them before
    writing rather than re-running a failed pipeline, which would publish twice."""
    a, b = make(own_redis.url, "a"), make(own_redis.url, "b")
    try:
        for n, key in enumerate(("k1", "k2"), 1):
            a.cache.set(key, n)
            a.worker.flush(5)
            assert wait_for(lambda n=n: b.stats().tier.applied >= n)
        # Messages from one connection arrive in order: k2's came after all of k1's.
        assert b.tier.link.subscriber.received == 2
        assert b.cache.get("k1") == 1
    finally:
        a.close()
        b.close()
