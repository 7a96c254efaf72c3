"""The dashboard's JSON document, built from a ``CachePlug`` at request time.

Everything here reads counters the core keeps anyway (``plug.stats()``, shard sizes and
evictions, a bounded random sample of keys), so serving the dashboard costs the cache
nothing between requests and O(shards + sample) per request.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Final

__all__ = (
    "PREFIX_SAMPLE",
    "build_payload",
    "key_prefix",
    "tier_status",
    "top_prefixes",
    "wal_lag_records",
)

#: Keys sampled per request to estimate the top key prefixes.
PREFIX_SAMPLE: Final = 1000
MAX_PREFIX_CHARS: Final = 64
_BREAKER_UP: Final = frozenset(("closed",))
_BREAKER_DOWN: Final = frozenset(("open", "half-open", "half_open", "half open"))


def key_prefix(key: Hashable) -> str:
    """The group a key belongs to on the dashboard.

    For a str key: the text up to and including the first ``:`` that ends a segment
    which is neither empty nor all digits, so ``"user:42"`` and ``":1:user:42"`` (Django's
    ``KEY_PREFIX:VERSION:key``) group as ``"user:"`` and ``":1:user:"``. A key starting
    with ``/`` groups by its path without the query (``"/products?page=2"`` ->
    ``"/products"``). Other keys group as ``"(no prefix)"``; a tuple by its first item;
    other types by their type name, such as ``"<int>"``.
    """
    if isinstance(key, tuple) and key:
        key = key[0]
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if not isinstance(key, str):
        return f"<{type(key).__name__}>"
    if key.startswith("/"):
        return key.partition("?")[0][:MAX_PREFIX_CHARS]
    first = key.find(":")
    if 0 < first < MAX_PREFIX_CHARS and not key[:first].isdigit():
        return key[: first + 1]  # the common "kind:id" case, without splitting the key
    parts = key.split(":")
    for i, part in enumerate(parts[:-1]):
        if part and not part.isdigit():
            return ":".join(parts[: i + 1])[: MAX_PREFIX_CHARS - 1] + ":"
    return "(no prefix)"


def top_prefixes(keys: Iterable[Hashable], entries: int, top: int = 10) -> list[dict[str, Any]]:
    """Rank the prefixes of a key sample; ``estimated_entries`` scales shares to ``entries``."""
    counts = Counter(key_prefix(key) for key in keys)
    total = sum(counts.values())
    return [
        {
            "prefix": prefix,
            "samples": count,
            "share": count / total,
            "estimated_entries": round(count / total * entries),
        }
        for prefix, count in counts.most_common(top)
    ]


def wal_lag_records(plug: Any, persistence: Any | None) -> int:
    """Changes made in memory that are not yet durable on disk; 0 without persistence.

    The sum of the changes still buffered in the runtime (not yet written to the log)
    and the records written but not yet fsynced (``last_seq - last_fsync_seq``).
    """
    if persistence is None:
        return 0
    # The runtime buffers WAL records before the worker appends them; reading the
    # buffer's length is a lock-free snapshot (0 if a future runtime renames it).
    buffered = len(getattr(plug, "_wal_buffer", ()) or ())
    return buffered + max(0, persistence.last_seq - persistence.last_fsync_seq)


def tier_status(plug: Any) -> dict[str, Any]:
    """The Redis tier's state: ``{"state": "off"}`` without one, else "up"/"down"/"unknown".

    Reads ``plug.tier`` defensively: ``tier.up`` (a bool) when present, else the
    ``up``/``connected``/``healthy`` flag or the circuit-breaker state (``closed`` is up)
    in ``tier.stats()``, a dataclass or mapping whose scalar fields are passed through.
    """
    tier = getattr(plug, "tier", None)
    if tier is None:
        return {"state": "off"}
    info: dict[str, Any] = {}
    try:
        stats = tier.stats() if callable(getattr(tier, "stats", None)) else None
        info = _scalars(stats)
        up = getattr(tier, "up", None)
    except Exception as exc:  # a dashboard must render even when the tier misbehaves
        return {"state": "unknown", "error": f"{type(exc).__name__}: {exc}"}
    if not isinstance(up, bool):
        up = next(
            (info[k] for k in ("up", "connected", "healthy") if type(info.get(k)) is bool), None
        )
    if up is None:
        breaker = str(info.get("breaker") or info.get("breaker_state") or info.get("state") or "")
        up = (
            True
            if breaker.lower() in _BREAKER_UP
            else False
            if breaker.lower() in _BREAKER_DOWN
            else None
        )
    state = "unknown" if up is None else "up" if up else "down"
    return {**info, "state": state}


def _scalars(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        stats = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    if not isinstance(stats, Mapping):
        return {}
    return {
        str(k): v for k, v in stats.items() if v is None or isinstance(v, bool | int | float | str)
    }


def build_payload(plug: Any, *, sample: int = PREFIX_SAMPLE, top: int = 10) -> dict[str, Any]:
    """The JSON-ready document ``/_cacheplug/api/stats`` serves.

    Keys: ``name``, ``time`` (Unix seconds), ``started``, ``cache`` (counters,
    ``hit_ratio``, ``entries``, ``maxsize``), ``shards`` (``entries`` and ``evictions`` per
    shard), ``worker`` (``queue_depth`` and the worker counters), ``persistence`` (None
    when off; else ``wal_lag_records``, ``last_snapshot_at``, ...), ``tier`` (see
    :func:`tier_status`), ``top_prefixes`` and ``prefix_sample_size``.

    Thread-safe: it only reads counters and snapshots. Cost: O(shards + sample).
    """
    stats = plug.stats()
    cache = plug.cache
    c = stats.cache
    sizes = cache.shard_sizes()
    evictions = cache.shard_evictions()
    sampled = cache.sample_keys(sample) if sample > 0 else []
    persistence = stats.persistence
    return {
        "name": plug.name,
        "time": time.time(),
        "started": bool(getattr(plug, "started", False)),
        "cache": {
            "hits": c.hits,
            "misses": c.misses,
            "hit_ratio": c.hit_ratio,
            "sets": c.sets,
            "deletes": c.deletes,
            "evictions": c.evictions,
            "expirations": c.expirations,
            "entries": c.size,
            "maxsize": c.maxsize,
        },
        "shards": [
            {"index": i, "entries": n, "evictions": e}
            for i, (n, e) in enumerate(zip(sizes, evictions, strict=True))
        ],
        "worker": {
            **dataclasses.asdict(stats.worker),
            "running": bool(getattr(plug.worker, "running", False)),
        },
        "receiver_errors": stats.receiver_errors,
        "persistence": None
        if persistence is None
        else {
            **_scalars(persistence),
            "wal_lag_records": wal_lag_records(plug, persistence),
            "loaded_entries": getattr(plug, "loaded_entries", 0),
        },
        "tier": tier_status(plug),
        "top_prefixes": top_prefixes(sampled, c.size, top),
        "prefix_sample_size": len(sampled),
    }
