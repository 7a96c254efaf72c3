"""The asgi suite's floor middlewares behave as the contenders they stand for."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from benchmarks._asgi_floors import MinimalStore, PrecomputedAnswer


def _app(calls: list[str]) -> Starlette:
    async def page(request):
        calls.append(request.url.query)
        return JSONResponse({"n": len(calls)})

    return Starlette(routes=[Route("/page", page)])


def test_precomputed_answer_never_calls_the_app():
    calls: list[str] = []
    client = TestClient(PrecomputedAnswer(_app(calls), body=b'{"x":1}'))
    response = client.get("/page")
    assert response.status_code == 200
    assert response.content == b'{"x":1}'
    assert calls == []


def test_minimal_store_serves_a_stored_page_and_stays_bounded():
    calls: list[str] = []
    store = MinimalStore(_app(calls), maxsize=2)
    client = TestClient(store)
    first = client.get("/page?a=1").json()
    assert client.get("/page?a=1").json() == first  # served from the store
    assert calls == ["a=1"]
    client.get("/page?a=2")
    client.get("/page?a=3")  # evicts a=1, the oldest
    assert len(store.pages) == 2
    client.get("/page?a=1")
    assert calls == ["a=1", "a=2", "a=3", "a=1"]
