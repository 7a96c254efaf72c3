"""The snapshot file: a signed header, then signed chunks of rows, written atomically.

Layout (format version 2, little-endian)::

    header      76 bytes  magic "CPSNAP\\r\\n", format version u16, reserved u16,
                          created_at f64 (wall clock), last_seq u64, count u64,
                          body_len u64, chunks u32, reserved u32, key_id 8 bytes,
                          nonce 16 bytes (random per file)
    header mac  32 bytes  HMAC-SHA256(snapshot key, header)
    chunk       8 bytes   payload_len u32, rows u32
                payload   serializer.dumps([(key, value, expires_at, tags, version), ...])
                32 bytes  HMAC-SHA256(snapshot key, nonce + index u64 + the 8 bytes + payload)

The header is verified first; its ``body_len`` must match the file size, so a
truncated file is refused before any byte is decoded. Each chunk is verified before
its payload reaches the serializer; the nonce and index in its MAC pin it to this
file and this position, and the header's ``chunks``/``count`` pin how many there are.
Chunks keep every ``dumps``/``loads`` small (pickle's memo gets slow past ~10^5
objects), bound the memory a load needs, and give progress reports their steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cacheplug.serializers import (
    MAC_SIZE,
    Serializer,
    StateFileError,
    StateKeys,
    TamperedStateError,
    UnsupportedFormatError,
)

MAGIC = b"CPSNAP\r\n"
FORMAT_VERSION = 2
HEADER = struct.Struct("<8sHHdQQQII8s16s")
PREFIX_SIZE = HEADER.size + MAC_SIZE
CHUNK_HEAD = struct.Struct("<II")
CHUNK_OVERHEAD = CHUNK_HEAD.size + MAC_SIZE
_INDEX = struct.Struct("<Q")
#: rows per chunk: small enough that pickle's memo stays in cache (4k rows dump 4x
#: faster per row than 1M in one call), large enough that framing costs nothing
CHUNK_ROWS = 4096
SNAPSHOT_NAME = "snapshot.bin"
_CHUNK = 1 << 20

#: ``progress(done, total)``: entries decoded so far and the count in the header
Progress = Callable[[int, int], None]


class UndecodableSnapshotError(StateFileError):
    """An authentic snapshot the serializer cannot decode (e.g. a class was removed)."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """The fixed-size header of a snapshot file, as read (not yet authenticated)."""

    version: int
    created_at: float
    last_seq: int
    count: int
    body_len: int
    chunks: int
    key_id: bytes
    nonce: bytes
    raw: bytes


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory *path* durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of *data* to *fd* (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16, 1024)


def write_parts(fd: int, parts: list[bytes]) -> int:
    """Write the concatenation of *parts* to *fd* with ``writev``; return the bytes written.

    Saves joining (copying) the parts first; a short write finishes with :func:`write_all`.
    """
    total = 0
    for i in range(0, len(parts), _IOV_MAX):
        batch = parts[i : i + _IOV_MAX]
        want = sum(map(len, batch))
        done = os.writev(fd, batch)
        if done < want:
            write_all(fd, memoryview(b"".join(batch))[done:])
        total += want
    return total


def _chunk_mac(key: bytes, nonce: bytes, index: int, head: bytes, payload: bytes) -> bytes:
    mac = hmac.new(key, nonce + _INDEX.pack(index) + head, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def write_snapshot_file(
    path: Path,
    payloads: Iterable[tuple[bytes, int]],
    *,
    last_seq: int,
    created_at: float,
    keys: StateKeys,
) -> tuple[int, int]:
    """Atomically replace *path* with a signed snapshot; return ``(file size, entries)``.

    *payloads* yields ``(serialized chunk, rows in it)``; each is written as it comes,
    so only one chunk is in memory at a time. The header (which needs the totals) is
    written last, at offset 0. Temp file in the same directory, fsync, rename over
    *path*, fsync the directory: a crash leaves the old snapshot or the new one.
    """
    nonce = os.urandom(16)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    count = chunks = body_len = 0
    try:
        try:
            os.lseek(fd, PREFIX_SIZE, os.SEEK_SET)
            for payload, rows in payloads:
                if not rows:
                    continue
                head = CHUNK_HEAD.pack(len(payload), rows)
                mac = _chunk_mac(keys.snapshot, nonce, chunks, head, payload)
                write_parts(fd, [head, payload, mac])
                body_len += len(head) + len(payload) + MAC_SIZE
                count += rows
                chunks += 1
            header = HEADER.pack(
                MAGIC,
                FORMAT_VERSION,
                0,
                created_at,
                last_seq,
                count,
                body_len,
                chunks,
                0,
                keys.key_id,
                nonce,
            )
            prefix = header + hmac.new(keys.snapshot, header, hashlib.sha256).digest()
            if os.pwrite(fd, prefix, 0) != len(prefix):
                raise OSError(f"short write of the snapshot header to {tmp}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return PREFIX_SIZE + body_len, count


def read_header(f: BinaryIO, name: str) -> SnapshotHeader:
    """Parse the header at the start of *f* (not yet authenticated).

    :raises StateFileError: if it is short, lacks the magic bytes, or an older format
        version wrote it (the message names both versions).
    :raises UnsupportedFormatError: if a newer format version wrote it.
    """
    raw = f.read(HEADER.size)
    if raw[:8] != MAGIC:
        if len(raw) < len(MAGIC) and raw == MAGIC[: len(raw)]:
            raise StateFileError(f"{name}: truncated header ({len(raw)} of {HEADER.size} bytes)")
        raise StateFileError(f"{name}: not a cacheplug snapshot (magic bytes {raw[:8]!r})")
    if len(raw) >= 10:
        version = struct.unpack_from("<H", raw, 8)[0]
        if version > FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"{name} was written by snapshot format version {version}; this cacheplug "
                f"reads format version {FORMAT_VERSION}: upgrade cacheplug, or delete the "
                "file to start cold"
            )
        if version < FORMAT_VERSION:
            raise StateFileError(
                f"{name} was written by snapshot format version {version} (an older "
                f"cacheplug); this cacheplug reads format version {FORMAT_VERSION} only, so "
                "it is not loaded and the next snapshot replaces it"
            )
    if len(raw) < HEADER.size:
        raise StateFileError(f"{name}: truncated header ({len(raw)} of {HEADER.size} bytes)")
    _, version, _, created_at, last_seq, count, body_len, chunks, _, key_id, nonce = HEADER.unpack(
        raw
    )
    return SnapshotHeader(
        version, created_at, last_seq, count, body_len, chunks, key_id, nonce, raw
    )


def _open_verified(f: BinaryIO, keys: StateKeys, name: str) -> SnapshotHeader:
    """Read and authenticate the header; check the file size against it."""
    header = read_header(f, name)
    if not hmac.compare_digest(header.key_id, keys.key_id):
        raise TamperedStateError(
            f"{name} was signed with a different secret (key id {header.key_id.hex()}, "
            f"expected {keys.key_id.hex()}); it was not unpickled"
        )
    stored = f.read(MAC_SIZE)
    expected_mac = hmac.new(keys.snapshot, header.raw, hashlib.sha256).digest()
    if not hmac.compare_digest(expected_mac, stored):
        raise TamperedStateError(
            f"{name}: header HMAC mismatch, the file was altered or is corrupt; it was not "
            "unpickled"
        )
    size = os.fstat(f.fileno()).st_size
    expected = PREFIX_SIZE + header.body_len
    if size < expected:
        raise StateFileError(f"{name}: truncated ({size} bytes, the header announces {expected})")
    if size > expected:
        raise TamperedStateError(f"{name}: {size - expected} unexpected trailing bytes")
    return header


def _chunks(f: BinaryIO, header: SnapshotHeader, keys: StateKeys, name: str) -> Iterator[bytes]:
    """Yield each chunk's payload after its MAC verified; check the totals at the end."""
    offset = PREFIX_SIZE
    end = PREFIX_SIZE + header.body_len
    rows_total = 0
    for index in range(header.chunks):
        head = f.read(CHUNK_HEAD.size)
        if len(head) == CHUNK_HEAD.size:
            plen, rows = CHUNK_HEAD.unpack(head)
        else:
            plen, rows = end, 0  # forces the bounds check below to fail
        if offset + CHUNK_OVERHEAD + plen > end:
            raise TamperedStateError(
                f"{name}: chunk {index} at byte {offset} runs past the end of the body: "
                "HMAC mismatch, the file was altered or is corrupt; it was not unpickled"
            )
        payload = f.read(plen)
        mac = _chunk_mac(keys.snapshot, header.nonce, index, head, payload)
        if not hmac.compare_digest(mac, f.read(MAC_SIZE)):
            raise TamperedStateError(
                f"{name}: HMAC mismatch in chunk {index} at byte {offset}, the file was "
                "altered or is corrupt; it was not unpickled"
            )
        offset += CHUNK_OVERHEAD + plen
        rows_total += rows
        yield payload
    if offset != end or rows_total != header.count:
        raise TamperedStateError(
            f"{name}: the chunks hold {rows_total} entries in {offset - PREFIX_SIZE} bytes, "
            f"the header announces {header.count} in {header.body_len}: the file was altered"
        )


def verify(path: Path, keys: StateKeys) -> SnapshotHeader:
    """Authenticate the whole snapshot at *path* without decoding it; return its header.

    :raises FileNotFoundError: if there is no snapshot.
    :raises UnsupportedFormatError: for a newer format version.
    :raises TamperedStateError: for another secret's file or an HMAC mismatch.
    :raises StateFileError: for a foreign, truncated or older-format file.
    """
    with open(path, "rb", buffering=_CHUNK) as f:
        header = _open_verified(f, keys, path.name)
        for _ in _chunks(f, header, keys, path.name):
            pass
    return header


def read_rows(
    path: Path,
    keys: StateKeys,
    serializer: Serializer,
    *,
    progress: Progress | None = None,
) -> tuple[SnapshotHeader, list[Any]]:
    """Read, authenticate and decode the snapshot at *path*; return its header and rows.

    Rows come back oldest first. Each chunk is decoded right after its MAC verified, so
    no unauthenticated byte reaches the serializer; if a later chunk fails, everything
    decoded is dropped and the error raised. ``progress(done, total)`` is called after
    every chunk.

    :raises FileNotFoundError: if there is no snapshot.
    :raises UnsupportedFormatError: for a newer format version.
    :raises TamperedStateError: for another secret's file or an HMAC mismatch.
    :raises UndecodableSnapshotError: if the serializer cannot decode a chunk.
    :raises StateFileError: for a foreign, truncated or older-format file.
    """
    name = path.name
    rows: list[Any] = []
    with open(path, "rb", buffering=_CHUNK) as f:
        header = _open_verified(f, keys, name)
        if progress is not None:
            progress(0, header.count)
        for payload in _chunks(f, header, keys, name):
            rows.extend(decode_chunk(payload, serializer, name))
            if progress is not None:
                progress(len(rows), header.count)
    return header, rows


def decode_chunk(payload: bytes, serializer: Serializer, name: str) -> list[Any]:
    """Decode one authenticated chunk into its row tuples.

    :raises UndecodableSnapshotError: if the serializer cannot decode it.
    """
    try:
        rows = serializer.loads(payload)
    except Exception as exc:
        raise UndecodableSnapshotError(
            f"{name} is authentic but could not be decoded ({type(exc).__name__}: {exc}); "
            "was a pickled class renamed or removed?"
        ) from exc
    if not isinstance(rows, list):
        raise UndecodableSnapshotError(
            f"{name}: a chunk decodes to {type(rows).__name__}, not a list"
        )
    return rows
