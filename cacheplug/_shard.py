"""The stored item's layout and one shard's SIEVE queue, for :mod:`cacheplug.cache`.

Private: nothing outside ``cache.py`` and ``_loading.py`` sees an item or a shard.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from typing import Any

from cacheplug.singleflight import Flight

_MISSING: Any = object()
_NO_GENS: tuple[tuple[Hashable, int], ...] = ()

# An item is a small list, not a class instance: creating a list is ~5x cheaper than
# running a __slots__ class's __init__, reads cost the same, and set-new pays for every
# allocation. These names index it; nothing outside the cache sees an item.
_VALUE, _EXPIRES, _GENS, _VISITED, _VERSION, _SLOT, _KEY = range(7)
# Freshness metadata (EntryMeta) of entries stored by get_or_set with freshness options;
# None otherwise. A plain write resets it.
_META = 7
_Item = list  # [value, expires_at, gens, visited, version, slot, key, meta]
_Gens = tuple[tuple[Hashable, int], ...]


def _tag_names(gens: _Gens) -> tuple[Hashable, ...]:
    """The tags of an item, without the generations they were stored under."""
    return tuple([tag for tag, _ in gens]) if gens else ()


def _public_expiry(expires_at: float) -> float | None:
    """An item's expiry as the public API gives it: None instead of infinity."""
    return None if expires_at == math.inf else expires_at


def _delete_record(key: Hashable) -> tuple[Any, ...]:
    """The journal record of a delete (see ``cacheplug.cache.Journal``)."""
    return ("delete", key, None, None, (), 0)


def _touch_record(item: _Item, expires_at: float) -> tuple[Any, ...]:
    """The journal record of a touch; it carries no value (replay never uses one)."""
    expiry = _public_expiry(expires_at)
    return ("touch", item[_KEY], None, expiry, _tag_names(item[_GENS]), item[_VERSION])


class _Shard:
    """A write lock, a SIEVE queue and counters for one slice of the key space.

    The queue is a list, oldest first, with ``None`` holes where entries left. It is
    compacted when holes outnumber live entries, so removal stays O(1) amortized.
    ``data`` is the cache's index, shared by all shards. Every method here expects
    the caller to hold ``lock``.
    """

    __slots__ = (
        "capacity",
        "data",
        "deletes",
        "evictions",
        "expirations",
        "flights",
        "hand",
        "holes",
        "lock",
        "queue",
        "sets",
        "size",
    )

    def __init__(self, capacity: int, data: dict[Hashable, _Item]) -> None:
        self.lock = threading.Lock()
        self.capacity = capacity
        self.data = data
        self.queue: list[_Item | None] = []
        self.hand = 0
        self.size = 0
        self.holes = 0
        self.flights: dict[Hashable, Flight] = {}
        self.sets = self.deletes = self.evictions = self.expirations = 0

    def evict(self, now: float, alive: Callable[[_Item, float], bool]) -> _Item:
        """Evict one entry by SIEVE, taking any dead entry the hand meets on its way."""
        queue = self.queue
        hand = self.hand
        end = len(queue)
        while True:
            if hand >= end:
                hand = 0
            item = queue[hand]
            if item is None:
                hand += 1
                continue
            is_alive = alive(item, now)
            if is_alive and item[_VISITED]:
                item[_VISITED] = False
                hand += 1
                continue
            # drop(), inlined: this runs on every insert into a full shard
            del self.data[item[_KEY]]
            queue[hand] = None
            self.size -= 1
            self.holes += 1
            if is_alive:
                self.evictions += 1
            else:
                self.expirations += 1
            self.hand = hand + 1
            if self.holes > 32 and self.holes > self.size:
                self.maybe_compact()
            return item

    def drop(self, item: _Item) -> None:
        """Remove ``item`` from the index and leave a hole in the queue."""
        del self.data[item[_KEY]]
        self.queue[item[_SLOT]] = None
        self.holes += 1
        self.size -= 1

    def maybe_compact(self) -> None:
        """Squeeze the holes out of the queue once they outnumber the live entries."""
        if self.holes <= 32 or self.holes <= self.size:
            return
        queue, hand = self.queue, self.hand
        live = [item for item in queue if item is not None]
        self.hand = sum(1 for item in queue[:hand] if item is not None)
        for slot, item in enumerate(live):
            item[_SLOT] = slot
        self.queue = live
        self.holes = 0
