"""The ``persistence`` suite: snapshot save/load and ``set`` throughput with the WAL.

Two sections:

1. **Snapshot save and load** of 1,000,000 small entries (``"user:N"`` keys, short str
   values) with :class:`cacheplug.persistence.StateStore` against ``pickle.dump`` /
   ``pickle.load`` of an equivalent dict (the naive limit, flushed and fsynced like the
   snapshot) and against diskcache writing/reading the same kind of entries. diskcache
   is far slower, so it gets 50,000 entries and is compared per entry. These are
   one-shot operations: each is timed directly, interleaved, over a few repeats.
2. **``set`` throughput** through ``CachePlug.cache.set`` with the WAL on
   (``fsync="everysec"``) and off (no ``state_dir``), each timed loop ending with
   ``plug.worker.flush()`` so the deferred WAL append is paid inside the timed region;
   diskcache ``Cache.set`` on the same keys beside them.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _harness as h

SUITE = "persistence"
SECRET = "bench"
SEED = 20240601
PICKLE = "pickle dict"
STATESTORE = "cacheplug StateStore"
DISKCACHE = "diskcache Cache"
NO_PERSIST = "cacheplug set (no persistence)"
WAL_EVERYSEC = "cacheplug set (WAL everysec)"
DISKCACHE_SET = "diskcache Cache.set"
#: the set section's rounds and round length (more and longer than the harness default)
SET_ROUNDS = 9
SET_ROUND_SECONDS = 0.5


def make_items(count: int, *, seed: int = SEED) -> tuple[list[str], list[str]]:
    """``count`` distinct ``user:N`` keys (fixed-seed order) and short str values."""
    rng = random.Random(seed)
    ids = rng.sample(range(10 * count, 100 * count), count)
    return [f"user:{i}" for i in ids], [f"value-{i:08d}" for i in range(count)]


def _tempdir(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"cacheplug-bench-{tag}-"))


# -- section 1: snapshot save / load -------------------------------------------------------


@dataclass
class OneShot:
    """Timings (seconds per repeat) of one contender's one-shot op on ``entries`` items."""

    contender: str
    op: str
    entries: int
    samples: list[float]


class PickleDict:
    """The naive limit: the whole dict through one ``pickle.dump`` / ``pickle.load``."""

    def __init__(self, keys: list[str], values: list[str]) -> None:
        self.data = dict(zip(keys, values, strict=True))
        self.dir = _tempdir("pickle")
        self.path = self.dir / "cache.pickle"

    def save(self) -> None:
        with open(self.path, "wb") as f:
            pickle.dump(self.data, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> int:
        with open(self.path, "rb") as f:
            return len(pickle.load(f))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Snapshot:
    """cacheplug: ``StateStore.write_snapshot`` (fsynced) and ``StateStore.load``."""

    def __init__(self, keys: list[str], values: list[str]) -> None:
        from cacheplug.persistence import StateStore, StoredEntry

        self._store_cls = StateStore
        self.entries = [StoredEntry(k, v, None, (), 0) for k, v in zip(keys, values, strict=True)]
        self.dir = _tempdir("statestore")
        self._reader: Any = None
        self.writer = StateStore(self.dir, secret=SECRET, fsync="everysec")
        if not self.writer.acquire_writer():
            raise RuntimeError(f"could not become the writer of {self.dir}")

    def save(self) -> None:
        self.writer.write_snapshot(self.entries)

    def load(self) -> int:
        # a fresh reader store (constructed untimed) recovers the snapshot
        return len(self._reader.load().entries)

    def prepare_load(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self._store_cls(self.dir, secret=SECRET, fsync="everysec")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.writer.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class DiskcacheBulk:
    """diskcache: every entry ``set`` in one ``transact()``; read back with ``get``."""

    def __init__(self, keys: list[str], values: list[str]) -> None:
        import diskcache

        self._module = diskcache
        self.pairs = list(zip(keys, values, strict=True))
        self.keys = keys
        self.dir: Path | None = None
        self.cache: Any = None

    def prepare_save(self) -> None:
        self._drop()
        self.dir = _tempdir("diskcache")
        self.cache = self._module.Cache(str(self.dir))

    def save(self) -> None:
        cache = self.cache
        with cache.transact():
            for key, value in self.pairs:
                cache.set(key, value)

    def load(self) -> int:
        get = self.cache.get
        return sum(1 for key in self.keys if get(key) is not None)

    def _drop(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def close(self) -> None:
        self._drop()


def _time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter_ns()
    fn()
    return max(time.perf_counter_ns() - start, 1) / 1e9


def measure_snapshots(count: int, disk_count: int, rounds: int) -> list[dict[str, Any]]:
    """Interleaved: pickle dump, snapshot save, diskcache write, then the three loads."""
    keys, values = make_items(count)
    h.progress(f"snapshot: preparing {count:,} entries")
    contenders: list[tuple[str, Callable[[], Any]]] = [
        (PICKLE, functools.partial(PickleDict, keys, values)),
        (STATESTORE, functools.partial(Snapshot, keys, values)),
        (DISKCACHE, functools.partial(DiskcacheBulk, keys[:disk_count], values[:disk_count])),
    ]
    prepared: dict[str, Any] = {}
    sizes = {PICKLE: count, STATESTORE: count, DISKCACHE: disk_count}
    for name, make in contenders:
        try:
            prepared[name] = make()
        except ImportError as exc:
            h.skipped(name, exc)
    found = {
        (name, op): OneShot(name, op, sizes[name], [])
        for name in prepared
        for op in ("save", "load")
    }
    try:
        for r in range(rounds):
            for op in ("save", "load"):
                for name, obj in prepared.items():
                    before = getattr(obj, f"prepare_{op}", None)
                    if before is not None:
                        before()  # untimed: fresh directory / fresh reader
                    found[(name, op)].samples.append(_time_once(getattr(obj, op)))
            h.progress(f"snapshot: round {r + 1}/{rounds} done")
    finally:
        for obj in prepared.values():
            obj.close()
    return oneshot_rows(list(found.values()))


def oneshot_rows(results: Sequence[OneShot]) -> list[dict[str, Any]]:
    """Rows with median seconds, entries/s and the per-entry time ratio to pickle."""
    per_entry = {(m.contender, m.op): statistics.median(m.samples) / m.entries for m in results}
    rows = []
    for m in results:
        median = statistics.median(m.samples)
        ref = per_entry.get((PICKLE, m.op))
        rows.append(
            {
                "section": "snapshot",
                "contender": m.contender,
                "op": m.op,
                "entries": m.entries,
                "median_s": median,
                "min_s": min(m.samples),
                "max_s": max(m.samples),
                "per_entry_us": median / m.entries * 1e6,
                "median_ops": m.entries / median,
                "min_ops": m.entries / max(m.samples),
                "max_ops": m.entries / min(m.samples),
                "time_ratio": (median / m.entries) / ref if ref else math.nan,
                "rounds": len(m.samples),
            }
        )
    return rows


def snapshot_table(rows: Sequence[dict[str, Any]]) -> str:
    body = [
        [
            row["op"],
            row["contender"],
            f"{row['entries']:,}",
            f"{row['median_s']:.3f}",
            f"{row['min_s']:.3f}-{row['max_s']:.3f}",
            f"{row['per_entry_us']:.3f}",
            h.fmt_ratio(row["time_ratio"]),
        ]
        for row in rows
    ]
    headers = [
        "op",
        "contender",
        "entries",
        "median s",
        "min-max s",
        "µs/entry",
        f"time per entry vs {PICKLE} (lower is better)",
    ]
    return h.markdown_table(headers, body)


# -- section 2: set throughput -------------------------------------------------------------


def _plug_target(plug: Any, cleanup: Callable[[], None]) -> h.Target:
    cache = plug.cache

    def close() -> None:
        plug.close()
        cleanup()

    return h.Target(cache.get, cache.set, cache.delete, raw=plug, close=close)


def prepare_no_persistence(maxsize: int) -> h.Target:
    from cacheplug import CachePlug

    plug = CachePlug(maxsize=maxsize).start()
    return _plug_target(plug, lambda: None)


def prepare_wal_everysec(maxsize: int) -> h.Target:
    from cacheplug import CachePlug

    directory = _tempdir("wal")
    plug = CachePlug(state_dir=directory, secret=SECRET, fsync="everysec", maxsize=maxsize)
    plug.start()
    return _plug_target(plug, lambda: shutil.rmtree(directory, ignore_errors=True))


def prepare_diskcache_set() -> h.Target:
    import diskcache

    directory = _tempdir("diskcache-set")
    cache: Any = diskcache.Cache(str(directory))

    def close() -> None:
        cache.close()
        shutil.rmtree(directory, ignore_errors=True)

    return h.Target(cache.get, cache.set, cache.delete, raw=cache, close=close)


def set_contenders(maxsize: int) -> list[h.Contender]:
    version = h.dist_version("cacheplug")
    return [
        h.Contender(NO_PERSIST, version, functools.partial(prepare_no_persistence, maxsize)),
        h.Contender(WAL_EVERYSEC, version, functools.partial(prepare_wal_everysec, maxsize)),
        h.Contender(DISKCACHE_SET, h.dist_version("diskcache"), prepare_diskcache_set),
    ]


def set_op(keys: list[str], values: list[str]) -> h.Op:
    """``set``: n writes cycling over the keys, then drain the plug's worker (timed)."""
    pairs = list(zip(keys, values, strict=True))
    size = len(pairs)

    def make(t: h.Target, part: int, parts: int) -> h.Runner:
        put = t.set
        worker = getattr(t.raw, "worker", None)

        def run(n: int) -> None:
            full, rest = divmod(n, size)
            for _ in range(full):
                for key, value in pairs:
                    put(key, value)
            for key, value in pairs[:rest]:
                put(key, value)
            if worker is not None:
                worker.flush()

        return h.Runner(run)

    return h.Op("set", make)


# -- targets -------------------------------------------------------------------------------


def target_rows(
    snap_rows: Sequence[dict[str, Any]], set_rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """save/load <= 2x pickle (time), set everysec >= 0.75x no persistence, >= 10x diskcache."""

    def time_ratio(op: str) -> float:
        row = h.find(snap_rows, STATESTORE, op)
        return math.nan if row is None else row["time_ratio"]

    specs = [
        ("save: StateStore time ≤ 2x pickle.dump", time_ratio("save"), 2.0, "le"),
        ("load: StateStore time ≤ 2x pickle.load", time_ratio("load"), 2.0, "le"),
        (
            "set: WAL everysec ≥ 0.75x no persistence (ops/s)",
            h.ratio_of(set_rows, WAL_EVERYSEC, NO_PERSIST, "set"),
            0.75,
            "ge",
        ),
        (
            "set: WAL everysec ≥ 10x diskcache (ops/s)",
            h.ratio_of(set_rows, WAL_EVERYSEC, DISKCACHE_SET, "set"),
            10.0,
            "ge",
        ),
    ]
    found = []
    for label, got, need, sense in specs:
        if math.isnan(got):
            status = "n/a"
        else:
            ok = got <= need if sense == "le" else got >= need
            status = "met" if ok else "missed"
        found.append(
            {
                "section": "targets",
                "target_name": label,
                "target": need,
                "sense": sense,
                "ratio": got,
                "status": status,
            }
        )
    return found


# -- the suite -----------------------------------------------------------------------------


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run the persistence suite; print markdown; write JSON; return every row.

    :param smoke: 1 repeat, tiny data, only to prove the suite still runs.
    """
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        return _run()


def _run() -> list[dict[str, Any]]:
    settings = h.current_settings()
    smoke = settings.smoke
    count = 2_000 if smoke else 1_000_000
    disk_count = 500 if smoke else 50_000
    set_keys = 1_000 if smoke else 100_000
    repeats = settings.round_count(default=3)
    versions = {
        PICKLE: f"python {h.python_version()} (protocol {pickle.HIGHEST_PROTOCOL})",
        "cacheplug": h.dist_version("cacheplug"),
        "diskcache": h.dist_version("diskcache"),
    }
    h.out(
        h.header(
            SUITE,
            versions,
            note=(
                f"state files in {tempfile.gettempdir()} "
                "(same filesystem for every contender); secret and fsync as in production"
            ),
        )
    )

    h.out(f"\n## Snapshot save and load ({count:,} entries, {repeats} interleaved repeat(s))\n")
    h.out(
        f"Each op timed once per repeat with `time.perf_counter_ns`, in the order pickle "
        f"dump, StateStore save, diskcache write, pickle load, StateStore load, diskcache "
        f"read. `pickle.dump` of the equivalent `dict` is flushed and fsynced; "
        f"`StateStore.write_snapshot` fsyncs the file and the directory. StateStore load is "
        f"a fresh reader's `load()` (construction untimed). diskcache is slow, so it "
        f"writes/reads only the first {disk_count:,} entries (all `set` inside one "
        f"`transact()`, then one `get` each) — compare it **per entry**.\n"
    )
    snap_rows = measure_snapshots(count, disk_count, repeats)
    h.out(snapshot_table(snap_rows))

    h.out(
        f"\n## `set` throughput: WAL everysec vs no persistence vs diskcache "
        f"({set_keys:,} keys, cycled)\n"
    )
    set_rounds = settings.rounds or SET_ROUNDS
    h.out(
        "Each timed loop is n `plug.cache.set(key, value)` calls followed by "
        "`plug.worker.flush()` (drains the deferred WAL append; the everysec fsync runs "
        "on its own 1 s timer, as in production). diskcache `Cache.set` commits each "
        "write itself; its loop count is calibrated like the others, so it writes fewer "
        f"keys per round. {set_rounds} interleaved rounds of ~{SET_ROUND_SECONDS:g} s "
        "per contender: the WAL's work runs on the worker thread, so short rounds on a "
        "shared machine scatter widely.\n"
    )
    keys, values = make_items(set_keys, seed=SEED + 1)
    contenders = set_contenders(maxsize=2 * set_keys)
    prepared = h.prepare_all(contenders)
    try:
        with h.use_settings(rounds=set_rounds, target_seconds=SET_ROUND_SECONDS):
            set_rows = h.measure(
                prepared, [set_op(keys, values)], reference=NO_PERSIST, section="set"
            )
    finally:
        h.close_all(prepared)
    h.out(h.results_table(set_rows, NO_PERSIST))

    found = target_rows(snap_rows, set_rows)
    h.out("\n## Targets\n")
    h.out(h.targets_table(found))
    all_rows = [*snap_rows, *set_rows, *found]
    h.write_results(SUITE, versions, all_rows)
    return all_rows
