"""StateStore: a signed snapshot plus a write-ahead log that survive restarts.

The store deals only in plain data: :class:`Record` (one logged change) and
:class:`StoredEntry` (one live entry, with a wall-clock expiry). The runtime feeds it
from its background worker and hands it the cache's contents for snapshots; the store
never imports the cache. File formats, recovery rules and failure modes are documented in
``docs/persistence.md``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

from cacheplug import _columns, _snapshot, _wal
from cacheplug._compaction import drop_covered_segments, encode_chunks, gc_paused
from cacheplug._inspect import InspectReport, inspect_state
from cacheplug._records import LoadResult, PersistenceStats, Record, SnapshotInfo, StoredEntry
from cacheplug._records import Op as Op  # re-exported
from cacheplug._recovery import StateFiles
from cacheplug._snapshot import Progress
from cacheplug._statelock import WriterLock
from cacheplug._walwriter import WalWriter
from cacheplug._walwriter import key_prefix as key_prefix  # re-exported
from cacheplug.errors import ConfigurationError
from cacheplug.serializers import (
    MissingSecretError,
    PickleSerializer,
    Serializer,
    StateFileError,
    StateKeys,
    StateStoreClosedError,
    TamperedStateError,
    UnsupportedFormatError,
    derive_keys,
)

__all__ = (
    "InspectReport",
    "LoadResult",
    "MissingSecretError",
    "PersistenceStats",
    "Record",
    "SnapshotInfo",
    "StateFileError",
    "StateStore",
    "StateStoreClosedError",
    "StoredEntry",
    "TamperedStateError",
    "UnsupportedFormatError",
    "inspect_state",
    "resolve_secret",
)

logger = logging.getLogger("cacheplug.persistence")

# Defined in _records, documented and pickled by their public path.
for _public in (LoadResult, PersistenceStats, Record, SnapshotInfo, StoredEntry):
    _public.__module__ = __name__
del _public

FsyncPolicy = Literal["always", "everysec", "never"]
_OPS = frozenset(("set", "delete", "touch", "invalidate_tags", "clear"))
SECRET_ENV = "CACHEPLUG_SECRET"
#: fields per WAL record: op, key, value, expires_at, tags, version
RECORD_FIELDS = _columns.FIELDS


def resolve_secret(secret: str | bytes | None) -> StateKeys:
    """Derive the signing keys from *secret*, else from ``$CACHEPLUG_SECRET``.

    :raises MissingSecretError: if neither is set (or both are empty).
    """
    if not secret:
        secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise MissingSecretError
    return derive_keys(secret)


class StateStore:
    """The durable state of one cache: a signed snapshot plus a write-ahead log.

    Thread-safe (one internal lock). Only the process holding ``state_dir/lock`` writes
    (:meth:`acquire_writer`); in every other process :meth:`append` and
    :meth:`write_snapshot` are counted no-ops.

    :param state_dir: the directory of the state files; created with mode 0700.
    :param secret: the signing secret; defaults to ``$CACHEPLUG_SECRET``.
    :param fsync: ``"always"`` (append returns once on disk), ``"everysec"`` (at most
        ``fsync_interval`` seconds of changes lost on a crash) or ``"never"`` (the OS
        decides; close() still fsyncs).
    :param serializer: the batch codec; :class:`PickleSerializer` (protocol 5) by default.
    :param wal_max_bytes: WAL size above which :attr:`needs_compaction` turns True.
    :param clock: the wall clock used for expiry and timestamps.
    :param timer: the monotonic clock that paces ``"everysec"``.
    :param fsync_interval: the ``"everysec"`` period in seconds.
    :raises MissingSecretError: if no secret is configured.
    :raises ConfigurationError: for an unknown fsync policy or a bad size/interval.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        secret: str | bytes | None = None,
        fsync: FsyncPolicy = "everysec",
        serializer: Serializer | None = None,
        wal_max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        fsync_interval: float = 1.0,
    ) -> None:
        if fsync not in ("always", "everysec", "never"):
            raise ConfigurationError(
                f"fsync must be 'always', 'everysec' or 'never', got {fsync!r}"
            )
        if wal_max_bytes <= 0:
            raise ConfigurationError(f"wal_max_bytes must be positive, got {wal_max_bytes!r}")
        if fsync_interval < 0:
            raise ConfigurationError(f"fsync_interval must be >= 0, got {fsync_interval!r}")
        self._keys = resolve_secret(secret)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fsync = fsync
        self.serializer: Serializer = serializer or PickleSerializer()
        # the memo-free encoder for batches whose values are plain atoms (the usual case)
        self._dumps_atoms: Callable[[Any], bytes] | None = (
            self.serializer.dumps_atoms if type(self.serializer) is PickleSerializer else None
        )
        self.wal_max_bytes = wal_max_bytes
        self._clock = clock
        self._mutex = threading.RLock()
        self._closed = False
        self._lock = WriterLock(self.state_dir / "lock")
        self._files = StateFiles(self.state_dir, self._keys, self.serializer, self._lock)
        self._log = WalWriter(
            self.state_dir,
            self._keys,
            self.serializer,
            self._dumps_atoms,
            fsync,
            fsync_interval,
            timer,
        )
        self._snapshots = 0
        self._last_snapshot_at: float | None = None
        self._dropped = 0
        self._read_only_reason: str | None = "acquire_writer() not called"
        # problems found by acquire_writer(), reported by the next load()
        self._pending: list[str] = []

    # -- writer lock -----------------------------------------------------------------

    @property
    def is_writer(self) -> bool:
        """Whether this store holds the writer lock."""
        return self._lock.fd is not None

    def acquire_writer(self) -> bool:
        """Try, without blocking, to become the one writer of ``state_dir``.

        On success the log is checked and repaired (torn tails truncated, unusable
        files renamed ``*.rejected``) so new records follow the recoverable ones. Call
        it before :meth:`load` so bad files can be moved aside. Idempotent.

        :returns: True if this store is (now) the writer.
        """
        with self._mutex:
            self._check_open()
            if self._lock.fd is not None:
                return True
            if not self._lock.try_acquire():
                self._read_only_reason = "another process holds the writer lock"
                return False
            try:
                reason = self._prepare_writer()
            except BaseException:
                self._lock.release()
                raise
            if reason is not None:
                logger.error("cacheplug state in %s is read-only: %s", self.state_dir, reason)
                self._lock.release()
                self._read_only_reason = reason
                return False
            self._read_only_reason = None
            return True

    def try_become_writer(self) -> bool:
        """Take over as writer if the previous one exited; same as :meth:`acquire_writer`.

        Meant to be called periodically by read-only processes. After a takeover the
        on-disk state is the old writer's plus this process's later changes; writing a
        snapshot right away makes it this process's view.
        """
        return self.acquire_writer()

    def _prepare_writer(self) -> str | None:
        """Verify and repair the files; set the next seq. Return a reason to stay read-only."""
        check = self._files.check_for_writer(self._pending)
        if check.reader is not None:
            self._log.reset(check.reader, check.base)
        return check.reason

    # -- load ------------------------------------------------------------------------

    def load(self, progress: Progress | None = None) -> LoadResult:
        """Recover the saved entries: the snapshot, then the newer WAL records in order.

        Never raises for bad files: it returns what it could recover plus ``warnings``
        (also logged). Expired entries are dropped; the rest keep their recency order.
        A writer moves a snapshot that fails verification aside as ``*.rejected``; a
        snapshot from a newer format is left in place and the load starts cold.

        :param progress: called as ``progress(done, total)`` with the snapshot entries
            decoded so far, after each chunk (about every 4,000 entries), from this thread.
        """
        with gc_paused():
            return self._load(time.perf_counter(), progress)

    def _load(self, t0: float, progress: Progress | None) -> LoadResult:
        with self._mutex:
            warnings, self._pending = self._pending, []
        files = self._files
        snapshot = files.read_snapshot(warnings, progress)
        if snapshot is None:
            return LoadResult([], 0, 0, 0, 0, warnings, time.perf_counter() - t0)
        rows, base = snapshot
        replayer, reader, replayed = files.replay(rows, base, warnings)
        with self._mutex:
            if self.is_writer and self._log.fd is None and reader.damage:
                files.repair(reader, [])
                self._log.reset(reader, base)
        now = self._clock()
        all_rows = replayer.rows()
        new = tuple.__new__  # StoredEntry._make minus a Python-level call per entry
        try:
            entries = [new(StoredEntry, r) for r in all_rows if r[2] is None or r[2] > now]
            if entries and len(entries[0]) != len(StoredEntry._fields):
                raise ValueError(f"rows have {len(entries[0])} fields")
        except (TypeError, ValueError, IndexError) as exc:
            files.warn(warnings, f"{files.snapshot.name}: malformed rows ({exc}); starting cold")
            all_rows, entries = [], []
        return LoadResult(
            entries=entries,
            snapshot_seq=base or 0,
            last_seq=max(base or 0, reader.last_seq),
            replayed=replayed,
            skipped_expired=len(all_rows) - len(entries),
            warnings=warnings,
            seconds=time.perf_counter() - t0,
        )

    # -- append ----------------------------------------------------------------------

    def append(
        self, records: Sequence[Record | tuple[Any, ...]], *, time_offset: float = 0.0
    ) -> int:
        """Log a batch of changes as signed frames; durable per the fsync policy.

        Records may be :class:`Record` or plain tuples in its field order.
        ``expires_at + time_offset`` must be the wall-clock expiry (``inf`` or None for
        never): a caller whose clock is monotonic passes its times as they are plus one
        offset for the batch. See :meth:`append_fields` for the rest of the contract.

        :returns: the sequence number of the last record in the log (0 for a reader).
        :raises StateStoreClosedError: after :meth:`close`.
        :raises ValueError: for a record with an unknown ``op`` or not six fields.
        :raises OSError: if the disk write fails (the log stays consistent).
        """
        fields = list(chain.from_iterable(records))
        if len(fields) != RECORD_FIELDS * len(records):
            raise ValueError(
                f"each record needs {RECORD_FIELDS} fields {Record._fields}, "
                f"got {len(fields)} fields for {len(records)} records"
            )
        return self.append_fields(fields, time_offset=time_offset)

    def append_fields(
        self, fields: list[Any], *, time_offset: float = 0.0, count: int | None = None
    ) -> int:
        """:meth:`append` for records laid end to end: six fields each, in Record order.

        The runtime's fast path: its cache listener extends one flat list, and this
        logs its first *count* records (default: all) without a tuple or any Python code
        per record; the caller then removes them. A ``touch`` record's value, which
        replay ignores, is set to None in *fields*. The batch goes to disk with one
        ``writev`` (and at most one fsync), in frames of up to 65,536 records when the
        default serializer has only plain atoms (str, bytes, numbers, None) to encode, else
        of up to 4,096.

        A ``set`` whose value cannot be serialized is logged as a ``delete`` of its key
        (so an older value cannot come back), counted in ``stats().unpicklable`` and
        warned about once per key prefix; the rest of the batch is logged normally.

        :returns: the sequence number of the last record in the log (0 for a reader).
        :raises StateStoreClosedError: after :meth:`close`.
        :raises ValueError: for an unknown ``op``, or a length not a multiple of six.
        :raises OSError: if the disk write fails (the log stays consistent).
        """
        if count is None:
            count, rest = divmod(len(fields), RECORD_FIELDS)
            if rest:
                raise ValueError(f"{len(fields)} fields is not a whole number of records")
        elif not 0 <= count * RECORD_FIELDS <= len(fields):
            raise ValueError(f"count={count} but fields holds {len(fields) // RECORD_FIELDS}")
        with self._mutex:
            self._check_open()
            if self._lock.fd is None:
                self._dropped += count
                return 0
            if not count:
                return self._log.next_seq - 1
            ops = fields[: count * RECORD_FIELDS : RECORD_FIELDS]
            if ops.count("set") != count:  # list.count runs at C speed: the usual case
                if not _OPS.issuperset(ops):
                    bad = next(op for op in ops if op not in _OPS)
                    raise ValueError(f"unknown record op {bad!r}; expected one of {sorted(_OPS)}")
                if "touch" in ops:  # replay ignores a touch's value: do not encode it
                    for i, op in enumerate(ops):
                        if op == "touch":
                            fields[i * RECORD_FIELDS + 2] = None
            return self._log.write(fields, count, time_offset)

    def sync_if_due(self) -> None:
        """Under ``"everysec"``, fsync the log if the interval has passed since the last."""
        with self._mutex:
            if not self._closed and self._log.sync_due():
                self._log.sync()

    def flush(self) -> None:
        """Fsync the log now, whatever the policy."""
        with self._mutex:
            if not self._closed:
                self._log.sync()

    # -- snapshot and compaction -----------------------------------------------------

    @property
    def needs_compaction(self) -> bool:
        """Whether the WAL has grown past ``wal_max_bytes`` (time for a snapshot)."""
        return self.is_writer and self._log.bytes > self.wal_max_bytes

    def write_snapshot(self, entries: Iterable[StoredEntry | tuple[Any, ...]]) -> SnapshotInfo:
        """Save *entries* (oldest first) as the new snapshot, then drop the covered WAL.

        The snapshot covers every record appended so far, so *entries* must reflect at
        least all of them; changes not yet appended may be included too (replaying a
        record over a state that already has it is harmless). Entries may be
        :class:`StoredEntry` or plain tuples in its field order; they are encoded and
        written a chunk (4,096 entries) at a time. Entries whose value cannot be
        serialized are skipped and counted. Crash-safe at every step: start a new
        segment, write and rename the snapshot, then delete the older segments.

        :raises StateStoreClosedError: after :meth:`close`.
        :raises OSError: if the disk write fails (the previous state stays usable).
        """
        t0 = time.perf_counter()
        with self._mutex:
            self._check_open()
            path = self._files.snapshot
            if self._lock.fd is None:
                return SnapshotInfo(False, str(path), 0, 0, 0, 0, 0.0, 0)
            log = self._log
            last = log.next_seq - 1
            log.rotate(last + 1)
            now = self._clock()
            seen = [0]
            with gc_paused():
                chunks = encode_chunks(
                    entries, seen, self.serializer, self._dumps_atoms, log.note_unpicklable
                )
                size, written = _snapshot.write_snapshot_file(
                    path,
                    chunks,
                    last_seq=last,
                    created_at=now,
                    keys=self._keys,
                )
            skipped = seen[0] - written
            removed = drop_covered_segments(self.state_dir, last)
            log.segments = len(_wal.list_segments(self.state_dir))
            log.bytes = _wal.SEGMENT_HEADER_SIZE
            log.records = 0
            self._snapshots += 1
            self._last_snapshot_at = now
            return SnapshotInfo(
                True, str(path), last, written, skipped, size, time.perf_counter() - t0, removed
            )

    # -- lifecycle -------------------------------------------------------------------

    def stats(self) -> PersistenceStats:
        """Return a snapshot of the store's counters."""
        with self._mutex:
            return PersistenceStats(
                is_writer=self._lock.fd is not None,
                read_only_reason=None if self._lock.fd is not None else self._read_only_reason,
                wal_bytes=self._log.bytes,
                wal_records=self._log.records,
                wal_segments=self._log.segments,
                last_seq=self._log.next_seq - 1,
                last_fsync_seq=self._log.last_fsync_seq,
                snapshots_written=self._snapshots,
                last_snapshot_at=self._last_snapshot_at,
                unpicklable=self._log.unpicklable,
                dropped_records=self._dropped,
                rejected_files=self._files.rejected,
            )

    def close(self) -> None:
        """Fsync and close the log, release the writer lock. Safe to call twice."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._read_only_reason = "closed"
            try:
                self._log.close()
            finally:
                self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise StateStoreClosedError(f"StateStore({str(self.state_dir)!r}) is closed")

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "writer" if self.is_writer else "reader"
        return f"<StateStore {str(self.state_dir)!r} {role} fsync={self.fsync!r}>"
