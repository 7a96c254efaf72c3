"""Write-ahead-log segments: signed framing, the ordered reader, and repair.

A segment ``wal-<first_seq:020d>.log`` is a header followed by frames (little-endian)::

    header  28 bytes  magic "CPWAL\\r\\n\\0", format version u16, reserved u16,
                      first_seq u64, key_id 8 bytes
            32 bytes  HMAC-SHA256(wal key, header)
    frame   24 bytes  payload_len u32, first_seq u64, count u32, time_offset f64
            payload   serializer.dumps((ops, keys, values, expiries, tags, versions))
            32 bytes  HMAC-SHA256(wal key, frame header + payload)

The payload holds the records as six columns (see :mod:`cacheplug._columns`). An
appended batch is written as one or more frames: up to ``ATOM_FRAME_ROWS`` records each
when the pickle serializer has only plain atoms to encode, else up to ``FRAME_ROWS``.
The reader takes frames of any size. A frame's records carry the sequence numbers
``first_seq .. first_seq + count - 1``.
A record's wall-clock expiry is ``expires_at + time_offset``: the runtime logs its
monotonic expiry times as they are and converts the whole batch with one offset. A
frame is the unit of integrity: a torn or altered frame is dropped whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cacheplug._snapshot import fsync_dir
from cacheplug.serializers import MAC_SIZE, StateKeys

MAGIC = b"CPWAL\r\n\x00"
FORMAT_VERSION = 2
SEGMENT_HEADER = struct.Struct("<8sHHQ8s")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size + MAC_SIZE
FRAME_HEADER = struct.Struct("<IQId")
FRAME_OVERHEAD = FRAME_HEADER.size + MAC_SIZE
#: records per frame: keeps each ``dumps`` small (pickle's memo slows down as it grows)
FRAME_ROWS = 4096
#: records per frame when every value is a plain atom (encoded without the memo, so big
#: frames cost nothing more per record), unless the payload passes MAX_ATOM_FRAME_BYTES
ATOM_FRAME_ROWS = 1 << 16
MAX_ATOM_FRAME_BYTES = 64 << 20
_INF = float("inf")
_SEGMENT_RE = re.compile(r"wal-(\d{1,20})\.log")


def segment_name(first_seq: int) -> str:
    """Return the file name of the segment whose first record is *first_seq*."""
    return f"wal-{first_seq:020d}.log"


def list_segments(state_dir: Path) -> list[tuple[int, Path]]:
    """Return ``(first_seq, path)`` of every segment in *state_dir*, oldest first."""
    found = []
    for name in os.listdir(state_dir):
        m = _SEGMENT_RE.fullmatch(name)
        if m:
            found.append((int(m.group(1)), state_dir / name))
    found.sort()
    return found


def segment_header(first_seq: int, keys: StateKeys) -> bytes:
    """Return the signed header that opens a segment."""
    raw = SEGMENT_HEADER.pack(MAGIC, FORMAT_VERSION, 0, first_seq, keys.key_id)
    return raw + hmac.new(keys.wal, raw, hashlib.sha256).digest()


def frame_parts(
    payload: bytes, first_seq: int, count: int, keys: StateKeys, time_offset: float = 0.0
) -> tuple[bytes, bytes, bytes]:
    """Return the header, payload and MAC of one signed frame (to write with ``writev``)."""
    head = FRAME_HEADER.pack(len(payload), first_seq, count, time_offset)
    mac = hmac.new(keys.wal, head, hashlib.sha256)
    mac.update(payload)
    return head, payload, mac.digest()


def encode_frame(
    payload: bytes, first_seq: int, count: int, keys: StateKeys, time_offset: float = 0.0
) -> bytes:
    """Return one signed frame holding *count* records that start at *first_seq*."""
    return b"".join(frame_parts(payload, first_seq, count, keys, time_offset))


def segment_version(path: Path) -> int | None:
    """Return the format version in a segment's header, or None if it has none."""
    try:
        with open(path, "rb") as f:
            raw = f.read(SEGMENT_HEADER.size)
    except OSError:
        return None
    if len(raw) < SEGMENT_HEADER.size or raw[:8] != MAGIC:
        return None
    return SEGMENT_HEADER.unpack(raw)[1]


@dataclass(frozen=True, slots=True)
class Frame:
    """One authenticated frame; ``payload`` is still serialized."""

    path: Path
    offset: int
    first_seq: int
    count: int
    payload: bytes
    #: add to a record's ``expires_at`` to get wall-clock time
    time_offset: float = 0.0


@dataclass(slots=True)
class Damage:
    """Where and why replay stopped (or, if ``tolerated``, skipped a torn tail)."""

    path: Path
    #: byte offset of the first bad byte; 0 means the whole segment is unusable
    offset: int
    #: "torn", "corrupt", "foreign", "newer", "older", "gap", "overlap" or "undecodable"
    kind: str
    message: str
    tolerated: bool = False


@dataclass(slots=True)
class WalReader:
    """Iterate the authenticated frames of the log in sequence order.

    Frames whose records are all ``<= base_seq`` (covered by the snapshot) are skipped;
    with ``base_seq=None`` (no usable snapshot) replay starts at the oldest segment. The
    first unusable frame stops the iteration and is recorded in :attr:`damage`; the only
    exception is a torn tail followed by a segment that starts exactly at the next
    sequence number (a crash followed by a new writer), which is skipped and recorded in
    :attr:`tolerated`.
    """

    state_dir: Path
    keys: StateKeys
    base_seq: int | None
    last_seq: int = 0
    damage: Damage | None = None
    tolerated: list[Damage] = field(default_factory=list)
    #: segments after the stop point, never read
    unread: list[Path] = field(default_factory=list)
    segments: int = 0
    wal_bytes: int = 0
    records: int = 0

    def __iter__(self) -> Iterator[Frame]:
        segs = list_segments(self.state_dir)
        base = self.base_seq
        self.last_seq = base or 0
        expected = None if base is None else base + 1
        read_any = False
        for i, (first, path) in enumerate(segs):
            if base is not None and i + 1 < len(segs) and segs[i + 1][0] <= base + 1:
                continue  # fully covered by the snapshot (compaction did not finish)
            if self.damage is not None:
                self.unread.append(path)
                continue
            if expected is not None and first > expected:
                self._stop(path, 0, "gap", f"records {expected}..{first - 1} are missing")
                self.unread.append(path)
                continue
            if read_any and expected is not None and first < expected:
                self._stop(path, 0, "overlap", f"starts at seq {first}, already replayed")
                self.unread.append(path)
                continue
            read_any = True
            torn = yield from self._read_segment(path, first)
            if self.damage is not None:
                continue
            if torn is not None:
                if i + 1 < len(segs) and segs[i + 1][0] == self.last_seq + 1:
                    torn.tolerated = True  # crash, then a new writer started a segment
                    self.tolerated.append(torn)
                else:
                    self.damage = torn
            expected = self.last_seq + 1

    def _stop(self, path: Path, offset: int, kind: str, detail: str) -> None:
        self.damage = Damage(path, offset, kind, f"{path.name}: {detail}")

    def _read_segment(self, path: Path, first: int) -> Iterator[Frame]:
        """Yield a segment's frames; return a torn-tail Damage, or set self.damage."""
        self.segments += 1
        try:
            f = open(path, "rb")  # noqa: SIM115 - a generator: closed in finally
        except FileNotFoundError:
            self._stop(path, 0, "gap", "segment vanished while reading")
            return None
        try:
            size = os.fstat(f.fileno()).st_size
            self.wal_bytes += size
            if not self._check_header(f, path, first, size):
                if self.damage is None:
                    return Damage(path, 0, "torn", f"{path.name}: torn segment header")
                return None
            cursor = first
            offset = SEGMENT_HEADER_SIZE
            try:
                while True:
                    head = f.read(FRAME_HEADER.size)
                    if not head:
                        return None
                    if len(head) < FRAME_HEADER.size:
                        return self._torn(path, offset, size)
                    plen, fseq, count, time_offset = FRAME_HEADER.unpack(head)
                    end = offset + FRAME_HEADER.size + plen + MAC_SIZE
                    if end > size:
                        return self._torn(path, offset, size)
                    payload = f.read(plen)
                    mac = hmac.new(self.keys.wal, head, hashlib.sha256)
                    mac.update(payload)
                    if not hmac.compare_digest(mac.digest(), f.read(MAC_SIZE)):
                        if end == size:
                            return self._torn(path, offset, size)
                        self._stop(
                            path,
                            offset,
                            "corrupt",
                            f"corrupt record at byte {offset} (seq {cursor}); replay "
                            f"stopped there, {size - offset} later bytes ignored",
                        )
                        return None
                    if fseq != cursor or count == 0:
                        self._stop(path, offset, "corrupt", f"frame seq {fseq}, expected {cursor}")
                        return None
                    cursor += count
                    self.records += count
                    if cursor - 1 > self.last_seq:
                        self.last_seq = cursor - 1
                        yield Frame(path, offset, fseq, count, payload, time_offset)
                    offset = end
            finally:
                self.last_seq = max(self.last_seq, cursor - 1)
        finally:
            f.close()

    def _torn(self, path: Path, offset: int, size: int) -> Damage:
        return Damage(
            path,
            offset,
            "torn",
            f"{path.name}: torn or corrupt final record at byte {offset} "
            f"({size - offset} bytes ignored)",
        )

    def _check_header(self, f: BinaryIO, path: Path, first: int, size: int) -> bool:
        """Validate a segment header; False with no damage set means a torn header."""
        raw = f.read(SEGMENT_HEADER.size)
        mac = f.read(MAC_SIZE)
        if size < SEGMENT_HEADER_SIZE and raw == MAGIC[: len(raw)]:
            return False  # crashed while creating the segment: nothing acknowledged in it
        if raw[:8] != MAGIC:
            self._stop(path, 0, "corrupt", "not a cacheplug WAL segment")
            return False
        _, version, _, hdr_first, key_id = SEGMENT_HEADER.unpack(raw)
        if version > FORMAT_VERSION:
            self._stop(
                path,
                0,
                "newer",
                f"written by WAL format version {version}; this cacheplug reads format "
                f"version {FORMAT_VERSION}: upgrade cacheplug",
            )
        elif version < FORMAT_VERSION:
            self._stop(
                path,
                0,
                "older",
                f"written by WAL format version {version} (an older cacheplug); this "
                f"cacheplug reads format version {FORMAT_VERSION} only, so its records are "
                "not replayed",
            )
        elif not hmac.compare_digest(key_id, self.keys.key_id):
            self._stop(
                path,
                0,
                "foreign",
                f"signed with a different secret (key id {key_id.hex()}, expected "
                f"{self.keys.key_id.hex()}); it was not unpickled",
            )
        elif hdr_first != first or not hmac.compare_digest(
            hmac.new(self.keys.wal, raw, hashlib.sha256).digest(), mac
        ):
            self._stop(path, 0, "corrupt", "segment header HMAC mismatch")
        return self.damage is None

    def fail(self, frame: Frame, detail: str) -> None:
        """Record that the caller could not use *frame*: replay stops before it."""
        self.damage = Damage(
            frame.path, frame.offset, "undecodable", f"{frame.path.name}: {detail}"
        )
        self.last_seq = frame.first_seq - 1
        later = [p for s, p in list_segments(self.state_dir) if p.name > frame.path.name]
        self.unread = later


def repair(reader: WalReader, log: list[str]) -> int:
    """Make the log on disk end exactly where *reader* stopped; return files set aside.

    Torn tails are truncated. A damaged segment is copied to ``<name>.rejected`` and
    then truncated at the damage (or renamed whole if its header is bad); every
    segment after the stop point is renamed ``<name>.rejected``. Each step is
    crash-safe: redoing it gives the same result. Call only while holding the writer
    lock.
    """
    rejected = 0
    for dmg in [*reader.tolerated, *([reader.damage] if reader.damage else [])]:
        if dmg.kind in ("gap", "overlap", "newer"):
            continue  # gap/overlap segments are in reader.unread; newer ones stay
        if not dmg.path.exists():
            continue
        if dmg.offset == 0 or dmg.kind == "foreign":
            if dmg.kind == "torn":
                dmg.path.unlink()
            else:
                os.replace(dmg.path, _rejected(dmg.path))
                rejected += 1
        else:
            if dmg.kind != "torn":
                shutil.copyfile(dmg.path, _rejected(dmg.path))
                rejected += 1
            with open(dmg.path, "r+b") as f:
                f.truncate(dmg.offset)
                os.fsync(f.fileno())
        log.append(f"repaired {dmg.path.name}: cut at byte {dmg.offset} ({dmg.kind})")
    for path in dict.fromkeys(reader.unread):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, _rejected(path))
            rejected += 1
    fsync_dir(reader.state_dir)
    return rejected


def _rejected(path: Path) -> Path:
    return path.with_name(path.name + ".rejected")


class Replayer:
    """Apply WAL records on top of snapshot rows, keeping recency order (dict order)."""

    __slots__ = ("_base", "_index", "_state")

    def __init__(self, rows: list[Any]) -> None:
        self._base = rows
        self._state: dict[Any, tuple[Any, ...]] | None = None
        self._index: dict[str, set[Any]] | None = None

    def rows(self) -> list[Any]:
        return self._base if self._state is None else list(self._state.values())

    def apply(self, records: Iterable[tuple[Any, ...]], time_offset: float = 0.0) -> None:
        """Apply ``(op, key, value, expires_at, tags, version)`` records in order.

        ``expires_at + time_offset`` is a record's wall-clock expiry (inf: never).
        """
        if self._state is None:
            # Built only when there is something to replay: a clean restart pays nothing.
            self._state = {row[0]: tuple(row) for row in self._base}
            self._base = []
        state = self._state
        index = self._index
        for op, key, value, expires_at, tags, version in records:
            if expires_at is not None:
                expires_at = None if expires_at == _INF else expires_at + time_offset
            if op == "set":
                state.pop(key, None)
                state[key] = (key, value, expires_at, tuple(tags), version)
                if index is not None:
                    for tag in tags:
                        index.setdefault(tag, set()).add(key)
            elif op == "delete":
                state.pop(key, None)
            elif op == "touch":
                row = state.get(key)
                if row is not None:  # same key: dict assignment keeps its position
                    state[key] = (key, row[1], expires_at, row[3], row[4])
            elif op == "invalidate_tags":
                if index is None:
                    index = self._index = {}
                    for k, row in state.items():
                        for tag in row[3]:
                            index.setdefault(tag, set()).add(k)
                for tag in tags:
                    for k in index.pop(tag, ()):
                        row = state.get(k)
                        if row is not None and tag in row[3]:
                            del state[k]
            elif op == "clear":
                state.clear()
                if index is not None:
                    index.clear()
            else:
                raise ValueError(f"unknown record op {op!r}")
