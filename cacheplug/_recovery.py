"""Recovery of a state directory: vet and repair it for a new writer, read it back.

:class:`StateFiles` reads the snapshot and replays the write-ahead log over it, moves
unusable files aside (``*.rejected``, a writer only) and reports every problem as a
warning instead of raising. :class:`~cacheplug.persistence.StateStore` owns one and
keeps the sequence counters and the lifecycle.
"""

from __future__ import annotations

import contextlib
import logging
import os
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from cacheplug import _columns, _snapshot, _wal
from cacheplug._snapshot import SNAPSHOT_NAME, Progress, fsync_dir
from cacheplug._statelock import WriterLock
from cacheplug.serializers import (
    Serializer,
    StateFileError,
    StateKeys,
    TamperedStateError,
    UnsupportedFormatError,
)

__all__ = ("Replayed", "StateFiles", "WriterCheck")

# The persistence logger, which users filter on: recovery is part of the store.
logger = logging.getLogger("cacheplug.persistence")


class WriterCheck(NamedTuple):
    """What :meth:`StateFiles.check_for_writer` found.

    ``reason`` is why the process must stay read-only (None: it may write); ``reader``
    has read the whole log when ``reason`` is None; ``base`` is the snapshot's last seq.
    """

    reason: str | None
    reader: _wal.WalReader | None
    base: int | None


class Replayed(NamedTuple):
    """The WAL replayed over the snapshot rows: the replayer, its reader, records applied."""

    replayer: _wal.Replayer
    reader: _wal.WalReader
    count: int


class StateFiles:
    """The snapshot and WAL segments of one state directory, as recovery sees them.

    Not thread-safe: the owning store serializes the calls that repair files.

    :param state_dir: the state directory.
    :param keys: the signing keys.
    :param serializer: the codec of snapshot chunks and WAL frames.
    :param lock: the store's writer lock; only its holder moves bad files aside.
    """

    def __init__(
        self, state_dir: Path, keys: StateKeys, serializer: Serializer, lock: WriterLock
    ) -> None:
        self.state_dir = state_dir
        self.snapshot = state_dir / SNAPSHOT_NAME
        self._keys = keys
        self._serializer = serializer
        self._lock = lock
        #: files moved aside as ``*.rejected`` so far
        self.rejected = 0

    def check_for_writer(self, notes: list[str]) -> WriterCheck:
        """Verify the files before this process writes; repair the log, note problems.

        A snapshot that fails verification is moved aside; torn or bad WAL tails are
        truncated or moved aside, so new records follow the recoverable ones. Files of a
        newer format make the process stay read-only (they are never overwritten).
        """
        snap = self.snapshot
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
            self.reject(snap)
            self.warn(notes, f"{exc}; moved aside as {snap.name}.rejected", logging.ERROR)
        if newer:
            names = ", ".join(p.name for p in newer)
            reason = (
                f"{names} written by a newer cacheplug format; this process will not "
                "overwrite them. Upgrade cacheplug, or delete them to persist again"
            )
            return WriterCheck(reason, None, base)
        reader = _wal.WalReader(self.state_dir, self._keys, base)
        for _ in reader:
            pass
        self.report_damage(reader, notes)
        if reader.damage or reader.tolerated:
            self.repair(reader, notes)
        return WriterCheck(None, reader, base)

    def read_snapshot(
        self, warnings: list[str], progress: Progress | None
    ) -> tuple[list[Any], int | None] | None:
        """Return the snapshot's rows and last seq (``[], None`` if absent or unusable).

        :returns: None when the snapshot has a newer format: the load starts cold.
        """
        snap = self.snapshot
        try:
            header, rows = _snapshot.read_rows(
                snap, self._keys, self._serializer, progress=progress
            )
            return rows, header.last_seq
        except FileNotFoundError:
            pass
        except UnsupportedFormatError as exc:
            self.warn(warnings, f"{exc}; starting cold", logging.ERROR)
            return None
        except TamperedStateError as exc:
            self._bad_snapshot(warnings, exc)
        except _snapshot.UndecodableSnapshotError as exc:
            self.warn(warnings, f"{exc}; left in place, loading the WAL only", logging.ERROR)
        except StateFileError as exc:
            self._bad_snapshot(warnings, exc)
        return [], None

    def replay(self, rows: list[Any], base: int | None, warnings: list[str]) -> Replayed:
        """Apply the WAL records after seq *base* to *rows*, in order; note any damage.

        Replay stops at the first frame that cannot be decoded (recorded as damage).
        """
        replayer = _wal.Replayer(rows)
        reader = _wal.WalReader(self.state_dir, self._keys, base)
        frames = iter(reader)
        replayed = 0
        for frame in frames:
            try:
                records = _columns.decode(self._serializer.loads(frame.payload), frame.count)
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
        self.report_damage(reader, warnings)
        return Replayed(replayer, reader, replayed)

    def repair(self, reader: _wal.WalReader, notes: list[str]) -> None:
        """Truncate torn tails and move bad segments aside, as *reader* found them."""
        self.rejected += _wal.repair(reader, notes)

    def report_damage(self, reader: _wal.WalReader, warnings: list[str]) -> None:
        """Warn about each problem *reader* met: a torn tail as a warning, else an error."""
        for dmg in [*reader.tolerated, *([reader.damage] if reader.damage else [])]:
            level = logging.WARNING if dmg.kind == "torn" else logging.ERROR
            self.warn(warnings, dmg.message, level)

    def reject(self, path: Path) -> None:
        """Rename *path* to ``*.rejected`` (if it still exists) and count it."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(path.name + ".rejected"))
            fsync_dir(self.state_dir)
            self.rejected += 1

    def warn(self, warnings: list[str], message: str, level: int = logging.WARNING) -> None:
        """Append *message* to *warnings* and log it."""
        warnings.append(message)
        logger.log(level, "cacheplug state %s: %s", self.state_dir, message)

    def _bad_snapshot(self, warnings: list[str], exc: Exception) -> None:
        snap = self.snapshot
        if self._lock.held:
            self.reject(snap)
            self.warn(warnings, f"{exc}; moved aside as {snap.name}.rejected", logging.ERROR)
        else:
            self.warn(warnings, f"{exc}; ignored (the writer moves it aside)", logging.ERROR)
