"""Freshness in asyncio, and the lifecycle of background refreshes: close() during a
refresh, the cache's own refresh pool, the runtime's worker.

Expiry is driven by the fake ``timer``; waits are on events, never on the clock.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from cacheplug import CachePlug, ShardedTTLCache


async def _settle(cache: ShardedTTLCache) -> None:
    """Let the loop run until no refresh task is pending (bounded)."""
    for _ in range(200):
        if cache.freshness_stats().pending_tasks == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError("a refresh task is still pending")


# -- asyncio -----------------------------------------------------------------------------


async def test_hot_key_under_200_tasks_no_reader_waits_and_factory_runs_once(timer):
    cache = ShardedTTLCache(ttl=1, timer=timer)
    release = asyncio.Event()
    calls = []

    async def load():
        calls.append(1)
        if len(calls) > 1:
            await release.wait()
        return f"v{len(calls)}"

    assert await cache.aget_or_set("hot", load, stale_while_revalidate=60) == "v1"
    timer.advance(2)
    readers = [cache.aget_or_set("hot", load, stale_while_revalidate=60) for _ in range(200)]
    # gather completes while the refresh is still blocked: no reader waited for it
    results = await asyncio.wait_for(asyncio.gather(*readers), timeout=5)
    assert results == ["v1"] * 200
    assert len(calls) == 2
    assert not release.is_set()
    release.set()
    await _settle(cache)
    assert cache.get("hot") == "v2"
    assert len(calls) == 2
    await cache.aclose()


async def test_async_early_refresh_runs_as_a_task(timer):
    cache = ShardedTTLCache(ttl=60, timer=timer, rng=lambda: 0.99)
    calls = []

    async def load():
        calls.append(1)
        timer.advance(5)  # the factory "took" 5 s
        return f"v{len(calls)}"

    await cache.aget_or_set("k", load, early_refresh=1.0)
    timer.advance(54)  # 1 s left; with U=0.99, -5*ln(0.01) = 23 s >= 1 s: fires
    assert await cache.aget_or_set("k", load, early_refresh=1.0) == "v1"
    await _settle(cache)
    assert calls == [1, 1]
    assert cache.get("k") == "v2"
    await cache.aclose()


async def test_async_stale_if_error_and_negative_caching(timer):
    cache = ShardedTTLCache(timer=timer, rng=lambda: 0.0)
    state = {"fail": False, "calls": 0}

    async def load():
        state["calls"] += 1
        if state["fail"]:
            raise TimeoutError("db timeout")
        return "row"

    opts = {"ttl": 10, "stale_if_error": 60}
    assert await cache.aget_or_set("k", load, **opts) == "row"
    state["fail"] = True
    timer.advance(11)
    assert await cache.aget_or_set("k", load, **opts) == "row"
    assert await cache.aget_or_set("k", load, **opts) == "row"  # backing off
    assert state["calls"] == 2

    async def missing():
        state["calls"] += 1
        raise KeyError("id 9")

    for _ in range(5):
        with pytest.raises(KeyError):
            await cache.aget_or_set("id:9", missing, negative_ttl=3, negative_exceptions=KeyError)
    assert state["calls"] == 3
    await cache.aclose()


async def test_aclose_cancels_a_running_refresh_and_stores_nothing(timer):
    cache = ShardedTTLCache(ttl=1, timer=timer)
    started, cancelled = asyncio.Event(), []

    async def load():
        if cache.get_entry("k") is None and not started.is_set() and "first" not in cancelled:
            cancelled.append("first")
            return "v1"
        started.set()
        try:
            await asyncio.Event().wait()  # never returns by itself
        except asyncio.CancelledError:
            cancelled.append("refresh")
            raise

    await cache.aget_or_set("k", load, stale_while_revalidate=60)
    timer.advance(2)
    assert await cache.aget_or_set("k", load, stale_while_revalidate=60) == "v1"
    await asyncio.wait_for(started.wait(), 5)
    await cache.aclose()
    assert cancelled == ["first", "refresh"]
    assert cache.freshness_stats().pending_tasks == 0
    assert cache.freshness_stats().abandoned == 1
    # After close nothing is served stale and no refresh starts: the caller loads.
    assert await cache.aget_or_set("k", _value("fresh"), stale_while_revalidate=60) == "fresh"


def _value(v):
    async def load():
        return v

    return load


async def test_sync_close_from_another_thread_cancels_refresh_tasks(timer):
    cache = ShardedTTLCache(ttl=1, timer=timer)
    started = asyncio.Event()

    async def load():
        if cache.get_entry("k") is None and not started.is_set():
            started.set()
            return "v1"
        await asyncio.Event().wait()
        return None

    await cache.aget_or_set("k", load, stale_while_revalidate=60)
    started.clear()
    timer.advance(2)
    await cache.aget_or_set("k", load, stale_while_revalidate=60)
    assert cache.freshness_stats().pending_tasks == 1
    closer = threading.Thread(target=cache.close)
    closer.start()
    closer.join(5)
    await _settle(cache)  # the cancellation was delivered through the loop
    assert cache.freshness_stats().pending_tasks == 0


# -- sync refreshes and close() ------------------------------------------------------------


def test_close_during_a_sync_refresh_on_the_own_pool_stores_nothing(timer):
    cache = ShardedTTLCache(ttl=1, timer=timer)
    entered, release = threading.Event(), threading.Event()
    calls = []

    def load():
        calls.append(threading.current_thread().name)
        if len(calls) > 1:
            entered.set()
            assert release.wait(10)
        return f"v{len(calls)}"

    cache.get_or_set("k", load, stale_while_revalidate=60)
    timer.advance(2)
    assert cache.get_or_set("k", load, stale_while_revalidate=60) == "v1"
    assert entered.wait(5)
    assert calls[1].startswith("cacheplug-refresh")  # the pool, not a thread per key
    closed = []
    closer = threading.Thread(target=lambda: closed.append(cache.close()))
    closer.start()
    release.set()
    closer.join(10)
    assert closed == [True]  # the pool's thread was joined
    assert cache.get_entry("k") is None  # "v2" arrived after close: not stored
    assert not [t for t in threading.enumerate() if t.name.startswith("cacheplug-refresh")]


def test_a_refresh_queued_before_close_never_calls_its_factory(timer):
    tasks = []

    class Recorder:
        def submit(self, fn):
            tasks.append(fn)

    cache = ShardedTTLCache(ttl=1, timer=timer, refresh_executor=Recorder())
    calls = []
    cache.get_or_set("k", lambda: calls.append(1) or "v1", stale_while_revalidate=60)
    timer.advance(2)
    cache.get_or_set("k", lambda: calls.append(1) or "v2", stale_while_revalidate=60)
    cache.close()
    tasks.pop()()  # the executor runs it late: abandoned without calling the factory
    assert calls == [1]
    # the flight was released: a foreground load is not stuck behind it
    assert cache.get_or_set("k", lambda: "v3") == "v3"


def test_many_hot_keys_share_the_pool_never_a_thread_per_key(timer):
    cache = ShardedTTLCache(ttl=1, timer=timer)
    gate = threading.Event()
    names = set()

    def load():
        names.add(threading.current_thread().name)
        gate.wait(10)
        return "v"

    keys = [f"hot{i}" for i in range(50)]
    gate.set()
    for key in keys:
        cache.get_or_set(key, load, stale_while_revalidate=60)  # foreground, this thread
    gate.clear()
    timer.advance(2)
    for key in keys:
        assert cache.get_or_set(key, load, stale_while_revalidate=60) == "v"
    refresh_threads = [t for t in threading.enumerate() if t.name.startswith("cacheplug-refresh")]
    assert 1 <= len(refresh_threads) <= 2
    gate.set()
    assert cache.close()


def test_the_runtime_refreshes_on_its_worker_and_abandons_on_close(timer):
    entered, release = threading.Event(), threading.Event()
    calls = []

    def load():
        calls.append(threading.current_thread().name)
        if len(calls) > 1:
            entered.set()
            assert release.wait(10)
        return f"v{len(calls)}"

    plug = CachePlug(ttl=1, timer=timer, sweep_interval=0, name="fresh").start()
    plug.cache.get_or_set("k", load, stale_while_revalidate=60)
    timer.advance(2)
    assert plug.cache.get_or_set("k", load, stale_while_revalidate=60) == "v1"
    assert entered.wait(5)
    assert calls[1] == "cacheplug-worker-fresh"
    closer = threading.Thread(target=plug.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert plug.cache.get_entry("k") is None  # nothing stored after close


async def test_the_runtime_aclose_cancels_async_refreshes(timer):
    plug = CachePlug(ttl=1, timer=timer, sweep_interval=0, name="fresh-async")
    await plug.astart()
    hang = asyncio.Event()

    async def load():
        if plug.cache.get_entry("k") is None and not hang.is_set():
            hang.set()
            return "v1"
        await asyncio.Event().wait()
        return None

    await plug.cache.aget_or_set("k", load, stale_while_revalidate=60)
    timer.advance(2)
    await plug.cache.aget_or_set("k", load, stale_while_revalidate=60)
    assert plug.cache.freshness_stats().pending_tasks == 1
    await plug.aclose()
    assert plug.cache.freshness_stats().pending_tasks == 0
