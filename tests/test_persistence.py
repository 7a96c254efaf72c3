"""StateStore: snapshot + WAL round trips, recovery rules, bad files, locking, inspect."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
from collections import OrderedDict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cacheplug import _snapshot, _wal
from cacheplug.errors import ConfigurationError
from cacheplug.persistence import (
    MissingSecretError,
    Record,
    StateStore,
    StateStoreClosedError,
    StoredEntry,
    inspect_state,
)
from cacheplug.serializers import PickleSerializer, derive_keys

SECRET = "test-secret-0123456789abcdef"
NOW = 1_700_000_000.0


class FakeClock:
    """A settable wall clock / monotonic timer."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Bomb:
    """Unpickling this creates *marker*: proof that a file was (wrongly) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_store(path: Path, **kw) -> StateStore:
    kw.setdefault("secret", SECRET)
    kw.setdefault("fsync", "never")
    store = StateStore(path, **kw)
    return store


def writer(path: Path, **kw) -> StateStore:
    store = make_store(path, **kw)
    assert store.acquire_writer()
    return store


def reload(path: Path, **kw):
    store = make_store(path, **kw)
    store.acquire_writer()
    try:
        return store.load()
    finally:
        store.close()


def as_dict(result) -> dict:
    return {e.key: e.value for e in result.entries}


def keys_of(result) -> list:
    return [e.key for e in result.entries]


def segments(path: Path) -> list[str]:
    return [p.name for _, p in _wal.list_segments(path)]


# -- round trips ----------------------------------------------------------------------


def test_wal_replays_every_operation(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.append(
            [
                Record("set", "a", 1, tags=("red",)),
                Record("set", "b", 2, tags=("blue",)),
                Record("set", "c", 3, tags=("red", "blue")),
                Record("set", "d", 4),
                Record("set", "e", 5, expires_at=NOW + 10),
            ]
        )
        store.append([Record("delete", "d"), Record("touch", "e", expires_at=NOW + 99)])
        store.append([Record("invalidate_tags", tags=("red",)), Record("set", "f", 6)])
    result = reload(tmp_path, clock=FakeClock())
    assert keys_of(result) == ["b", "e", "f"]
    assert result.entries[1] == StoredEntry("e", 5, NOW + 99, (), 0)
    assert result.replayed == 9
    assert result.warnings == []

    with writer(tmp_path) as store:
        store.append([Record("clear"), Record("set", "z", 26, tags=("t",), version=3)])
    result = reload(tmp_path, clock=FakeClock())
    assert result.entries == [StoredEntry("z", 26, None, ("t",), 3)]


def test_snapshot_plus_wal_round_trip(tmp_path: Path) -> None:
    entries = [StoredEntry(f"k:{i}", {"n": i}, None, ("t",) if i % 2 else (), i) for i in range(50)]
    with writer(tmp_path) as store:
        store.append([Record("set", "early", 0)])
        info = store.write_snapshot(entries)
        assert info.written
        assert info.last_seq == 1
        assert info.entries == 50
        store.append([Record("delete", "k:0"), Record("set", "late", "L")])
    result = reload(tmp_path)
    assert result.snapshot_seq == 1
    assert result.replayed == 2
    assert keys_of(result) == [f"k:{i}" for i in range(1, 50)] + ["late"]
    assert result.entries[0] == StoredEntry("k:1", {"n": 1}, None, ("t",), 1)


def test_set_moves_key_to_newest_position(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.write_snapshot([StoredEntry(k, k) for k in "abcd"])
        store.append([Record("set", "b", "B"), Record("touch", "a", expires_at=NOW + 5)])
        store.append([Record("set", "a", "A2")])
    result = reload(tmp_path, clock=FakeClock())
    # touch keeps the position; set moves the key to the end
    assert keys_of(result) == ["c", "d", "b", "a"]
    assert as_dict(result)["a"] == "A2"


def test_expired_entries_are_not_resurrected(tmp_path: Path) -> None:
    clock = FakeClock()
    with writer(tmp_path, clock=clock) as store:
        store.write_snapshot(
            [
                StoredEntry("old", 1, NOW + 5),
                StoredEntry("forever", 2),
                StoredEntry("long", 3, NOW + 500),
            ]
        )
        store.append([Record("set", "wal-short", 4, expires_at=NOW + 5)])
    clock.now = NOW + 60  # the process was down for a minute
    result = reload(tmp_path, clock=clock)
    assert keys_of(result) == ["forever", "long"]
    assert result.skipped_expired == 2
    # wall-clock expiry: 440 s of the 500 s TTL remain
    assert result.entries[1].expires_at - clock.now == pytest.approx(440)


def test_write_snapshot_from_reader_and_empty_append_are_noops(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.append([Record("set", "a", 1)]) == 0
    info = store.write_snapshot([StoredEntry("a", 1)])
    assert not info.written
    assert store.stats().dropped_records == 1
    assert not (tmp_path / "snapshot.bin").exists()
    store.close()
    with writer(tmp_path) as w:
        assert w.append([]) == 0


# -- bad snapshot files ---------------------------------------------------------------


def _snapshot_with(tmp_path: Path, entries, **kw) -> Path:
    with writer(tmp_path, **kw) as store:
        store.write_snapshot(entries)
    return tmp_path / "snapshot.bin"


def test_truncated_snapshot_is_rejected_and_load_starts_cold(tmp_path: Path, caplog) -> None:
    snap = _snapshot_with(tmp_path, [StoredEntry(f"k{i}", i) for i in range(100)])
    data = snap.read_bytes()
    snap.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.ERROR, "cacheplug.persistence"):
        result = reload(tmp_path)
    assert result.entries == []
    assert any("truncated" in w for w in result.warnings)
    assert (tmp_path / "snapshot.bin.rejected").exists()
    assert not snap.exists()
    assert "truncated" in caplog.text


def test_flipped_byte_in_snapshot_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    snap = _snapshot_with(
        tmp_path, [StoredEntry(f"k{i}", i) for i in range(100)] + [StoredEntry("x", Bomb(marker))]
    )
    assert not marker.exists()
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x01
    snap.write_bytes(bytes(data))
    result = reload(tmp_path)
    assert result.entries == []
    assert any("HMAC mismatch" in w for w in result.warnings)
    assert (tmp_path / "snapshot.bin.rejected").exists()
    assert not marker.exists()


def test_snapshot_and_wal_signed_with_another_secret_are_rejected_unread(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with writer(tmp_path, secret="someone-else's-secret") as evil:
        evil.write_snapshot([StoredEntry("x", Bomb(marker))])
        evil.append([Record("set", "y", Bomb(marker))])
    assert not marker.exists()
    result = reload(tmp_path)
    assert result.entries == []
    assert not marker.exists()
    assert any("different secret" in w for w in result.warnings)
    assert (tmp_path / "snapshot.bin.rejected").exists()
    assert any(n.endswith(".log.rejected") for n in os.listdir(tmp_path))
    assert segments(tmp_path) == []
    # the directory is usable again for the rightful owner
    with writer(tmp_path) as store:
        store.append([Record("set", "ok", 1)])
    assert as_dict(reload(tmp_path)) == {"ok": 1}


def test_reader_reports_but_does_not_move_bad_files(tmp_path: Path) -> None:
    with writer(tmp_path, secret="other-secret") as evil:
        evil.write_snapshot([StoredEntry("x", 1)])
        # evil still holds the writer lock
        store = make_store(tmp_path)
        assert not store.acquire_writer()
        result = store.load()
        store.close()
    assert any("different secret" in w for w in result.warnings)
    assert (tmp_path / "snapshot.bin").exists()


def test_snapshot_from_newer_format_is_left_in_place(tmp_path: Path) -> None:
    snap = _snapshot_with(tmp_path, [StoredEntry("a", 1)])
    data = bytearray(snap.read_bytes())
    struct.pack_into("<H", data, 8, 7)  # format version field
    snap.write_bytes(bytes(data))
    store = make_store(tmp_path)
    assert not store.acquire_writer()
    assert "newer cacheplug format" in store.stats().read_only_reason
    result = store.load()
    store.close()
    assert result.entries == []
    (message,) = result.warnings
    assert "format version 7" in message
    assert f"format version {_snapshot.FORMAT_VERSION}" in message
    assert snap.read_bytes() == bytes(data)
    assert not (tmp_path / "snapshot.bin.rejected").exists()


def test_authentic_but_undecodable_snapshot_keeps_the_wal(tmp_path: Path) -> None:
    class Broken(PickleSerializer):
        def loads(self, data):
            raise ModuleNotFoundError("no module named 'gone'")

    with writer(tmp_path) as store:
        store.write_snapshot([StoredEntry("a", 1)])
    result = reload(tmp_path, serializer=Broken())
    assert result.entries == []
    assert any("could not be decoded" in w for w in result.warnings)
    assert (tmp_path / "snapshot.bin").exists()


# -- bad WAL files --------------------------------------------------------------------


def _wal_with_batches(tmp_path: Path, batches: int) -> Path:
    with writer(tmp_path) as store:
        for i in range(batches):
            store.append([Record("set", f"k{i}", i)])
    (seg,) = segments(tmp_path)
    return tmp_path / seg


def test_flipped_byte_in_wal_tail_drops_only_the_last_record(tmp_path: Path) -> None:
    seg = _wal_with_batches(tmp_path, 5)
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF
    seg.write_bytes(bytes(data))
    store = make_store(tmp_path)
    result = store.load()
    store.close()
    assert keys_of(result) == ["k0", "k1", "k2", "k3"]
    (message,) = result.warnings
    assert "final record" in message


def test_torn_tail_is_truncated_by_the_next_writer(tmp_path: Path) -> None:
    seg = _wal_with_batches(tmp_path, 3)
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00\x00partial-frame")
    with writer(tmp_path) as store:
        assert store.stats().last_seq == 3
        store.append([Record("set", "after", 1)])
    result = reload(tmp_path)
    assert keys_of(result) == ["k0", "k1", "k2", "after"]
    assert result.warnings == []


def test_corruption_mid_wal_stops_replay_and_keeps_the_prefix(tmp_path: Path) -> None:
    seg = _wal_with_batches(tmp_path, 6)
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    reader = make_store(tmp_path)
    result = reader.load()
    reader.close()
    kept = keys_of(result)
    assert 1 <= len(kept) < 5
    assert kept == [f"k{i}" for i in range(len(kept))]
    assert any("replay stopped" in w for w in result.warnings)
    # a writer sets the damaged part aside and continues right after the kept prefix
    with writer(tmp_path) as store:
        assert store.stats().last_seq == len(kept)
        store.append([Record("set", "new", 1)])
    assert (seg.with_name(seg.name + ".rejected")).exists()
    again = reload(tmp_path)
    assert keys_of(again) == [*kept, "new"]
    assert again.warnings == []


def test_append_after_close_raises(tmp_path: Path) -> None:
    store = writer(tmp_path)
    store.close()
    store.close()
    with pytest.raises(StateStoreClosedError, match="closed"):
        store.append([Record("set", "a", 1)])


def test_unknown_op_is_refused(tmp_path: Path) -> None:
    with writer(tmp_path) as store, pytest.raises(ValueError, match="unknown record op"):
        store.append([Record("upsert", "a", 1)])  # type: ignore[arg-type]


# -- secrets --------------------------------------------------------------------------


def test_missing_secret_says_how_to_set_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CACHEPLUG_SECRET", raising=False)
    with pytest.raises(MissingSecretError) as info:
        StateStore(tmp_path / "state")
    message = str(info.value)
    for hint in ("secret=", "CACHEPLUG_SECRET", "SECRET_KEY"):
        assert hint in message
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "state").exists()


def test_secret_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CACHEPLUG_SECRET", SECRET)
    store = StateStore(tmp_path, fsync="never")
    assert store.acquire_writer()
    store.append([Record("set", "a", 1)])
    store.close()
    assert as_dict(reload(tmp_path, secret=SECRET)) == {"a": 1}


def test_keys_are_separate_per_file_kind() -> None:
    keys = derive_keys(SECRET)
    assert len({keys.snapshot, keys.wal}) == 2
    assert derive_keys(SECRET.encode()) == keys
    assert derive_keys("other").key_id != keys.key_id


def test_bad_options_are_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'sometimes'"):
        make_store(tmp_path, fsync="sometimes")
    with pytest.raises(ConfigurationError, match="wal_max_bytes"):
        make_store(tmp_path, wal_max_bytes=0)


def test_state_dir_is_private(tmp_path: Path) -> None:
    store = make_store(tmp_path / "new" / "state")
    store.close()
    assert (tmp_path / "new" / "state").stat().st_mode & 0o777 == 0o700


# -- unpicklable values ---------------------------------------------------------------


def test_unpicklable_values_are_skipped_counted_and_warned_once_per_prefix(
    tmp_path: Path, caplog
) -> None:
    lock = threading.Lock()
    with caplog.at_level(logging.WARNING, "cacheplug.persistence"), writer(tmp_path) as store:
        store.append([Record("set", "fn:1", "old value")])
        store.append(
            [
                Record("set", "fn:1", lambda: 1),
                Record("set", "fn:2", lambda: 2),
                Record("set", "lock:1", lock),
                Record("set", "ok:1", "fine"),
            ]
        )
        info = store.write_snapshot(
            [
                StoredEntry("fn:3", lambda: 3),
                StoredEntry("ok:2", "fine"),
                StoredEntry("lock:2", lock),
            ]
        )
        assert info.skipped_unpicklable == 2
        assert info.entries == 1
        store.append([Record("set", "fn:4", lambda: 4), Record("set", "ok:3", 3)])
        assert store.stats().unpicklable == 6
    warned = [r for r in caplog.records if "cannot persist" in r.getMessage()]
    assert len(warned) == 2  # prefixes "fn" and "lock"
    assert as_dict(reload(tmp_path)) == {"ok:2": "fine", "ok:3": 3}


def test_unpicklable_set_does_not_resurrect_an_older_value(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.append([Record("set", "fn:1", "old value")])
        store.append([Record("set", "fn:1", lambda: 1), Record("set", "ok", 1)])
    assert as_dict(reload(tmp_path)) == {"ok": 1}


# -- compaction -----------------------------------------------------------------------


def test_compaction_removes_covered_segments_and_recovers_exactly(tmp_path: Path) -> None:
    model: OrderedDict = OrderedDict()
    with writer(tmp_path, wal_max_bytes=2000) as store:
        i = 0
        while not store.needs_compaction:
            store.append([Record("set", f"k{i % 7}", i)])
            model.pop(f"k{i % 7}", None)
            model[f"k{i % 7}"] = i
            i += 1
        assert store.stats().wal_bytes > 2000
        info = store.write_snapshot([StoredEntry(k, v) for k, v in model.items()])
        assert info.segments_removed == 1
        assert not store.needs_compaction
        assert segments(tmp_path) == [_wal.segment_name(info.last_seq + 1)]
        store.append([Record("delete", "k0"), Record("set", "k1", "new")])
        del model["k0"]
        model.pop("k1")
        model["k1"] = "new"
        stats = store.stats()
        assert stats.wal_records == 2
        assert stats.snapshots_written == 1
    assert list(as_dict(reload(tmp_path)).items()) == list(model.items())


def test_crash_between_compaction_steps_recovers_exactly(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.append([Record("set", "a", 1), Record("set", "b", 2)])
        store.append([Record("set", "a", 3)])
        old = {n: (tmp_path / n).read_bytes() for n in segments(tmp_path)}
        store.write_snapshot([StoredEntry("b", 2), StoredEntry("a", 3)])
        store.append([Record("set", "c", 4)])
    # crash after the rename, before the old segments were deleted
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    # and a temp file from a crash during an earlier snapshot write
    (tmp_path / ".snapshot.bin.tmp-999").write_bytes(b"junk")
    result = reload(tmp_path)
    assert list(as_dict(result).items()) == [("b", 2), ("a", 3), ("c", 4)]
    assert result.replayed == 1
    assert result.warnings == []
    # the next snapshot cleans the leftovers up
    with writer(tmp_path) as store:
        store.write_snapshot(result.entries)
    assert len(segments(tmp_path)) == 1


def test_crash_before_the_snapshot_rename_recovers_exactly(tmp_path: Path) -> None:
    with writer(tmp_path) as store:
        store.write_snapshot([StoredEntry("a", 1)])
        store.append([Record("set", "b", 2)])
        before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path) if n != "lock"}
        store.write_snapshot([StoredEntry("a", 1), StoredEntry("b", 2)])
        new_segment = segments(tmp_path)[-1]
    # state after "start a new segment" but before the new snapshot replaced the old one
    for name, data in before.items():
        (tmp_path / name).write_bytes(data)
    assert len(segments(tmp_path)) == 2
    assert new_segment in segments(tmp_path)
    result = reload(tmp_path)
    assert list(as_dict(result).items()) == [("a", 1), ("b", 2)]
    assert result.warnings == []


# -- several processes / stores on one directory -------------------------------------


def test_one_writer_per_directory_and_takeover(tmp_path: Path) -> None:
    first = make_store(tmp_path)
    second = make_store(tmp_path)
    assert first.acquire_writer()
    assert not second.acquire_writer()
    assert second.stats().read_only_reason == "another process holds the writer lock"
    first.append([Record("set", "a", 1)])
    assert second.append([Record("set", "b", 2)]) == 0
    assert not second.stats().is_writer
    assert second.stats().dropped_records == 1
    assert not second.try_become_writer()
    first.close()
    assert second.try_become_writer()
    assert second.stats().is_writer
    assert second.append([Record("set", "c", 3)]) == 2
    second.close()
    assert as_dict(reload(tmp_path)) == {"a": 1, "c": 3}


def test_no_file_descriptor_leaks(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    store = writer(tmp_path, fsync="always")
    store.load()
    store.append([Record("set", "a", 1)])
    store.write_snapshot([StoredEntry("a", 1)])
    store.append([Record("set", "b", 2)])
    other = make_store(tmp_path)
    other.acquire_writer()
    other.load()
    other.close()
    store.close()
    store.close()
    inspect_state(tmp_path, secret=SECRET)
    assert set(os.listdir("/proc/self/fd")) == before


# -- fsync policies -------------------------------------------------------------------


def test_everysec_fsyncs_at_most_once_per_interval(tmp_path: Path) -> None:
    timer = FakeClock(100.0)
    with writer(tmp_path, fsync="everysec", timer=timer) as store:
        store.append([Record("set", "a", 1)])
        assert store.stats().last_fsync_seq == 0  # within the first second
        timer.now += 1.0
        store.append([Record("set", "b", 2)])
        assert store.stats().last_fsync_seq == 2
        store.append([Record("set", "c", 3)])
        store.sync_if_due()
        assert store.stats().last_fsync_seq == 2
        timer.now += 1.5
        store.sync_if_due()
        assert store.stats().last_fsync_seq == 3


def test_always_fsyncs_every_batch(tmp_path: Path) -> None:
    with writer(tmp_path, fsync="always") as store:
        assert store.append([Record("set", "a", 1), Record("set", "b", 2)]) == 2
        stats = store.stats()
        assert stats.last_fsync_seq == stats.last_seq == 2


# -- inspect --------------------------------------------------------------------------


def test_inspect_reports_a_state_directory(tmp_path: Path) -> None:
    clock = FakeClock()
    with writer(tmp_path, clock=clock) as store:
        store.write_snapshot(
            [StoredEntry(f"user:{i}", i, NOW + 30) for i in range(5)]
            + [StoredEntry(f"page:{i}", i) for i in range(3)]
            + [StoredEntry("gone", 0, NOW - 1)]
        )
        store.append([Record("set", "x", 1)])
    report = inspect_state(tmp_path, secret=SECRET, pattern="user:*", clock=clock)
    assert report.ok
    assert report.kind == "state_dir"
    assert report.signature == "ok"
    assert report.entry_count == 9
    assert report.expiry_histogram["<1m"] == 5
    assert report.expiry_histogram["never"] == 3
    assert report.expiry_histogram["expired"] == 1
    assert report.top_prefixes[0] == ("user", 5)
    assert report.matching_keys == [f"user:{i}" for i in range(5)]
    assert report.wal["records"] == 1
    assert "signature ok" in report.format()


def test_inspect_explains_bad_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CACHEPLUG_SECRET", raising=False)
    assert inspect_state(tmp_path / "nope").kind == "missing"
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"hello world, definitely not a snapshot at all........ yes")
    report = inspect_state(foreign, secret=SECRET)
    assert report.kind == "foreign"
    assert not report.ok
    snap = _snapshot_with(tmp_path / "d", [StoredEntry("a", 1)])
    unchecked = inspect_state(snap)
    assert unchecked.signature == "unchecked (no secret)"
    assert unchecked.entry_count is None
    assert inspect_state(snap, secret="wrong").signature == "other secret"
    data = bytearray(snap.read_bytes())
    data[-40] ^= 1
    snap.write_bytes(bytes(data))
    tampered = inspect_state(snap, secret=SECRET)
    assert tampered.signature == "tampered"
    assert tampered.entry_count is None


# -- model-based check ----------------------------------------------------------------

_ops = st.one_of(
    st.tuples(
        st.just("set"),
        st.sampled_from("abcdef"),
        st.integers(0, 9),
        st.sampled_from(["", "t", "u"]),
    ),
    st.tuples(st.just("delete"), st.sampled_from("abcdef")),
    st.tuples(st.just("invalidate_tags"), st.sampled_from("tu")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("restart")),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(_ops, min_size=1, max_size=4), max_size=12))
def test_recovery_matches_a_reference_model(tmp_path_factory, batches) -> None:
    path = tmp_path_factory.mktemp("model")
    model: OrderedDict = OrderedDict()  # key -> (value, tags)
    store = writer(path)
    try:
        for batch in batches:
            records = []
            for op in batch:
                if op[0] == "set":
                    tags = (op[3],) if op[3] else ()
                    records.append(Record("set", op[1], op[2], tags=tags))
                    model.pop(op[1], None)
                    model[op[1]] = (op[2], tags)
                elif op[0] == "delete":
                    records.append(Record("delete", op[1]))
                    model.pop(op[1], None)
                elif op[0] == "invalidate_tags":
                    records.append(Record("invalidate_tags", tags=(op[1],)))
                    for k in [k for k, (_, t) in model.items() if op[1] in t]:
                        del model[k]
                elif op[0] == "clear":
                    records.append(Record("clear"))
                    model.clear()
            store.append(records)
            if ("snapshot",) in batch:
                store.write_snapshot([StoredEntry(k, v, None, t) for k, (v, t) in model.items()])
            if ("restart",) in batch:
                store.close()
                store = writer(path)
                got = store.load()
                assert [(e.key, e.value, e.tags) for e in got.entries] == [
                    (k, v, t) for k, (v, t) in model.items()
                ]
    finally:
        store.close()
    got = reload(path)
    assert got.warnings == []
    assert [(e.key, e.value, e.tags) for e in got.entries] == [
        (k, v, t) for k, (v, t) in model.items()
    ]
    shutil.rmtree(path)
