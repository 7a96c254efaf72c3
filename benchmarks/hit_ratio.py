"""Hit-ratio study: eviction policies on a Zipf(1.0) key stream.

A cache of 10,000 entries sees 1,000,000 requests over 100,000 keys (10x its size),
drawn from Zipf(1.0) with a fixed seed; every miss inserts the key. Part of the
``core`` suite; alone: ``python -m benchmarks.hit_ratio [--smoke] [--no-json]``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import _harness as h

SEED = 1234
SKEW = 1.0
LRU = "LRU (cachetools LRUCache)"
_MISSING = object()

Access = Callable[[str], bool]  # returns True on a hit; inserts the key on a miss


@dataclass(frozen=True)
class Policy:
    """A cache under study: ``build(capacity)`` returns (access function, cache object)."""

    name: str
    version: str
    build: Callable[[int], tuple[Access, Any]]


def zipf_stream(keys: int, requests: int, *, skew: float = SKEW, seed: int = SEED) -> list[str]:
    """``requests`` keys drawn from Zipf(``skew``) over ``keys`` distinct keys.

    Popularity ranks map to shuffled ``user:N`` ids, so hot keys are spread over shards.
    """
    rng = random.Random(seed)
    cdf = list(itertools.accumulate(1.0 / (rank + 1) ** skew for rank in range(keys)))
    total = cdf[-1]
    ids = list(range(keys))
    rng.shuffle(ids)
    names = [f"user:{i}" for i in ids]
    last = keys - 1
    return [names[min(bisect.bisect(cdf, rng.random() * total), last)] for _ in range(requests)]


def _get_set(cache: Any, get: Callable[..., Any], put: Callable[[str, Any], Any]) -> Access:
    """Access function for a cache whose ``get(key, default)`` returns the default on a miss."""

    def access(key: str) -> bool:
        if get(key, _MISSING) is _MISSING:
            put(key, key)
            return False
        return True

    return access


def _cacheplug(shards: int) -> Callable[[int], tuple[Access, Any]]:
    def build(capacity: int) -> tuple[Access, Any]:
        from cacheplug import ShardedTTLCache

        cache = ShardedTTLCache(maxsize=capacity, ttl=86_400.0, shards=shards)
        return _get_set(cache, cache.get, cache.set), cache

    return build


def _lru(capacity: int) -> tuple[Access, Any]:
    import cachetools

    cache: Any = cachetools.LRUCache(maxsize=capacity)
    return _get_set(cache, cache.get, cache.__setitem__), cache


def _theine(capacity: int) -> tuple[Access, Any]:
    from theine import Cache

    cache: Any = Cache(capacity)
    get, put = cache.get, cache.set

    def access(key: str) -> bool:
        if get(key)[1]:
            return True
        put(key, key)
        return False

    return access, cache


def _cachebox(capacity: int) -> tuple[Access, Any]:
    import cachebox

    cache: Any = cachebox.LRUCache(capacity)
    return _get_set(cache, cache.get, cache.insert), cache


def policies() -> list[Policy]:
    """LRU first (the baseline), then the others."""
    plug = h.dist_version("cacheplug")
    return [
        Policy(LRU, h.dist_version("cachetools"), _lru),
        Policy("cacheplug SIEVE, shards=16", plug, _cacheplug(16)),
        Policy("cacheplug SIEVE, shards=1", plug, _cacheplug(1)),
        Policy("theine W-TinyLFU", h.dist_version("theine"), _theine),
        Policy("cachebox LRUCache", h.dist_version("cachebox"), _cachebox),
    ]


def versions() -> dict[str, str]:
    """Version of every policy's package, keyed by policy name."""
    return {p.name: p.version for p in policies()}


def sizes(smoke: bool) -> tuple[int, int, int]:
    """(capacity, distinct keys, requests) for the run."""
    return (100, 1_000, 5_000) if smoke else (10_000, 100_000, 1_000_000)


def simulate(policy: Policy, capacity: int, stream: Sequence[str]) -> dict[str, Any] | None:
    """Replay ``stream``; return a row with the hit ratio, or None if not installed."""
    try:
        access, cache = policy.build(capacity)
    except ImportError as exc:
        h.skipped(policy.name, exc)
        return None
    try:
        hits = sum(map(access, stream))
        size = len(cache)
    finally:
        close = getattr(cache, "close", None)
        if callable(close):
            close()
    return {
        "section": "hit-ratio",
        "contender": policy.name,
        "op": f"zipf-{SKEW:g}",
        "capacity": capacity,
        "requests": len(stream),
        "hit_ratio": hits / len(stream),
        "size_at_end": size,
    }


def study(smoke: bool = False) -> list[dict[str, Any]]:
    """Run every policy on the same stream; print the table; return the rows."""
    capacity, keys, requests = sizes(smoke)
    h.out(
        f"\n## Hit ratio: Zipf({SKEW:g}), {requests:,} requests over {keys:,} keys, "
        f"cache of {capacity:,} (miss inserts)\n"
    )
    stream = zipf_stream(keys, requests)
    rows = [r for p in policies() if (r := simulate(p, capacity, stream)) is not None]
    if len(rows) < len(policies()):
        h.out()
    lru = next((r["hit_ratio"] for r in rows if r["contender"] == LRU), None)
    for row in rows:
        row["ratio"] = row["hit_ratio"] / lru if lru else float("nan")
    body = [
        [r["contender"], f"{r['hit_ratio']:.4f}", h.fmt_ratio(r["ratio"]), f"{r['size_at_end']:,}"]
        for r in rows
    ]
    h.out(h.markdown_table(["policy", "hit ratio", "vs LRU", "size at end"], body))
    return rows


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """The study on its own, with a header and a JSON file (suite ``hit_ratio``)."""
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        h.out(h.header("hit_ratio", versions()))
        rows = study(smoke=h.current_settings().smoke)
        h.write_results("hit_ratio", versions(), rows)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.hit_ratio [--smoke] [--no-json]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hit_ratio")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, proves it runs")
    parser.add_argument("--no-json", action="store_true", help="do not write a JSON file")
    args = parser.parse_args(argv)
    with h.use_settings(write_json=not args.no_json):
        run(smoke=args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
