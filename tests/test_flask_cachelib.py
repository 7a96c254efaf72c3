"""CachelibCache: one cachelib contract run against cachelib's SimpleCache and ours, plus
Flask-Caching running on flask_caching_backend."""

from __future__ import annotations

import datetime as dt
import pickle

import cachelib.simple
import pytest
from cachelib import BaseCache, SimpleCache
from flask import Flask
from flask_caching import Cache

from cacheplug.integrations.flask import CachelibCache, FlaskCachePlug


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CachelibContract:
    """cachelib.BaseCache's documented behaviour; each subclass builds one backend."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    def make(self, clock: Clock, **kwargs) -> BaseCache:
        raise NotImplementedError

    @pytest.fixture
    def cache(self, clock) -> BaseCache:
        return self.make(clock)

    def test_is_a_cachelib_base_cache(self, cache):
        assert isinstance(cache, BaseCache)

    def test_get_set(self, cache):
        assert cache.get("missing") is None
        assert cache.set("k", {"a": [1, 2]}) is True
        assert cache.get("k") == {"a": [1, 2]}
        assert cache.set("k", "new") is True
        assert cache.get("k") == "new"

    def test_values_are_copies(self, cache):
        value = {"items": [1]}
        cache.set("k", value)
        value["items"].append(2)
        got = cache.get("k")
        assert got == {"items": [1]}
        got["items"].append(3)
        assert cache.get("k") == {"items": [1]}

    def test_add(self, cache, clock):
        assert cache.add("k", 1) is True
        assert cache.add("k", 2) is False
        assert cache.get("k") == 1
        cache.set("short", 1, timeout=5)
        clock.advance(6)
        assert cache.add("short", 2) is True
        assert cache.get("short") == 2

    def test_delete(self, cache):
        cache.set("k", 1)
        assert cache.delete("k") is True
        assert cache.get("k") is None
        assert cache.delete("k") is False

    def test_delete_of_an_expired_key(self, cache, clock):
        """SimpleCache keeps an expired entry until it prunes, and delete() reports it."""
        cache.set("k", 1, timeout=5)
        clock.advance(6)
        assert cache.delete("k") is True
        assert cache.delete("k") is False
        assert cache.get("k") is None

    def test_get_many_and_get_dict(self, cache):
        cache.set("a", 1)
        cache.set("b", 2)
        assert cache.get_many("a", "x", "b") == [1, None, 2]
        assert cache.get_dict("a", "x") == {"a": 1, "x": None}

    def test_set_many_and_delete_many(self, cache):
        assert sorted(cache.set_many({"a": 1, "b": 2})) == ["a", "b"]
        assert cache.get_many("a", "b") == [1, 2]
        assert cache.delete_many("a", "b", "never-set") == ["a", "b", "never-set"]
        assert cache.get_many("a", "b") == [None, None]

    def test_has(self, cache, clock):
        assert cache.has("k") is False
        cache.set("k", None)
        assert cache.has("k") is True
        cache.set("t", 1, timeout=5)
        clock.advance(6)
        assert cache.has("t") is False

    def test_clear(self, cache):
        cache.set_many({"a": 1, "b": 2})
        assert cache.clear() is True
        assert cache.get_many("a", "b") == [None, None]
        assert cache.has("a") is False

    def test_inc_dec(self, cache):
        assert cache.inc("n") == 1
        assert cache.inc("n", 5) == 6
        assert cache.dec("n", 2) == 4
        assert cache.dec("fresh") == -1
        assert cache.get("n") == 4

    def test_default_timeout(self, clock):
        cache = self.make(clock, default_timeout=10)
        cache.set("k", 1)
        clock.advance(9)
        assert cache.get("k") == 1
        clock.advance(2)
        assert cache.get("k") is None

    def test_timeout_zero_never_expires(self, clock):
        cache = self.make(clock, default_timeout=0)
        cache.set("default", 1)
        cache.set("explicit", 1, timeout=0)
        clock.advance(10 * 365 * 86400)
        assert cache.get_many("default", "explicit") == [1, 1]

    def test_timedelta_timeouts(self, clock):
        cache = self.make(clock, default_timeout=dt.timedelta(seconds=20))
        cache.set("td", 1, timeout=dt.timedelta(seconds=5))
        cache.set("default", 1)
        clock.advance(6)
        assert cache.get("td") is None
        assert cache.get("default") == 1
        clock.advance(15)
        assert cache.get("default") is None

    def test_negative_timeout_stores_nothing(self, cache):
        assert cache.set("k", 1, timeout=-1) is True
        assert cache.get("k") is None
        assert cache.has("k") is False

    def test_values_go_through_the_instance_serializer(self, cache):
        seen = []

        class Recording:
            def dumps(self, value):
                seen.append(("dumps", value))
                return pickle.dumps(value)

            def loads(self, data):
                seen.append(("loads", pickle.loads(data)))
                return pickle.loads(data)

        cache.serializer = Recording()
        cache.set("k", "v")
        assert cache.get("k") == "v"
        assert seen == [("dumps", "v"), ("loads", "v")]


class TestSimpleCache(CachelibContract):
    """The reference: cachelib's own SimpleCache (its clock is cachelib.simple.time)."""

    @pytest.fixture(autouse=True)
    def _patch_clock(self, clock, monkeypatch):
        monkeypatch.setattr(cachelib.simple, "time", clock)

    def make(self, clock, **kwargs):
        return SimpleCache(**kwargs)


class TestCachelibCache(CachelibContract):
    def make(self, clock, **kwargs):
        return CachelibCache(timer=clock, **kwargs)

    def test_no_arguments_gives_a_new_empty_independent_cache(self):
        one, two = CachelibCache(), CachelibCache()
        one.set("k", 1)
        assert two.get("k") is None
        assert one.cache is not two.cache
        assert CachelibCache().get("k") is None

    def test_threshold_bounds_the_entries(self, clock):
        cache = CachelibCache(threshold=10, timer=clock)
        for i in range(50):
            cache.set(f"k{i}", i)
        assert len(cache.cache) <= 10

    def test_shared_cache_with_prefix_clears_only_its_keys(self, clock):
        first = CachelibCache(timer=clock)
        shared = CachelibCache(cache=first.cache, key_prefix="fc_[1]*")
        first.set("own", 1)
        shared.set("k", 2)
        assert first.cache.get("fc_[1]*k") is not None
        shared.clear()
        assert shared.get("k") is None
        assert first.get("own") == 1

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="threshold"):
            CachelibCache(threshold=-1)
        with pytest.raises(TypeError, match="timeout must be"):
            CachelibCache().set("k", 1, timeout="10")


def _flask_caching_app(**config) -> tuple[Flask, Cache]:
    app = Flask("fc")
    cache = Cache()
    config = {"CACHE_TYPE": "cacheplug.integrations.flask.flask_caching_backend", **config}
    app.config.update(config)
    return app, cache


def _exercise(app: Flask, cache: Cache) -> None:
    calls = []

    @app.get("/view")
    @cache.cached(timeout=60)
    def view():
        calls.append("view")
        return f"view {len(calls)}"

    @cache.memoize(timeout=60)
    def square(x):
        calls.append(("square", x))
        return x * x

    client = app.test_client()
    assert client.get("/view").data == b"view 1"
    assert client.get("/view").data == b"view 1"
    with app.app_context():
        assert square(3) == 9
        assert square(3) == 9
        cache.delete_memoized(square, 3)
        assert square(3) == 9
        cache.set("plain", [1, 2])
        assert cache.get("plain") == [1, 2]
        assert cache.cache.inc("counter") == 1
    assert calls == ["view", ("square", 3), ("square", 3)]


def test_flask_caching_runs_on_a_standalone_backend():
    app, cache = _flask_caching_app(CACHE_THRESHOLD=1234, CACHE_DEFAULT_TIMEOUT=77)
    cache.init_app(app)
    backend = app.extensions["cache"][cache]
    assert isinstance(backend, CachelibCache)
    assert backend.cache.maxsize == 1234
    assert backend.default_timeout == 77
    _exercise(app, cache)


def test_flask_caching_shares_the_plug_runtime(tmp_path):
    app, cache = _flask_caching_app(
        SECRET_KEY="k", CACHEPLUG_STATE_DIR=str(tmp_path), CACHE_KEY_PREFIX="fc_"
    )
    plug = FlaskCachePlug(app)
    cache.init_app(app)
    try:
        backend = app.extensions["cache"][cache]
        _exercise(app, cache)
        with app.app_context():
            assert backend.cache is plug.cache
            assert plug.cache.get("fc_plain") is not None
            plug.cache.set("own", 1)
            cache.clear()
            assert plug.cache.get("own") == 1  # clear() stays inside CACHE_KEY_PREFIX
            assert cache.get("plain") is None
    finally:
        plug.close(app)
