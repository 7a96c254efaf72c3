"""The plain data a :class:`~cacheplug.persistence.StateStore` takes and returns.

Re-exported by :mod:`cacheplug.persistence`, where users import them from.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ("LoadResult", "Op", "PersistenceStats", "Record", "SnapshotInfo", "StoredEntry")

Op = Literal["set", "delete", "touch", "invalidate_tags", "clear"]


class Record(NamedTuple):
    """One logged change. Times are wall-clock (``time.time()``); None = never expires.

    ``set`` uses every field; ``delete`` the key; ``touch`` the key and ``expires_at``;
    ``invalidate_tags`` the tags (entries carrying any of them are removed); ``clear``
    nothing.
    """

    op: Op
    key: Hashable | None = None
    value: Any = None
    expires_at: float | None = None
    tags: tuple[str, ...] = ()
    version: int = 0


class StoredEntry(NamedTuple):
    """One live entry as saved and restored; ``expires_at`` is wall-clock or None."""

    key: Hashable
    value: Any
    expires_at: float | None = None
    tags: tuple[str, ...] = ()
    version: int = 0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What :meth:`StateStore.load <cacheplug.persistence.StateStore.load>` recovered.

    ``entries`` are oldest first.
    """

    entries: list[StoredEntry]
    snapshot_seq: int
    last_seq: int
    replayed: int
    skipped_expired: int
    warnings: list[str]
    seconds: float


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What :meth:`StateStore.write_snapshot <cacheplug.persistence.StateStore.write_snapshot>` did.

    ``written`` is False for a reader.
    """

    written: bool
    path: str
    last_seq: int
    entries: int
    skipped_unpicklable: int
    bytes: int
    seconds: float
    segments_removed: int


@dataclass(frozen=True, slots=True)
class PersistenceStats:
    """A point-in-time view of a store; WAL lag is ``last_seq - last_fsync_seq``."""

    is_writer: bool
    read_only_reason: str | None
    wal_bytes: int
    wal_records: int
    wal_segments: int
    last_seq: int
    last_fsync_seq: int
    snapshots_written: int
    last_snapshot_at: float | None
    unpicklable: int
    dropped_records: int
    rejected_files: int
