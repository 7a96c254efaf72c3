"""CachePlug: lifecycle, deferred work, back-pressure, receivers, fork, persistence wiring."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from cacheplug import CachePlug, ConfigurationError, signals


def cacheplug_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cacheplug")]


# -- options ----------------------------------------------------------------------------


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(ConfigurationError, match=r"unknown CachePlug option\(s\) \['maxsise'\]"):
        CachePlug(maxsise=10)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("fsync", "sometimes", "fsync must be one of"),
        ("sweep_interval", -1, "sweep_interval must be"),
        ("maxsize", 0, "maxsize must be"),
        ("shards", 3, "shards must be a power of two"),
        ("queue_size", 0, "queue_size must be an int >= 1, got 0"),
        ("queue_size", "10", "queue_size must be an int >= 1"),
        ("redis_url", "http://localhost", "redis_url must be a redis://"),
        ("wal_max_bytes", 10, "wal_max_bytes"),
    ],
)
def test_bad_option_values_are_rejected_at_construction(option, value, message):
    with pytest.raises(ConfigurationError, match=message):
        CachePlug(**{option: value})


def test_from_config_strips_prefix_and_case():
    plug = CachePlug.from_config(
        {"CACHEPLUG_MAXSIZE": 50, "CACHEPLUG_TTL": 5, "SECRET_KEY": "ignored"},
        prefix="CACHEPLUG_",
    )
    assert plug.cache.maxsize == 50
    assert plug.cache.ttl == 5


# -- lifecycle --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_no_thread_outlives_close_over_200_cycles():
    before = set(threading.enumerate())
    for i in range(200):
        plug = CachePlug(maxsize=100, sweep_interval=0.001)
        plug.start()
        plug.cache.set(i, i)
        plug.cache.delete(i)
        plug.invalidate_tags("t")
        plug.close()
        assert not plug.worker.running
    assert set(threading.enumerate()) - before == set()


def test_close_twice_and_start_after_close():
    plug = CachePlug().start()
    plug.close()
    plug.close()
    with pytest.raises(RuntimeError, match="closed"):
        plug.start()


async def test_async_context_manager():
    async with CachePlug() as plug:
        assert plug.started
        await plug.cache.aget_or_set("k", _async_value)
    assert not plug.started
    assert not cacheplug_threads()


async def _async_value():
    return 1


# -- deferred work ------------------------------------------------------------------------


def test_receivers_run_on_the_worker_not_in_the_handler():
    release = threading.Event()
    seen = []

    def slow_receiver(sender, key):
        release.wait(5)
        seen.append((key, threading.current_thread().name))

    signals.cache_deleted.connect(slow_receiver)
    try:
        with CachePlug(name="deferred") as plug:
            plug.cache.set("k", 1)
            assert plug.cache.delete("k") is True  # returns while the receiver blocks
            assert plug.cache.get("k") is None  # logically immediate
            assert seen == []
            release.set()
            plug.worker.flush(5)
            assert seen == [("k", "cacheplug-worker-deferred")]
    finally:
        signals.cache_deleted.disconnect(slow_receiver)


def test_a_raising_receiver_is_counted_and_never_reaches_the_caller(caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.cache_set.connect(broken)
    try:
        with CachePlug() as plug:
            plug.cache.set("a", 1)  # does not raise
            plug.worker.flush(5)
            assert plug.stats().receiver_errors == 1
            assert plug.cache.get("a") == 1
    finally:
        signals.cache_set.disconnect(broken)
    assert "broken" in caplog.text


@pytest.mark.timeout(60)
def test_a_full_queue_loses_no_delete():
    delivered = []
    lock = threading.Lock()

    def slow(sender, key):
        with lock:
            delivered.append(key)

    signals.cache_deleted.connect(slow)
    try:
        plug = CachePlug(maxsize=10_000, queue_size=2, put_timeout=0.0).start()
        keys = [f"k{i}" for i in range(2000)]
        for key in keys:
            plug.cache.set(key, 1)

        def deleter(part):
            for key in part:
                assert plug.cache.delete(key)

        threads = [threading.Thread(target=deleter, args=(keys[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        plug.close()
        assert all(key not in plug.cache for key in keys)
        assert sorted(delivered) == sorted(keys)  # every deletion reached the receiver
        assert plug.stats().worker.inline_runs > 0  # back-pressure really happened
    finally:
        signals.cache_deleted.disconnect(slow)


def test_invalidate_tags_and_delete_matching_return_at_once_and_worker_purges():
    with CachePlug(sweep_interval=0) as plug:
        for i in range(100):
            plug.cache.set(f"user:{i}", i, tags=("users",) if i % 2 else ())
            plug.cache.set(f"item:{i}", i)
        plug.invalidate_tags("users")
        plug.delete_matching("item:1*")
        assert plug.cache.get("user:1") is None
        assert plug.cache.get("item:12") is None
        assert plug.cache.get("item:2") == 2
        plug.worker.flush(5)
        assert len(plug.cache) == 50 + 100 - 11
        assert "get" not in plug.cache.__dict__


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(60)
def test_forked_child_gets_a_working_worker():
    plug = CachePlug(name="forked").start()
    plug.cache.set("k", 1)
    read_fd, write_fd = os.pipe()

    def on_delete(sender, key):
        os.write(write_fd, f"{key}@{threading.current_thread().name}".encode())

    signals.cache_deleted.connect(on_delete)
    try:
        pid = os.fork()
        if pid == 0:  # child: delete, let its own worker deliver, close, exit
            code = 1
            try:
                plug.cache.delete("k")
                plug.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(read_fd, 100) == b"k@cacheplug-worker-forked"
        # the parent's worker still works after the fork
        assert plug.cache.get("k") == 1
        plug.cache.delete("k")
        plug.worker.flush(5)
        assert os.read(read_fd, 100) == b"k@cacheplug-worker-forked"
    finally:
        signals.cache_deleted.disconnect(on_delete)
        os.close(read_fd)
        os.close(write_fd)
        plug.close()


# -- persistence wiring -------------------------------------------------------------------


def test_state_survives_a_restart(tmp_path, timer):
    with CachePlug(state_dir=tmp_path, secret="s3cret", timer=timer) as plug:
        plug.cache.set("a", {"x": 1}, ttl=50, tags=("t",))
        plug.cache.set("b", 2)
        plug.cache.set("gone", 3)
        plug.cache.delete("gone")
    with CachePlug(state_dir=tmp_path, secret="s3cret", timer=timer) as plug:
        assert plug.loaded_entries == 2
        assert plug.cache.get("a") == {"x": 1}
        assert plug.cache.get_entry("a").tags == ("t",)
        assert 49 < plug.cache.get_entry("a").expires_at - timer.now <= 50
        assert plug.cache.get("gone") is None
        plug.invalidate_tags("t")
    with CachePlug(state_dir=tmp_path, secret="s3cret", timer=timer) as plug:
        assert plug.cache.get("a") is None
        assert plug.cache.get("b") == 2


def test_wal_alone_recovers_after_a_crash(tmp_path):
    """No close(): only the write-ahead log (fsync=always) carries the state."""
    code = (
        "import os, sys; from cacheplug import CachePlug;"
        f"p = CachePlug(state_dir={str(tmp_path)!r}, secret='k', fsync='always').start();"
        "[p.cache.set(f'k{i}', i) for i in range(50)]; p.cache.delete('k7');"
        "os._exit(0)"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with CachePlug(state_dir=tmp_path, secret="k") as plug:
        assert plug.loaded_entries == 49
        assert plug.cache.get("k7") is None
        assert plug.cache.get("k49") == 49


def test_state_saved_signal_is_sent_on_close(tmp_path):
    saved = []

    def on_saved(sender, entries, seconds):
        saved.append(entries)

    signals.state_saved.connect(on_saved)
    try:
        with CachePlug(state_dir=tmp_path, secret="k") as plug:
            plug.cache.set("a", 1)
    finally:
        signals.state_saved.disconnect(on_saved)
    assert saved == [1]


# -- get_or_set forwards the freshness options (no Redis tier) -------------------------------


def test_get_or_set_forwards_freshness_options(timer):
    with CachePlug(timer=timer, sweep_interval=0) as plug:
        assert plug.get_or_set("k", lambda: 1, ttl=10, stale_while_revalidate=30) == 1
        timer.advance(11)
        # Expired but inside the window: the old value now, the refresh on the worker.
        assert plug.get_or_set("k", lambda: 2, ttl=10, stale_while_revalidate=30) == 1
        plug.worker.flush(5)
        assert plug.cache.get("k") == 2
        assert plug.cache.freshness_stats().stale_served == 1

        assert plug.get_or_set("none", lambda: None, ttl=100, negative_ttl=5) is None
        assert plug.cache.get_entry("none").expires_at == timer() + 5

        calls = []

        def missing():
            calls.append(1)
            raise LookupError("no row 7")

        for _ in range(2):
            with pytest.raises(LookupError, match="no row 7"):
                plug.get_or_set("row:7", missing, negative_ttl=5, negative_exceptions=LookupError)
        assert calls == [1]
        with pytest.raises(ConfigurationError, match="negative_ttl"):
            plug.get_or_set("x", missing, negative_exceptions=LookupError)


async def test_aget_or_set_forwards_freshness_options(timer):
    async with CachePlug(timer=timer, sweep_interval=0) as plug:
        calls = []

        async def missing():
            calls.append(1)
            raise KeyError("gone")

        for _ in range(2):
            with pytest.raises(KeyError):
                await plug.aget_or_set("k", missing, negative_ttl=5, negative_exceptions=KeyError)
        assert calls == [1]
        timer.advance(6)
        with pytest.raises(KeyError):
            await plug.aget_or_set("k", missing, negative_ttl=5, negative_exceptions=KeyError)
        assert calls == [1, 1]


# -- from_env ---------------------------------------------------------------------------


def test_from_env_converts_every_option_type():
    environ = {
        "CACHEPLUG_MAXSIZE": "5000",  # int
        "CACHEPLUG_TTL": "12.5",  # float
        "CACHEPLUG_SWEEP_INTERVAL": "0",  # float from an int literal
        "CACHEPLUG_QUEUE_SIZE": " 64 ",
        "CACHEPLUG_WRITE_THROUGH": "yes",  # bool
        "CACHEPLUG_REDIS_CLUSTER": "Off",
        "CACHEPLUG_STATE_DIR": "/var/lib/shop cache",  # str, kept as written
        "CACHEPLUG_SECRET": " s3cret ",
        "CACHEPLUG_FSYNC": "always",
        "CACHEPLUG_REDIS_PREFIX": "none",  # None
        "CACHEPLUG_REDIS_URL": "",
        "CACHEPLUG_NAME": "shop",
    }
    config = CachePlug.from_env(environ).config
    assert config["maxsize"] == 5000
    assert config["ttl"] == 12.5
    assert config["sweep_interval"] == 0.0
    assert isinstance(config["sweep_interval"], float)
    assert config["queue_size"] == 64
    assert config["write_through"] is True
    assert config["redis_cluster"] is False
    assert config["state_dir"] == "/var/lib/shop cache"
    assert config["secret"] == " s3cret "
    assert config["fsync"] == "always"
    assert config["redis_prefix"] is None
    assert config["redis_url"] is None
    assert config["name"] == "shop"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("0", False), ("TRUE", True), ("false", False), ("on", True), ("no", False)],
)
def test_from_env_reads_every_bool_spelling(text, expected):
    assert CachePlug.from_env({"CACHEPLUG_WRITE_THROUGH": text}).config["write_through"] is expected


@pytest.mark.parametrize("text", ["", "none", "None", " NONE "])
def test_from_env_reads_empty_and_none_as_none_where_none_is_valid(text):
    assert CachePlug.from_env({"CACHEPLUG_TTL": text}).config["ttl"] is None


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("CACHEPLUG_MAXSIZE", "lots", "maxsize needs an int"),
        ("CACHEPLUG_SHARDS", "1.5", "shards needs an int"),
        ("CACHEPLUG_TTL", "5m", "ttl needs a finite number of seconds, .* or 'none' for None"),
        ("CACHEPLUG_PUT_TIMEOUT", "nan", "put_timeout needs a finite number of seconds"),
        ("CACHEPLUG_PUT_TIMEOUT", "", "put_timeout needs a finite number"),
        ("CACHEPLUG_WRITE_THROUGH", "maybe", "write_through needs a bool: 1/0, true/false"),
        ("CACHEPLUG_TIMER", "time.time", "timer needs a callable"),
    ],
)
def test_from_env_names_the_variable_and_the_type_on_a_bad_value(variable, text, expected):
    with pytest.raises(ConfigurationError, match=f"environment variable {variable}=") as info:
        CachePlug.from_env({variable: text})
    assert re.search(expected, str(info.value))


def test_from_env_range_errors_still_come_from_validation():
    with pytest.raises(ConfigurationError, match="queue_size must be an int >= 1, got 0"):
        CachePlug.from_env({"CACHEPLUG_QUEUE_SIZE": "0"})


def test_from_env_ignores_variables_that_are_not_options():
    environ = {
        "CACHEPLUG_DASHBOARD_TOKEN": "not-an-option-0123456789",
        "CACHEPLUG_AUTOSTART": "maybe",
        "CACHEPLUG_TTL": "30",
        "cacheplug_maxsize": "7",  # not upper case: not read
        "OTHER_MAXSIZE": "8",
    }
    config = CachePlug.from_env(environ).config
    assert config["ttl"] == 30.0
    assert config["maxsize"] == 100_000


def test_from_env_reads_os_environ_and_a_custom_prefix_over_defaults(monkeypatch):
    monkeypatch.setenv("CACHEPLUG_MAXSIZE", "11")
    monkeypatch.setenv("CACHEPLUG_DASHBOARD_TOKEN", "not-an-option-0123456789")
    monkeypatch.delenv("CACHEPLUG_TTL", raising=False)
    plug = CachePlug.from_env(ttl=60, maxsize=5, name="shop")
    assert (plug.config["maxsize"], plug.config["ttl"], plug.name) == (11, 60, "shop")
    plug = CachePlug.from_env({"SHOP_CACHE_SHARDS": "4", "CACHEPLUG_SHARDS": "8"}, "SHOP_CACHE_")
    assert plug.config["shards"] == 4


def test_from_config_stays_strict_and_points_os_environ_at_from_env(monkeypatch):
    with pytest.raises(ConfigurationError, match=r"unknown CachePlug option\(s\) \['token'\]"):
        CachePlug.from_config({"CACHEPLUG_TOKEN": "x"}, prefix="CACHEPLUG_")
    monkeypatch.setenv("CACHEPLUG_TTL", "300")
    with pytest.raises(ConfigurationError, match=r"got '300'; .*use CachePlug\.from_env\(\)"):
        CachePlug.from_config(os.environ, prefix="CACHEPLUG_")
