"""The ``asgi`` suite: CachePlugMiddleware's hit and miss paths, in-process ASGI calls.

No server and no TestClient: each request is one ``await app(scope, receive, send)``
with a fresh scope dict, a constant ``receive`` and a ``send`` that drops the messages,
the same for every contender, all on one event loop.

1. **Hit path** (one URL, warm): cacheplug's middleware in front of a FastAPI app
   (``add_middleware``, as users write it, and wrapping the app directly,
   ``CachePlugMiddleware(app, ...)``, which puts it outside FastAPI's own middleware
   stack) against the reference, a Starlette route returning precomputed bytes;
   fastapi-cache2 ``@cache`` with ``InMemoryBackend``; and the uncached FastAPI endpoint.
2. **Miss path** (a new URL every request, so every request runs the app and stores):
   cacheplug against the same uncached FastAPI endpoint (the reference).

Each section also runs a *floor* (``benchmarks/_asgi_floors.py``): the least any
middleware in that place can cost. Its ratio bounds what cacheplug, or anything else,
can score there; the "Floors" table puts each target next to its floor.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import _harness as h
from benchmarks._asgi_floors import MinimalStore, PrecomputedAnswer
from cacheplug import CachePlug

SUITE = "asgi"
STARLETTE = "Starlette precomputed bytes"
CACHEPLUG = "cacheplug hit (FastAPI + middleware)"
CACHEPLUG_DIRECT = "cacheplug hit (CachePlugMiddleware(app))"
CACHEPLUG_MISS = "cacheplug miss (FastAPI + middleware)"
FASTAPI_CACHE = "fastapi-cache2 hit (InMemoryBackend)"
UNCACHED = "FastAPI uncached"
FLOOR_HIT = "floor: add_middleware answering precomputed bytes"
FLOOR_MISS = "floor: minimal storing middleware (OrderedDict)"

PRODUCT = {
    "id": 42,
    "name": "Espresso machine",
    "price": 349.0,
    "currency": "EUR",
    "tags": ["kitchen", "coffee", "appliance"],
    "stock": 17,
    "description": "A compact 15-bar espresso machine with a steam wand.",
}

BASE_HEADERS = [
    (b"host", b"shop.example.com"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
]

TARGETS: list[tuple[str, str, str, float, str]] = [
    # (op, contender, baseline, ratio, sense)
    ("GET hit", CACHEPLUG, STARLETTE, 1.0, "ge"),
    ("GET hit", CACHEPLUG, FASTAPI_CACHE, 20.0, "ge"),
    ("GET hit", CACHEPLUG_DIRECT, STARLETTE, 1.0, "ge"),
    ("GET hit", CACHEPLUG_DIRECT, FASTAPI_CACHE, 20.0, "ge"),
    ("GET miss", CACHEPLUG_MISS, UNCACHED, 1 / 1.15, "ge"),  # adds at most 15%
]

#: (op, cacheplug contender, the floor of its place): targets that a floor bounds
FLOORS: list[tuple[str, str, str]] = [
    ("GET hit", CACHEPLUG, FLOOR_HIT),
    ("GET miss", CACHEPLUG_MISS, FLOOR_MISS),
]


def _scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": BASE_HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _REQUEST


class _Sink:
    """The server's ``send``: remembers the last status, so a broken app is noticed."""

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


def _driver(loop: asyncio.AbstractEventLoop, app: Any, path: str, unique: bool) -> h.Target:
    """A Target whose ``raw(n)`` makes n requests; ``unique`` gives each its own query."""
    sink = _Sink()
    base = _scope(path)
    counter = [0]

    async def many(n: int) -> None:
        if unique:
            start = counter[0]
            counter[0] += n
            for i in range(start, start + n):
                scope = dict(base)
                scope["query_string"] = b"v=%d" % i
                await app(scope, _receive, sink)
        else:
            for _ in range(n):
                await app(dict(base), _receive, sink)
        if sink.status != 200:
            raise RuntimeError(f"{path} answered {sink.status}")

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    run(3)  # warm: builds the middleware stack, fills the caches
    return h.Target(get=run, set=run, delete=run, raw=run)


def _fastapi_app(
    middleware: CachePlug | None = None, direct: bool = False, floor: type | None = None
) -> Any:
    from fastapi import FastAPI

    from cacheplug.integrations.asgi import CachePlugMiddleware

    app = FastAPI()

    @app.get("/products/42")
    async def product() -> dict[str, Any]:
        return PRODUCT

    if floor is PrecomputedAnswer:
        app.add_middleware(PrecomputedAnswer, body=_json_body())
    elif floor is not None:
        app.add_middleware(floor)
    if middleware is not None:
        if direct:  # outermost: FastAPI's own middleware stack runs only on misses
            return CachePlugMiddleware(app, plug=middleware, cache_responses=True)
        app.add_middleware(CachePlugMiddleware, plug=middleware, cache_responses=True)
    return app


def _json_body() -> bytes:
    import json

    return json.dumps(PRODUCT, separators=(",", ":")).encode()


def _contenders(loop: asyncio.AbstractEventLoop, plugs: list[CachePlug]) -> dict[str, Callable]:
    def starlette() -> h.Target:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        body = _json_body()

        async def endpoint(request: Any) -> Response:
            return Response(body, media_type="application/json")

        app = Starlette(routes=[Route("/products/42", endpoint)])
        return _driver(loop, app, "/products/42", unique=False)

    def cacheplug(unique: bool, direct: bool = False) -> Callable[[], h.Target]:
        def prepare() -> h.Target:
            plug = CachePlug(maxsize=20_000, ttl=300, sweep_interval=0).start()
            plugs.append(plug)
            app = _fastapi_app(plug, direct=direct)
            target = _driver(loop, app, "/products/42", unique=unique)
            target.close = plug.close
            return target

        return prepare

    def fastapi_cache() -> h.Target:
        from fastapi import FastAPI
        from fastapi_cache import FastAPICache
        from fastapi_cache.backends.inmemory import InMemoryBackend
        from fastapi_cache.decorator import cache

        FastAPICache.init(InMemoryBackend(), prefix="bench-asgi")
        app = FastAPI()

        @app.get("/products/42")
        @cache(expire=300)
        async def product() -> dict[str, Any]:
            return PRODUCT

        def close() -> None:
            FastAPICache.reset()

        target = _driver(loop, app, "/products/42", unique=False)
        target.close = close
        return target

    def uncached(unique: bool) -> Callable[[], h.Target]:
        return lambda: _driver(loop, _fastapi_app(), "/products/42", unique=unique)

    def floor(kind: type, unique: bool) -> Callable[[], h.Target]:
        return lambda: _driver(loop, _fastapi_app(floor=kind), "/products/42", unique=unique)

    return {
        "floor-hit": floor(PrecomputedAnswer, False),
        "floor-miss": floor(MinimalStore, True),
        "starlette": starlette,
        "cacheplug": cacheplug(False),
        "cacheplug-direct": cacheplug(False, direct=True),
        "cacheplug-miss": cacheplug(True),
        "fastapi-cache": fastapi_cache,
        "uncached": uncached(False),
        "uncached-unique": uncached(True),
    }


def _op(name: str) -> h.Op:
    return h.Op(name, lambda target, part, parts: h.Runner(target.raw))


def target_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target, with the measured ratio and met/missed."""
    found = []
    for op, contender, baseline, need, sense in TARGETS:
        got = h.ratio_of(rows, contender, baseline, op)
        status = "n/a" if math.isnan(got) else ("met" if got >= need else "missed")
        label = (
            f"{op}: {contender} ≥ {need:g}x {baseline}"
            if op != "GET miss"
            else f"{op}: {UNCACHED} ≤ 1.15x the time of cacheplug (ratio ≥ 0.87)"
        )
        found.append(
            {
                "section": "targets",
                "target_name": label,
                "op": op,
                "baseline": baseline,
                "target": need,
                "ratio": got,
                "status": status,
                "sense": sense,
            }
        )
    return found


def floor_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each target a floor bounds: cacheplug's ratio and the floor's, same baseline."""
    found = []
    for op, contender, floor in FLOORS:
        for t_op, t_contender, baseline, need, _ in TARGETS:
            if (t_op, t_contender) != (op, contender):
                continue
            found.append(
                {
                    "section": "floors",
                    "op": op,
                    "contender": contender,
                    "floor": floor,
                    "baseline": baseline,
                    "target": need,
                    "ratio": h.ratio_of(rows, contender, baseline, op),
                    "floor_ratio": h.ratio_of(rows, floor, baseline, op),
                }
            )
    return found


def floors_table(found: Sequence[dict[str, Any]]) -> str:
    """Markdown: target, cacheplug's ratio, the floor's ratio, whether the floor allows it."""
    body = [
        [
            f"{f['op']}: {f['contender']} vs {f['baseline']}",
            f"{f['target']:.2f}x",
            h.fmt_ratio(f["ratio"]),
            h.fmt_ratio(f["floor_ratio"]),
            "n/a"
            if math.isnan(f["floor_ratio"])
            else ("yes" if f["floor_ratio"] >= f["target"] else "no: out of reach in this place"),
        ]
        for f in found
    ]
    return h.markdown_table(["target", "needed", "cacheplug", "floor", "floor reaches it"], body)


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run the asgi suite; print markdown; write JSON; return every row."""
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        return _run()


def _run() -> list[dict[str, Any]]:
    versions = {
        "cacheplug": h.dist_version("cacheplug"),
        "starlette": h.dist_version("starlette"),
        "fastapi": h.dist_version("fastapi"),
        "fastapi-cache2": h.dist_version("fastapi-cache2"),
    }
    h.out(
        h.header(
            SUITE,
            versions,
            note="in-process ASGI calls on one event loop: fresh scope dict per request, "
            "constant receive, a send that drops messages; no server, no TestClient",
        )
    )
    loop = asyncio.new_event_loop()
    plugs: list[CachePlug] = []
    try:
        make = _contenders(loop, plugs)
        hit = [
            h.Contender(STARLETTE, versions["starlette"], make["starlette"]),
            h.Contender(CACHEPLUG, versions["cacheplug"], make["cacheplug"]),
            h.Contender(CACHEPLUG_DIRECT, versions["cacheplug"], make["cacheplug-direct"]),
            h.Contender(FASTAPI_CACHE, versions["fastapi-cache2"], make["fastapi-cache"]),
            h.Contender(UNCACHED, versions["fastapi"], make["uncached"]),
            h.Contender(FLOOR_HIT, versions["fastapi"], make["floor-hit"]),
        ]
        miss = [
            h.Contender(UNCACHED, versions["fastapi"], make["uncached-unique"]),
            h.Contender(CACHEPLUG_MISS, versions["cacheplug"], make["cacheplug-miss"]),
            h.Contender(FLOOR_MISS, versions["fastapi"], make["floor-miss"]),
        ]
        rows = []
        for title, contenders, op, reference in (
            ("Hit path: one warm URL", hit, "GET hit", STARLETTE),
            ("Miss path: a new URL every request", miss, "GET miss", UNCACHED),
        ):
            h.out(f"\n## {title}\n")
            prepared = h.prepare_all(contenders)
            try:
                section = h.measure(prepared, [_op(op)], reference=reference, section=op)
            finally:
                h.close_all(prepared)
            h.out(h.results_table(section, reference))
            rows.extend(section)
    finally:
        for plug in plugs:
            plug.close()
        loop.close()
    found = target_rows(rows)
    h.out("\n## Targets\n")
    h.out(h.targets_table(found))
    floors = floor_rows(rows)
    h.out("\n## Floors: the best any middleware in the same place scores\n")
    h.out(floors_table(floors))
    all_rows = [*rows, *found, *floors]
    h.write_results(SUITE, versions, all_rows)
    return all_rows
