"""Freshness options on ``CachePlug.get_or_set`` with the Redis tier: what crosses
processes (``negative_ttl``), what stays per process (``negative_exceptions``), what is
refused (background refreshes), and that a cached "not found" exception never reaches
Redis."""

from __future__ import annotations

import time

import pytest
import redis

from cacheplug import CachePlug, ConfigurationError
from cacheplug.freshness import CachedError

pytestmark = pytest.mark.redis


@pytest.fixture
def pair(redis_url, redis_prefix):
    plugs = []

    def make(**options):
        plug = CachePlug(
            name=f"f{len(plugs)}",
            redis_url=redis_url,
            secret="s3cret",
            redis_prefix=redis_prefix,
            sweep_interval=0,
            **options,
        ).start()
        plugs.append(plug)
        return plug

    yield make
    for plug in plugs:
        plug.close()


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def data_key(prefix: str, key: str) -> str:
    return "{" + prefix + "}:d:s:" + key


def eventually(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("option", ["early_refresh", "stale_while_revalidate", "stale_if_error"])
async def test_background_refresh_options_are_refused_with_the_tier(pair, option):
    plug = pair()
    with pytest.raises(ConfigurationError, match=f"{option} not supported .* redis_url"):
        plug.get_or_set("k", lambda: 1, **{option: 1.0})

    async def factory():
        return 1

    with pytest.raises(ConfigurationError, match=option):
        await plug.aget_or_set("k", factory, **{option: 1.0})
    assert "k" not in plug.cache  # refused before anything ran


def test_a_none_result_is_shared_for_negative_ttl(pair, client, redis_prefix):
    a, b = pair(), pair()
    assert a.get_or_set("user:404", lambda: None, ttl=300, negative_ttl=5) is None
    pttl = client.pttl(data_key(redis_prefix, "user:404"))
    assert 0 < pttl <= 5000  # the negative TTL, not the 300 s one
    entry = a.cache.get_entry("user:404")
    assert entry.expires_at - a.cache.timer() <= 5
    calls = []
    assert b.get_or_set("user:404", lambda: calls.append(1), negative_ttl=5) is None
    assert calls == []  # B got the shared None from Redis


def test_negative_exceptions_are_cached_per_process_and_never_in_redis(pair, client, redis_prefix):
    a, b = pair(), pair()
    calls = []

    def missing():
        calls.append(1)
        raise LookupError("no row 9")

    for _ in range(3):
        with pytest.raises(LookupError, match="no row 9"):
            a.get_or_set("row:9", missing, negative_ttl=60, negative_exceptions=LookupError)
    assert calls == [1]  # cached in A
    a.worker.flush(5)
    assert not client.exists(data_key(redis_prefix, "row:9"))
    assert not client.exists("{" + redis_prefix + "}:l:s:row:9")  # the lease was given back
    with pytest.raises(LookupError):
        b.get_or_set("row:9", missing, negative_ttl=60, negative_exceptions=LookupError)
    assert calls == [1, 1]  # B ran its own factory (per process), and did not wait


def test_a_cached_error_written_locally_is_not_written_to_redis(pair, client, redis_prefix):
    """The core's own get_or_set with negative_exceptions stores a CachedError through
    the write listener: the tier must send it as a delete, never as a value."""
    a, b = pair(), pair()
    a.cache.set("row:1", "old row")
    a.worker.flush(5)
    assert b.cache.get("row:1") == "old row"  # B holds a copy
    assert client.exists(data_key(redis_prefix, "row:1"))

    def gone():
        raise LookupError("row 1 deleted")

    a.cache.delete("row:1")  # drop the value so get_or_set runs its factory
    with pytest.raises(LookupError):
        a.cache.get_or_set("row:1", gone, negative_ttl=60, negative_exceptions=LookupError)
    assert isinstance(a.cache.get("row:1"), CachedError)
    a.worker.flush(5)
    assert not client.exists(data_key(redis_prefix, "row:1"))
    assert eventually(lambda: "row:1" not in b.cache)
    assert b.cache.get("row:1") is None  # nothing in Redis for B to read
    assert isinstance(a.cache.get("row:1"), CachedError)  # A keeps its negative entry
    blobs = [
        client.hget(name, "v") for name in client.scan_iter(match="{" + redis_prefix + "}:d:*")
    ]
    assert all(b"CachedError" not in blob for blob in blobs if blob)


def test_an_overwrite_by_a_cached_error_drops_other_copies(pair, client, redis_prefix):
    a, b = pair(), pair()
    a.cache.set("k", "v1")
    a.worker.flush(5)
    assert b.cache.get("k") == "v1"
    assert eventually(lambda: b.stats().tier.applied >= a.stats().tier.published)
    assert b.cache.get("k") == "v1"
    assert "k" in b.cache
    a.cache.set("k", CachedError(LookupError("gone")))  # as a negative get_or_set stores it
    a.worker.flush(5)
    assert not client.exists(data_key(redis_prefix, "k"))
    assert eventually(lambda: "k" not in b.cache)
    assert isinstance(a.cache.get("k"), CachedError)


async def test_aget_or_set_with_negative_options_across_processes(pair, client, redis_prefix):
    a, b = pair(), pair()

    async def none():
        return None

    assert await a.aget_or_set("u:1", none, ttl=300, negative_ttl=5) is None
    assert 0 < client.pttl(data_key(redis_prefix, "u:1")) <= 5000

    calls = []

    async def missing():
        calls.append(1)
        raise KeyError("u:2")

    for _ in range(2):
        with pytest.raises(KeyError):
            await b.aget_or_set("u:2", missing, negative_ttl=60, negative_exceptions=KeyError)
    assert calls == [1]
    b.worker.flush(5)
    assert not client.exists(data_key(redis_prefix, "u:2"))


def test_the_cache_get_or_set_keeps_refresh_options_per_process(pair):
    """The documented alternative for refresh options with a tier: plug.cache.get_or_set
    runs them per process and its results still reach Redis and the other processes."""
    a, b = pair(), pair()
    assert a.cache.get_or_set("k", lambda: "v", ttl=60, stale_while_revalidate=30) == "v"
    a.worker.flush(5)
    assert b.cache.get("k") == "v"
