"""The ``metrics`` suite: what observability costs a request, and what a scrape costs.

1. **Hot path.** ``cache.get`` on a hit, as cacheplug serves it with its scrape-time
   collector registered (nothing counted twice), against the usual way of instrumenting
   a cache with prometheus-client: a ``Counter.inc()`` per lookup, or
   ``Counter.labels(cache=...).inc()`` per lookup. The reference is cacheplug.
2. **Scrape.** ``generate_latest`` of a registry holding cacheplug's collector for a
   plug with 100,000 entries, and the dashboard's ``build_payload`` (which samples
   1,000 keys), against ``generate_latest`` of a registry with the same number of plain
   prometheus-client counters and gauges (17 families, one series each).
"""

from __future__ import annotations

from typing import Any

from benchmarks._harness import (
    Contender,
    Op,
    Runner,
    Target,
    close_all,
    dist_version,
    header,
    measure,
    out,
    prepare_all,
    results_table,
    write_results,
)

KEYS = 100_000
HOT = 1_000
REFERENCE = "cacheplug collector (scrape time)"


def _plug(entries: int) -> Any:
    from cacheplug import CachePlug

    plug = CachePlug(name="bench", maxsize=max(entries, 1), sweep_interval=0, ttl=None)
    plug.start()
    for i in range(entries):
        plug.cache.set(f"user:{i}", f"value-{i}")
    return plug


def _get_target(instrument: str, entries: int) -> Target:
    import prometheus_client

    from cacheplug.metrics import register

    plug = _plug(entries)
    cache = plug.cache
    registry = prometheus_client.CollectorRegistry()
    if instrument == "collector":
        register(plug, registry=registry)
        get = cache.get
    elif instrument == "counter":
        hits = prometheus_client.Counter("bench_hits", "hits", registry=registry)
        inc = hits.inc

        def get(key: Any) -> Any:
            value = cache.get(key)
            inc()
            return value
    else:
        hits = prometheus_client.Counter("bench_hits", "hits", ["cache"], registry=registry)

        def get(key: Any) -> Any:
            value = cache.get(key)
            hits.labels(cache="bench").inc()
            return value

    return Target(get=get, set=cache.set, delete=cache.delete, raw=plug, close=plug.close)


def _hit(target: Target, part: int, parts: int) -> Runner:
    keys = [f"user:{i}" for i in range(HOT)]
    get = target.get

    def run(n: int) -> None:
        k = keys
        for i in range(n):
            get(k[i % HOT])

    return Runner(run)


def _scrape_target(kind: str, entries: int) -> Target:
    import prometheus_client

    from cacheplug.dashboard import build_payload
    from cacheplug.metrics import register

    plug = _plug(entries)
    if kind == "collector":
        registry = register(plug)
        action = lambda: prometheus_client.generate_latest(registry)  # noqa: E731
    elif kind == "payload":
        action = lambda: build_payload(plug)  # noqa: E731
    else:
        registry = prometheus_client.CollectorRegistry()
        for i in range(9):
            prometheus_client.Counter(f"plain_c{i}", "c", registry=registry).inc(i)
        for i in range(8):
            prometheus_client.Gauge(f"plain_g{i}", "g", registry=registry).set(i)
        action = lambda: prometheus_client.generate_latest(registry)  # noqa: E731
    return Target(get=lambda _k: action(), set=plug.cache.set, delete=plug.cache.delete,
                  raw=plug, close=plug.close)  # fmt: skip


def _scrape(target: Target, part: int, parts: int) -> Runner:
    get = target.get

    def run(n: int) -> None:
        for _ in range(n):
            get(None)

    return Runner(run)


def run(smoke: bool = False) -> list[dict[str, Any]]:
    entries = 2_000 if smoke else KEYS
    cp = dist_version("cacheplug")
    prom = dist_version("prometheus-client")
    hot = [
        Contender(REFERENCE, cp, lambda: _get_target("collector", entries)),
        Contender(
            "prometheus Counter.inc() per get", prom, lambda: _get_target("counter", entries)
        ),
        Contender(
            "prometheus Counter.labels().inc() per get",
            prom,
            lambda: _get_target("labels", entries),
        ),
    ]
    scrape_ref = "generate_latest, 17 plain metrics"
    scrape = [
        Contender(scrape_ref, prom, lambda: _scrape_target("plain", entries)),
        Contender(
            "generate_latest, cacheplug collector", cp, lambda: _scrape_target("collector", entries)
        ),
        Contender("dashboard build_payload", cp, lambda: _scrape_target("payload", entries)),
    ]
    versions = {"cacheplug": cp, "prometheus-client": prom}
    out(header("metrics", versions, f"plug with {entries:,} entries; hits over {HOT:,} hot keys"))
    rows: list[dict[str, Any]] = []
    for section, contenders, op, reference in (
        ("hot path", hot, Op("get-hit", _hit), REFERENCE),
        ("scrape", scrape, Op("scrape", _scrape), scrape_ref),
    ):
        prepared = prepare_all(contenders)
        try:
            found = measure(prepared, [op], reference=reference, section=section, smoke_loops=20)
        finally:
            close_all(prepared)
        out()
        out(f"## {section}")
        out()
        out(results_table(found, reference))
        rows.extend(found)
    write_results("metrics", versions, rows)
    return rows
