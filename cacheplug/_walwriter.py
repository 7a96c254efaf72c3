"""The write end of the write-ahead log: frame records, append them, fsync, rotate.

:class:`WalWriter` holds the open segment and the log's sequence and size counters.
:class:`~cacheplug.persistence.StateStore` owns one, validates batches, and calls it
under its lock only while it holds the writer lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cacheplug import _columns, _wal
from cacheplug._snapshot import fsync_dir, write_all, write_parts
from cacheplug.serializers import Serializer, StateKeys

__all__ = ("WalWriter", "key_prefix")

# The persistence logger, which users filter on: the log is part of the store.
logger = logging.getLogger("cacheplug.persistence")

_MAX_WARNED_PREFIXES = 1024
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _as_delete(row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Log an unsaveable ``set`` as a delete, so an older saved value cannot come back."""
    return ("delete", row[1], None, None, (), row[5]) if row[0] == "set" else None


def key_prefix(key: object) -> str:
    """Return the text before the first ``:`` of a str key, else the key's type name."""
    if isinstance(key, str):
        return key.partition(":")[0]
    return f"<{type(key).__name__}>"


class WalWriter:
    """Appends signed frames to the current WAL segment and fsyncs per the policy.

    Not thread-safe: the owning store calls it under its own lock. The counters are
    plain attributes the store reads for its stats and resets after recovery and
    compaction.

    :param state_dir: the directory of the segments.
    :param keys: the signing keys.
    :param serializer: the batch codec.
    :param dumps_atoms: the memo-free encoder for batches of plain atoms, or None.
    :param fsync: ``"always"``, ``"everysec"`` or ``"never"``.
    :param interval: the ``"everysec"`` period in seconds.
    :param timer: the monotonic clock that paces ``"everysec"``.
    """

    def __init__(
        self,
        state_dir: Path,
        keys: StateKeys,
        serializer: Serializer,
        dumps_atoms: Callable[[Any], bytes] | None,
        fsync: str,
        interval: float,
        timer: Callable[[], float],
    ) -> None:
        self._state_dir = state_dir
        self._keys = keys
        self._serializer = serializer
        self._dumps_atoms = dumps_atoms
        self._fsync = fsync
        self._interval = interval
        self._timer = timer
        #: the open segment's file descriptor (None until the first append) and first seq
        self.fd: int | None = None
        #: the open segment's size (None: unknown), where a failed write truncates back to
        self._end: int | None = 0
        self.first = 0
        self.next_seq = 1
        self.last_fsync_seq = 0
        self.last_fsync_at = timer()
        self.bytes = 0
        self.records = 0
        self.segments = 0
        self.unpicklable = 0
        self._warned_prefixes: set[str] = set()

    def reset(self, reader: _wal.WalReader, base: int | None) -> None:
        """Continue after what *reader* read of the log (over a snapshot up to *base*)."""
        segs = _wal.list_segments(self._state_dir)
        self.next_seq = max(base or 0, reader.last_seq) + 1
        self.last_fsync_seq = self.next_seq - 1
        self.segments = len(segs)
        self.bytes = sum(p.stat().st_size for _, p in segs)
        self.records = reader.records

    def write(self, fields: list[Any], count: int, time_offset: float) -> int:
        """Log the first *count* records of *fields* (validated by the caller).

        :returns: the sequence number of the last record in the log.
        :raises OSError: if the disk write fails (the segment is truncated back).
        """
        first = seq = self.next_seq
        parts: list[bytes] = []
        start = 0
        big_frames = self._dumps_atoms is not None
        while start < count:
            # Plain-atom records go out in big frames: each frame costs an HMAC, and
            # hashlib releases the GIL for it, after which this thread waits a whole
            # switch interval (5 ms) to get it back while the writers fill the buffer.
            if big_frames:
                stop = min(start + _wal.ATOM_FRAME_ROWS, count)
                payload = _columns.encode_atoms(fields, start, stop, self._dumps_atoms)
                if payload is not None and len(payload) <= _wal.MAX_ATOM_FRAME_BYTES:
                    parts.extend(
                        _wal.frame_parts(payload, seq, stop - start, self._keys, time_offset)
                    )
                    seq += stop - start
                    start = stop
                    continue
                big_frames = False  # not all atoms, or too big: do not try again per frame
            stop = min(start + _wal.FRAME_ROWS, count)
            payload, n = _columns.encode(
                fields,
                start,
                stop,
                self._serializer,
                dumps_atoms=self._dumps_atoms,
                on_error=self.note_unpicklable,
                fallback=_as_delete,
            )
            if n:
                parts.extend(_wal.frame_parts(payload, seq, n, self._keys, time_offset))
                seq += n
            start = stop
        if seq == first:
            return first - 1
        fd = self.fd
        if fd is None:
            fd = self._open(self.next_seq)
        # Tracked, not asked for with lseek: every syscall releases the GIL, and getting
        # it back from busy writers takes this thread a switch interval.
        end = self._end
        if end is None:
            end = os.lseek(fd, 0, os.SEEK_END)
        try:
            size = write_parts(fd, parts)
        except OSError:
            # Do not leave a torn frame that later frames would sit behind.
            try:
                os.ftruncate(fd, end)
                self._end = end
            except OSError:
                self._end = None  # the size is unknown now: ask the file next time
            raise
        self._end = end + size
        self.next_seq = seq
        self.bytes += size
        self.records += seq - first
        if self._fsync == "always" or (
            self._fsync == "everysec" and self._timer() - self.last_fsync_at >= self._interval
        ):
            self.sync()
        return seq - 1

    def note_unpicklable(self, key: object, exc: Exception) -> None:
        """Count a value that cannot be serialized; warn once per key prefix."""
        self.unpicklable += 1
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

    def sync_due(self) -> bool:
        """Whether ``"everysec"`` asks for an fsync now."""
        return self._fsync == "everysec" and self._timer() - self.last_fsync_at >= self._interval

    def sync(self) -> None:
        """Fsync the records appended since the last fsync."""
        if self.fd is not None and self.last_fsync_seq < self.next_seq - 1:
            _fdatasync(self.fd)
        self.last_fsync_seq = self.next_seq - 1
        self.last_fsync_at = self._timer()

    def rotate(self, first: int) -> None:
        """Close the current segment and open an empty one starting at *first*."""
        if self.fd is not None and self.first == first:
            return
        self.close()
        self._open(first)

    def close(self) -> None:
        """Fsync what is pending and close the segment; a no-op when none is open."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                if self.last_fsync_seq < self.next_seq - 1:
                    _fdatasync(fd)
                    self.last_fsync_seq = self.next_seq - 1
            finally:
                os.close(fd)

    def _open(self, first: int) -> int:
        path = self._state_dir / _wal.segment_name(first)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        if path.exists():  # an empty segment made by compaction; repair vetted it
            fd = os.open(path, flags)
        else:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, _wal.segment_header(first, self._keys))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            fsync_dir(self._state_dir)
            self.segments += 1
            self.bytes += _wal.SEGMENT_HEADER_SIZE
        self._end = os.lseek(fd, 0, os.SEEK_END)  # where the next frame goes
        self.fd = fd
        self.first = first
        return fd
