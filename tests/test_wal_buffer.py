"""The runtime's WAL buffer and the writer's file bookkeeping: nothing lost, nothing
reordered, however writers, drains and failed writes interleave."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cacheplug import CachePlug, _wal, _walwriter
from cacheplug.persistence import Record, StateStore
from cacheplug.serializers import derive_keys

SECRET = "wal-buffer-test-secret-0123456789"


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads every 10 µs, so drains land between a writer's bytecodes."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def load(path: Path) -> dict[object, object]:
    reader = StateStore(path, secret=SECRET)
    try:
        result = reader.load()
    finally:
        reader.close()
    assert result.warnings == []
    return {e.key: e.value for e in result.entries}


@pytest.mark.usefixtures("fast_switching")
def test_writers_racing_worker_and_inline_drains_lose_and_reorder_nothing(
    tmp_path: Path,
) -> None:
    plug = CachePlug(state_dir=tmp_path, secret=SECRET, fsync="never", maxsize=100_000)
    plug.start()
    logged = []  # one item per record the listener buffers (list.append is atomic)
    listener = plug._on_cache_event

    def counting_listener(event: str, *args: object) -> None:
        if event in ("set", "delete"):
            logged.append(event)
        listener(event, *args)

    plug.cache.set_listener(counting_listener)
    try:
        stop = threading.Event()
        barrier = threading.Barrier(4)

        def write(t: int) -> None:
            barrier.wait()
            for i in range(4000):
                key = f"t{t}:{i % 500}"  # each key is rewritten and deleted many times
                if i % 7 == 3:
                    plug.cache.delete(key)
                else:
                    plug.cache.set(key, (t, i))

        def drain() -> None:
            barrier.wait()
            while not stop.is_set():
                plug._drain_wal()  # competes with the worker's scheduled drains

        writers = [threading.Thread(target=write, args=(t,)) for t in range(3)]
        drainer = threading.Thread(target=drain)
        for th in [*writers, drainer]:
            th.start()
        for th in writers:
            th.join()
        stop.set()
        drainer.join()
        assert plug.worker.flush(30)
        expected = dict(plug.cache.items())
        assert plug._wal_buffer == []
        assert plug.stats().persistence.last_seq == len(logged)  # none lost
        assert load(tmp_path) == expected  # none reordered
    finally:
        plug.close()


def test_close_logs_what_the_buffer_still_holds(tmp_path: Path) -> None:
    plug = CachePlug(state_dir=tmp_path, secret=SECRET, fsync="everysec")
    plug.start()
    plug._wal_scheduled = True  # no drain gets scheduled: the records wait in the buffer
    for i in range(100):
        plug.cache.set(f"k{i}", i)
    assert len(plug._wal_buffer) == 6 * 100
    plug.close()
    assert load(tmp_path) == {f"k{i}": i for i in range(100)}


def test_a_failed_write_is_cut_off_and_the_next_frame_follows_the_last_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path, secret=SECRET, fsync="never")
    assert store.acquire_writer()
    store.load()
    real_write_parts = _walwriter.write_parts

    def torn_write(fd: int, parts: list[bytes]) -> int:
        os.write(fd, b"".join(parts)[:50])  # part of the frame reaches the file
        raise OSError(28, "No space left on device")

    try:
        store.append([Record("set", "a", 1)])
        monkeypatch.setattr(_walwriter, "write_parts", torn_write)
        with pytest.raises(OSError):
            store.append([Record("set", "lost", 2)])
        monkeypatch.setattr(_walwriter, "write_parts", real_write_parts)
        store.append([Record("set", "b", 3), Record("delete", "a")])
    finally:
        store.close()
    frames = list(_wal.WalReader(tmp_path, derive_keys(SECRET), None))
    assert [(f.first_seq, f.count) for f in frames] == [(1, 1), (2, 2)]
    (_, seg), *_ = _wal.list_segments(tmp_path)
    assert seg.stat().st_size == frames[1].offset + _wal.FRAME_OVERHEAD + len(frames[1].payload)
    assert load(tmp_path) == {"b": 3}


@pytest.mark.parametrize("second", ["delete", "set"])
def test_the_log_keeps_the_order_writes_were_applied_in_even_when_listeners_lag(
    tmp_path: Path, second: str
) -> None:
    # Thread A writes "k" first, but its listener call is held up (a slow tier, a
    # preempted thread); thread B's later write to "k" reaches its listener first. The
    # log must still replay A's write before B's: the records are buffered under the
    # shard lock that ordered the two writes, not in the listeners.
    plug = CachePlug(state_dir=tmp_path, secret=SECRET, fsync="never")
    plug.start()
    listener = plug._on_cache_event
    a_written, b_notified = threading.Event(), threading.Event()

    def lagging_listener(event: str, key: object, value: object, *rest: object) -> None:
        if value == "from-a":
            a_written.set()
            assert b_notified.wait(5)
        elif key == "k":
            b_notified.set()
        listener(event, key, value, *rest)

    plug.cache.set_listener(lagging_listener)
    try:
        a = threading.Thread(target=plug.cache.set, args=("k", "from-a"))
        a.start()
        assert a_written.wait(5)
        if second == "delete":
            plug.cache.delete("k")
        else:
            plug.cache.set("k", "from-b")
        a.join(5)
        assert plug.worker.flush(5)
        plug._drain_wal()
        expected = {"k": "from-b"} if second == "set" else {}
        assert dict(plug.cache.items()) == expected
        # a second process reads the log (the close() snapshot would hide its order)
        assert load(tmp_path) == expected
    finally:
        plug.close()


@pytest.mark.parametrize("how", ["get_or_set", "set"])
def test_a_write_whose_tag_is_invalidated_while_it_is_stored_is_logged_as_dead(
    tmp_path: Path, how: str
) -> None:
    # get_or_set stores under the tag generations it saw when the load started, so an
    # invalidation during the load leaves the stored entry dead in memory; the log must
    # not bring it back after a restart.
    plug = CachePlug(state_dir=tmp_path, secret=SECRET, fsync="never")
    plug.start()
    try:
        if how == "get_or_set":

            def loader() -> str:
                plug.invalidate_tags("product:1")  # the product changes during the load
                return "computed-before-the-change"

            assert plug.cache.get_or_set("k", loader, tags=("product:1",)) == (
                "computed-before-the-change"
            )
        else:
            plug.cache.set("k", "old", tags=("product:1",))
            real = plug.cache._gens_for

            def gens_then_invalidate(tags):  # the set read the generations, then lost the CPU
                gens = real(tags)
                plug.cache.invalidate_tags("product:1")
                return gens

            plug.cache._gens_for = gens_then_invalidate
            plug.cache.set("k", "stored-as-the-tag-changed", tags=("product:1",))
            del plug.cache._gens_for
        assert plug.cache.get("k") is None  # dead in memory
        assert plug.worker.flush(5)
        plug._drain_wal()
        assert load(tmp_path) == {}  # and dead after a restart
    finally:
        plug.close()
