"""Lifespan: the plug starts before the app's startup and closes after its shutdown.

Raw ASGI apps cover the protocol corners (no lifespan support, no answer, failures); a
Starlette app with its own ``lifespan=`` and FastAPI with ``cacheplug_lifespan`` cover
composition; a state dir proves the save on shutdown and the load on startup.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from cacheplug import CachePlug
from cacheplug.integrations.asgi import CachePlugMiddleware, cacheplug_lifespan


class FakeServer:
    """Drives one lifespan scope as uvicorn does: startup, then shutdown on request."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list[str] = []
        self.state: dict = {}

    async def run(self, app) -> BaseException | None:
        await self.inbox.put({"type": "lifespan.startup"})

        async def receive():
            return await self.inbox.get()

        async def send(message):
            self.sent.append(message["type"])

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        task = asyncio.ensure_future(app(scope, receive, send))
        while not self.sent and not task.done():
            await asyncio.sleep(0.001)
        if self.sent == ["lifespan.startup.complete"]:
            await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(task, 10)
        except Exception as exc:
            return exc
        return None


@pytest.fixture
def plug():
    p = CachePlug(sweep_interval=0)
    yield p
    p.close()


async def test_app_without_lifespan_support_still_gets_the_plug_run(plug):
    seen = []

    async def http_only(scope, receive, send):
        assert scope["type"] == "http", "lifespan unsupported"

    server = FakeServer()
    exc = await server.run(CachePlugMiddleware(http_only, plug=plug))
    seen.append(plug.started)
    assert exc is None
    assert server.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert server.state["cacheplug"] is plug
    assert not plug.started
    assert plug._closed


@pytest.mark.parametrize("style", ["returns", "asks-again"])
async def test_app_that_never_answers_startup(plug, style):
    async def silent(scope, receive, send):
        await receive()  # lifespan.startup, never answered
        if style == "asks-again":
            await receive()  # waits for shutdown, answers nothing either
            await receive()

    server = FakeServer()
    exc = await server.run(CachePlugMiddleware(silent, plug=plug))
    assert exc is None
    assert server.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert plug._closed


async def test_order_plug_first_on_startup_and_last_on_shutdown(plug):
    order = []

    async def app(scope, receive, send):
        await receive()
        order.append(("app startup", plug.started))
        await send({"type": "lifespan.startup.complete"})
        await receive()
        order.append(("app shutdown", plug.started))
        await send({"type": "lifespan.shutdown.complete"})

    server = FakeServer()
    assert await server.run(CachePlugMiddleware(app, plug=plug)) is None
    assert order == [("app startup", True), ("app shutdown", True)]
    assert server.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not plug.started


async def test_app_startup_failure_is_reported_and_the_plug_closed(plug):
    async def failing(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        raise RuntimeError("no database")

    server = FakeServer()
    exc = await server.run(CachePlugMiddleware(failing, plug=plug))
    assert isinstance(exc, RuntimeError)
    assert server.sent == ["lifespan.startup.failed"]
    assert plug._closed


async def test_plug_startup_failure_is_reported_before_the_app_starts(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    plug = CachePlug(state_dir=str(not_a_dir), secret="s" * 32, sweep_interval=0)
    started = []

    async def app(scope, receive, send):
        started.append(True)

    server = FakeServer()
    exc = await server.run(CachePlugMiddleware(app, plug=plug))
    assert exc is not None
    assert server.sent == ["lifespan.startup.failed"]
    assert started == []
    plug.close()


async def test_app_shutdown_error_is_reported_and_the_plug_still_closed(plug):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("shutdown broke")

    server = FakeServer()
    exc = await server.run(CachePlugMiddleware(app, plug=plug))
    assert isinstance(exc, RuntimeError)
    assert server.sent == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert plug._closed


def test_composes_with_a_starlette_apps_own_lifespan(plug):
    order = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        order.append(("startup", plug.started))
        yield {"db": "connected"}
        order.append(("shutdown", plug.started))

    async def home(request):
        return PlainTextResponse(f"{request.state.db} {request.state.cacheplug is plug}")

    app = Starlette(routes=[Route("/", home)], lifespan=lifespan)
    app.add_middleware(CachePlugMiddleware, plug=plug)
    with TestClient(app) as client:
        assert client.get("/").text == "connected True"
    assert order == [("startup", True), ("shutdown", True)]
    assert not plug.started


def test_cacheplug_lifespan_for_fastapi_composes_and_puts_the_plug_in_state(plug):
    order = []

    @contextlib.asynccontextmanager
    async def own(app):
        order.append(("own startup", plug.started))
        yield {"answer": 42}
        order.append(("own shutdown", plug.started))

    app = FastAPI(lifespan=cacheplug_lifespan(plug, own))

    @app.get("/")
    async def home(request: Request):
        return {"answer": request.state.answer, "plug": request.state.cacheplug is plug}

    app.add_middleware(CachePlugMiddleware, plug=plug, handle_lifespan=False)
    with TestClient(app) as client:
        assert client.get("/").json() == {"answer": 42, "plug": True}
    assert order == [("own startup", True), ("own shutdown", True)]
    assert not plug.started


def test_state_is_saved_on_shutdown_and_loaded_on_startup(tmp_path, monkeypatch):
    monkeypatch.setenv("CACHEPLUG_SECRET", "t" * 32)
    calls = []

    async def page(request):
        calls.append(1)
        return PlainTextResponse("page")

    def build():
        plug = CachePlug(state_dir=str(tmp_path / "state"), sweep_interval=0)
        app = Starlette(routes=[Route("/page", page)])
        app.add_middleware(CachePlugMiddleware, plug=plug, cache_responses=True)
        return app

    with TestClient(build()) as client:
        assert client.get("/page").headers["x-cache"] == "MISS"
    with TestClient(build()) as client:
        hit = client.get("/page")
        assert (hit.headers["x-cache"], hit.text, len(calls)) == ("HIT", "page", 1)
