"""Snapshot format 2 (signed chunks), WAL format 2 (flat frames with a time offset),
progress reporting, and the runtime's WAL path, on real files and real processes."""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cacheplug import CachePlug, _columns, _snapshot, _wal
from cacheplug._progress import LogProgress, TerminalProgress
from cacheplug.persistence import Record, StateStore, StoredEntry
from cacheplug.serializers import derive_keys

SECRET = "format-test-secret-0123456789"
NOW = 1_700_000_000.0


class Bomb:
    """Unpickling this creates *marker*: proof that a file was (wrongly) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def writer(path: Path, **kw) -> StateStore:
    kw.setdefault("secret", SECRET)
    kw.setdefault("fsync", "never")
    store = StateStore(path, **kw)
    assert store.acquire_writer()
    return store


def reload(path: Path, **kw):
    kw.setdefault("secret", SECRET)
    store = StateStore(path, **kw)
    store.acquire_writer()
    try:
        return store.load()
    finally:
        store.close()


def chunk_offsets(snap: Path) -> list[tuple[int, int]]:
    """(offset, total size) of every chunk in a snapshot file."""
    data = snap.read_bytes()
    header = _snapshot.HEADER.unpack_from(data)
    offsets, pos = [], _snapshot.PREFIX_SIZE
    for _ in range(header[7]):
        plen, _rows = _snapshot.CHUNK_HEAD.unpack_from(data, pos)
        size = _snapshot.CHUNK_OVERHEAD + plen
        offsets.append((pos, size))
        pos += size
    assert pos == len(data)
    return offsets


def many(n: int) -> list[StoredEntry]:
    # atoms in most chunks, a container value in one: both encoders are exercised
    return [StoredEntry(f"k:{i}", {"i": i} if i == 5000 else i) for i in range(n)]


# -- snapshot chunks ------------------------------------------------------------------


def test_a_big_snapshot_is_written_in_signed_chunks_and_read_back_in_order(tmp_path: Path) -> None:
    entries = many(10_000)
    with writer(tmp_path) as store:
        info = store.write_snapshot(entries)
    assert info.entries == 10_000
    snap = tmp_path / "snapshot.bin"
    assert len(chunk_offsets(snap)) == 3  # 4096 + 4096 + 1808
    assert info.bytes == snap.stat().st_size
    result = reload(tmp_path)
    assert result.entries == entries
    assert result.warnings == []


def test_shared_parts_of_a_value_stay_shared(tmp_path: Path) -> None:
    inner = [1, 2]
    value = {"a": inner, "b": inner}
    with writer(tmp_path) as store:
        store.write_snapshot([StoredEntry("snap", value)])
        store.append([Record("set", "wal", value)])
    got = {e.key: e.value for e in reload(tmp_path).entries}
    for key in ("snap", "wal"):
        assert got[key] == value
        assert got[key]["a"] is got[key]["b"]


def test_a_flipped_byte_in_a_later_chunk_rejects_the_whole_snapshot(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    entries = many(9000)
    entries[-1] = StoredEntry("bomb", Bomb(marker))
    state = tmp_path / "state"
    with writer(state) as store:
        store.write_snapshot(entries)
    snap = state / "snapshot.bin"
    (offset, size) = chunk_offsets(snap)[2]
    data = bytearray(snap.read_bytes())
    data[offset + size // 2] ^= 0x01
    snap.write_bytes(bytes(data))
    result = reload(state)
    assert result.entries == []  # the two good chunks are not kept: all or nothing
    assert any("HMAC mismatch in chunk 2" in w for w in result.warnings)
    assert (state / "snapshot.bin.rejected").exists()
    assert not marker.exists()


def test_swapped_chunks_are_refused(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.write_snapshot([StoredEntry(f"k{i:05d}", "x") for i in range(8192)])
    snap = tmp_path / "snapshot.bin"
    (a, size_a), (b, size_b) = chunk_offsets(snap)
    assert size_a == size_b
    data = snap.read_bytes()
    swapped = data[:a] + data[b : b + size_b] + data[a : a + size_a] + data[b + size_b :]
    snap.write_bytes(swapped)
    result = reload(tmp_path)
    assert result.entries == []
    assert any("HMAC mismatch in chunk 0" in w for w in result.warnings)


def test_a_snapshot_cut_at_a_chunk_boundary_is_truncated(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.write_snapshot(many(9000))
    snap = tmp_path / "snapshot.bin"
    offset, size = chunk_offsets(snap)[1]
    snap.write_bytes(snap.read_bytes()[: offset + size])
    result = reload(tmp_path)
    assert result.entries == []
    assert any("truncated" in w for w in result.warnings)


def test_an_older_snapshot_format_names_both_versions_and_is_set_aside(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.write_snapshot([StoredEntry("a", 1)])
    snap = tmp_path / "snapshot.bin"
    data = bytearray(snap.read_bytes())
    struct.pack_into("<H", data, 8, 1)
    snap.write_bytes(bytes(data))
    store = StateStore(tmp_path, secret=SECRET)
    assert store.acquire_writer()  # an older file does not block writing
    result = store.load()
    store.close()
    assert result.entries == []
    (message,) = result.warnings
    assert "format version 1" in message
    assert f"format version {_snapshot.FORMAT_VERSION}" in message
    assert (tmp_path / "snapshot.bin.rejected").exists()


def test_an_older_wal_format_names_both_versions_and_is_set_aside(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.append([Record("set", "old", 1)])
    (_, seg), *_ = _wal.list_segments(tmp_path)
    data = bytearray(seg.read_bytes())
    struct.pack_into("<H", data, 8, 1)
    seg.write_bytes(bytes(data))
    with writer(tmp_path) as store:
        store.append([Record("set", "new", 2)])
    result = reload(tmp_path)
    assert [e.key for e in result.entries] == ["new"]
    assert (seg.with_name(seg.name + ".rejected")).exists()
    # the message, as a reader sees it before any repair
    state = tmp_path / "again"
    with writer(state) as store:
        store.append([Record("set", "x", 1)])
    (_, seg2), *_ = _wal.list_segments(state)
    data = bytearray(seg2.read_bytes())
    struct.pack_into("<H", data, 8, 1)
    seg2.write_bytes(bytes(data))
    reader = StateStore(state, secret=SECRET)
    warnings = reader.load().warnings
    reader.close()
    assert any(
        "WAL format version 1" in w and f"format version {_wal.FORMAT_VERSION}" in w
        for w in warnings
    )


# -- WAL frames -----------------------------------------------------------------------


@pytest.mark.parametrize("atoms", [True, False], ids=["atom-values", "list-values"])
def test_a_big_append_spans_several_frames_and_a_torn_one_keeps_the_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atoms: bool
) -> None:
    # Atom values go out in frames of ATOM_FRAME_ROWS (made small here), others in
    # frames of FRAME_ROWS (pickled with the memo).
    monkeypatch.setattr(_wal, "ATOM_FRAME_ROWS", 1000)
    rows = 1000 if atoms else _wal.FRAME_ROWS
    n = 2 * rows + 100
    with writer(tmp_path) as store:
        records = [Record("set", f"k{i}", i if atoms else [i]) for i in range(n)]
        assert store.append(records) == n
    (_, seg), *_ = _wal.list_segments(tmp_path)
    frames = list(_wal.WalReader(tmp_path, derive_keys(SECRET), None))
    assert [f.count for f in frames] == [rows, rows, 100]
    assert len(reload(tmp_path).entries) == n
    # a crash in the middle of that one write: the last frame is torn
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 10)
    result = reload(tmp_path)
    assert [e.key for e in result.entries] == [f"k{i}" for i in range(2 * rows)]


def test_an_append_of_atoms_is_one_frame_up_to_atom_frame_rows(tmp_path: Path) -> None:
    n = _wal.FRAME_ROWS + 500
    assert n <= _wal.ATOM_FRAME_ROWS
    clock = FakeClock(NOW)
    with writer(tmp_path, clock=clock) as store:
        store.append([Record("set", f"k{i}", f"v{i}", NOW + 1 + i, (), i + 1) for i in range(n)])
    frames = list(_wal.WalReader(tmp_path, derive_keys(SECRET), None))
    assert [(f.first_seq, f.count) for f in frames] == [(1, n)]
    result = reload(tmp_path, clock=clock)
    assert [(e.key, e.value, e.version) for e in result.entries] == [
        (f"k{i}", f"v{i}", i + 1) for i in range(n)
    ]


def test_one_value_that_is_not_an_atom_sends_the_batch_to_frame_rows(tmp_path: Path) -> None:
    n = 2 * _wal.FRAME_ROWS + 100
    values: list[object] = [f"v{i}" for i in range(n)]
    values[_wal.FRAME_ROWS + 7] = {"not": "an atom"}
    with writer(tmp_path) as store:
        store.append([Record("set", f"k{i}", values[i]) for i in range(n)])
    frames = list(_wal.WalReader(tmp_path, derive_keys(SECRET), None))
    assert [f.count for f in frames] == [_wal.FRAME_ROWS, _wal.FRAME_ROWS, 100]
    assert [e.value for e in reload(tmp_path).entries] == values


def test_atom_frames_over_the_byte_cap_fall_back_to_frame_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wal, "MAX_ATOM_FRAME_BYTES", 1000)
    n = _wal.FRAME_ROWS + 10
    with writer(tmp_path) as store:
        store.append([Record("set", f"k{i}", i) for i in range(n)])
    frames = list(_wal.WalReader(tmp_path, derive_keys(SECRET), None))
    assert [f.count for f in frames] == [_wal.FRAME_ROWS, 10]
    assert len(reload(tmp_path).entries) == n


def test_a_flipped_byte_in_a_big_frame_stops_replay_before_it(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.append([Record("set", f"a{i}", i) for i in range(10)])
        store.append([Record("set", f"b{i}", i) for i in range(5000)])
        store.append([Record("set", f"c{i}", i) for i in range(10)])
    frames = list(_wal.WalReader(tmp_path, derive_keys(SECRET), None))
    assert [f.count for f in frames] == [10, 5000, 10]
    big = frames[1]
    with open(big.path, "r+b") as f:
        f.seek(big.offset + _wal.FRAME_HEADER.size + len(big.payload) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    result = reload(tmp_path)
    assert [e.key for e in result.entries] == [f"a{i}" for i in range(10)]
    assert any("corrupt" in w for w in result.warnings)


def test_time_offset_turns_monotonic_expiry_into_wall_clock(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    with writer(tmp_path, clock=clock) as store:
        offset = NOW - 500.0  # the caller's monotonic timer reads 500 at wall time NOW
        store.append(
            [
                ("set", "ttl", 1, 560.0, (), 1),
                ("set", "forever", 2, float("inf"), (), 2),
                ("set", "none", 3, None, (), 3),
                ("touch", "none", None, 530.0, (), 0),
            ],
            time_offset=offset,
        )
    result = reload(tmp_path, clock=clock)
    got = {e.key: e.expires_at for e in result.entries}
    assert got == {"ttl": NOW + 60.0, "forever": None, "none": NOW + 30.0}


def test_bad_records_are_refused(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        with pytest.raises(ValueError, match="6 fields"):
            store.append([("set", "a", 1)])
        with pytest.raises(ValueError, match="whole number of records"):
            store.append_fields(["set", "a", 1, None, ()])
        with pytest.raises(ValueError, match="unknown record op 'upsert'"):
            store.append_fields(["set", "a", 1, None, (), 0, "upsert", "b", 2, None, (), 0])
        assert store.stats().last_seq == 0


def test_a_touch_does_not_log_its_value(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.append_fields(["set", "a", "big", None, (), 1, "touch", "a", "big", 5.0, (), 1])
    (frame,) = _wal.WalReader(tmp_path, derive_keys(SECRET), None)
    records = list(_columns.decode(pickle.loads(frame.payload), frame.count))
    assert records == [("set", "a", "big", None, (), 1), ("touch", "a", None, 5.0, (), 1)]


# -- progress -------------------------------------------------------------------------


def test_load_reports_progress_per_chunk(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.write_snapshot(many(10_000))
    calls: list[tuple[int, int]] = []
    store = StateStore(tmp_path, secret=SECRET)
    store.load(progress=lambda done, total: calls.append((done, total)))
    store.close()
    assert calls == [(0, 10_000), (4096, 10_000), (8192, 10_000), (10_000, 10_000)]


class Tty(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_terminal_progress_draws_only_on_a_tty() -> None:
    clock = FakeClock(0.0)
    screen = Tty(True)
    bar = TerminalProgress("loading", screen, width=10, clock=clock)
    bar(0, 200)
    bar(50, 200)  # within min_interval: skipped
    clock.now = 1.0
    bar(100, 200)
    bar(200, 200)  # the last step is always drawn
    bar.close()
    frames = screen.getvalue().split("\r")
    assert frames[1].startswith("loading [..........]   0% 0/200 entries")
    assert frames[2].startswith("loading [#####.....]  50% 100/200 entries")
    assert frames[3].startswith("loading [##########] 100% 200/200 entries")
    assert frames[4].strip() == ""
    assert frames[5] == ""
    pipe = Tty(False)
    quiet = TerminalProgress("loading", pipe)
    quiet(0, 10)
    quiet(10, 10)
    quiet.close()
    assert pipe.getvalue() == ""


def test_log_progress_is_quiet_for_short_loads_then_periodic(caplog) -> None:
    clock = FakeClock(100.0)
    log = logging.getLogger("cacheplug.test_progress")
    progress = LogProgress(log, "cacheplug 'x'", after=2.0, every=5.0, clock=clock)
    with caplog.at_level(logging.INFO, log.name):
        progress(0, 1000)
        clock.now = 101.0
        progress(100, 1000)
        clock.now = 102.5
        progress(250, 1000)
        clock.now = 104.0
        progress(400, 1000)  # within `every`
        clock.now = 108.0
        progress(900, 1000)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "cacheplug 'x': loading state, 250 of 1,000 entries (25%)",
        "cacheplug 'x': loading state, 900 of 1,000 entries (90%)",
    ]


def _run_inspect(path: Path, stderr_fd: int | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cacheplug.cli", "inspect", str(path)],
        stdout=subprocess.PIPE,
        stderr=stderr_fd if stderr_fd is not None else subprocess.PIPE,
        env={**os.environ, "CACHEPLUG_SECRET": SECRET},
        timeout=60,
        check=False,
    )


def test_cli_inspect_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    with writer(tmp_path) as store:
        store.write_snapshot(many(10_000))
    primary, secondary = pty.openpty()
    try:
        done = _run_inspect(tmp_path, secondary)
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if secondary >= 0:
            os.close(secondary)
        os.close(primary)
    assert done.returncode == 0, done.stdout
    assert b"entries decoded: 10000" in done.stdout
    assert b"\r" not in done.stdout
    assert b"100% 10,000/10,000 entries" in shown
    *_, last_drawn, erased, after = shown.split(b"\r")
    assert last_drawn.startswith(b"decoding ")
    assert erased.strip() == b""
    assert after == b""
    piped = _run_inspect(tmp_path, None)
    assert piped.returncode == 0
    assert piped.stderr == b""


# -- the runtime's WAL path -----------------------------------------------------------


def test_runtime_wal_keeps_remaining_ttl_and_every_operation(tmp_path: Path) -> None:
    first_timer = FakeClock(1000.0)
    writer_plug = CachePlug(
        state_dir=tmp_path, secret=SECRET, fsync="always", timer=first_timer, sweep_interval=0
    ).start()
    try:
        cache = writer_plug.cache
        cache.set("ttl", "v", ttl=50)
        cache.set("forever", "f", ttl=math.inf)
        cache.set("tagged", 1, tags=("t",))
        cache.set("touched", 2, ttl=10)
        cache.touch("touched", ttl=80)
        cache.set("deleted", 3)
        cache.delete("deleted")
        writer_plug.invalidate_tags("t")
        cache.set("fn:1", lambda: 1)  # not picklable: logged as a delete, kept in memory
        assert cache.get("fn:1") is not None
        # a second process would load now (this one holds the lock, so it only reads)
        reader = CachePlug(
            state_dir=tmp_path, secret=SECRET, timer=FakeClock(5000.0), sweep_interval=0
        ).start()
        try:
            entries = {key: reader.cache.get_entry(key) for key in ("ttl", "forever", "touched")}
            assert reader.cache.get("tagged") is None
            assert reader.cache.get("deleted") is None
            assert reader.cache.get("fn:1") is None
            assert 49 < entries["ttl"].expires_at - 5000.0 <= 50
            assert 79 < entries["touched"].expires_at - 5000.0 <= 80
            assert entries["forever"].expires_at is None
        finally:
            reader.close()
        assert writer_plug.stats().persistence.unpicklable == 1
    finally:
        writer_plug.close()


def test_runtime_wal_loses_no_record_under_concurrent_writers(tmp_path: Path) -> None:
    plug = CachePlug(state_dir=tmp_path, secret=SECRET, fsync="everysec", maxsize=100_000)
    plug.start()
    try:
        barrier = threading.Barrier(4)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(3000):
                plug.cache.set(f"t{t}:{i}", i)
                if i % 3 == 0:
                    plug.cache.delete(f"t{t}:{i}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert plug.worker.flush(30)
        expected = dict(plug.cache.items())
        reader = StateStore(tmp_path, secret=SECRET)
        try:
            result = reader.load()
        finally:
            reader.close()
        assert result.warnings == []
        assert result.replayed == 4 * (3000 + 1000)
        assert {e.key: e.value for e in result.entries} == expected
    finally:
        plug.close()


class MarshalSerializer:
    """A custom codec that knows only builtin types: no arrays, no pickle."""

    def dumps(self, obj):
        import marshal

        return marshal.dumps(obj)

    def loads(self, data):
        import marshal

        return marshal.loads(data)


def test_a_custom_serializer_gets_plain_columns_and_round_trips(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    with writer(tmp_path, serializer=MarshalSerializer(), clock=clock) as store:
        store.write_snapshot([StoredEntry("s", "v", NOW + 100, ("t",), 4)])
        store.append(
            [
                Record("set", "a", [1, "x"], NOW + 50, ("t", "u"), 7),
                Record("set", "b", 2.5),
                Record("delete", "s"),
                Record("set", "c", None, version=9),
                Record("invalidate_tags", tags=("u",)),
            ]
        )
    result = reload(tmp_path, serializer=MarshalSerializer(), clock=clock)
    assert result.warnings == []
    assert result.entries == [StoredEntry("b", 2.5), StoredEntry("c", None, None, (), 9)]
