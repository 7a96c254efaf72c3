"""The snapshot file: one signed header + body, written atomically.

Layout (little-endian)::

    header  52 bytes  magic "CPSNAP\\r\\n", format version u16, reserved u16,
                      created_at f64 (wall clock), last_seq u64, count u64,
                      body_len u64, key_id 8 bytes
    body    body_len  serializer.dumps([(key, value, expires_at, tags, version), ...])
    mac     32 bytes  HMAC-SHA256(snapshot key, header + body)

The reader streams header and body through the HMAC and compares with
:func:`hmac.compare_digest` before a single byte reaches the serializer.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct
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
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHHdQQQ8s")
SNAPSHOT_NAME = "snapshot.bin"
_CHUNK = 1 << 20


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
    key_id: bytes


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


def write_snapshot_file(
    path: Path,
    body: bytes,
    *,
    count: int,
    last_seq: int,
    created_at: float,
    keys: StateKeys,
) -> int:
    """Atomically replace *path* with a signed snapshot of *body*; return its size.

    Temp file in the same directory, fsync, rename over *path*, fsync the directory: a
    crash leaves either the old snapshot or the new one, never a mix.
    """
    header = HEADER.pack(
        MAGIC, FORMAT_VERSION, 0, created_at, last_seq, count, len(body), keys.key_id
    )
    mac = hmac.new(keys.snapshot, header, hashlib.sha256)
    mac.update(body)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            write_all(fd, header)
            write_all(fd, body)
            write_all(fd, mac.digest())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return HEADER.size + len(body) + MAC_SIZE


def read_header(f: BinaryIO, name: str) -> SnapshotHeader:
    """Parse the header at the start of *f*.

    :raises StateFileError: if it is short or lacks the magic bytes.
    :raises UnsupportedFormatError: if a newer format version wrote it.
    """
    raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise StateFileError(f"{name}: truncated header ({len(raw)} of {HEADER.size} bytes)")
    magic, version, _, created_at, last_seq, count, body_len, key_id = HEADER.unpack(raw)
    if magic != MAGIC:
        raise StateFileError(f"{name}: not a cacheplug snapshot (magic bytes {magic!r})")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{name} was written by snapshot format version {version}; this cacheplug "
            f"reads format version {FORMAT_VERSION}: upgrade cacheplug, or delete the file "
            "to start cold"
        )
    return SnapshotHeader(version, created_at, last_seq, count, body_len, key_id)


def _check_key(header: SnapshotHeader, keys: StateKeys, name: str) -> None:
    if not hmac.compare_digest(header.key_id, keys.key_id):
        raise TamperedStateError(
            f"{name} was signed with a different secret (key id {header.key_id.hex()}, "
            f"expected {keys.key_id.hex()}); it was not unpickled"
        )


def read_verified(
    path: Path, keys: StateKeys, *, keep_body: bool = True
) -> tuple[SnapshotHeader, bytes]:
    """Read the snapshot at *path* and verify its HMAC; return the header and body bytes.

    With ``keep_body=False`` the body is streamed through the HMAC in chunks and
    ``b""`` is returned (a cheap integrity check).

    :raises FileNotFoundError: if there is no snapshot.
    :raises UnsupportedFormatError: for a newer format version.
    :raises TamperedStateError: for another secret's file or an HMAC mismatch.
    :raises StateFileError: for a foreign or truncated file.
    """
    name = path.name
    with open(path, "rb") as f:
        header = read_header(f, name)
        _check_key(header, keys, name)
        raw_header = HEADER.pack(
            MAGIC,
            header.version,
            0,
            header.created_at,
            header.last_seq,
            header.count,
            header.body_len,
            header.key_id,
        )
        size = os.fstat(f.fileno()).st_size
        expected = HEADER.size + header.body_len + MAC_SIZE
        if size < expected:
            raise StateFileError(
                f"{name}: truncated ({size} bytes, the header announces {expected})"
            )
        if size > expected:
            raise TamperedStateError(f"{name}: {size - expected} unexpected trailing bytes")
        mac = hmac.new(keys.snapshot, raw_header, hashlib.sha256)
        if keep_body:
            body = f.read(header.body_len)
            mac.update(body)
        else:
            body = b""
            left = header.body_len
            while left:
                chunk = f.read(min(left, _CHUNK))
                if not chunk:
                    break
                mac.update(chunk)
                left -= len(chunk)
        stored = f.read(MAC_SIZE)
    if not hmac.compare_digest(mac.digest(), stored):
        raise TamperedStateError(
            f"{name}: HMAC mismatch, the file was altered or is corrupt; it was not unpickled"
        )
    return header, body


def load_rows(body: bytes, serializer: Serializer, name: str) -> list[Any]:
    """Decode an authenticated snapshot body into its row tuples.

    :raises UndecodableSnapshotError: if the serializer cannot decode it.
    """
    try:
        rows = serializer.loads(body)
    except Exception as exc:
        raise UndecodableSnapshotError(
            f"{name} is authentic but could not be decoded ({type(exc).__name__}: {exc}); "
            "was a pickled class renamed or removed?"
        ) from exc
    if not isinstance(rows, list):
        raise UndecodableSnapshotError(f"{name}: body decodes to {type(rows).__name__}, not a list")
    return rows
