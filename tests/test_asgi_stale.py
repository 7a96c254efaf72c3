"""RFC 5861 in CachePlugMiddleware: stale-while-revalidate and stale-if-error.

A fake clock moves the policy's wall time and the cache's timer together, so nothing
sleeps; the background refresh is awaited through ``wait_for_refreshes``.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from cacheplug import CachePlug
from cacheplug.context import request_context
from cacheplug.http import HttpCachePolicy, RequestDecision, select_stale
from cacheplug.integrations.asgi import CachePlugMiddleware

from .asgi_support import Clocks


class Origin:
    """The app behind the middleware: counts calls, can fail or hang on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: str | None = None  # None, "raise" or "500"
        self.cache_control = "max-age=10, stale-while-revalidate=30, stale-if-error=60"
        self.request_ids: list[str | None] = []
        self.hang = False
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def page(self, request: Request) -> Response:
        self.calls += 1
        self.request_ids.append(request_context.request_id)
        if self.hang:
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.fail == "raise":
            raise RuntimeError("database down")
        if self.fail == "500":
            return PlainTextResponse("oops", status_code=500)
        return PlainTextResponse(
            f"call {self.calls}", headers={"cache-control": self.cache_control}
        )


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def plug(clocks):
    p = CachePlug(ttl=60, timer=lambda: clocks.mono, sweep_interval=0)
    yield p
    p.close()


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def mw(plug, clocks, origin):
    app = Starlette(routes=[Route("/page", origin.page, methods=["GET", "HEAD"])])
    return CachePlugMiddleware(
        app,
        plug=plug,
        cache_responses=True,
        policy=HttpCachePolicy(clock=lambda: clocks.wall),
    )


@pytest.fixture
async def client(mw):
    transport = httpx.ASGITransport(app=mw, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
        yield c


def seen(response: httpx.Response) -> tuple[int, str, str]:
    return response.status_code, response.headers.get("x-cache"), response.text


# ------------------------------------------------------------ stale-while-revalidate


async def test_stale_while_revalidate_serves_stale_at_once_and_refreshes(
    client, mw, origin, clocks
):
    assert seen(await client.get("/page")) == (200, "MISS", "call 1")
    clocks.advance(15)  # 5 s past max-age=10, inside the 30 s window
    stale = await client.get("/page", headers={"x-request-id": "client-1"})
    assert seen(stale) == (200, "STALE", "call 1")
    assert int(stale.headers["age"]) == 15
    await mw.wait_for_refreshes()
    assert origin.calls == 2
    # the refresh ran in a request scope of its own, not the client's
    assert origin.request_ids[-1] not in (None, "client-1")
    fresh = await client.get("/page")
    assert seen(fresh) == (200, "HIT", "call 2")
    assert fresh.headers["age"] == "0"


async def test_refresh_is_single_flight_per_key(client, mw, origin, clocks):
    await client.get("/page")
    clocks.advance(15)
    responses = await asyncio.gather(*(client.get("/page") for _ in range(8)))
    assert {seen(r) for r in responses} == {(200, "STALE", "call 1")}
    await mw.wait_for_refreshes()
    assert origin.calls == 2  # eight stale hits, one background request


async def test_past_the_window_the_request_waits_for_the_app(client, mw, origin, clocks):
    await client.get("/page")
    clocks.advance(45)  # past max-age + stale-while-revalidate, inside stale-if-error
    assert seen(await client.get("/page")) == (200, "MISS", "call 2")
    assert len(mw._refresher) == 0


async def test_refresh_failure_keeps_the_stale_entry(client, mw, origin, clocks):
    await client.get("/page")
    clocks.advance(15)
    origin.fail = "raise"
    assert seen(await client.get("/page")) == (200, "STALE", "call 1")
    await mw.wait_for_refreshes()
    assert origin.calls == 2
    assert seen(await client.get("/page")) == (200, "STALE", "call 1")


async def test_client_no_cache_never_gets_stale(client, mw, origin, clocks):
    await client.get("/page")
    clocks.advance(15)
    no_cache = await client.get("/page", headers={"cache-control": "no-cache"})
    assert seen(no_cache) == (200, "BYPASS", "call 2")
    clocks.advance(15)
    limited = await client.get("/page", headers={"cache-control": "max-age=5"})
    assert seen(limited) == (200, "MISS", "call 3")


async def test_must_revalidate_forbids_serving_stale(client, mw, origin, clocks):
    origin.cache_control = "max-age=10, must-revalidate, stale-while-revalidate=30"
    await client.get("/page")
    clocks.advance(15)
    assert seen(await client.get("/page")) == (200, "MISS", "call 2")
    assert len(mw._refresher) == 0


def test_lifespan_shutdown_cancels_a_running_refresh(plug, clocks, origin, mw):
    with TestClient(mw) as client:
        client.get("/page")
        clocks.advance(15)
        origin.hang = True
        assert client.get("/page").headers["x-cache"] == "STALE"
        assert origin.started.wait(5)  # the refresh is running, stuck in the app
    assert origin.cancelled.is_set()
    assert len(mw._refresher) == 0


# ------------------------------------------------------------------ stale-if-error


@pytest.mark.parametrize("failure", ["raise", "500"])
async def test_stale_if_error_serves_the_stale_entry_when_the_app_fails(
    client, origin, clocks, failure
):
    origin.cache_control = "max-age=10, stale-if-error=60"
    await client.get("/page")
    clocks.advance(30)
    origin.fail = failure
    assert seen(await client.get("/page")) == (200, "STALE", "call 1")
    head = await client.head("/page")
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "STALE", b"")
    origin.fail = None  # the app recovers: a normal miss stores the new answer
    assert seen(await client.get("/page")) == (200, "MISS", "call 4")
    assert seen(await client.get("/page")) == (200, "HIT", "call 4")


async def test_stale_if_error_ends_with_its_window(client, origin, clocks):
    origin.cache_control = "max-age=10, stale-if-error=60"
    await client.get("/page")
    clocks.advance(75)
    origin.fail = "500"
    response = await client.get("/page")
    assert (response.status_code, response.text) == (500, "oops")
    origin.fail = "raise"
    assert (await client.get("/page")).status_code == 500  # as without cacheplug


async def test_without_stale_if_error_a_failure_passes_through(client, origin, clocks):
    origin.cache_control = "max-age=10"
    await client.get("/page")
    clocks.advance(15)
    origin.fail = "500"
    assert seen(await client.get("/page")) == (500, "MISS", "oops")


def test_select_stale_honours_request_limits_and_vary(clocks):
    policy = HttpCachePolicy(clock=lambda: clocks.wall)
    headers = [("cache-control", "max-age=10, stale-while-revalidate=30"), ("vary", "accept")]
    decision = policy.response_store_decision(200, headers, {"accept": "text/plain"})
    entry = policy.make_entry(
        200, headers, b"x", {"accept": "text/plain"}, decision, now=clocks.wall
    )
    later = clocks.wall + 15
    get = RequestDecision(True, True)
    assert select_stale((entry,), {"accept": "text/plain"}, get, later) is entry
    assert select_stale((entry,), {"accept": "text/html"}, get, later) is None
    assert select_stale((entry,), {"accept": "text/plain"}, get, clocks.wall + 5) is None
    assert select_stale((entry,), {"accept": "text/plain"}, get, clocks.wall + 41) is None
    limited = RequestDecision(True, True, max_age=100)
    assert select_stale((entry,), {"accept": "text/plain"}, limited, later) is None
