"""StateStore under real crashes: child processes SIGKILLed mid-stream, two writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cacheplug.persistence import StateStore

SECRET = "crash-test-secret-0123456789"

# The child appends one record per batch and prints "ack <key> <seq> <last_fsync_seq>"
# only after append() returned, so every printed key was acknowledged.
WRITER = """
import sys, time
from cacheplug.persistence import Record, StateStore, StoredEntry
state_dir, policy, count, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
snapshot_every = int(sys.argv[5]) if len(sys.argv) > 5 else 0
store = StateStore(state_dir, fsync=policy, fsync_interval=0.05, wal_max_bytes=20_000)
print("writer", store.acquire_writer(), flush=True)
live = []
for i in range(count):
    value = "v" * 200 + str(i)
    seq = store.append([Record("set", f"{prefix}{i}", value)])
    live.append(StoredEntry(f"{prefix}{i}", value))
    if snapshot_every and store.needs_compaction:
        store.write_snapshot(live)
    store.sync_if_due()
    print("ack", f"{prefix}{i}", seq, store.stats().last_fsync_seq, flush=True)
store.close()
print("done", flush=True)
"""

# Two of these share one directory: the winner writes and exits; the other appends
# (dropped) until it can take over, then loads and writes its own keys.
SHARER = """
import os, sys, time
from cacheplug.persistence import Record, StateStore
state_dir, prefix, count, meet = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = StateStore(state_dir, fsync="never")
writer = store.acquire_writer()
print("writer", writer, flush=True)
open(os.path.join(meet, prefix), "w").close()
deadline = time.monotonic() + 20
while len(os.listdir(meet)) < 2:  # both have tried the lock before anyone writes
    if time.monotonic() > deadline:
        sys.exit("the other process never started")
    time.sleep(0.01)
dropped = os.path.join(meet, "dropped")
while writer and not os.path.exists(dropped):  # the reader tries to write while we hold on
    if time.monotonic() > deadline:
        sys.exit("the other process never tried to write")
    time.sleep(0.01)
while not store.try_become_writer():
    store.append([Record("set", f"{prefix}dropped", 0)])
    open(dropped, "w").close()
    if time.monotonic() > deadline:
        sys.exit("never became the writer")
    time.sleep(0.01)
loaded = store.load()
for i in range(0, count, 10):
    store.append([Record("set", f"{prefix}{j}", j) for j in range(i, min(i + 10, count))])
print("dropped", store.stats().dropped_records, "loaded", len(loaded.entries), flush=True)
store.close()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "CACHEPLUG_SECRET": SECRET}


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _kill_after(
    proc: subprocess.Popen[str], acks: int = 0, *, after_sync: int | None = None
) -> list[tuple[str, int, int]]:
    """Read acknowledgements, SIGKILL the child, return them all.

    Stops reading once *acks* arrived, or, with *after_sync*, once the child has reported
    an fsync (``synced > 0``) and *after_sync* more acknowledgements followed that one.
    """
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["writer", "True"]
    got: list[tuple[str, int, int]] = []
    first_synced: int | None = None

    def enough() -> bool:
        if after_sync is None:
            return len(got) >= acks
        return first_synced is not None and len(got) - first_synced > after_sync

    deadline = time.monotonic() + 30
    while not enough() and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line.endswith("\n"):
            break
        _, key, seq, synced = line.split()
        got.append((key, int(seq), int(synced)))
        if first_synced is None and int(synced) > 0:
            first_synced = len(got) - 1
    reached = enough()
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate(timeout=10)
    # lines printed before the kill were acknowledged too; the kill may cut the last one
    for line in rest.split("\n")[:-1]:
        parts = line.split()
        if parts and parts[0] == "ack":
            got.append((parts[1], int(parts[2]), int(parts[3])))
    assert proc.returncode == -signal.SIGKILL, err
    assert reached, (
        f"the child stopped early: {len(got)} acks, first fsync at {first_synced}\n{err}"
    )
    return got


def _recover(state_dir: Path) -> list[str]:
    store = StateStore(state_dir, secret=SECRET)
    assert store.acquire_writer()
    try:
        result = store.load()
    finally:
        store.close()
    assert all("final record" in w or "torn" in w for w in result.warnings), result.warnings
    return [e.key for e in result.entries]


@pytest.mark.timeout(60)
def test_sigkill_with_fsync_always_keeps_every_acknowledged_key(tmp_path: Path) -> None:
    acked = _kill_after(_spawn(WRITER, tmp_path, "always", 100_000, "k"), acks=150)
    recovered = _recover(tmp_path)
    assert set(recovered) >= {key for key, _, _ in acked}
    # one writer, one record per batch: what survives is a prefix of what was written
    assert recovered == [f"k{i}" for i in range(len(recovered))]
    assert all(synced == seq for _, seq, synced in acked)


@pytest.mark.timeout(60)
def test_sigkill_during_compactions_keeps_every_acknowledged_key(tmp_path: Path) -> None:
    # ~90 records per segment: the kill lands among many snapshot + compaction cycles
    acked = _kill_after(_spawn(WRITER, tmp_path, "always", 100_000, "k", 1), acks=600)
    recovered = _recover(tmp_path)
    assert set(recovered) >= {key for key, _, _ in acked}
    assert recovered == [f"k{i}" for i in range(len(recovered))]


@pytest.mark.timeout(60)
def test_sigkill_with_fsync_everysec_loses_nothing_that_was_synced(tmp_path: Path) -> None:
    # Kill once the child reported an fsync and 200 more appends followed it, so the
    # kill lands between two syncs with unsynced records in the log (however fast the
    # machine is: a fixed ack count could all arrive before the first sync).
    acked = _kill_after(_spawn(WRITER, tmp_path, "everysec", 100_000, "k"), after_sync=200)
    synced = max(s for _, _, s in acked)
    assert synced > 0, "the everysec policy never synced"
    recovered = _recover(tmp_path)
    assert recovered == [f"k{i}" for i in range(len(recovered))]
    # records 1..synced were on disk before the kill (key k<i> has seq i + 1)
    assert len(recovered) >= synced
    # a process crash loses nothing written: the OS still had every acknowledged record
    assert set(recovered) >= {key for key, _, _ in acked}


@pytest.mark.timeout(60)
def test_two_processes_share_one_directory_with_one_writer(tmp_path: Path) -> None:
    count = 3000
    state_dir, meet = tmp_path / "state", tmp_path / "meet"
    meet.mkdir()
    first = _spawn(SHARER, state_dir, "a", count, meet)
    second = _spawn(SHARER, state_dir, "b", count, meet)
    outs = [p.communicate(timeout=45) for p in (first, second)]
    for proc, (_, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, err
    roles = [out.splitlines()[0] for out, _ in outs]
    assert sorted(roles) == ["writer False", "writer True"]
    late = outs[roles.index("writer False")][0].split()
    assert int(late[late.index("dropped") + 1]) >= 1
    assert int(late[late.index("loaded") + 1]) == count  # it saw the first writer's keys
    store = StateStore(state_dir, secret=SECRET)
    result = store.load()
    store.close()
    assert result.warnings == []
    keys = {e.key for e in result.entries}
    assert keys == {f"a{i}" for i in range(count)} | {f"b{i}" for i in range(count)}
