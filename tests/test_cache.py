"""Unit tests for ShardedTTLCache, on a fake clock: no test sleeps to test expiry."""

from __future__ import annotations

import asyncio
import math
import threading

import cachetools
import pytest

from cacheplug import (
    NO_EXPIRY,
    CachePlugError,
    ConfigurationError,
    ShardedTTLCache,
    UnhashableKeyError,
)


@pytest.fixture
def cache(timer):
    return ShardedTTLCache(maxsize=100, ttl=10.0, shards=4, timer=timer)


# -- construction -----------------------------------------------------------------------


@pytest.mark.parametrize("maxsize", [0, -1, 2**31 + 1, 1.5, "10", True])
def test_maxsize_out_of_range_names_the_valid_range(maxsize):
    with pytest.raises(ConfigurationError, match="maxsize must be an int from 1 to 2\\*\\*31"):
        ShardedTTLCache(maxsize=maxsize)


@pytest.mark.parametrize("shards", [0, 3, 6, 2048, -4, 2.0])
def test_shards_must_be_a_power_of_two_in_range(shards):
    with pytest.raises(ValueError, match="power of two from 1 to 1024"):
        ShardedTTLCache(shards=shards)


@pytest.mark.parametrize("ttl", [0, -1, "5", float("nan")])
def test_default_ttl_must_be_positive_or_none(ttl):
    with pytest.raises(ConfigurationError, match="ttl must be a positive number"):
        ShardedTTLCache(ttl=ttl)


def test_configuration_error_is_both_ours_and_a_value_error():
    with pytest.raises(CachePlugError):
        ShardedTTLCache(maxsize=0)
    assert issubclass(ConfigurationError, ValueError)


def test_shards_are_lowered_so_no_shard_is_empty():
    cache = ShardedTTLCache(maxsize=5, shards=16)
    assert cache.shard_count == 4
    assert sum(s.capacity for s in cache._shards) == 5


# -- get / set / delete -----------------------------------------------------------------


def test_set_then_get(cache):
    assert cache.set("a", 1) is True
    assert cache.get("a") == 1
    assert cache["a"] == 1
    assert "a" in cache
    assert len(cache) == 1


def test_get_miss_returns_default(cache):
    assert cache.get("nope") is None
    assert cache.get("nope", 7) == 7
    with pytest.raises(KeyError):
        cache["nope"]


def test_falsy_values_are_hits(cache):
    for key, value in {"none": None, "zero": 0, "empty": "", "false": False}.items():
        cache.set(key, value)
        assert cache.get(key, "default") == value
    assert cache.stats().hits == 4


def test_delete_reports_whether_a_live_entry_went(cache, timer):
    cache.set("a", 1)
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    assert cache.get("a") is None
    cache.set("b", 1, ttl=1)
    timer.advance(2)
    assert cache.delete("b") is False  # it was already dead


def test_delitem_raises_keyerror_on_missing(cache):
    with pytest.raises(KeyError):
        del cache["missing"]
    cache["x"] = 1
    del cache["x"]
    assert "x" not in cache


def test_get_many_set_many_delete_many(cache):
    cache.set_many({"a": 1, "b": 2, "c": 3})
    assert cache.get_many(["a", "b", "zzz"]) == {"a": 1, "b": 2}
    assert cache.delete_many(["a", "zzz", "c"]) == 2
    assert cache.keys() == ["b"]


@pytest.mark.parametrize("key", [["list"], {"a": 1}, {1, 2}])
def test_unhashable_key_is_a_type_error_naming_the_type(cache, key):
    for op in (cache.get, cache.delete, lambda k: cache.set(k, 1), cache.__contains__):
        with pytest.raises(UnhashableKeyError, match=type(key).__name__) as info:
            op(key)
        assert isinstance(info.value, TypeError)


def test_bad_ttl_in_a_call_is_rejected(cache):
    with pytest.raises(TypeError, match="ttl must be a number"):
        cache.set("a", 1, ttl="10")
    with pytest.raises(ValueError, match="nan"):
        cache.set("a", 1, ttl=math.nan)
    assert "a" not in cache


# -- expiry -----------------------------------------------------------------------------


def test_entry_expires_after_its_ttl(cache, timer):
    cache.set("a", 1, ttl=5)
    timer.advance(4.999)
    assert cache.get("a") == 1
    timer.advance(0.001)
    assert cache.get("a") is None
    assert "a" not in cache


def test_default_ttl_applies_when_ttl_is_none(cache, timer):
    cache.set("a", 1)
    timer.advance(9.9)
    assert "a" in cache
    timer.advance(0.2)
    assert "a" not in cache


def test_no_expiry_entry_lives_forever(cache, timer):
    cache.set("a", 1, ttl=NO_EXPIRY)
    timer.advance(1e9)
    assert cache.get("a") == 1
    assert cache.get_entry("a").expires_at is None


def test_cache_without_default_ttl_never_expires(timer):
    cache = ShardedTTLCache(maxsize=10, ttl=None, timer=timer)
    cache.set("a", 1)
    timer.advance(1e9)
    assert cache.get("a") == 1
    assert cache.ttl is None


@pytest.mark.parametrize("ttl", [0, -5])
def test_zero_or_negative_ttl_stores_nothing_and_removes_existing(cache, ttl):
    cache.set("a", 1)
    assert cache.set("a", 2, ttl=ttl) is True
    assert "a" not in cache
    assert len(cache) == 0


def test_expired_entry_counts_as_miss_and_is_removed_lazily(cache, timer):
    cache.set("a", 1, ttl=1)
    timer.advance(1)
    assert len(cache) == 1  # not removed until something looks at it
    assert cache.get("a") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.size) == (0, 1, 1, 0)


def test_expire_removes_dead_entries_and_counts_them(cache, timer):
    for i in range(10):
        cache.set(i, i, ttl=1 if i % 2 else 100)
    timer.advance(2)
    assert cache.expire() == 5
    assert sorted(cache.keys()) == [0, 2, 4, 6, 8]
    assert cache.stats().expirations == 5
    assert cache.expire() == 0


def test_touch_extends_a_live_entry_only(cache, timer):
    cache.set("a", 1, ttl=2)
    version = cache.get_entry("a").version
    timer.advance(1)
    assert cache.touch("a", ttl=10) is True
    timer.advance(5)
    assert cache.get("a") == 1
    assert cache.get_entry("a").version == version  # touching is not a write
    assert cache.touch("missing") is False
    cache.set("b", 1, ttl=1)
    timer.advance(1)
    assert cache.touch("b") is False


def test_touch_with_zero_ttl_expires_now(cache):
    cache.set("a", 1)
    assert cache.touch("a", ttl=0) is True
    assert "a" not in cache


def test_items_keys_values_skip_dead_entries(cache, timer):
    cache.set("a", 1, ttl=1)
    cache.set("b", 2, ttl=5)
    timer.advance(2)
    assert cache.items() == [("b", 2)]
    assert cache.keys() == ["b"]
    assert cache.values() == [2]
    assert list(cache) == ["b"]


# -- bounded size and SIEVE eviction ----------------------------------------------------


def test_size_never_exceeds_maxsize(timer):
    cache = ShardedTTLCache(maxsize=64, shards=8, timer=timer)
    for i in range(1000):
        cache.set(f"k{i}", i)
        assert len(cache) <= 64
    stats = cache.stats()
    assert stats.size <= 64
    assert stats.evictions == 1000 - stats.size


def test_sieve_keeps_visited_entries_over_unvisited_ones(timer):
    cache = ShardedTTLCache(maxsize=4, shards=1, timer=timer)
    for key in "abcd":
        cache.set(key, key)
    cache.get("a")
    cache.get("b")
    cache.set("e", "e")  # evicts the oldest unvisited entry: c
    assert sorted(cache.keys()) == ["a", "b", "d", "e"]
    cache.set("f", "f")  # a and b lose their visited bits on the way; d is next
    assert sorted(cache.keys()) == ["a", "b", "e", "f"]


def test_eviction_prefers_a_dead_entry_on_the_hands_way(timer):
    cache = ShardedTTLCache(maxsize=3, shards=1, timer=timer)
    cache.set("a", 1, ttl=100)
    cache.set("b", 1, ttl=1)
    cache.set("c", 1, ttl=100)
    cache.get("a")
    timer.advance(2)
    cache.set("d", 1)
    assert sorted(cache.keys()) == ["a", "c", "d"]
    stats = cache.stats()
    assert (stats.evictions, stats.expirations) == (0, 1)


def test_queue_compaction_keeps_order_and_slots(timer):
    cache = ShardedTTLCache(maxsize=50, shards=1, timer=timer)
    for i in range(50):
        cache.set(i, i)
    for i in range(0, 50, 2):
        cache.delete(i)  # 25 holes, then compaction when holes outnumber live entries
    for i in range(1, 40, 2):
        cache.delete(i)
    shard = cache._shards[0]
    assert shard.holes == 0 or shard.holes <= max(32, shard.size)
    assert sorted(cache.keys()) == list(range(41, 50, 2))
    for slot, item in enumerate(shard.queue):
        if item is not None:
            assert item[5] == slot  # the slot index each item remembers is right
    for i in range(100, 200):
        cache.set(i, i)
    assert len(cache) == 50


def test_overwrite_keeps_size_and_does_not_evict(cache):
    for i in range(100):
        cache.set(i, i)
    for i in range(100):
        cache.set(i, -i)
    assert len(cache) == 100
    assert cache.stats().evictions == 0
    assert cache.get(7) == -7


# -- versions and compare-and-set -------------------------------------------------------


def test_every_write_raises_the_version(cache):
    cache.set("a", 1)
    v1 = cache.get_entry("a").version
    cache.set("a", 2)
    v2 = cache.get_entry("a").version
    cache.set("b", 1)
    cache.set("a", 3)
    assert v1 < v2 < cache.get_entry("a").version


def test_compare_and_set_on_version(cache):
    assert cache.set("a", 1, if_version=0) is True  # 0 means "only if absent"
    assert cache.set("a", 2, if_version=0) is False
    version = cache.get_entry("a").version
    assert cache.set("a", 2, if_version=version + 1) is False
    assert cache.get("a") == 1
    assert cache.set("a", 2, if_version=version) is True
    assert cache.get("a") == 2
    assert cache.set("a", 3, if_version=version) is False  # stale version now


def test_compare_and_set_treats_expired_entry_as_absent(cache, timer):
    cache.set("a", 1, ttl=1)
    timer.advance(1)
    assert cache.set("a", 2, if_version=0) is True


def test_get_entry_copy(cache, timer):
    cache.set("a", [1], ttl=5, tags=("t",))
    entry = cache.get_entry("a")
    assert entry.key == "a"
    assert entry.value == [1]
    assert entry.tags == ("t",)
    assert entry.expires_at == pytest.approx(timer.now + 5)
    assert cache.get_entry("missing") is None
    with pytest.raises(AttributeError):
        entry.value = 2  # frozen


# -- tags -------------------------------------------------------------------------------


def test_invalidate_tags_hides_tagged_entries_only(cache):
    cache.set("p1", 1, tags=("product", "p1"))
    cache.set("p2", 2, tags=("product",))
    cache.set("u", 3, tags=("user",))
    cache.set("plain", 4)
    cache.invalidate_tags("product")
    assert cache.get("p1") is None
    assert cache.get("p2") is None
    assert cache.get("u") == 3
    assert cache.get("plain") == 4


def test_entries_set_after_invalidation_are_live(cache):
    cache.set("a", 1, tags=("t",))
    cache.invalidate_tags("t")
    cache.set("a", 2, tags=("t",))
    assert cache.get("a") == 2


def test_expire_frees_memory_of_tag_invalidated_entries(cache):
    for i in range(10):
        cache.set(i, i, tags=("t",) if i < 6 else ())
    cache.invalidate_tags("t")
    assert len(cache) == 10
    assert cache.expire() == 6
    assert len(cache) == 4


def test_invalidate_does_not_scan(cache):
    """O(1) per tag: the entries are untouched until read or swept."""
    for i in range(100):
        cache.set(i, i, tags=("t",))
    queue_before = list(cache._shards[0].queue)
    cache.invalidate_tags("t", "unused")
    assert cache._shards[0].queue == queue_before
    assert cache._tag_gens == {"t": 1, "unused": 1}


# -- clear, stats, mapping behaviour ----------------------------------------------------


def test_clear_empties_everything(cache):
    for i in range(50):
        cache.set(i, i)
    cache.clear()
    assert len(cache) == 0
    assert cache.keys() == []
    assert sum(cache.shard_sizes()) == 0
    cache.set("x", 1)
    assert cache.get("x") == 1


def test_stats_counts_every_kind_of_event(timer):
    cache = ShardedTTLCache(maxsize=2, shards=1, timer=timer)
    cache.set("a", 1)
    cache.set("b", 1, ttl=1)
    cache.get("a")
    cache.get("zz")
    cache.delete("a")
    timer.advance(2)
    cache.get("b")
    cache.set("c", 1)
    cache.set("d", 1)
    cache.set("e", 1)
    stats = cache.stats()
    assert (stats.sets, stats.hits, stats.misses, stats.deletes) == (5, 1, 2, 1)
    assert stats.expirations == 1
    assert stats.evictions == 1
    assert stats.size == 2
    assert stats.maxsize == 2
    assert stats.hit_ratio == pytest.approx(1 / 3)


def test_works_as_a_cachetools_cached_store():
    cache = ShardedTTLCache(maxsize=100)
    calls = []

    @cachetools.cached(cache=cache, lock=threading.Lock(), info=True)
    def square(x):
        calls.append(x)
        return x * x

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    info = square.cache_info()
    # cachetools reports maxsize only for its own Cache subclasses; currsize is len().
    assert (info.hits, info.misses, info.currsize) == (1, 2, 2)


def test_deleting_while_iterating_items_is_safe(cache):
    for i in range(100):
        cache.set(i, i)
    for key, _value in cache.items():
        cache.delete(key)  # the snapshot does not change under the loop
    assert len(cache) == 0
    for i in range(20):
        cache.set(i, i)
    for key in cache:  # __iter__ iterates a snapshot too
        del cache[key]
    assert len(cache) == 0


def test_mapping_mixins_work(cache):
    cache.update({"a": 1, "b": 2})
    assert cache.pop("a") == 1
    assert cache.setdefault("c", 3) == 3
    assert cache.pop("zz", None) is None
    assert sorted(cache.keys()) == ["b", "c"]


def test_cache_is_hashable_and_compares_by_identity():
    a, b = ShardedTTLCache(maxsize=4), ShardedTTLCache(maxsize=4)
    assert a != b
    assert len({a, b}) == 2


def test_listener_sees_every_write(timer):
    events = []
    cache = ShardedTTLCache(maxsize=2, shards=1, timer=timer, listener=lambda *e: events.append(e))
    cache.set("a", 1, tags=("t",))
    cache.set("b", 2, ttl=1)
    cache.set("c", 3)  # evicts a (unvisited, oldest)
    cache.delete("c")
    cache.invalidate_tags("t")
    timer.advance(5)
    cache.get("b")  # lazily expired
    cache.clear()
    kinds = [(e[0], e[1]) for e in events]
    assert kinds == [
        ("set", "a"),
        ("set", "b"),
        ("evict", "a"),
        ("set", "c"),
        ("delete", "c"),
        ("invalidate_tags", None),
        ("expire", "b"),
        ("clear", None),
    ]
    assert events[0][2:] == (1, events[0][3], timer.now - 5 + 300, ("t",))
    assert events[5][5] == ("t",)


def test_tags_given_as_a_one_shot_iterator_reach_both_the_entry_and_the_listener(timer):
    events = []
    cache = ShardedTTLCache(maxsize=8, timer=timer, listener=lambda *e: events.append(e))
    cache.set("a", 1, tags=(tag for tag in ["t", "u"]))
    assert events == [("set", "a", 1, events[0][3], timer.now + 300, ("t", "u"))]
    cache.invalidate_tags("u")
    assert cache.get("a") is None


# -- single flight ----------------------------------------------------------------------


def test_get_or_set_computes_once_and_caches(cache):
    calls = []
    assert cache.get_or_set("a", lambda: calls.append(1) or "v") == "v"
    assert cache.get_or_set("a", lambda: calls.append(1) or "w") == "v"
    assert calls == [1]


def test_get_or_set_single_flight_across_threads(cache):
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        release.wait(5)
        return "value"

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_set("k", slow)))
        for _ in range(8)
    ]
    threads[0].start()
    assert started.wait(5)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(5)
    assert results == ["value"] * 8
    assert calls == [1]


def test_get_or_set_error_reaches_every_waiter_and_caches_nothing(cache):
    started = threading.Event()
    release = threading.Event()

    def failing():
        started.set()
        release.wait(5)
        raise LookupError("db down")

    errors = []

    def call():
        try:
            cache.get_or_set("k", failing)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    threads[0].start()
    assert started.wait(5)
    for t in threads[1:]:
        t.start()
    # wait until the three waiters are parked on the flight
    for _ in range(1000):
        if all(t.is_alive() for t in threads[1:]):
            break
    release.set()
    for t in threads:
        t.join(5)
    assert len(errors) == 4
    assert "k" not in cache
    assert not cache._shards[hash("k") & cache._mask].flights  # key is not left locked
    assert cache.get_or_set("k", lambda: "recovered") == "recovered"


def test_get_or_set_does_not_store_a_value_deleted_while_loading(cache):
    def factory():
        cache.delete("k")  # a delete races the slow load
        return "stale"

    assert cache.get_or_set("k", factory) == "stale"
    assert "k" not in cache


def test_get_or_set_does_not_overwrite_a_newer_set(cache):
    def factory():
        cache.set("k", "newer")
        return "older"

    assert cache.get_or_set("k", factory) == "older"
    assert cache.get("k") == "newer"


def test_get_or_set_entry_hidden_if_its_tag_was_invalidated_while_loading(cache):
    def factory():
        cache.invalidate_tags("t")
        return "stale"

    assert cache.get_or_set("k", factory, tags=("t",)) == "stale"
    assert "k" not in cache


def test_get_or_set_with_zero_ttl_returns_without_storing(cache):
    assert cache.get_or_set("k", lambda: 1, ttl=0) == 1
    assert "k" not in cache


async def test_aget_or_set_single_flight_across_tasks(cache):
    calls = []
    gate = asyncio.Event()

    async def slow():
        calls.append(1)
        await gate.wait()
        return "v"

    tasks = [asyncio.create_task(cache.aget_or_set("k", slow)) for _ in range(200)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == ["v"] * 200
    assert calls == [1]
    assert cache.get("k") == "v"


async def test_aget_or_set_error_propagates_and_frees_the_key(cache):
    async def failing():
        await asyncio.sleep(0)
        raise KeyError("boom")

    results = await asyncio.gather(
        *(cache.aget_or_set("k", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, KeyError) for r in results)
    assert "k" not in cache

    async def ok():
        return 1

    assert await cache.aget_or_set("k", ok) == 1


async def test_aget_or_set_leader_cancelled_hands_over_to_a_waiter(cache):
    gate = asyncio.Event()
    calls = []

    async def factory():
        calls.append(1)
        await gate.wait()
        return len(calls)

    leader = asyncio.create_task(cache.aget_or_set("k", factory))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(cache.aget_or_set("k", factory)) for _ in range(3)]
    await asyncio.sleep(0)
    leader.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [2, 2, 2]
    assert calls == [1, 1]
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_aget_or_set_rejects_a_sync_factory(cache):
    with pytest.raises(TypeError, match="use get_or_set"):
        await cache.aget_or_set("k", lambda: 1)
    assert "k" not in cache


async def test_async_waiter_joins_a_flight_led_by_a_thread(cache):
    started = threading.Event()
    release = threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return "from-thread"

    thread = threading.Thread(target=cache.get_or_set, args=("k", slow))
    thread.start()
    await asyncio.to_thread(started.wait, 5)

    async def never():
        raise AssertionError("the flight should be shared")

    waiter = asyncio.create_task(cache.aget_or_set("k", never))
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.wait_for(waiter, 5) == "from-thread"
    thread.join(5)


def test_holds_sees_an_expired_entry_until_it_is_removed(timer) -> None:
    cache = ShardedTTLCache(maxsize=10, ttl=5, timer=timer)
    cache.set("k", 1)
    timer.advance(10)
    assert "k" not in cache  # reads treat it as absent...
    assert cache.holds("k")  # ...but it is still stored
    cache.expire()
    assert not cache.holds("k")
    with pytest.raises(UnhashableKeyError):
        cache.holds(["not", "hashable"])
