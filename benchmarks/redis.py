"""The ``redis`` suite: the Redis tier against plain Redis clients, on loopback.

Sections (all contenders against the same Redis, same keys ``user:N`` and ~100-byte str
values, interleaved rounds):

1. **get-hit**: a local hit with the tier on (``plug.cache.get``) vs a redis-py ``GET``
   round trip vs django-redis ``cache.get`` (Django settings are configured in this
   process only if nothing configured them). Target: local hit >= 20x both.
2. **miss then L2 hit**: each op drops the local copy (without broadcasting) and reads
   again, so it pays one Redis round trip, signature check, unpickle and local fill;
   redis-py ``GET`` beside it is the floor, django-redis ``get`` (GET + unpickle) the peer.
3. **set**: ``plug.cache.set`` with write-behind, each timed loop ending with
   ``plug.worker.flush()`` so the Redis writes are paid inside the timed region, vs
   django-redis ``set`` and redis-py ``SET``.
4. **invalidation propagation**: two plugs (distinct origins) in this process; time from
   ``delete`` in A to the key leaving B's local tier; p50/p99 over many deletes.

Needs a Redis: ``$REDIS_URL`` or ``redis://127.0.0.1:6379/0``; skipped with a line if none.
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from typing import Any

from benchmarks import _harness as h

SUITE = "redis"
SECRET = "bench"
LOCAL = "cacheplug local hit (tier on)"
L2 = "cacheplug miss -> L2 hit"
WB = "cacheplug set (write-behind)"
REDIS_PY = "redis-py"
DJANGO_REDIS = "django-redis"


def _url() -> str:
    import os

    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _items(count: int) -> tuple[list[str], list[str]]:
    return [f"user:{i}" for i in range(count)], [f"value-{i:08d}-" + "x" * 84 for i in range(count)]


def _plug(prefix: str, **options: Any) -> Any:
    from cacheplug import CachePlug

    return CachePlug(
        redis_url=_url(), secret=SECRET, redis_prefix=prefix, sweep_interval=0, **options
    ).start()


def _cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(_url())
    names = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
    names += list(client.scan_iter(match=prefix + "*", count=1000))
    if names:
        client.delete(*names)
    client.close()


def _cycle(keys: list[str], fn: Any) -> Any:
    size = len(keys)

    def run(n: int) -> None:
        for i in range(n):
            fn(keys[i % size])

    return run


# -- contenders ------------------------------------------------------------------------------


def _cacheplug_local(keys: list[str], values: list[str], prefix: str) -> h.Target:
    plug = _plug(prefix, maxsize=2 * len(keys))
    for key, value in zip(keys, values, strict=True):
        plug.cache.set(key, value)
    plug.worker.flush(30)

    def close() -> None:
        plug.close()

    return h.Target(plug.cache.get, plug.cache.set, plug.cache.delete, plug, close)


def _redis_py(keys: list[str], values: list[str], prefix: str) -> h.Target:
    import redis

    client = redis.Redis.from_url(_url())
    pipe = client.pipeline(transaction=False)
    for key, value in zip(keys, values, strict=True):
        pipe.set(f"{prefix}:{key}", value)
    pipe.execute()

    def get(key: str) -> Any:
        return client.get(f"{prefix}:{key}")

    def set_(key: str, value: Any) -> Any:
        return client.set(f"{prefix}:{key}", value)

    return h.Target(get, set_, client.delete, client, client.close)


def _django_redis(keys: list[str], values: list[str], prefix: str) -> h.Target:
    import django_redis  # noqa: F401  (ImportError -> skipped)

    if h.current_settings().smoke:  # the smoke test runs inside pytest: leave Django alone
        raise ImportError("not run in smoke mode (it would configure Django settings)")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": _url(),
                    "KEY_PREFIX": prefix,
                }
            }
        )
        import django

        django.setup()
    from django.core.cache import caches

    cache = caches["default"]
    if type(cache).__module__.split(".")[0] != "django_redis":
        raise ImportError("Django was configured elsewhere without a django-redis cache")
    cache.set_many(dict(zip(keys, values, strict=True)), timeout=None)
    return h.Target(cache.get, cache.set, cache.delete, cache, cache.clear)


def _op_get() -> h.Op:
    def make(target: h.Target, part: int, parts: int) -> h.Runner:
        return h.Runner(_cycle(target.raw_keys, target.get))  # type: ignore[attr-defined]

    return h.Op("get-hit", make)


# -- sections --------------------------------------------------------------------------------


def _contenders(keys: list[str], values: list[str], prefix: str, cacheplug: Any) -> list:
    def wrap(name: str, version: str, build: Any) -> h.Contender:
        def prepare() -> h.Target:
            target = build(keys, values, prefix)
            target.raw_keys = keys  # type: ignore[attr-defined]
            return target

        return h.Contender(name, version, prepare)

    return [
        wrap(cacheplug[0], h.dist_version("cacheplug"), cacheplug[1]),
        wrap(REDIS_PY, h.dist_version("redis"), _redis_py),
        wrap(DJANGO_REDIS, h.dist_version("django-redis"), _django_redis),
    ]


def _l2_target(keys: list[str], values: list[str], prefix: str) -> h.Target:
    from cacheplug.tier import _context, _remote

    target = _cacheplug_local(keys, values, prefix)
    cache = target.raw.cache

    def get(key: str) -> Any:
        with _context(_remote, True):  # drop the local copy without telling anyone
            cache.delete(key)
        return cache.get(key)

    target.get = get
    return target


def _set_target(keys: list[str], values: list[str], prefix: str) -> h.Target:
    target = _cacheplug_local(keys, values, prefix)
    target.raw.cache.clear()
    target.raw.worker.flush(30)
    return target


def _op_set(values: list[str]) -> h.Op:
    def make(target: h.Target, part: int, parts: int) -> h.Runner:
        keys = target.raw_keys  # type: ignore[attr-defined]
        size = len(keys)
        plug = target.raw if hasattr(target.raw, "worker") else None

        def run(n: int) -> None:
            set_ = target.set
            for i in range(n):
                set_(keys[i % size], values[i % size])
            if plug is not None:
                plug.worker.flush(60)  # the write-behind is paid inside the timed loop

        return h.Runner(run)

    return h.Op("set", make)


def propagation(samples: int, prefix: str) -> tuple[float, float]:
    """p50 and p99 milliseconds from a delete in A to the key leaving B's local tier."""
    a, b = _plug(prefix, name="prop-a"), _plug(prefix, name="prop-b")
    found = []
    try:
        for i in range(samples):
            key = f"prop:{i}"
            a.cache.set(key, i)
            a.worker.flush(5)
            deadline = time.monotonic() + 2
            # A's set is itself broadcast; B holds the key once its fill outlived that.
            while key not in b.cache and time.monotonic() < deadline:
                b.cache.get(key)
                time.sleep(0.0002)
            if key not in b.cache:
                continue
            start = time.perf_counter_ns()
            a.cache.delete(key)
            while key in b.cache and time.monotonic() < deadline:
                time.sleep(0.00002)  # let go of the GIL: a busy loop would starve B's thread
            found.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        a.close()
        b.close()
    found.sort()
    return statistics.median(found), found[min(len(found) - 1, int(len(found) * 0.99))]


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run the redis suite; print markdown; write JSON; return every row."""
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        return _run()


def _run() -> list[dict[str, Any]]:
    import redis

    smoke = h.current_settings().smoke
    versions = {
        "cacheplug": h.dist_version("cacheplug"),
        "redis-py": h.dist_version("redis"),
        "hiredis": h.dist_version("hiredis"),
        "django-redis": h.dist_version("django-redis"),
    }
    h.out(h.header(SUITE, versions, note=f"Redis at {_url()} (loopback)"))
    try:
        redis.Redis.from_url(_url(), socket_timeout=1).ping()
    except (redis.RedisError, OSError) as exc:
        h.out(f"\n- skipped the whole suite: no Redis at {_url()} ({exc})")
        return []
    count = 200 if smoke else 10_000
    keys, values = _items(count)
    prefix = f"cpbench:{uuid.uuid4().hex[:8]}"
    rows: list[dict[str, Any]] = []
    try:
        for section, title, ours, op, ref in (
            ("get", "get-hit", (LOCAL, _cacheplug_local), _op_get(), REDIS_PY),
            ("l2", "local miss -> L2 hit", (L2, _l2_target), _op_get(), REDIS_PY),
            (
                "set",
                "set (write-behind, flush in the timed loop)",
                (WB, _set_target),
                _op_set(values),
                REDIS_PY,
            ),
        ):
            h.out(f"\n## {title}\n")
            contenders = _contenders(keys, values, f"{prefix}:{section}", ours)
            prepared = h.prepare_all(contenders)
            try:
                found = h.measure(prepared, [op], reference=ref, section=section)
            finally:
                h.close_all(prepared)
            h.out(h.results_table(found, ref))
            rows += found
        p50, p99 = propagation(20 if smoke else 500, f"{prefix}:prop")
    finally:
        _cleanup(prefix)
    h.out(f"\n## Invalidation propagation (loopback)\n\np50 {p50:.3f} ms, p99 {p99:.3f} ms\n")
    rows.append(
        {
            "section": "propagation",
            "op": "delete -> remote local miss",
            "p50_ms": p50,
            "p99_ms": p99,
        }
    )
    targets = []
    for other in (REDIS_PY, DJANGO_REDIS):
        ratio = h.ratio_of(rows, LOCAL, other, "get-hit")
        targets.append(
            {
                "target_name": f"local hit vs {other} get >= 20x",
                "target": 20.0,
                "ratio": ratio,
                "status": "met" if ratio >= 20 else "missed",
            }
        )
    targets.append(
        {
            "target_name": "propagation p99 <= 50 ms",
            "target": 50.0,
            "ratio": p99,  # milliseconds, not a ratio: see "unit"
            "unit": "ms",
            "status": "met" if p99 <= 50 else "missed",
            "sense": "le",
        }
    )
    h.out("## Targets\n")
    h.out(_targets_table(targets))
    rows += targets
    h.write_results(SUITE, versions, rows)
    return rows


def _targets_table(targets: list[dict[str, Any]]) -> str:
    """``h.targets_table``, except that a target with ``"unit": "ms"`` shows milliseconds."""
    body = []
    for t in targets:
        value, status = t["ratio"], t["status"]
        if t.get("unit") == "ms":
            measured = "n/a" if math.isnan(value) else f"{value:.2f} ms"
        else:
            measured = h.fmt_ratio(value)
        if status == "missed":
            shortfall = (
                value / t["target"] - 1 if t.get("sense") == "le" else 1 - value / t["target"]
            )
            status = f"missed (by {shortfall * 100:.0f}%)"
        body.append([t["target_name"], measured, status])
    return h.markdown_table(["target", "measured", "status"], body)
