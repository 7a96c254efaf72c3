"""Immutable snapshots of cache counters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("CacheStats",)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A point-in-time copy of a cache's counters.

    ``hits`` and ``misses`` are counted on the lock-free read path: exact in CPython
    with the GIL, approximate (a few lost increments under heavy contention) on a
    free-threaded build. Every other counter is updated under a shard lock and is exact.
    """

    hits: int
    misses: int
    sets: int
    deletes: int
    evictions: int
    expirations: int
    size: int
    maxsize: int

    @property
    def hit_ratio(self) -> float:
        """Hits divided by lookups; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0
