"""``inspect_state``: a read-only report on a snapshot file or a state directory.

It never modifies a file, and never decodes a byte whose HMAC it could not verify.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cacheplug import _snapshot, _wal
from cacheplug._snapshot import Progress
from cacheplug.serializers import (
    PickleSerializer,
    Serializer,
    StateFileError,
    TamperedStateError,
    derive_keys,
)

_BUCKETS = (("<1m", 60.0), ("<1h", 3600.0), ("<1d", 86400.0), ("<7d", 7 * 86400.0))


@dataclass(slots=True)
class InspectReport:
    """What :func:`inspect_state` found; :meth:`format` renders it for a terminal."""

    path: str
    #: "snapshot", "state_dir", "missing" or "foreign"
    kind: str
    #: True when every file present verified and decoded
    ok: bool = True
    #: "ok", "tampered", "other secret", "unchecked (no secret)", "absent" or "unreadable"
    signature: str = "absent"
    header: dict[str, Any] | None = None
    bytes: int = 0
    entry_count: int | None = None
    expiry_histogram: dict[str, int] = field(default_factory=dict)
    top_prefixes: list[tuple[str, int]] = field(default_factory=list)
    matching_keys: list[str] = field(default_factory=list)
    wal: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)

    def format(self) -> str:
        """Render the report as plain text, one fact per line."""
        lines = [f"{self.path}: {self.kind}, signature {self.signature}"]
        if self.header:
            h = self.header
            lines.append(
                f"  format v{h['version']}, created {h['created']}, covers seq "
                f"{h['last_seq']}, {h['count']} entries in {h['chunks']} chunk(s), "
                f"{self.bytes} bytes, key id {h['key_id']}"
            )
        if self.entry_count is not None:
            lines.append(f"  entries decoded: {self.entry_count}")
            hist = ", ".join(f"{k} {v}" for k, v in self.expiry_histogram.items())
            lines.append(f"  expiry: {hist}")
            if self.top_prefixes:
                top = ", ".join(f"{p} {n}" for p, n in self.top_prefixes)
                lines.append(f"  top key prefixes: {top}")
        if self.matching_keys:
            lines.append(f"  matching keys ({len(self.matching_keys)} shown):")
            lines.extend(f"    {k}" for k in self.matching_keys)
        if self.wal is not None:
            w = self.wal
            lines.append(
                f"  WAL: {w['segments']} segment(s), {w['bytes']} bytes, {w['records']} "
                f"record(s) after the snapshot, last seq {w['last_seq']}"
            )
        lines.extend(f"  ! {m}" for m in self.messages)
        return "\n".join(lines)


def inspect_state(
    path: str | os.PathLike[str],
    *,
    secret: str | bytes | None = None,
    pattern: str | None = None,
    limit: int = 20,
    serializer: Serializer | None = None,
    clock: Callable[[], float] = time.time,
    progress: Progress | None = None,
) -> InspectReport:
    """Describe a snapshot file or a state directory without changing anything.

    Entries are decoded only when the snapshot's HMAC verifies under *secret* (default
    ``$CACHEPLUG_SECRET``); without a secret only the header is shown.

    :param path: a snapshot file, or a state directory (snapshot + WAL).
    :param pattern: a glob (``fnmatch``) matched against ``str(key)``; matches listed.
    :param limit: the most prefixes and matching keys to list.
    :param progress: called as ``progress(done, total)`` while snapshot entries are
        decoded (see :class:`cacheplug._progress.TerminalProgress`).
    """
    target = Path(path)
    secret = secret or os.environ.get("CACHEPLUG_SECRET")
    keys = derive_keys(secret) if secret else None
    if target.is_dir():
        report = InspectReport(str(target), "state_dir")
        snap = target / _snapshot.SNAPSHOT_NAME
    elif target.exists():
        report = InspectReport(str(target), "snapshot")
        snap = target
    else:
        return InspectReport(
            str(target), "missing", ok=False, messages=[f"{target} does not exist"]
        )
    base = _inspect_snapshot(report, snap, keys, pattern, limit, serializer, clock, progress)
    if report.kind == "state_dir" and keys is not None:
        reader = _wal.WalReader(target, keys, base)
        for _ in reader:
            pass
        report.wal = {
            "segments": reader.segments,
            "bytes": reader.wal_bytes,
            "records": reader.last_seq - (base or 0) if reader.last_seq else 0,
            "last_seq": reader.last_seq,
        }
        for dmg in [*reader.tolerated, *([reader.damage] if reader.damage else [])]:
            report.messages.append(dmg.message)
            report.ok = report.ok and dmg.tolerated
    elif report.kind == "state_dir":
        segs = _wal.list_segments(target)
        report.wal = {
            "segments": len(segs),
            "bytes": sum(p.stat().st_size for _, p in segs),
            "records": "?",
            "last_seq": "?",
        }
    return report


def _inspect_snapshot(
    report: InspectReport,
    snap: Path,
    keys: Any,
    pattern: str | None,
    limit: int,
    serializer: Serializer | None,
    clock: Callable[[], float],
    progress: Progress | None,
) -> int | None:
    """Fill the snapshot part of *report*; return its last seq if it verified."""
    if not snap.exists():
        report.messages.append(f"no snapshot ({snap.name}) yet")
        return None
    report.bytes = snap.stat().st_size
    try:
        with open(snap, "rb") as f:
            header = _snapshot.read_header(f, snap.name)
    except StateFileError as exc:  # foreign, truncated or newer: nothing to decode
        report.kind = "foreign" if "not a cacheplug" in str(exc) else report.kind
        report.ok = False
        report.signature = "unreadable"
        report.messages.append(str(exc))
        return None
    report.header = {
        "version": header.version,
        "created": datetime.fromtimestamp(header.created_at, UTC).isoformat(timespec="seconds"),
        "last_seq": header.last_seq,
        "count": header.count,
        "body_len": header.body_len,
        "chunks": header.chunks,
        "key_id": header.key_id.hex(),
    }
    if keys is None:
        report.signature = "unchecked (no secret)"
        report.messages.append(
            "signature not checked and entries not decoded: pass secret=... or set CACHEPLUG_SECRET"
        )
        return None
    try:
        _, rows = _snapshot.read_rows(
            snap, keys, serializer or PickleSerializer(), progress=progress
        )
    except TamperedStateError as exc:
        report.ok = False
        report.signature = "other secret" if "different secret" in str(exc) else "tampered"
        report.messages.append(str(exc))
        return None
    except StateFileError as exc:
        report.ok = False
        report.signature = (
            "ok" if isinstance(exc, _snapshot.UndecodableSnapshotError) else ("tampered")
        )
        report.messages.append(str(exc))
        return None
    report.signature = "ok"
    _summarize(report, rows, pattern, limit, clock())
    return header.last_seq


def _summarize(
    report: InspectReport, rows: list[Any], pattern: str | None, limit: int, now: float
) -> None:
    hist = dict.fromkeys(("expired", *(b for b, _ in _BUCKETS), ">=7d", "never"), 0)
    prefixes: Counter[str] = Counter()
    matches: list[str] = []
    for key, _value, expires_at, _tags, _version in rows:
        if expires_at is None:
            hist["never"] += 1
        else:
            left = expires_at - now
            bucket = "expired" if left <= 0 else next((b for b, s in _BUCKETS if left < s), ">=7d")
            hist[bucket] += 1
        text = str(key)
        prefixes[text.partition(":")[0] if isinstance(key, str) else f"<{type(key).__name__}>"] += 1
        if pattern is not None and len(matches) < limit and fnmatch.fnmatchcase(text, pattern):
            matches.append(text)
    report.entry_count = len(rows)
    report.expiry_histogram = hist
    report.top_prefixes = prefixes.most_common(limit)
    report.matching_keys = matches
