"""Whole-cache operations of :class:`~cacheplug.cache.ShardedTTLCache`, built on its store.

Each walks every shard rather than one key: glob deletes (now, or deferred by hiding
the matching entries until :meth:`purge_hidden`), export and import of all entries for
snapshots, and random sampling of keys for dashboards.

``_BulkMixin`` is a base class of ``ShardedTTLCache`` and uses the store through
``self``; the store's invariants (what is alive, hidden or retained) stay in ``cache.py``.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from cacheplug._shard import (
    _EXPIRES,
    _GENS,
    _KEY,
    _NO_GENS,
    _VALUE,
    _VERSION,
    _Item,
    _Shard,
    _tag_names,
)


class _BulkMixin:
    """The whole-cache operations of ``ShardedTTLCache``; see the module docstring."""

    # Set by ShardedTTLCache.__init__; declared here for readers and type checkers.
    _data: dict[Hashable, _Item]
    _shards: list[_Shard]
    _timer: Callable[[], float]
    _listener: Any
    _journal: Callable[[tuple[Any, ...]], object] | None
    _hidden: tuple[tuple[Callable[[str], Any], int], ...]

    def delete_matching(self, pattern: str, *, defer: bool = False) -> int:
        """Remove every ``str`` key matching the glob ``pattern`` (``fnmatch``, case-sensitive).

        Without ``defer``, scans now and returns how many live entries were removed.
        With ``defer=True``, returns 0 at once without scanning: entries written before
        the call read as misses from now on, entries written after it are unaffected,
        and :meth:`purge_hidden` (the runtime's worker calls it) removes them later.
        Until then, reads take a slightly slower path.
        """
        match = re.compile(fnmatch.translate(pattern)).match
        watermark = next(self._versions)  # every entry written so far has a lower version
        if not defer:
            return self._purge_matching(match, watermark)
        with self._tag_lock:
            self._hidden = (*self._hidden, (match, watermark))
            # An instance attribute shadows the class's get(), so reads pay for the
            # pattern check only while a deferred delete is pending.
            self.get = self._get_while_hiding  # type: ignore[method-assign]
        return 0

    def purge_hidden(self) -> int:
        """Remove the entries hidden by deferred :meth:`delete_matching` calls; return the count."""
        hidden = self._hidden
        removed = sum(self._purge_matching(match, watermark) for match, watermark in hidden)
        with self._tag_lock:
            self._hidden = tuple(h for h in self._hidden if h not in hidden)
            if not self._hidden:
                self.__dict__.pop("get", None)
        return removed

    def _purge_matching(self, match: Callable[[str], Any], watermark: int) -> int:
        removed = []
        for shard in self._shards:
            with shard.lock:
                for item in shard.queue:
                    if (
                        item is not None
                        and item[_VERSION] < watermark
                        and isinstance(item[_KEY], str)
                        and match(item[_KEY])
                    ):
                        shard.drop(item)
                        shard.deletes += 1
                        removed.append(item[_KEY])
                        if self._journal is not None:
                            self._journal(("delete", item[_KEY], None, None, (), 0))
                shard.maybe_compact()
        if self._listener is not None:
            for key in removed:
                self._listener("delete", key, None, 0, None, ())
        return len(removed)

    def export_entries(self) -> list[tuple[Hashable, Any, float, tuple[Hashable, ...], int]]:
        """Return ``(key, value, expires_at, tags, version)`` per live entry, oldest write first.

        For snapshots: ``expires_at`` is in timer units (``math.inf`` for never), and
        the order (by version, which grows with every write) restores recency on import.
        """
        now = self._timer()
        alive = self._alive
        rows = [
            (key, item[_VALUE], item[_EXPIRES], item[_GENS], item[_VERSION])
            for key, item in self._data.copy().items()
            if alive(item, now)
        ]
        rows.sort(key=lambda row: row[4])
        return [(k, v, exp, _tag_names(gens), ver) for k, v, exp, gens, ver in rows]

    def import_entries(
        self, rows: Iterable[tuple[Hashable, Any, float, tuple[Hashable, ...]]]
    ) -> int:
        """Store ``(key, value, expires_at, tags)`` rows in order, without notifying the listener.

        ``expires_at`` is in timer units. Dead rows are skipped. Later rows are newer,
        so importing an :meth:`export_entries` list restores the recency order. Returns
        how many rows were stored.
        """
        listener, self._listener = self._listener, None
        stored = 0
        try:
            for key, value, expires_at, tags in rows:
                now = self._timer()
                if expires_at > now:
                    gens = self._gens_for(tags) if tags else _NO_GENS
                    shard = self._shard_for(key)
                    with shard.lock:
                        self._store_locked(shard, key, value, expires_at, gens, now, None)
                    stored += 1
        finally:
            self._listener = listener
        return stored

    def sample_keys(self, n: int, rng: random.Random | None = None) -> list[Hashable]:
        """Return up to ``n`` keys drawn at random (with replacement), without locking.

        The cost is O(n) whatever the cache's size: it picks random slots of the shard
        queues, weighted by shard size. A key may be expired but not yet removed.
        For dashboards that estimate the key mix; not an exact census.
        """
        pick = rng or random
        shards = [shard for shard in self._shards if shard.size]
        if n <= 0 or not shards:
            return []
        weights = [shard.size for shard in shards]
        rand = pick.random
        keys: list[Hashable] = []
        tries = 0
        # Holes never outnumber live entries for long (compaction), so 3n tries suffice.
        while len(keys) < n and tries < 3 * n:
            batch = pick.choices(shards, weights, k=n - len(keys))
            tries += len(batch)
            for shard in batch:
                queue = shard.queue  # a compaction swaps in a new list; this one stays valid
                if queue:
                    item = queue[int(rand() * len(queue))]
                    if item is not None:
                        keys.append(item[_KEY])
        return keys
