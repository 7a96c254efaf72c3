"""Freshness options of ShardedTTLCache.get_or_set: early refresh (XFetch),
stale-while-revalidate, stale-if-error with backoff, negative caching.

Expiry is driven by the fake ``timer``; nothing sleeps to wait for expiry.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cacheplug import ShardedTTLCache
from cacheplug.errors import ConfigurationError
from cacheplug.freshness import Backoff, CachedError, make_policy, xfetch_due


class RecordingExecutor:
    """A refresh executor that only records; the test runs the refreshes when it wants."""

    def __init__(self) -> None:
        self.tasks: list = []

    def submit(self, fn) -> None:
        self.tasks.append(fn)

    def run_all(self) -> int:
        tasks, self.tasks = self.tasks, []
        for fn in tasks:
            fn()
        return len(tasks)


class Counter:
    """A factory returning "v1", "v2", ... and counting its calls."""

    def __init__(self, timer=None, took: float = 0.0) -> None:
        self.calls = 0
        self.timer = timer
        self.took = took

    def __call__(self) -> str:
        self.calls += 1
        if self.took:
            self.timer.advance(self.took)
        return f"v{self.calls}"


@pytest.fixture
def executor() -> RecordingExecutor:
    return RecordingExecutor()


@pytest.fixture
def cache(timer, executor):
    cache = ShardedTTLCache(maxsize=1000, ttl=60, timer=timer, refresh_executor=executor)
    yield cache
    cache.close()


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"early_refresh": -1},
        {"early_refresh": math.inf},
        {"stale_while_revalidate": "10"},
        {"stale_if_error": math.nan},
        {"stale_while_revalidate": True},
        {"negative_ttl": 0},
        {"negative_ttl": math.inf},
        {"negative_exceptions": LookupError},  # no negative_ttl
        {"negative_ttl": 5, "negative_exceptions": [LookupError]},
        {"negative_ttl": 5, "negative_exceptions": (int,)},
    ],
)
def test_invalid_freshness_options_are_refused_with_a_clear_error(cache, options):
    with pytest.raises(ConfigurationError):
        cache.get_or_set("k", lambda: 1, **options)


def test_policy_is_memoised_and_accepts_one_exception_type():
    a = make_policy(negative_ttl=5, negative_exceptions=KeyError)
    assert a is make_policy(negative_ttl=5, negative_exceptions=KeyError)
    assert a.negative_exceptions == (KeyError,)
    assert make_policy(stale_while_revalidate=10, stale_if_error=30).keep == 30


def test_backoff_grows_exponentially_is_capped_jittered_and_bounded():
    backoff = Backoff(base=1, factor=2, max_delay=5, jitter=0.5, max_attempts=5)
    assert [backoff.delay(n, lambda: 0.0) for n in range(1, 6)] == [1, 2, 4, 5, math.inf]
    assert backoff.delay(2, lambda: 0.999999) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ConfigurationError):
        Backoff(jitter=2)
    with pytest.raises(ConfigurationError):
        Backoff(max_attempts=0)


# -- early refresh (XFetch) ------------------------------------------------------------


@pytest.mark.parametrize("left", [0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
def test_xfetch_probability_follows_exp_of_minus_left_over_delta_beta(left):
    rng = random.Random(1234)
    delta, beta, trials = 2.0, 1.0, 20_000
    fired = sum(xfetch_due(100.0 - left, 100.0, delta, beta, rng.random) for _ in range(trials))
    expected = math.exp(-left / (delta * beta))
    # binomial standard error <= 0.0036 at 20,000 trials; 0.015 is > 4 sigma
    assert fired / trials == pytest.approx(expected, abs=0.015)


def test_xfetch_never_fires_without_a_measured_delta_or_far_from_expiry():
    assert not xfetch_due(0.0, 10.0, 0.0, 1.0, lambda: 0.999)
    assert not xfetch_due(0.0, 1000.0, 1.0, 1.0, lambda: 0.999)  # e**-1000
    assert xfetch_due(10.0, 10.0, 1.0, 1.0, lambda: 0.5)


@pytest.mark.parametrize(("left", "beta"), [(1.0, 1.0), (3.0, 1.0), (3.0, 2.0)])
def test_early_refresh_through_the_cache_follows_the_xfetch_curve(timer, left, beta):
    """Each key's factory took 2 s; read each once ``left`` s before expiry."""
    executor = RecordingExecutor()
    cache = ShardedTTLCache(
        maxsize=5000, ttl=100, timer=timer, refresh_executor=executor, rng=random.Random(7).random
    )
    keys = [f"user:{i}" for i in range(3000)]
    start = timer.now
    for key in keys:
        timer.now = start
        cache.get_or_set(key, Counter(timer, took=2.0), early_refresh=beta)
    expires_at = cache.get_entry(keys[0]).expires_at
    timer.now = expires_at - left
    factories = {key: Counter() for key in keys}
    values = [cache.get_or_set(key, factories[key], early_refresh=beta) for key in keys]
    assert values == ["v1"] * len(keys)  # every reader got the cached value at once
    assert sum(f.calls for f in factories.values()) == 0  # refreshes are in the background
    expected = math.exp(-left / (2.0 * beta))
    assert len(executor.tasks) / len(keys) == pytest.approx(expected, abs=0.03)
    cache.close()


def test_early_refresh_replaces_the_value_before_it_expires(cache, executor, timer):
    slow = Counter(timer, took=5.0)
    assert cache.get_or_set("k", slow, ttl=60, early_refresh=1.0) == "v1"
    timer.advance(59.0)  # 1 s left, factory took 5 s: P(refresh) = exp(-1/5) ~ 0.82
    for _ in range(20):  # some read fires it; later reads see the refresh in flight
        assert cache.get_or_set("k", slow, ttl=60, early_refresh=1.0) == "v1"
    assert len(executor.tasks) == 1
    executor.run_all()
    assert slow.calls == 2
    timer.advance(1.0)  # the original expiry: the refreshed value is live
    assert cache.get("k") == "v2"


def test_a_plain_get_or_set_never_refreshes_early(cache, executor, timer):
    cache.get_or_set("k", Counter(timer, took=5.0), ttl=60)
    timer.advance(59.99)
    for _ in range(100):
        cache.get_or_set("k", Counter())
    assert executor.tasks == []


# -- stale-while-revalidate --------------------------------------------------------------


def test_stale_while_revalidate_serves_old_value_and_refreshes_once(cache, executor, timer):
    factory = Counter()
    assert cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30) == "v1"
    timer.advance(15)
    assert cache.get("k") is None  # plain get keeps its contract: expired is a miss
    for _ in range(50):
        assert cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30) == "v1"
    assert factory.calls == 1
    assert len(executor.tasks) == 1
    executor.run_all()
    assert factory.calls == 2
    assert cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30) == "v2"
    assert cache.freshness_stats().stale_served == 50


def test_past_the_stale_window_the_caller_loads_in_the_foreground(cache, executor, timer):
    factory = Counter()
    cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=5)
    timer.advance(15)
    assert cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=5) == "v2"
    assert executor.tasks == []


def test_stale_entries_are_kept_by_expire_until_their_window_ends(cache, timer):
    cache.get_or_set("k", Counter(), ttl=10, stale_while_revalidate=20)
    cache.set("plain", 1, ttl=10)
    timer.advance(11)
    assert cache.expire() == 1  # "plain" only
    assert cache.get_entry("k") is None
    assert len(cache) == 1
    timer.advance(20)
    assert cache.expire() == 1
    assert len(cache) == 0


def test_a_delete_during_a_refresh_keeps_the_refreshed_value_out(cache, executor, timer):
    factory = Counter()
    cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30)
    timer.advance(11)
    cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30)
    cache.delete("k")
    executor.run_all()
    assert factory.calls == 2
    assert "k" not in cache
    assert cache.get_entry("k") is None


def test_a_set_during_a_refresh_wins_over_the_refreshed_value(cache, executor, timer):
    factory = Counter()
    cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30)
    timer.advance(11)
    cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30)
    cache.set("k", "newer")
    executor.run_all()
    assert cache.get("k") == "newer"


def test_a_tag_invalidated_entry_is_never_served_stale(cache, executor, timer):
    factory = Counter()
    cache.get_or_set("k", factory, ttl=10, tags=("t",), stale_while_revalidate=30)
    timer.advance(11)
    cache.invalidate_tags("t")
    assert cache.get_or_set("k", factory, ttl=10, tags=("t",), stale_while_revalidate=30) == "v2"
    assert executor.tasks == []


def test_hot_key_under_8_threads_no_reader_waits_and_factory_runs_once(timer):
    """A real pool refreshes while 8 threads read; the factory blocks until released."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-refresh")
    cache = ShardedTTLCache(ttl=1, timer=timer, refresh_executor=pool)
    release, calls = threading.Event(), []

    def load():
        calls.append(1)
        if len(calls) > 1:
            assert release.wait(10)
        return f"v{len(calls)}"

    cache.get_or_set("hot", load, stale_while_revalidate=60)
    timer.advance(2)
    barrier = threading.Barrier(8)
    results: list[str] = []

    def reader():
        barrier.wait()
        for _ in range(100):
            results.append(cache.get_or_set("hot", load, stale_while_revalidate=60))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # every read returned while the refresh was still blocked: nobody waited for it
    assert results == ["v1"] * 800
    assert len(calls) == 2
    release.set()
    pool.shutdown(wait=True)
    assert cache.get("hot") == "v2"
    assert len(calls) == 2
    cache.close()


# -- stale-if-error ----------------------------------------------------------------------


class Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise ConnectionError(f"db down ({self.calls})")
        return f"v{self.calls}"


def test_stale_if_error_serves_stale_and_backs_off_exponentially(timer, executor, caplog):
    cache = ShardedTTLCache(
        timer=timer,
        refresh_executor=executor,
        rng=lambda: 0.0,  # no jitter: delays are exactly 1, 2, 4 s
        retry_backoff=Backoff(base=1, factor=2, max_delay=60, max_attempts=10),
    )
    flaky = Flaky()
    opts = {"ttl": 10, "stale_if_error": 300}
    assert cache.get_or_set("k", flaky, **opts) == "v1"
    flaky.failing = True
    timer.advance(11)
    with caplog.at_level(logging.DEBUG, logger="cacheplug"):
        assert cache.get_or_set("k", flaky, **opts) == "v1"  # foreground failure: stale
        assert flaky.calls == 2
        for delay in (1, 2, 4):
            timer.advance(delay - 0.01)
            assert cache.get_or_set("k", flaky, **opts) == "v1"
            assert executor.tasks == []  # still backing off: no call
            timer.advance(0.01)
            assert cache.get_or_set("k", flaky, **opts) == "v1"  # retry in the background
            assert executor.run_all() == 1
        assert flaky.calls == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()
    flaky.failing = False
    timer.advance(8)
    assert cache.get_or_set("k", flaky, **opts) == "v1"
    executor.run_all()
    assert cache.get_or_set("k", flaky, **opts) == "v6"  # recovered
    cache.close()


def test_stale_if_error_attempts_are_bounded_then_the_error_surfaces(timer, executor):
    cache = ShardedTTLCache(
        timer=timer,
        refresh_executor=executor,
        rng=lambda: 0.0,
        retry_backoff=Backoff(base=1, factor=1, max_delay=1, max_attempts=3),
    )
    flaky = Flaky()
    opts = {"ttl": 10, "stale_if_error": 100}
    cache.get_or_set("k", flaky, **opts)
    flaky.failing = True
    timer.advance(10)
    assert cache.get_or_set("k", flaky, **opts) == "v1"
    for _ in range(20):
        timer.advance(1)
        assert cache.get_or_set("k", flaky, **opts) == "v1"
        executor.run_all()
    assert flaky.calls == 1 + 3  # the first load, then 3 failed attempts and no more
    timer.advance(100)  # the stale-if-error window is over
    with pytest.raises(ConnectionError):
        cache.get_or_set("k", flaky, **opts)
    cache.close()


def test_without_stale_if_error_a_failing_load_raises(cache, timer):
    flaky = Flaky()
    cache.get_or_set("k", flaky, ttl=10, stale_while_revalidate=5)
    flaky.failing = True
    timer.advance(20)
    with pytest.raises(ConnectionError):
        cache.get_or_set("k", flaky, ttl=10, stale_while_revalidate=5)


def test_a_failed_background_refresh_keeps_serving_stale_and_backs_off(cache, executor, timer):
    flaky = Flaky()
    opts = {"ttl": 10, "stale_while_revalidate": 60}
    cache.get_or_set("k", flaky, **opts)
    flaky.failing = True
    timer.advance(11)
    assert cache.get_or_set("k", flaky, **opts) == "v1"
    executor.run_all()  # fails
    assert cache.freshness_stats().refresh_failures == 1
    for _ in range(10):
        assert cache.get_or_set("k", flaky, **opts) == "v1"
    assert executor.tasks == []  # backing off: no refresh storm on a failing backend


# -- negative caching ------------------------------------------------------------------


def test_negative_ttl_caches_none_briefly(cache, timer):
    calls = []

    def find():
        calls.append(1)

    for _ in range(100):
        assert cache.get_or_set("user:404", find, ttl=300, negative_ttl=5) is None
    assert len(calls) == 1
    timer.advance(5)
    cache.get_or_set("user:404", find, ttl=300, negative_ttl=5)
    assert len(calls) == 2


class NotFound(LookupError):
    pass


def test_a_negative_exception_is_cached_and_reraised_as_a_fresh_copy(cache, timer):
    calls = []

    def find():
        calls.append(1)
        raise NotFound("user 404", 404)

    opts = {"negative_ttl": 5, "negative_exceptions": (LookupError,)}
    raised = []
    for _ in range(3):
        with pytest.raises(NotFound) as info:
            cache.get_or_set("user:404", find, **opts)
        raised.append(info.value)
    assert len(calls) == 1
    assert all(e.args == ("user 404", 404) for e in raised)
    assert raised[1] is not raised[2]  # each caller raises its own copy
    assert isinstance(cache.get("user:404"), CachedError)  # what a plain get sees
    cache.delete("user:404")  # invalidation clears a negative entry too
    with pytest.raises(NotFound):
        cache.get_or_set("user:404", find, **opts)
    assert len(calls) == 2
    timer.advance(5)
    with pytest.raises(NotFound):
        cache.get_or_set("user:404", find, **opts)
    assert len(calls) == 3


def test_other_exceptions_are_not_negatively_cached(cache):
    flaky = Flaky()
    flaky.failing = True
    opts = {"negative_ttl": 5, "negative_exceptions": LookupError}
    for _ in range(3):
        with pytest.raises(ConnectionError):
            cache.get_or_set("k", flaky, **opts)
    assert flaky.calls == 3


def test_a_flood_of_requests_for_a_missing_id_reaches_the_database_once(cache):
    calls, gate = [], threading.Event()

    def find():
        calls.append(1)
        assert gate.wait(10)
        raise NotFound("nope")

    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def request():
        barrier.wait()
        for _ in range(50):
            try:
                cache.get_or_set("user:9", find, negative_ttl=30, negative_exceptions=NotFound)
            except NotFound:
                outcomes.append("404")

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert outcomes == ["404"] * 400
    assert len(calls) == 1


def test_a_not_found_refresh_replaces_the_stale_value(cache, executor, timer):
    state = {"exists": True}

    def find():
        if not state["exists"]:
            raise NotFound("gone")
        return "row"

    opts = {"ttl": 10, "stale_while_revalidate": 60, "negative_ttl": 5}
    opts["negative_exceptions"] = NotFound
    cache.get_or_set("k", find, **opts)
    state["exists"] = False
    timer.advance(11)
    assert cache.get_or_set("k", find, **opts) == "row"  # stale while the refresh runs
    executor.run_all()
    with pytest.raises(NotFound):
        cache.get_or_set("k", find, **opts)
