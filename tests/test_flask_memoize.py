"""@plug.memoize, plug.delete_memoized and tag invalidation on a real Flask app."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from flask import Flask

from cacheplug.errors import ConfigurationError
from cacheplug.integrations.flask import FlaskCachePlug

plug = FlaskCachePlug()
calls: list[tuple] = []


@plug.memoize(tags=["products"])
def price(product_id: int, currency: str = "EUR") -> float:
    calls.append(("price", product_id, currency))
    return product_id * 1.5


@plug.memoize(timeout=10)
def short_lived(x: int) -> int:
    calls.append(("short", x))
    return x


@plug.memoize(timeout=0)
def forever(x: int) -> int:
    calls.append(("forever", x))
    return x


@plug.memoize()
def nothing() -> None:
    calls.append(("nothing",))


@plug.memoize()
async def async_double(x: int) -> int:
    calls.append(("async", x))
    return 2 * x


@pytest.fixture
def app(timer):
    calls.clear()
    app = Flask("memo")
    app.config.update(CACHEPLUG_TIMER=timer, CACHEPLUG_TTL=100)
    plug.init_app(app)
    with app.app_context():
        yield app
    plug.close(app)


def test_memoize_caches_per_arguments(app):
    assert price(1) == 1.5
    assert price(1) == 1.5
    assert price(1, "USD") == 1.5
    assert price(product_id=1) == 1.5  # another call shape is another key, as in hashkey
    assert calls == [("price", 1, "EUR"), ("price", 1, "USD"), ("price", 1, "EUR")]


def test_none_is_cached_and_exceptions_are_not(app):
    nothing()
    nothing()
    assert calls == [("nothing",)]
    failures = []

    @plug.memoize()
    def flaky(x: int) -> int:
        failures.append(x)
        if len(failures) == 1:
            raise ValueError("first call fails")
        return x

    with pytest.raises(ValueError, match="first call fails"):
        flaky(1)
    assert flaky(1) == 1
    assert flaky(1) == 1
    assert failures == [1, 1]


def test_delete_memoized_one_call_or_all(app):
    price(1)
    price(2)
    plug.delete_memoized(price, 1)
    price(1)
    price(2)
    assert calls.count(("price", 1, "EUR")) == 2
    assert calls.count(("price", 2, "EUR")) == 1
    plug.delete_memoized(price)
    price(2)
    assert calls.count(("price", 2, "EUR")) == 2


def test_delete_memoized_needs_a_memoized_function(app):
    with pytest.raises(TypeError, match=r"not decorated with @plug\.memoize"):
        plug.delete_memoized(len)


def test_invalidate_tags(app):
    price(3)
    plug.invalidate_tags("products")
    price(3)
    assert calls == [("price", 3, "EUR")] * 2


def test_timeouts(app, timer):
    short_lived(1)
    forever(1)
    price(1)  # default: the app's CACHEPLUG_TTL=100
    timer.advance(11)
    short_lived(1)
    price(1)
    timer.advance(90)
    price(1)
    timer.advance(10**6)
    forever(1)
    assert calls == [
        ("short", 1),
        ("forever", 1),
        ("price", 1, "EUR"),
        ("short", 1),
        ("price", 1, "EUR"),
    ]


async def test_async_function(app):
    assert await async_double(2) == 4
    assert await async_double(2) == 4
    assert calls == [("async", 2)]


def test_concurrent_misses_run_the_function_once(app):
    started, release = threading.Event(), threading.Event()
    runs = []

    @plug.memoize()
    def slow(x: int) -> int:
        runs.append(x)
        started.set()
        release.wait(5)
        return x * 10

    results = []

    def call() -> None:
        with app.app_context():
            results.append(slow(7))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(5)
    release.set()
    for t in threads:
        t.join()
    assert results == [70] * 4
    assert runs == [7]


def test_each_app_has_its_own_memo(app):
    other = Flask("memo-other")
    plug.init_app(other)
    try:
        price(5)
        with other.app_context():
            price(5)
        price(5)
        assert calls == [("price", 5, "EUR")] * 2
    finally:
        plug.close(other)


def test_needs_an_app_context():
    with pytest.raises(RuntimeError, match="application context"):
        price(1)


@pytest.mark.parametrize(
    "kwargs", [{"timeout": -5}, {"timeout": "1"}, {"tags": "products"}, {"no_such_option": 1}]
)
def test_bad_arguments_fail_at_decoration(kwargs):
    with pytest.raises(ConfigurationError):
        plug.memoize(**kwargs)


def test_timedelta_timeout(app, timer):
    @plug.memoize(timeout=dt.timedelta(seconds=5))
    def f() -> int:
        calls.append(("f",))
        return 1

    f()
    timer.advance(4)
    f()
    timer.advance(2)
    f()
    assert calls == [("f",), ("f",)]


def test_core_freshness_options_are_forwarded(app, timer):
    """Options of the core's get_or_set (here stale_while_revalidate) pass through."""

    @plug.memoize(timeout=10, stale_while_revalidate=30)
    def fresh() -> int:
        calls.append(("fresh",))
        return len(calls)

    assert fresh() == 1
    timer.advance(12)  # stale, within the window: the old value is served at once
    assert fresh() == 1


def test_stale_if_error_serves_the_old_result_when_the_function_fails(app, timer):
    """The freshness options @cached leaves to @memoize (docs/flask.md)."""
    failing = {"on": False}

    @plug.memoize(timeout=10, stale_if_error=60)
    def listing() -> str:
        calls.append(("listing",))
        if failing["on"]:
            raise ConnectionError("database down")
        return f"listing v{len(calls)}"

    assert listing() == "listing v1"
    failing["on"] = True
    timer.advance(12)  # expired, within stale_if_error
    assert listing() == "listing v1"
    timer.advance(100)  # past the window: the error reaches the caller
    with pytest.raises(ConnectionError):
        listing()
