"""Snapshot encoding and WAL compaction: turn live entries into chunks, drop old segments."""

from __future__ import annotations

import contextlib
import gc
import operator
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from cacheplug import _wal
from cacheplug._snapshot import CHUNK_ROWS, fsync_dir
from cacheplug.serializers import ATOMS, Serializer, dump_rows

__all__ = ("drop_covered_segments", "encode_chunks", "gc_paused")

_value_of = operator.itemgetter(1)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a million tuples (it would rescan them all).

    The objects built are acyclic containers, so nothing is lost by collecting later;
    this halves bulk load and save times.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def encode_chunks(
    entries: Iterable[Any],
    seen: list[int],
    serializer: Serializer,
    dumps_atoms: Callable[[Any], bytes] | None,
    on_error: Callable[[object, Exception], None],
) -> Iterator[tuple[bytes, int]]:
    """Serialize *entries* a chunk at a time; count every entry taken in ``seen[0]``.

    Yields ``(payload, rows encoded)``. A chunk whose values are all plain atoms goes
    through *dumps_atoms* (the memo-free encoder) when given; entries that cannot be
    serialized are left out and reported to *on_error* with their key.
    """
    it = iter(entries)
    while True:
        rows = list(map(tuple, islice(it, CHUNK_ROWS)))
        if not rows:
            return
        seen[0] += len(rows)
        if dumps_atoms is not None and ATOMS.issuperset(map(type, map(_value_of, rows))):
            try:
                yield dumps_atoms(rows), len(rows)
                continue
            except Exception:
                pass  # e.g. an unpicklable key: the normal path sorts it out
        payload, rows = dump_rows(serializer, rows, key_at=0, on_error=on_error)
        yield payload, len(rows)


def drop_covered_segments(state_dir: Path, last_seq: int) -> int:
    """Delete the WAL segments a snapshot up to *last_seq* covers; return how many."""
    removed = 0
    for first, seg in _wal.list_segments(state_dir):
        if first <= last_seq:
            seg.unlink()
            removed += 1
    if removed:
        fsync_dir(state_dir)
    return removed
