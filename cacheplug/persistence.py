"""StateStore: a signed snapshot plus a write-ahead log that survive restarts.

The store deals only in plain data: :class:`Record` (one logged change) and
:class:`StoredEntry` (one live entry, with a wall-clock expiry). The runtime feeds it
from its background worker and hands it the cache's contents for snapshots; the store
never imports the cache. File formats, recovery rules and failure modes are documented in
``docs/persistence.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal, NamedTuple

from cacheplug import _columns, _snapshot, _wal
from cacheplug._inspect import InspectReport, inspect_state
from cacheplug._snapshot import (
    CHUNK_ROWS,
    SNAPSHOT_NAME,
    Progress,
    fsync_dir,
    write_all,
    write_parts,
)
from cacheplug.errors import ConfigurationError
from cacheplug.serializers import (
    ATOMS,
    MissingSecretError,
    PickleSerializer,
    Serializer,
    StateFileError,
    StateKeys,
    StateStoreClosedError,
    TamperedStateError,
    UnsupportedFormatError,
    derive_keys,
    dump_rows,
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

FsyncPolicy = Literal["always", "everysec", "never"]
Op = Literal["set", "delete", "touch", "invalidate_tags", "clear"]
_OPS = frozenset(("set", "delete", "touch", "invalidate_tags", "clear"))
SECRET_ENV = "CACHEPLUG_SECRET"
_MAX_WARNED_PREFIXES = 1024
#: fields per WAL record: op, key, value, expires_at, tags, version
RECORD_FIELDS = _columns.FIELDS
_value_of = operator.itemgetter(1)
_fdatasync = getattr(os, "fdatasync", os.fsync)


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
    """What :meth:`StateStore.load` recovered; ``entries`` are oldest first."""

    entries: list[StoredEntry]
    snapshot_seq: int
    last_seq: int
    replayed: int
    skipped_expired: int
    warnings: list[str]
    seconds: float


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What :meth:`StateStore.write_snapshot` did; ``written`` is False for a reader."""

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


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
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


def resolve_secret(secret: str | bytes | None) -> StateKeys:
    """Derive the signing keys from *secret*, else from ``$CACHEPLUG_SECRET``.

    :raises MissingSecretError: if neither is set (or both are empty).
    """
    if not secret:
        secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise MissingSecretError
    return derive_keys(secret)


def _as_delete(row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Log an unsaveable ``set`` as a delete, so an older saved value cannot come back."""
    return ("delete", row[1], None, None, (), row[5]) if row[0] == "set" else None


def key_prefix(key: object) -> str:
    """Return the text before the first ``:`` of a str key, else the key's type name."""
    if isinstance(key, str):
        return key.partition(":")[0]
    return f"<{type(key).__name__}>"


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
        self._timer = timer
        self._interval = fsync_interval
        self._mutex = threading.RLock()
        self._closed = False
        self._lock_fd: int | None = None
        self._seg_fd: int | None = None
        self._seg_first = 0
        self._next_seq = 1
        self._last_fsync_seq = 0
        self._last_fsync_at = timer()
        self._wal_bytes = 0
        self._wal_records = 0
        self._wal_segments = 0
        self._snapshots = 0
        self._last_snapshot_at: float | None = None
        self._unpicklable = 0
        self._dropped = 0
        self._rejected = 0
        self._read_only_reason: str | None = "acquire_writer() not called"
        self._warned_prefixes: set[str] = set()
        # problems found by acquire_writer(), reported by the next load()
        self._pending: list[str] = []

    # -- writer lock -----------------------------------------------------------------

    @property
    def is_writer(self) -> bool:
        """Whether this store holds the writer lock."""
        return self._lock_fd is not None

    def acquire_writer(self) -> bool:
        """Try, without blocking, to become the one writer of ``state_dir``.

        On success the log is checked and repaired (torn tails truncated, unusable
        files renamed ``*.rejected``) so new records follow the recoverable ones. Call
        it before :meth:`load` so bad files can be moved aside. Idempotent.

        :returns: True if this store is (now) the writer.
        """
        with self._mutex:
            self._check_open()
            if self._lock_fd is not None:
                return True
            path = self.state_dir / "lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._read_only_reason = "another process holds the writer lock"
                return False
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
            try:
                reason = self._prepare_writer()
            except BaseException:
                self._release_lock()
                raise
            if reason is not None:
                logger.error("cacheplug state in %s is read-only: %s", self.state_dir, reason)
                self._release_lock()
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

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _prepare_writer(self) -> str | None:
        """Verify and repair the files; set the next seq. Return a reason to stay read-only."""
        snap = self.state_dir / SNAPSHOT_NAME
        newer = [
            p
            for _, p in _wal.list_segments(self.state_dir)
            if (_wal.segment_version(p) or 0) > _wal.FORMAT_VERSION
        ]
        base: int | None = None
        try:
            base = _snapshot.verify(snap, self._keys).last_seq
        except FileNotFoundError:
            pass
        except UnsupportedFormatError:
            newer.insert(0, snap)
        except StateFileError as exc:
            self._reject(snap)
            self._warn(self._pending, f"{exc}; moved aside as {snap.name}.rejected", logging.ERROR)
        if newer:
            names = ", ".join(p.name for p in newer)
            return (
                f"{names} written by a newer cacheplug format; this process will not "
                "overwrite them. Upgrade cacheplug, or delete them to persist again"
            )
        reader = _wal.WalReader(self.state_dir, self._keys, base)
        for _ in reader:
            pass
        for dmg in [*reader.tolerated, *([reader.damage] if reader.damage else [])]:
            level = logging.WARNING if dmg.kind == "torn" else logging.ERROR
            self._warn(self._pending, dmg.message, level)
        if reader.damage or reader.tolerated:
            self._rejected += _wal.repair(reader, self._pending)
        self._reset_counters(reader, base)
        return None

    def _reset_counters(self, reader: _wal.WalReader, base: int | None) -> None:
        segs = _wal.list_segments(self.state_dir)
        self._next_seq = max(base or 0, reader.last_seq) + 1
        self._last_fsync_seq = self._next_seq - 1
        self._wal_segments = len(segs)
        self._wal_bytes = sum(p.stat().st_size for _, p in segs)
        self._wal_records = reader.records

    def _reject(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(path.name + ".rejected"))
            fsync_dir(self.state_dir)
            self._rejected += 1

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
        with _gc_paused():
            return self._load(time.perf_counter(), progress)

    def _load(self, t0: float, progress: Progress | None) -> LoadResult:
        with self._mutex:
            warnings, self._pending = self._pending, []
        rows: list[Any] = []
        base: int | None = None
        snap = self.state_dir / SNAPSHOT_NAME
        try:
            header, rows = _snapshot.read_rows(snap, self._keys, self.serializer, progress=progress)
            base = header.last_seq
        except FileNotFoundError:
            pass
        except UnsupportedFormatError as exc:
            self._warn(warnings, f"{exc}; starting cold", logging.ERROR)
            return LoadResult([], 0, 0, 0, 0, warnings, time.perf_counter() - t0)
        except TamperedStateError as exc:
            self._bad_snapshot(warnings, exc, snap)
        except _snapshot.UndecodableSnapshotError as exc:
            self._warn(warnings, f"{exc}; left in place, loading the WAL only", logging.ERROR)
        except StateFileError as exc:
            self._bad_snapshot(warnings, exc, snap)
        replayer = _wal.Replayer(rows)
        reader = _wal.WalReader(self.state_dir, self._keys, base)
        frames = iter(reader)
        replayed = 0
        for frame in frames:
            try:
                records = _columns.decode(self.serializer.loads(frame.payload), frame.count)
                skip = (base or 0) - frame.first_seq + 1  # only the first frame can straddle
                if skip > 0:
                    records = islice(records, skip, None)
                replayer.apply(records, frame.time_offset)
            except Exception as exc:
                frames.close()  # type: ignore[attr-defined]
                reader.fail(
                    frame,
                    f"records {frame.first_seq}.. cannot be decoded "
                    f"({type(exc).__name__}: {exc}); replay stopped there",
                )
                break
            replayed += frame.count
        for dmg in [*reader.tolerated, *([reader.damage] if reader.damage else [])]:
            level = logging.WARNING if dmg.kind == "torn" else logging.ERROR
            self._warn(warnings, dmg.message, level)
        with self._mutex:
            if self.is_writer and self._seg_fd is None and reader.damage:
                notes: list[str] = []
                self._rejected += _wal.repair(reader, notes)
                self._reset_counters(reader, base)
        now = self._clock()
        all_rows = replayer.rows()
        new = tuple.__new__  # StoredEntry._make minus a Python-level call per entry
        try:
            entries = [new(StoredEntry, r) for r in all_rows if r[2] is None or r[2] > now]
            if entries and len(entries[0]) != len(StoredEntry._fields):
                raise ValueError(f"rows have {len(entries[0])} fields")
        except (TypeError, ValueError, IndexError) as exc:
            self._warn(warnings, f"{snap.name}: malformed rows ({exc}); starting cold")
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

    def _bad_snapshot(self, warnings: list[str], exc: Exception, snap: Path) -> None:
        if self.is_writer:
            self._reject(snap)
            self._warn(warnings, f"{exc}; moved aside as {snap.name}.rejected", logging.ERROR)
        else:
            self._warn(warnings, f"{exc}; ignored (the writer moves it aside)", logging.ERROR)

    def _warn(self, warnings: list[str], message: str, level: int = logging.WARNING) -> None:
        warnings.append(message)
        logger.log(level, "cacheplug state %s: %s", self.state_dir, message)

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
        ``writev`` (and at most one fsync), in frames of up to 4,096 records.

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
            if self._lock_fd is None:
                self._dropped += count
                return 0
            if not count:
                return self._next_seq - 1
            ops = fields[: count * RECORD_FIELDS : RECORD_FIELDS]
            if ops.count("set") != count:  # list.count runs at C speed: the usual case
                if not _OPS.issuperset(ops):
                    bad = next(op for op in ops if op not in _OPS)
                    raise ValueError(f"unknown record op {bad!r}; expected one of {sorted(_OPS)}")
                if "touch" in ops:  # replay ignores a touch's value: do not encode it
                    for i, op in enumerate(ops):
                        if op == "touch":
                            fields[i * RECORD_FIELDS + 2] = None
            first = seq = self._next_seq
            parts: list[bytes] = []
            for start in range(0, count, _wal.FRAME_ROWS):
                payload, n = _columns.encode(
                    fields,
                    start,
                    min(start + _wal.FRAME_ROWS, count),
                    self.serializer,
                    dumps_atoms=self._dumps_atoms,
                    on_error=self._note_unpicklable,
                    fallback=_as_delete,
                )
                if n:
                    parts.extend(_wal.frame_parts(payload, seq, n, self._keys, time_offset))
                    seq += n
            if seq == first:
                return first - 1
            fd = self._segment_fd()
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                size = write_parts(fd, parts)
            except OSError:
                # Do not leave a torn frame that later frames would sit behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
            self._next_seq = seq
            self._wal_bytes += size
            self._wal_records += seq - first
            if self.fsync == "always" or (
                self.fsync == "everysec" and self._timer() - self._last_fsync_at >= self._interval
            ):
                self._sync()
            return seq - 1

    def _note_unpicklable(self, key: object, exc: Exception) -> None:
        self._unpicklable += 1
        prefix = key_prefix(key)
        if prefix in self._warned_prefixes or len(self._warned_prefixes) >= _MAX_WARNED_PREFIXES:
            return
        self._warned_prefixes.add(prefix)
        logger.warning(
            "cacheplug cannot persist the value of %r (%s: %s); it stays in memory only. "
            "Further unpersistable values under prefix %r are counted, not logged",
            key,
            type(exc).__name__,
            exc,
            prefix,
        )

    def _segment_fd(self) -> int:
        if self._seg_fd is None:
            self._open_segment(self._next_seq)
        assert self._seg_fd is not None
        return self._seg_fd

    def _open_segment(self, first: int) -> None:
        path = self.state_dir / _wal.segment_name(first)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        if path.exists():  # an empty segment made by compaction; repair vetted it
            self._seg_fd = os.open(path, flags)
        else:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, _wal.segment_header(first, self._keys))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            fsync_dir(self.state_dir)
            self._seg_fd = fd
            self._wal_segments += 1
            self._wal_bytes += _wal.SEGMENT_HEADER_SIZE
        self._seg_first = first

    def _sync(self) -> None:
        if self._seg_fd is not None and self._last_fsync_seq < self._next_seq - 1:
            _fdatasync(self._seg_fd)
        self._last_fsync_seq = self._next_seq - 1
        self._last_fsync_at = self._timer()

    def sync_if_due(self) -> None:
        """Under ``"everysec"``, fsync the log if the interval has passed since the last."""
        with self._mutex:
            if (
                not self._closed
                and self.fsync == "everysec"
                and self._timer() - self._last_fsync_at >= self._interval
            ):
                self._sync()

    def flush(self) -> None:
        """Fsync the log now, whatever the policy."""
        with self._mutex:
            if not self._closed:
                self._sync()

    # -- snapshot and compaction -----------------------------------------------------

    @property
    def needs_compaction(self) -> bool:
        """Whether the WAL has grown past ``wal_max_bytes`` (time for a snapshot)."""
        return self.is_writer and self._wal_bytes > self.wal_max_bytes

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
            path = self.state_dir / SNAPSHOT_NAME
            if self._lock_fd is None:
                return SnapshotInfo(False, str(path), 0, 0, 0, 0, 0.0, 0)
            last = self._next_seq - 1
            self._rotate(last + 1)
            now = self._clock()
            seen = [0]
            with _gc_paused():
                size, written = _snapshot.write_snapshot_file(
                    path,
                    self._encode_chunks(entries, seen),
                    last_seq=last,
                    created_at=now,
                    keys=self._keys,
                )
            skipped = seen[0] - written
            removed = 0
            for first, seg in _wal.list_segments(self.state_dir):
                if first <= last:
                    seg.unlink()
                    removed += 1
            if removed:
                fsync_dir(self.state_dir)
            self._wal_segments = len(_wal.list_segments(self.state_dir))
            self._wal_bytes = _wal.SEGMENT_HEADER_SIZE
            self._wal_records = 0
            self._snapshots += 1
            self._last_snapshot_at = now
            return SnapshotInfo(
                True, str(path), last, written, skipped, size, time.perf_counter() - t0, removed
            )

    def _encode_chunks(
        self, entries: Iterable[StoredEntry | tuple[Any, ...]], seen: list[int]
    ) -> Iterator[tuple[bytes, int]]:
        """Serialize *entries* a chunk at a time; count every entry taken in ``seen[0]``."""
        it = iter(entries)
        while True:
            rows = list(map(tuple, islice(it, CHUNK_ROWS)))
            if not rows:
                return
            seen[0] += len(rows)
            fast = self._dumps_atoms
            if fast is not None and ATOMS.issuperset(map(type, map(_value_of, rows))):
                try:
                    yield fast(rows), len(rows)
                    continue
                except Exception:
                    pass  # e.g. an unpicklable key: the normal path sorts it out
            payload, rows = dump_rows(
                self.serializer, rows, key_at=0, on_error=self._note_unpicklable
            )
            yield payload, len(rows)

    def _rotate(self, first: int) -> None:
        """Close the current segment and open an empty one starting at *first*."""
        if self._seg_fd is not None and self._seg_first == first:
            return
        self._close_segment()
        self._open_segment(first)

    def _close_segment(self) -> None:
        fd, self._seg_fd = self._seg_fd, None
        if fd is not None:
            try:
                if self._last_fsync_seq < self._next_seq - 1:
                    _fdatasync(fd)
                    self._last_fsync_seq = self._next_seq - 1
            finally:
                os.close(fd)

    # -- lifecycle -------------------------------------------------------------------

    def stats(self) -> PersistenceStats:
        """Return a snapshot of the store's counters."""
        with self._mutex:
            return PersistenceStats(
                is_writer=self._lock_fd is not None,
                read_only_reason=None if self._lock_fd is not None else self._read_only_reason,
                wal_bytes=self._wal_bytes,
                wal_records=self._wal_records,
                wal_segments=self._wal_segments,
                last_seq=self._next_seq - 1,
                last_fsync_seq=self._last_fsync_seq,
                snapshots_written=self._snapshots,
                last_snapshot_at=self._last_snapshot_at,
                unpicklable=self._unpicklable,
                dropped_records=self._dropped,
                rejected_files=self._rejected,
            )

    def close(self) -> None:
        """Fsync and close the log, release the writer lock. Safe to call twice."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._read_only_reason = "closed"
            try:
                self._close_segment()
            finally:
                self._release_lock()

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
