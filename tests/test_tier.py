"""The Redis tier within one process: two plugs with distinct origins stand in for two
processes (the cross-process tests are in test_tier_processes.py)."""

from __future__ import annotations

import os
import pickle
import threading

import pytest
import redis

from cacheplug import CachePlug, ConfigurationError
from cacheplug._tier_breaker import CircuitBreaker
from cacheplug._tier_codec import TamperedValueError, TierCodec


@pytest.fixture
def pair(redis_url, redis_prefix):
    plugs = []

    def make(**options):
        options = {
            "redis_url": redis_url,
            "secret": "s3cret",
            "redis_prefix": redis_prefix,
            "sweep_interval": 0,
            **options,
        }
        plug = CachePlug(name=f"p{len(plugs)}", **options).start()
        plugs.append(plug)
        return plug

    yield make
    for plug in plugs:
        plug.close()


def sync(*plugs):
    for plug in plugs:
        plug.worker.flush(5)


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redis_url": "http://x"}, "redis_url must be a redis://"),
        ({"redis_url": "redis://x", "secret": None}, "needs a secret"),
        ({"redis_url": "redis://x", "secret": "s", "redis_prefix": "{a}"}, "redis_prefix"),
        (
            {"redis_url": "redis://x", "secret": "s", "redis_socket_timeout": 0},
            "redis_socket_timeout",
        ),
        ({"redis_url": "redis://x", "secret": "s", "redis_breaker_threshold": 0}, "threshold"),
        ({"redis_url": "redis://x", "secret": "s", "write_through": "yes"}, "write_through"),
    ],
)
def test_bad_redis_options_are_rejected(options, message, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match=message):
        CachePlug(**options)


# -- codec and breaker ------------------------------------------------------------------------


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cacheplug-tier-pwned",))


def test_codec_refuses_forged_and_moved_values():
    codec = TierCodec("s3cret", "ns")
    blob = codec.dump_value("{ns}:d:s:a", {"x": 1}, ("t",))
    assert codec.load_value("{ns}:d:s:a", blob) == ({"x": 1}, ("t",))
    with pytest.raises(TamperedValueError):
        codec.load_value("{ns}:d:s:b", blob)  # replayed under another key
    with pytest.raises(TamperedValueError):
        TierCodec("other", "ns").load_value("{ns}:d:s:a", blob)
    forged = b"cp1" + b"\0" * 32 + pickle.dumps(Boom())
    with pytest.raises(TamperedValueError):
        codec.load_value("{ns}:d:s:a", forged)
    with pytest.raises(TamperedValueError):
        codec.load_message(forged)
    assert codec.name(("user", 1)) == TierCodec("x", "y").name(("user", 1))  # stable


def test_breaker_opens_at_threshold_probes_after_reset_and_recovers(timer):
    recovered = []
    breaker = CircuitBreaker(2, 5.0, on_recover=lambda: recovered.append(1), timer=timer)
    breaker.failure(OSError("down"))
    assert breaker.allow()
    breaker.failure(OSError("down"))
    assert breaker.state == "open"
    assert not breaker.allow()
    timer.advance(5)
    assert breaker.allow()  # one probe
    assert not breaker.allow()  # not two at once
    breaker.failure(OSError("still down"))
    assert breaker.state == "open"
    assert breaker.opened == 2
    timer.advance(5)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert recovered == [1]
    assert breaker.errors == 3


# -- behaviour against a real Redis -----------------------------------------------------------


@pytest.mark.redis
def test_l2_fill_keeps_the_remaining_ttl_and_tags(pair):
    a, b = pair(), pair()
    a.cache.set("k", "v", ttl=30, tags=("t",))
    sync(a)
    assert _eventually(lambda: b.stats().tier.applied >= a.stats().tier.published)
    entry = b.cache.get_entry("k")
    assert entry.value == "v"
    assert entry.tags == ("t",)
    assert 0 < entry.expires_at - b.cache.timer() <= 30
    assert a.cache.get("k") == "v"
    b.invalidate_tags("t")  # hides B's copy, bumps the tag in Redis, tells A
    sync(b)
    assert b.cache.get("k") is None
    assert _eventually(lambda: "k" not in a.cache)
    assert a.cache.get("k") is None


@pytest.mark.redis
def test_get_many_reads_the_misses_in_one_round_trip(pair):
    a, b = pair(), pair()
    for i in range(5):
        a.cache.set(f"k{i}", i)
    sync(a)
    assert _eventually(lambda: b.stats().tier.applied >= a.stats().tier.published)
    b.cache.set("k0", "local")
    assert b.cache.get_many(["k0", "k1", "k2", "nope"]) == {"k0": "local", "k1": 1, "k2": 2}
    stats = b.stats().tier
    assert (stats.l2_hits, stats.l2_misses) == (2, 1)
    assert "k1" in b.cache  # filled


@pytest.mark.redis
def test_remote_invalidations_are_not_rebroadcast_and_evictions_not_broadcast(pair):
    a, b = pair(maxsize=4, shards=1), pair()
    a.cache.set("shared", 1)
    sync(a)
    assert b.cache.get("shared") == 1
    published = b.stats().tier.published
    a.cache.delete("shared")
    sync(a)
    assert _eventually(lambda: "shared" not in b.cache)
    sync(b)
    assert b.stats().tier.published == published  # applying it sent nothing back
    b.cache.set("hot", "b")
    sync(b)
    assert a.cache.get("hot") == "b"
    for i in range(10):  # A evicts "hot" locally: a local decision, nothing published
        a.cache.set(f"fill{i}", i)
    sync(a)
    assert "hot" in b.cache


@pytest.mark.redis
def test_a_forged_value_in_redis_is_refused_before_unpickling(pair, redis_url, redis_prefix):
    b = pair()
    client = redis.Redis.from_url(redis_url)
    try:
        forged = b"cp1" + b"\0" * 32 + pickle.dumps(Boom())
        client.hset("{" + redis_prefix + "}:d:s:evil", mapping={"v": forged, "g": ""})
        assert b.cache.get("evil") is None
        assert b.stats().tier.rejected == 1
        assert not os.path.exists("/tmp/cacheplug-tier-pwned")
    finally:
        client.close()


@pytest.mark.redis
def test_write_through_is_visible_without_waiting_for_the_worker(pair):
    a, b = pair(write_through=True), pair()
    a.cache.set("k", "now")
    assert b.cache.get("k") == "now"


@pytest.mark.redis
def test_delete_matching_and_clear_reach_redis_and_other_processes(pair):
    a, b = pair(), pair()
    for key in ("page:1", "page:2", "user:1"):
        a.cache.set(key, key)
    sync(a)
    assert b.cache.get_many(["page:1", "user:1"]) == {"page:1": "page:1", "user:1": "user:1"}
    a.delete_matching("page:*")
    sync(a)
    assert _eventually(lambda: "page:1" not in b.cache)
    assert b.cache.get("page:2") is None
    assert b.cache.get("user:1") == "user:1"
    a.cache.clear()
    sync(a)
    assert _eventually(lambda: "user:1" not in b.cache)
    assert b.cache.get("user:1") is None


@pytest.mark.redis
async def test_aget_or_set_shares_the_value_and_a_raising_factory_caches_nothing(pair):
    a, b = pair(), pair()

    async def boom():
        raise ValueError("db down")

    with pytest.raises(ValueError, match="db down"):
        await a.aget_or_set("k", boom)

    async def make():
        return {"computed": True}

    assert await a.aget_or_set("k", make) == {"computed": True}
    calls = []

    async def never():
        calls.append(1)
        return "other"

    assert await b.aget_or_set("k", never) == {"computed": True}
    assert calls == []


def _eventually(condition, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.redis
def test_a_delete_not_yet_in_redis_is_not_undone_by_an_l2_read(pair):
    """delete() returns before the worker tells Redis; until then the process must not
    read the old value back from Redis (get, get_many, get_or_set)."""
    import threading

    a = pair()
    a.cache.set("k", "old")
    a.cache.set("j", "old-j")
    sync(a)
    gate = threading.Event()
    a.worker.submit(lambda: gate.wait(10))  # hold the worker: the deletes stay unsent
    try:
        a.cache.delete("k")
        assert a.cache.get("k") is None
        assert a.cache.get_many(["k"]) == {}
        a.cache.clear()
        assert a.cache.get("j") is None
        assert a.get_or_set("k", lambda: "new") == "new"  # pushed the delete first
    finally:
        gate.set()
    sync(a)
    assert a.cache.get("k") == "new"
    assert a.cache.get("j") is None


def test_a_plug_with_the_tier_and_a_state_dir_logs_and_shares_every_write(pair, tmp_path):
    # Both consumers of a write at once: the write-ahead log (fed under the cache's
    # locks) and the tier (fed by the listener after them).
    a = pair(state_dir=tmp_path / "a")
    b = pair()
    a.cache.set("kept", {"v": 1}, ttl=60, tags=("t1",))
    a.cache.set("gone", "x", ttl=60)
    a.cache.set("tagged", "y", ttl=60, tags=("t2",))
    a.cache.delete("gone")
    a.invalidate_tags("t2")
    a.cache.touch("kept", 120)
    sync(a)
    assert _eventually(lambda: b.stats().tier.applied >= a.stats().tier.published)
    assert b.cache.get("kept") == {"v": 1}  # through L2
    assert b.cache.get("gone") is None
    assert b.cache.get("tagged") is None
    assert a.stats().persistence.last_seq == 6  # every write logged, once
    a.close()
    reloaded = CachePlug(state_dir=tmp_path / "a", secret="s3cret", sweep_interval=0).start()
    try:
        assert dict(reloaded.cache.items()) == {"kept": {"v": 1}}
        entry = reloaded.cache.get_entry("kept")
        assert entry is not None
        assert entry.expires_at - reloaded.cache.timer() > 60  # the touch was logged too
    finally:
        reloaded.close()


@pytest.mark.parametrize("second", ["delete", "set"])
def test_redis_gets_one_key_s_writes_in_the_order_they_were_applied(pair, second):
    # Thread A writes "k" first, but its listener call lags behind thread B's later
    # write to "k": Redis, and so every other process, must still end with B's write.
    a, b = pair(), pair()
    listener = a._on_cache_event
    a_written, b_notified = threading.Event(), threading.Event()

    def lagging_listener(event, key, value, *rest):
        if value == "from-a":
            a_written.set()
            assert b_notified.wait(5)
        elif key == "k":
            b_notified.set()
        listener(event, key, value, *rest)

    a.cache.set_listener(lagging_listener)
    writer = threading.Thread(target=a.cache.set, args=("k", "from-a"), kwargs={"ttl": 60})
    writer.start()
    assert a_written.wait(5)
    if second == "delete":
        a.cache.delete("k")
    else:
        a.cache.set("k", "from-b", ttl=60)
    writer.join(5)
    sync(a)
    expected = None if second == "delete" else "from-b"
    assert a.cache.get("k") == expected
    assert b.cache.get("k") == expected  # a local miss in b: read through Redis
