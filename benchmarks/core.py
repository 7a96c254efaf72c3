"""The ``core`` suite: get/set/delete throughput of in-process caches, plus a hit-ratio study.

Workload: 100,000 keys like ``"user:12345"`` in a fixed-seed random order, short str
values, maxsize 200,000 and TTL 300 s for every contender that has them. diskcache is
persistent (SQLite), so it runs in its own section on 10,000 keys, beside the same
``dict+Lock`` reference.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import _harness as h
from benchmarks import hit_ratio

SUITE = "core"
REFERENCE = "dict+Lock"
CACHEPLUG = "cacheplug ShardedTTLCache"
CACHETOOLS = "cachetools TTLCache+Lock"
LOCMEM = "Django LocMemCache"
TTL = 300.0
SEED = 20240601


@dataclass(frozen=True)
class Workload:
    """Keys and values every contender gets.

    ``keys`` are present (in access order), ``values[i]`` belongs to ``keys[i]``;
    ``absent`` are never stored except by ``set-new`` (which removes them again).
    """

    keys: list[str]
    values: list[str]
    absent: list[str]
    maxsize: int


def make_workload(count: int, *, seed: int = SEED) -> Workload:
    """``count`` present and ``count`` absent ``user:N`` keys, shuffled with ``seed``."""
    rng = random.Random(seed)
    ids = rng.sample(range(10 * count, 100 * count), 2 * count)
    keys = [f"user:{i}" for i in ids[:count]]
    absent = [f"user:{i}" for i in ids[count:]]
    values = [f"value-{i:08d}" for i in range(count)]
    return Workload(keys, values, absent, maxsize=2 * count)


# -- contenders ----------------------------------------------------------------------------


class LockedDict:
    """Reference: a plain dict behind one ``threading.Lock`` (thread-safe ceiling)."""

    def __init__(self) -> None:
        self._data: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def set(self, key: Any, value: Any) -> bool:
        with self._lock:
            self._data[key] = value
        return True

    def delete(self, key: Any) -> bool:
        with self._lock:
            return self._data.pop(key, _MISSING) is not _MISSING


class PlainDict:
    """Ceiling: a plain dict behind Python methods, no lock (not thread-safe)."""

    def __init__(self) -> None:
        self._data: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: Any, value: Any) -> bool:
        self._data[key] = value
        return True

    def delete(self, key: Any) -> bool:
        return self._data.pop(key, _MISSING) is not _MISSING


class LockedTTLCache:
    """cachetools ``TTLCache`` behind one ``threading.Lock``, as its docs advise."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        import cachetools

        self._cache: Any = cachetools.TTLCache(maxsize=maxsize, ttl=ttl)
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            return self._cache.get(key, default)

    def set(self, key: Any, value: Any) -> bool:
        with self._lock:
            self._cache[key] = value
        return True

    def delete(self, key: Any) -> bool:
        with self._lock:
            return self._cache.pop(key, _MISSING) is not _MISSING


_MISSING = object()


def _populate(target: h.Target, wl: Workload) -> h.Target:
    """Store every present key with its value (untimed); return ``target``."""
    put = target.set
    for key, value in zip(wl.keys, wl.values, strict=True):
        put(key, value)
    return target


def _methods(obj: Any) -> h.Target:
    """A target for an object with get/set/delete methods."""
    return h.Target(obj.get, obj.set, obj.delete, raw=obj)


def prepare_locked_dict(wl: Workload) -> h.Target:
    return _populate(_methods(LockedDict()), wl)


def prepare_plain_dict(wl: Workload) -> h.Target:
    return _populate(_methods(PlainDict()), wl)


def prepare_cacheplug(wl: Workload) -> h.Target:
    from cacheplug import ShardedTTLCache

    return _populate(_methods(ShardedTTLCache(maxsize=wl.maxsize, ttl=TTL, shards=16)), wl)


def prepare_cachetools(wl: Workload) -> h.Target:
    return _populate(_methods(LockedTTLCache(wl.maxsize, TTL)), wl)


def prepare_locmem(wl: Workload) -> h.Target:
    from django.core.cache.backends.locmem import LocMemCache

    params = {"TIMEOUT": int(TTL), "OPTIONS": {"MAX_ENTRIES": wl.maxsize}}
    cache = LocMemCache(f"cacheplug-bench-{id(wl)}-{random.random()}", params)
    target = _methods(cache)
    target.close = cache.clear
    return _populate(target, wl)


def prepare_theine(wl: Workload) -> h.Target:
    from theine import Cache

    cache: Any = Cache(wl.maxsize)
    put = functools.partial(cache.set, ttl=dt.timedelta(seconds=TTL))
    target = h.Target(cache.get, put, cache.delete, raw=cache, close=cache.close)
    return _populate(target, wl)


def prepare_cachebox(wl: Workload) -> h.Target:
    import cachebox

    cache: Any = cachebox.TTLCache(wl.maxsize, global_ttl=TTL)
    # __delitem__ is the C-level delete; every delete in this suite hits a present key.
    return _populate(h.Target(cache.get, cache.insert, cache.__delitem__, raw=cache), wl)


def prepare_diskcache(wl: Workload) -> h.Target:
    import diskcache

    directory = tempfile.mkdtemp(prefix="cacheplug-bench-diskcache-")
    cache: Any = diskcache.Cache(directory)

    def close() -> None:
        cache.close()
        shutil.rmtree(directory, ignore_errors=True)

    put = functools.partial(cache.set, expire=TTL)
    return _populate(h.Target(cache.get, put, cache.delete, raw=cache, close=close), wl)


def memory_contenders(wl: Workload) -> list[h.Contender]:
    """The in-memory contenders, reference first."""
    py = h.python_version()
    specs: list[tuple[str, str, Callable[[Workload], h.Target]]] = [
        (REFERENCE, f"python {py}", prepare_locked_dict),
        ("dict (no lock)", f"python {py}", prepare_plain_dict),
        (CACHEPLUG, h.dist_version("cacheplug"), prepare_cacheplug),
        (CACHETOOLS, h.dist_version("cachetools"), prepare_cachetools),
        (LOCMEM, h.dist_version("django"), prepare_locmem),
        ("theine Cache", h.dist_version("theine"), prepare_theine),
        ("cachebox TTLCache", h.dist_version("cachebox"), prepare_cachebox),
    ]
    return [h.Contender(n, v, functools.partial(p, wl)) for n, v, p in specs]


def persistent_contenders(wl: Workload) -> list[h.Contender]:
    """diskcache beside the same reference."""
    return [
        h.Contender(
            REFERENCE, f"python {h.python_version()}", functools.partial(prepare_locked_dict, wl)
        ),
        h.Contender(
            "diskcache Cache", h.dist_version("diskcache"), functools.partial(prepare_diskcache, wl)
        ),
    ]


# -- ops -----------------------------------------------------------------------------------


def _cycle(fn: Callable[[Any], Any], seq: Sequence[Any]) -> Callable[[int], None]:
    """``run(n)``: call ``fn(item)`` n times, cycling over ``seq``."""
    size = len(seq)

    def run(n: int) -> None:
        full, rest = divmod(n, size)
        for _ in range(full):
            for item in seq:
                fn(item)
        for item in seq[:rest]:
            fn(item)

    return run


def _cycle_pairs(fn: Callable[[Any, Any], Any], pairs: Sequence[tuple[Any, Any]]):
    """``run(n)``: call ``fn(key, value)`` n times, cycling over ``pairs``."""
    size = len(pairs)

    def run(n: int) -> None:
        full, rest = divmod(n, size)
        for _ in range(full):
            for key, value in pairs:
                fn(key, value)
        for key, value in pairs[:rest]:
            fn(key, value)

    return run


def _first(fn: Callable[..., Any], seq: Sequence[Any]) -> Callable[[int], None]:
    """``run(n)``: call ``fn`` on the first n items (tuples are unpacked)."""
    if seq and isinstance(seq[0], tuple):

        def run_pairs(n: int) -> None:
            for key, value in seq[:n]:
                fn(key, value)

        return run_pairs

    def run(n: int) -> None:
        for item in seq[:n]:
            fn(item)

    return run


def _last_first(fn: Callable[[Any], Any], seq: Sequence[Any]) -> Callable[[int], None]:
    """``reset(n)``: call ``fn`` on the first n items of ``seq``, last one first."""

    def reset(n: int) -> None:
        for item in reversed(seq[:n]):
            fn(item)

    return reset


def make_ops(wl: Workload) -> list[h.Op]:
    """get-hit, get-miss, set-overwrite, set-new, delete, get-hit with 2 threads."""
    pairs = list(zip(wl.keys, wl.values, strict=True))
    new_pairs = list(zip(wl.absent, wl.values, strict=True))

    def get_hit(t: h.Target, part: int, parts: int) -> h.Runner:
        return h.Runner(_cycle(t.get, wl.keys[part::parts]))

    def get_miss(t: h.Target, part: int, parts: int) -> h.Runner:
        return h.Runner(_cycle(t.get, wl.absent[part::parts]))

    def set_overwrite(t: h.Target, part: int, parts: int) -> h.Runner:
        return h.Runner(_cycle_pairs(t.set, pairs[part::parts]))

    def set_new(t: h.Target, part: int, parts: int) -> h.Runner:
        mine = new_pairs[part::parts]
        # Undo newest-first: some caches (cachebox TTLCache) delete from the back in O(1).
        return h.Runner(_first(t.set, mine), reset=_last_first(t.delete, [k for k, _ in mine]))

    def delete(t: h.Target, part: int, parts: int) -> h.Runner:
        mine = pairs[part::parts]
        return h.Runner(_first(t.delete, [k for k, _ in mine]), reset=_first(t.set, mine))

    count = len(wl.keys)
    return [
        h.Op("get-hit", get_hit),
        h.Op("get-miss", get_miss),
        h.Op("set-overwrite", set_overwrite),
        # at most count // 2 new keys at a time: 150k of 200k, so no contender evicts
        # (sharded caches included, whose shards fill unevenly).
        h.Op("set-new", set_new, max_batch=count // 2),
        h.Op("delete", delete, max_batch=count),
        h.Op("get-hit-2t", get_hit, threads=2),
    ]


# -- targets -------------------------------------------------------------------------------

#: (op, baseline contender, required ratio of cacheplug to baseline)
TARGETS: list[tuple[str, str, float]] = [
    ("get-hit", REFERENCE, 1.0),
    ("get-hit", CACHETOOLS, 3.0),
    ("get-hit", LOCMEM, 4.0),
    ("set-new", CACHETOOLS, 2.0),
    ("set-overwrite", CACHETOOLS, 2.0),
    ("delete", CACHETOOLS, 2.0),
    ("get-hit-2t", REFERENCE, 1.5),
]


def target_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target: measured ratio of cacheplug to the baseline, met or missed."""
    found = []
    for op, baseline, need in TARGETS:
        got = h.ratio_of(rows, CACHEPLUG, baseline, op)
        status = "n/a" if math.isnan(got) else ("met" if got >= need else "missed")
        found.append(
            {
                "section": "targets",
                "target_name": f"{op}: cacheplug ≥ {need:g}x {baseline}",
                "op": op,
                "baseline": baseline,
                "target": need,
                "ratio": got,
                "status": status,
            }
        )
    return found


def cacheplug_table(rows: Sequence[dict[str, Any]], ops: Sequence[h.Op]) -> str:
    """Markdown: cacheplug per op against dict+Lock, cachetools and LocMemCache."""
    body = []
    for op in ops:
        row = h.find(rows, CACHEPLUG, op.name)
        if row is None:
            continue
        body.append(
            [
                op.name,
                h.fmt_ops(row["median_ops"]),
                *(
                    h.fmt_ratio(h.ratio_of(rows, CACHEPLUG, b, op.name))
                    for b in (REFERENCE, CACHETOOLS, LOCMEM)
                ),
            ]
        )
    if not body:
        return f"({CACHEPLUG} was not measured)"
    headers = ["op", "cacheplug ops/s", f"vs {REFERENCE}", f"vs {CACHETOOLS}", f"vs {LOCMEM}"]
    return h.markdown_table(headers, body)


# -- the suite -----------------------------------------------------------------------------


def _measure_section(
    title: str, contenders: list[h.Contender], ops: list[h.Op], section: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Prepare, measure, print one table; return (rows, extra notes by contender)."""
    h.out(f"\n## {title}\n")
    prepared = h.prepare_all(contenders)
    notes: dict[str, str] = {}
    try:
        rows = h.measure(prepared, ops, reference=REFERENCE, section=section)
        for p in prepared:
            stats = getattr(p.target.raw, "stats", None)
            if p.contender.name == CACHEPLUG and callable(stats):
                notes[p.contender.name] = f"cacheplug stats after the run: {stats()}"
    finally:
        h.close_all(prepared)
    h.out(h.results_table(rows, REFERENCE))
    for note in notes.values():
        h.out(f"\n{note}")
    return rows, notes


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run the core suite; print markdown; write JSON; return every row.

    :param smoke: 1 round, tiny loops and data, only to prove the suite still runs.
    """
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        return _run()


def _run() -> list[dict[str, Any]]:
    smoke = h.current_settings().smoke
    memory_wl = make_workload(1_000 if smoke else 100_000)
    disk_wl = make_workload(300 if smoke else 10_000)
    memory = memory_contenders(memory_wl)
    persistent = persistent_contenders(disk_wl)
    versions = {c.name: c.version for c in [*memory, *persistent[1:]]}
    h.out(
        h.header(
            SUITE,
            versions,
            note=(
                f"workload: {len(memory_wl.keys):,} `user:N` keys in fixed-seed random order, "
                f"short str values, maxsize {memory_wl.maxsize:,}, TTL {TTL:g} s"
            ),
        )
    )
    ops = make_ops(memory_wl)
    rows, _ = _measure_section("In-memory caches", memory, ops, "in-memory")
    h.out("\n## cacheplug against its peers (ratios of medians)\n")
    h.out(cacheplug_table(rows, ops))

    title = (
        f"Persistent: diskcache ({len(disk_wl.keys):,} keys — fewer, since each op is a "
        "SQLite statement; the reference is re-measured on the same keys)"
    )
    disk_rows, _ = _measure_section(title, persistent, make_ops(disk_wl), "persistent")
    ratio_rows = hit_ratio.study(smoke=smoke)
    found = target_rows(rows)
    h.out("\n## Targets (cacheplug ShardedTTLCache)\n")
    h.out(h.targets_table(found))
    all_rows = [*rows, *disk_rows, *ratio_rows, *found]
    h.write_results(SUITE, versions | hit_ratio.versions(), all_rows)
    return all_rows
