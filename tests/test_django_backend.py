"""The CachePlugCache contract: one mixin run against Django's LocMemCache and ours.

LocMemCache is the reference: a test here that it fails is a wrong test. Both backends
run on the same fake clock (LocMemCache's ``time.time`` is patched, ours gets ``TIMER``),
so nothing sleeps.
"""

from __future__ import annotations

import decimal
import itertools
import pickle
import types
import warnings

import pytest
from django.core.cache.backends import base as django_base
from django.core.cache.backends import locmem
from django.core.cache.backends.base import CacheKeyWarning
from django.utils.safestring import SafeString, mark_safe

from cacheplug.integrations.django import CachePlugCache

_names = itertools.count()


class Unpicklable:
    def __getstate__(self):
        raise pickle.PickleError("not today")


def custom_key_func(key, key_prefix, version):
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def _incr_missing(cache):
    with pytest.raises(ValueError, match="not found"):
        cache.incr("k")


class CacheContract:
    """Tests every backend must pass. Subclasses set ``backend``."""

    backend: str

    @pytest.fixture
    def make(self, timer, monkeypatch):
        fake_time = types.SimpleNamespace(time=timer)
        monkeypatch.setattr(locmem, "time", fake_time)
        monkeypatch.setattr(django_base, "time", fake_time)
        made = []

        def make(location=None, **params):
            location = location or f"contract-{next(_names)}"
            params.setdefault("OPTIONS", {})
            if self.backend == "locmem":
                cache = locmem.LocMemCache(location, params)
            else:
                params["OPTIONS"] = {"TIMER": timer, "SWEEP_INTERVAL": 0, **params["OPTIONS"]}
                cache = CachePlugCache(location, params)
            made.append(cache)
            return cache

        yield make
        for cache in made:
            cache.clear()

    @pytest.fixture
    def cache(self, make):
        return make()

    # -- basics ------------------------------------------------------------------------

    def test_get_set(self, cache):
        assert cache.set("key", "value") is None
        assert cache.get("key") == "value"
        assert cache.get("missing") is None
        assert cache.get("missing", "default") == "default"

    def test_stored_none_is_a_hit(self, cache):
        cache.set("none", None)
        assert cache.get("none", "default") is None
        assert cache.has_key("none")

    def test_add(self, cache):
        assert cache.add("addkey1", "value") is True
        assert cache.add("addkey1", "newvalue") is False
        assert cache.get("addkey1") == "value"

    def test_prefix_isolates_caches_on_one_location(self, make):
        plain = make("shared-prefix-loc")
        prefixed = make("shared-prefix-loc", KEY_PREFIX="cacheprefix")
        plain.set("somekey", "value")
        assert not prefixed.has_key("somekey")
        prefixed.set("somekey", "other")
        assert plain.get("somekey") == "value"

    def test_same_location_shares_the_store(self, make):
        a = make("shared-loc")
        b = make("shared-loc")
        other = make("other-loc")
        a.set("k", "v")
        assert b.get("k") == "v"
        assert other.get("k") is None

    def test_get_many(self, cache):
        cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
        assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
        assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
        assert cache.get_many(iter(["a"])) == {"a": "a"}
        cache.set_many({"x": None, "y": 1})
        assert cache.get_many(["x", "y"]) == {"x": None, "y": 1}

    def test_delete(self, cache):
        cache.set_many({"key1": "spam", "key2": "eggs"})
        assert cache.delete("key1") is True
        assert cache.get("key1") is None
        assert cache.get("key2") == "eggs"
        assert cache.delete("key1") is False

    def test_delete_of_an_expired_entry_not_read_since_returns_true(self, cache, timer):
        cache.set("gone", "v", 1)
        timer.advance(2)
        assert cache.delete("gone") is True
        assert cache.delete("gone") is False

    @pytest.mark.parametrize(
        ("read", "deleted"),
        [
            (lambda c: c.get("k"), False),
            (lambda c: c.has_key("k"), False),
            (_incr_missing, False),
            (lambda c: c.touch("k", 10), True),  # touch leaves an expired entry stored
            (lambda c: c.get_many(["k"]), False),
        ],
        ids=["get", "has_key", "incr", "touch", "get_many"],
    )
    def test_reads_that_remove_an_expired_entry(self, cache, timer, read, deleted):
        cache.set("k", 1, 1)
        timer.advance(2)
        read(cache)
        assert cache.delete("k") is deleted

    def test_has_key_and_contains(self, cache):
        cache.set("hello1", "goodbye1")
        assert cache.has_key("hello1")
        assert "hello1" in cache
        assert not cache.has_key("goodbye1")
        assert "goodbye1" not in cache

    def test_incr_decr(self, cache):
        cache.set("answer", 41)
        assert cache.incr("answer") == 42
        assert cache.get("answer") == 42
        assert cache.incr("answer", 10) == 52
        assert cache.incr("answer", -10) == 42
        assert cache.decr("answer") == 41
        assert cache.decr("answer", 10) == 31
        assert cache.decr("answer", -10) == 41
        with pytest.raises(ValueError, match="Key ':1:does_not_exist' not found"):
            cache.incr("does_not_exist")
        with pytest.raises(ValueError, match="not found"):
            cache.decr("does_not_exist")

    def test_incr_of_a_non_number_raises_type_error(self, cache):
        cache.set("text", "abc")
        with pytest.raises(TypeError):
            cache.incr("text")
        assert cache.get("text") == "abc"

    def test_incr_of_a_pickled_number(self, cache):
        cache.set("money", decimal.Decimal("1.50"))
        assert cache.incr("money") == decimal.Decimal("2.50")
        assert cache.get("money") == decimal.Decimal("2.50")

    def test_incr_keeps_the_expiry(self, cache, timer):
        cache.set("n", 1, 10)
        timer.advance(5)
        assert cache.incr("n") == 2
        timer.advance(6)
        assert cache.get("n") is None

    def test_close_is_a_no_op(self, cache):
        cache.set("k", "v")
        cache.close()
        assert cache.get("k") == "v"

    def test_data_types_round_trip(self, cache):
        stuff = {
            "string": "this is a string",
            "int": 42,
            "bool": True,
            "float": 1.5,
            "complex": 1 + 2j,
            "bytes": b"\x00\xff",
            "list": [1, 2, 3, 4],
            "tuple": (1, 2, 3, 4),
            "dict": {"A": 1, "B": 2},
            "set": {1, 2},
            "frozenset": frozenset({"a", ("b", 1)}),
            "decimal": decimal.Decimal("1.1"),
            "nested": {"a": [1, {"b": (2, 3)}]},
            "function": int,
        }
        for key, value in stuff.items():
            cache.set(key, value)
            assert cache.get(key) == value
            assert type(cache.get(key)) is type(value)

    def test_subclasses_of_builtins_keep_their_type(self, cache):
        cache.set("safe", mark_safe("<b>hi</b>"))
        assert type(cache.get("safe")) is SafeString

    def test_unicode_keys_and_values(self, cache):
        stuff = {
            "ascii": "ascii_value",
            "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
            "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
            "ascii2": {"x": 1},
        }
        for key, value in stuff.items():
            cache.set(key, value)
            assert cache.get(key) == value
        cache.set_many(stuff)
        assert cache.get_many(list(stuff)) == stuff

    def test_binary_string(self, cache):
        from zlib import compress, decompress

        value = "value_to_be_compressed"
        cache.set("binary1", compress(value.encode()))
        assert decompress(cache.get("binary1")).decode() == value
        assert cache.add("binary1-add", compress(value.encode())) is True

    # -- copies --------------------------------------------------------------------------

    def test_mutating_after_set_does_not_change_the_cached_value(self, cache):
        value = {"items": [1, 2]}
        cache.set("m", value)
        value["items"].append(3)
        assert cache.get("m") == {"items": [1, 2]}

    def test_mutating_after_get_does_not_change_the_cached_value(self, cache):
        cache.set("m", [1, 2])
        got = cache.get("m")
        got.append(3)
        assert cache.get("m") == [1, 2]
        assert cache.get("m") is not cache.get("m")

    def test_tuple_holding_a_mutable_is_copied(self, cache):
        inner = [1]
        cache.set("t", (inner, 2))
        inner.append(2)
        got = cache.get("t")
        assert got == ([1], 2)
        got[0].append(9)
        assert cache.get("t") == ([1], 2)

    def test_unpicklable_value_raises_pickle_error(self, cache):
        with pytest.raises(pickle.PickleError):
            cache.set("unpicklable", Unpicklable())
        with pytest.raises(pickle.PickleError):
            cache.add("unpicklable", Unpicklable())
        assert not cache.has_key("unpicklable")
        cache.set("held", "v")
        with pytest.raises(pickle.PickleError):
            cache.add("held", Unpicklable())

    # -- timeouts ------------------------------------------------------------------------

    def test_expiration(self, cache, timer):
        cache.set("expire1", "very quickly", 1)
        cache.set("expire2", "very quickly", 1)
        cache.set("expire3", "very quickly", 1)
        timer.advance(2)
        assert cache.get("expire1") is None
        assert cache.add("expire2", "newvalue") is True
        assert cache.get("expire2") == "newvalue"
        assert not cache.has_key("expire3")

    def test_default_timeout_from_params(self, make, timer):
        cache = make(TIMEOUT=10)
        cache.set("k", "v")
        timer.advance(9)
        assert cache.get("k") == "v"
        timer.advance(2)
        assert cache.get("k") is None

    def test_timeout_none_in_params_never_expires(self, make, timer):
        cache = make(TIMEOUT=None)
        cache.set("k", "v")
        timer.advance(10**9)
        assert cache.get("k") == "v"

    def test_timeout_zero_in_params_caches_nothing(self, make):
        cache = make(TIMEOUT=0)
        cache.set("k", "v")
        assert cache.get("k") is None

    def test_forever_timeout(self, cache, timer):
        cache.set("key1", "eggs", None)
        timer.advance(10**9)
        assert cache.get("key1") == "eggs"
        assert cache.add("key2", "ham", None) is True
        assert cache.get("key2") == "ham"
        assert cache.add("key1", "new eggs", None) is False
        cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, None)
        assert cache.get("key3") == "sausage"
        cache.set("key5", "belgian fries", timeout=1)
        assert cache.touch("key5", timeout=None) is True
        timer.advance(10**6)
        assert cache.get("key5") == "belgian fries"

    def test_long_timeout(self, cache, timer):
        cache.set("key1", "eggs", 60 * 60 * 24 * 30 + 1)
        timer.advance(60 * 60 * 24 * 30)
        assert cache.get("key1") == "eggs"

    def test_float_timeout(self, cache, timer):
        cache.set("f", "v", 0.5)
        timer.advance(0.4)
        assert cache.get("f") == "v"
        timer.advance(0.2)
        assert cache.get("f") is None

    def test_zero_timeout(self, cache):
        cache.set("key1", "eggs", 0)
        assert cache.get("key1") is None
        assert cache.add("key2", "ham", 0) is True
        assert cache.get("key2") is None
        cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
        assert cache.get("key3") is None
        cache.set("key5", "belgian fries", timeout=1)
        assert cache.touch("key5", timeout=0) is True
        assert cache.get("key5") is None

    def test_zero_or_negative_timeout_removes_the_old_value(self, cache):
        cache.set("k", "old")
        cache.set("k", "new", 0)
        assert cache.get("k") is None
        cache.set("n", "old")
        cache.set("n", "new", -5)
        assert cache.get("n") is None

    def test_touch(self, cache, timer):
        cache.set("expire1", "very quickly", timeout=1)
        assert cache.touch("expire1", timeout=4) is True
        timer.advance(2)
        assert cache.has_key("expire1")
        timer.advance(3)
        assert not cache.has_key("expire1")
        assert cache.touch("nonexistent") is False

    def test_touch_without_timeout_uses_the_default(self, make, timer):
        cache = make(TIMEOUT=100)
        cache.set("k", "v", 1)
        assert cache.touch("k") is True
        timer.advance(50)
        assert cache.get("k") == "v"

    # -- many, clear ---------------------------------------------------------------------

    def test_set_many(self, cache, timer):
        assert cache.set_many({"key1": "spam", "key2": "eggs"}) == []
        assert cache.get("key1") == "spam"
        cache.set_many({"key1": "spam", "key2": "eggs"}, 1)
        timer.advance(2)
        assert cache.get("key1") is None

    def test_delete_many(self, cache):
        cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
        cache.delete_many(["key1", "key2", "nope"])
        assert cache.get("key1") is None
        assert cache.get("key3") == "ham"

    def test_clear(self, cache):
        cache.set_many({"key1": "spam", "key2": "eggs"})
        cache.clear()
        assert cache.get("key1") is None

    # -- culling -------------------------------------------------------------------------

    @pytest.mark.parametrize(("cull_frequency", "remaining"), [(3, 29), (0, 19), (2, 19), (10, 28)])
    def test_cull(self, make, cull_frequency, remaining):
        cache = make(OPTIONS={"MAX_ENTRIES": 30, "CULL_FREQUENCY": cull_frequency})
        for i in range(1, 50):
            cache.set(f"cull{i}", "value", 1000)
        assert sum(cache.has_key(f"cull{i}") for i in range(1, 50)) == remaining

    def test_cull_keeps_the_newest_write(self, make):
        cache = make(OPTIONS={"MAX_ENTRIES": 10})
        for i in range(100):
            cache.set(f"k{i}", i)
            assert cache.get(f"k{i}") == i

    # -- keys ----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("key with spaces", "Cache key contains characters that will cause errors"),
            ("key\nnewline", "Cache key contains characters that will cause errors"),
            ("a" * 250, "Cache key will cause errors if used with memcached"),
        ],
    )
    def test_memcached_unsafe_keys_warn_as_django_does(self, cache, key, expected):
        for operation in (
            lambda: cache.set(key, "v"),
            lambda: cache.get(key),
            lambda: cache.add(key, "v"),
            lambda: cache.has_key(key),
            lambda: cache.delete(key),
            lambda: cache.touch(key),
            lambda: cache.get_many([key]),
        ):
            with pytest.warns(CacheKeyWarning, match=expected) as record:
                operation()
            assert len(record) == 1

    def test_safe_keys_do_not_warn(self, cache):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cache.set("a" * 246, "v")  # ":1:" makes it 249
            cache.get("Iñtërnâtiônàlizætiøn")
            cache.set(("tuple",), "v")  # str(key) is used, as Django does
            assert cache.get(("tuple",)) == "v"

    def test_key_function_callable_and_dotted_path(self, make):
        for key_func in (custom_key_func, f"{__name__}.custom_key_func"):
            location = f"keyfunc-{next(_names)}"
            custom = make(location, KEY_FUNCTION=key_func)
            plain = make(location)
            custom.set("answer1", 42)
            assert custom.get("answer1") == 42
            assert plain.get("answer1") is None
            assert custom.make_key("answer1") == "CUSTOM--1-answer1"

    def test_int_keys(self, cache):
        cache.set(1, "one")
        assert cache.get(1) == "one"
        assert cache.get("1") == "one"  # both make ":1:1", as in Django

    # -- versions ------------------------------------------------------------------------

    def test_versioning(self, make):
        location = f"versions-{next(_names)}"
        v1 = make(location)
        v2 = make(location, VERSION=2)
        v1.set("answer1", 42)
        assert v1.get("answer1") == 42
        assert v1.get("answer1", version=1) == 42
        assert v1.get("answer1", version=2) is None
        assert v2.get("answer1") is None
        assert v2.get("answer1", version=1) == 42
        v2.set("answer2", 42)
        assert v2.get("answer2") == 42
        assert v1.get("answer2") is None
        v1.set("answer3", 37, version=2)
        assert v2.get("answer3") == 37
        assert v1.get_many(["answer1", "answer3"], version=2) == {"answer3": 37}
        assert v1.add("answer3", 1, version=2) is False

    def test_incr_and_decr_version(self, cache):
        cache.set("answer", 42, version=2)
        assert cache.incr_version("answer", version=2) == 3
        assert cache.get("answer", version=2) is None
        assert cache.get("answer", version=3) == 42
        assert cache.decr_version("answer", version=3) == 2
        assert cache.get("answer", version=2) == 42
        assert cache.incr_version("answer", delta=10, version=2) == 12
        with pytest.raises(ValueError, match="not found"):
            cache.incr_version("does_not_exist")
        with pytest.raises(ValueError, match="not found"):
            cache.decr_version("does_not_exist")

    def test_version_in_incr_and_delete(self, cache):
        cache.set("n", 1, version=3)
        assert cache.incr("n", version=3) == 2
        with pytest.raises(ValueError, match="not found"):
            cache.incr("n")
        assert cache.delete("n", version=3) is True

    # -- get_or_set ----------------------------------------------------------------------

    def test_get_or_set(self, cache):
        assert cache.get("projector") is None
        assert cache.get_or_set("projector", 42) == 42
        assert cache.get("projector") == 42
        assert cache.get_or_set("projector", 43) == 42
        assert cache.get_or_set("null", None) is None
        assert cache.get("null", "default") is None

    def test_get_or_set_callable(self, cache):
        calls = []

        def make_value():
            calls.append(1)
            return "value"

        assert cache.get_or_set("mykey", make_value) == "value"
        assert cache.get_or_set("mykey", make_value) == "value"
        assert calls == [1]

    def test_get_or_set_version(self, cache):
        assert cache.get_or_set("brian", 1979, version=2) == 1979
        assert cache.get("brian") is None
        assert cache.get("brian", version=2) == 1979

    # -- async twins ---------------------------------------------------------------------

    async def test_async_twins(self, cache, timer):
        assert await cache.aset("k", {"a": 1}) is None
        assert await cache.aget("k") == {"a": 1}
        assert await cache.aget("missing", "d") == "d"
        assert await cache.aadd("k", 2) is False
        assert await cache.aadd("n", 1) is True
        assert await cache.ahas_key("n")
        assert await cache.aincr("n", 5) == 6
        assert await cache.adecr("n", 2) == 4
        assert await cache.aset_many({"x": 1, "y": 2}) == []
        assert await cache.aget_many(["x", "y", "z"]) == {"x": 1, "y": 2}
        assert await cache.atouch("x", 5) is True
        assert await cache.adelete("x") is True
        await cache.adelete_many(["y"])
        assert await cache.aget("y") is None
        assert await cache.aget_or_set("g", lambda: "made") == "made"
        assert await cache.aincr_version("g") == 2
        assert await cache.adecr_version("g", version=2) == 1
        with pytest.raises(ValueError, match="not found"):
            await cache.aincr("absent")
        await cache.aclear()
        assert await cache.aget("k") is None
        await cache.aclose()


class TestLocMemCache(CacheContract):
    """The reference: proves each contract test."""

    backend = "locmem"

    def test_cull_drops_the_least_recently_read(self, make):
        cache = make(OPTIONS={"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2})
        for i in range(4):
            cache.set(f"k{i}", i)
        cache.get("k0")
        cache.get("k1")
        cache.set("k4", 4)  # full: culls half, least recently read first
        assert [cache.has_key(f"k{i}") for i in range(5)] == [True, True, False, False, True]


class TestCachePlugCache(CacheContract):
    backend = "cacheplug"

    def test_cull_drops_the_oldest_writes_even_if_read(self, make):
        """The documented difference: culling follows write order, not reads."""
        cache = make(OPTIONS={"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2})
        for i in range(4):
            cache.set(f"k{i}", i)
        cache.get("k0")
        cache.get("k1")
        cache.set("k4", 4)
        assert [cache.has_key(f"k{i}") for i in range(5)] == [False, False, True, True, True]

    def test_sieve_eviction_keeps_recently_read_entries(self, make):
        cache = make(OPTIONS={"MAX_ENTRIES": 4, "EVICTION": "sieve", "SHARDS": 1})
        for i in range(4):
            cache.set(f"k{i}", i)
        cache.get("k0")
        cache.get("k1")
        cache.set("k4", 4)
        assert [cache.has_key(k) for k in ("k0", "k1", "k4")] == [True, True, True]
