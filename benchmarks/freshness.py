"""The ``freshness`` suite: a hot key expiring under continuous reads (issue #10).

Scenario: one hot key, TTL 1 s, a loader that takes 50 ms (``time.sleep``), read
continuously for 5 s. Each read is timed on its own with ``perf_counter_ns``; the table
gives p50/p99/max read latency, reads and loader calls per contender.

* **threads**: 2 reader threads calling a sync API: cacheplug ``get_or_set`` with plain
  TTL, with ``early_refresh=1.0`` and with ``stale_while_revalidate=1.0``; diskcache's
  ``memoize_stampede`` (XFetch, recomputes in a background thread).
* **asyncio**: 2 reader tasks on one loop, each yielding (``sleep(0)``) between reads as
  request handlers do: cacheplug ``aget_or_set`` in the same three modes; cashews
  ``@cache.early`` (in-memory backend, refreshes in a background task).

Target (issue #10): p99 read latency under 1 ms with either freshness option; plain TTL
makes the readers wait ~50 ms at every expiry. With ``--rounds N`` the scenario runs N
interleaved rounds and the table gives the median per contender, with min-max of p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import threading
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks import _harness as h
from cacheplug import ShardedTTLCache

SUITE = "freshness"
KEY = "/api/items?page=3"
TARGET_P99_MS = 1.0


@dataclass(frozen=True)
class Scenario:
    ttl: float
    load_seconds: float
    duration: float
    readers: int = 2


FULL = Scenario(ttl=1.0, load_seconds=0.05, duration=5.0)
SMOKE = Scenario(ttl=0.05, load_seconds=0.005, duration=0.2)


class Loader:
    """The slow loader: sleeps ``seconds`` and counts its calls (thread-safe enough)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        time.sleep(self.seconds)
        return b"x" * 1024

    async def aload(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return b"x" * 1024


@dataclass
class Result:
    contender: str
    mode: str
    latencies: array  # ns per read
    loader_calls: int

    def pct(self, q: float) -> float:
        """The ``q`` quantile in ms (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


# -- sync contenders ---------------------------------------------------------------------

SyncRead = Callable[[], Any]


@contextlib.contextmanager
def cacheplug_sync(sc: Scenario, loader: Loader, **options: Any) -> Iterator[SyncRead]:
    cache = ShardedTTLCache(maxsize=1000, ttl=sc.ttl)
    try:
        yield lambda: cache.get_or_set(KEY, loader, **options)
    finally:
        cache.close()


@contextlib.contextmanager
def diskcache_stampede(sc: Scenario, loader: Loader) -> Iterator[SyncRead]:
    import diskcache

    directory = tempfile.mkdtemp(prefix="cacheplug-bench-")
    cache = diskcache.Cache(directory)
    try:

        def load() -> bytes:
            return loader()

        yield diskcache.memoize_stampede(cache, expire=sc.ttl, beta=1, name=KEY)(load)
    finally:
        time.sleep(sc.load_seconds * 2)  # let a recompute thread it started finish
        cache.close()
        shutil.rmtree(directory, ignore_errors=True)


def run_threads(sc: Scenario, read: SyncRead) -> array:
    """``sc.readers`` threads call ``read`` until ``sc.duration`` passes; return latencies."""
    read()  # warm: the first load is not part of the scenario
    per_thread = [array("q") for _ in range(sc.readers)]
    start = threading.Barrier(sc.readers + 1)
    stop = threading.Event()

    def reader(out: array) -> None:
        clock, append = time.perf_counter_ns, out.append
        start.wait()
        while not stop.is_set():
            t0 = clock()
            read()
            append(clock() - t0)

    threads = [threading.Thread(target=reader, args=(o,)) for o in per_thread]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(sc.duration)
    stop.set()
    for t in threads:
        t.join()
    merged = array("q")
    for part in per_thread:
        merged.extend(part)
    return merged


# -- async contenders ---------------------------------------------------------------------

AsyncRead = Callable[[], Awaitable[Any]]


@contextlib.asynccontextmanager
async def cacheplug_async(sc: Scenario, loader: Loader, **options: Any):
    cache = ShardedTTLCache(maxsize=1000, ttl=sc.ttl)
    try:
        yield lambda: cache.aget_or_set(KEY, loader.aload, **options)
    finally:
        await cache.aclose()


@contextlib.asynccontextmanager
async def cashews_early(sc: Scenario, loader: Loader):
    from cashews import Cache

    cache = Cache()
    cache.setup("mem://")

    @cache.early(ttl=sc.ttl, early_ttl=sc.ttl * 0.8)
    async def load() -> bytes:
        return await loader.aload()

    try:
        yield load
    finally:
        await asyncio.sleep(sc.load_seconds * 2)  # let its background refresh finish
        await cache.close()


async def run_tasks(sc: Scenario, read: AsyncRead) -> array:
    await read()
    per_task = [array("q") for _ in range(sc.readers)]
    deadline = time.perf_counter() + sc.duration

    async def reader(out: array) -> None:
        clock, append = time.perf_counter_ns, out.append
        while time.perf_counter() < deadline:
            t0 = clock()
            await read()
            append(clock() - t0)
            await asyncio.sleep(0)  # a request handler yields between requests

    await asyncio.gather(*(reader(o) for o in per_task))
    merged = array("q")
    for part in per_task:
        merged.extend(part)
    return merged


# -- the suite ----------------------------------------------------------------------------


def _sync_specs(sc: Scenario) -> list[tuple[str, Callable[[Loader], Any]]]:
    return [
        ("cacheplug plain TTL", lambda ld: cacheplug_sync(sc, ld)),
        ("cacheplug early_refresh=1", lambda ld: cacheplug_sync(sc, ld, early_refresh=1.0)),
        (
            "cacheplug stale_while_revalidate",
            lambda ld: cacheplug_sync(sc, ld, stale_while_revalidate=sc.ttl),
        ),
        ("diskcache memoize_stampede", lambda ld: diskcache_stampede(sc, ld)),
    ]


def _async_specs(sc: Scenario) -> list[tuple[str, Callable[[Loader], Any]]]:
    return [
        ("cacheplug plain TTL (async)", lambda ld: cacheplug_async(sc, ld)),
        (
            "cacheplug early_refresh=1 (async)",
            lambda ld: cacheplug_async(sc, ld, early_refresh=1.0),
        ),
        (
            "cacheplug stale_while_revalidate (async)",
            lambda ld: cacheplug_async(sc, ld, stale_while_revalidate=sc.ttl),
        ),
        ("cashews early", lambda ld: cashews_early(sc, ld)),
    ]


def _one_sync(sc: Scenario, make: Callable[[Loader], Any]) -> tuple[array, int]:
    loader = Loader(sc.load_seconds)
    with make(loader) as read:
        latencies = run_threads(sc, read)
    return latencies, loader.calls


def _one_async(sc: Scenario, make: Callable[[Loader], Any]) -> tuple[array, int]:
    async def main() -> tuple[array, int]:
        loader = Loader(sc.load_seconds)
        async with make(loader) as read:
            latencies = await run_tasks(sc, read)
        return latencies, loader.calls

    return asyncio.run(main())


def _available(name: str) -> bool:
    module = {"diskcache": "diskcache", "cashews": "cashews"}.get(name.split()[0])
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError as exc:
        h.skipped(name, exc)
        return False
    return True


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run the freshness scenario; print markdown; write JSON; return the rows."""
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        return _run()


def _run() -> list[dict[str, Any]]:
    settings = h.current_settings()
    sc = SMOKE if settings.smoke else FULL
    rounds = settings.round_count(default=1)
    specs = [("threads", n, m) for n, m in _sync_specs(sc)]
    specs += [("asyncio", n, m) for n, m in _async_specs(sc)]
    specs = [s for s in specs if _available(s[1])]
    versions = {
        "cacheplug": h.dist_version("cacheplug"),
        "diskcache": h.dist_version("diskcache"),
        "cashews": h.dist_version("cashews"),
    }
    h.out(
        h.header(
            SUITE,
            versions,
            note=(
                f"scenario: one hot key, TTL {sc.ttl:g} s, loader {sc.load_seconds * 1000:g} ms, "
                f"{sc.readers} readers for {sc.duration:g} s, {rounds} interleaved round(s); "
                "latency of every read"
            ),
        )
    )
    samples: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for mode, name, make in specs:
            h.progress(f"{SUITE}: {name}")
            runner = _one_sync if mode == "threads" else _one_async
            latencies, calls = runner(sc, make)
            res = Result(name, mode, latencies, calls)
            samples.setdefault(name, []).append(
                {
                    "mode": mode,
                    "reads": len(latencies),
                    "p50_ms": res.pct(0.50),
                    "p99_ms": res.pct(0.99),
                    "max_ms": max(latencies) / 1e6,
                    "loader_calls": calls,
                    "slow_reads": sum(1 for x in latencies if x > 1_000_000),
                    "p999_ms": res.pct(0.999),
                    # a read this slow waited for the loader (or was descheduled that long)
                    "waited": sum(1 for x in latencies if x >= 0.8 * sc.load_seconds * 1e9),
                }
            )
    rows = [_row(name, runs) for name, runs in samples.items()]
    h.out()
    h.out(_table(rows))
    found = _targets(rows)
    h.out("\n## Targets\n")
    h.out(h.targets_table(found))
    h.write_results(SUITE, versions, [*rows, *found])
    return [*rows, *found]


def _row(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(field: str) -> float:
        return statistics.median(r[field] for r in runs)

    return {
        "section": "hot-key",
        "contender": name,
        "mode": runs[0]["mode"],
        "op": "read across expiry",
        "reads": int(med("reads")),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "p99_min_ms": min(r["p99_ms"] for r in runs),
        "p99_max_ms": max(r["p99_ms"] for r in runs),
        "max_ms": med("max_ms"),
        "loader_calls": int(med("loader_calls")),
        "slow_reads": int(med("slow_reads")),
        "p999_ms": med("p999_ms"),
        "waited": int(med("waited")),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            r["mode"],
            r["contender"],
            f"{r['reads']:,}",
            f"{r['p50_ms'] * 1000:.1f} µs",
            f"{r['p99_ms'] * 1000:.1f} µs",
            f"{r['p99_min_ms'] * 1000:.1f}-{r['p99_max_ms'] * 1000:.1f} µs",
            f"{r['p999_ms'] * 1000:.1f} µs",
            f"{r['max_ms']:.1f} ms",
            f"{r['slow_reads']:,}",
            f"{r['waited']:,}",
            str(r["loader_calls"]),
        ]
        for r in rows
    ]
    headers = [
        "mode",
        "contender",
        "reads",
        "p50",
        "p99",
        "p99 min-max",
        "p99.9",
        "max",
        "reads > 1 ms",
        "reads ≥ 0.8 loader time",
        "loader calls",
    ]
    return h.markdown_table(headers, body)


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for r in rows:
        if "early_refresh" not in r["contender"] and "stale_while" not in r["contender"]:
            continue
        got = r["p99_ms"]
        found.append(
            {
                "section": "targets",
                "target_name": (
                    f"{r['contender']}: p99 read latency ≤ {TARGET_P99_MS:g} ms "
                    f"(measured {got * 1000:.1f} µs; measured column = p99 / target)"
                ),
                "target": 1.0,
                "ratio": got / TARGET_P99_MS,
                "sense": "le",
                "status": "met" if got <= TARGET_P99_MS else "missed",
            }
        )
    return found
