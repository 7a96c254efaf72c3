"""CachePlugMiddleware on real Starlette and FastAPI apps: one test per storage rule.

Each storage test would fail if its rule were dropped: the app counts its calls, so a
response served from cache when it must not be (or not when it should) shows up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from cacheplug import CachePlug
from cacheplug.context import RequestContext, request_context
from cacheplug.errors import ConfigurationError
from cacheplug.http import HttpCachePolicy
from cacheplug.integrations.asgi import (
    CachePlugMiddleware,
    RequestIdFilter,
    add_cache_tags,
    cache_endpoint,
    request_context_dep,
)

from .asgi_support import Clocks


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def plug(clocks):
    p = CachePlug(ttl=60, timer=lambda: clocks.mono, sweep_interval=0)
    yield p
    p.close()


class Calls:
    def __init__(self) -> None:
        self.n = 0


def make_app(plug, clocks, *, cache_responses=True, **options):
    """A Starlette app whose endpoints echo a call counter and take their headers from ?h=."""
    calls = Calls()

    async def page(request: Request) -> Response:
        calls.n += 1
        headers = {}
        for item in request.query_params.getlist("h"):
            name, _, value = item.partition(":")
            headers[name] = value
        status = int(request.query_params.get("status", "200"))
        body = f"call {calls.n} user {request.headers.get('x-user', '-')}"
        response = PlainTextResponse(body, status_code=status, headers=headers)
        if "cookie" in request.query_params:
            response.set_cookie("session", request.headers.get("x-user", "anon"))
        return response

    async def big(request: Request) -> Response:
        calls.n += 1
        return Response(b"x" * int(request.query_params["size"]), media_type="text/plain")

    async def stream(request: Request) -> Response:
        calls.n += 1

        async def chunks():
            for i in range(3):
                yield f"part{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def boom(request: Request) -> Response:
        calls.n += 1
        raise RuntimeError("boom")

    async def context(request: Request) -> Response:
        calls.n += 1
        add_cache_tags(*request.query_params.getlist("tag"))
        return PlainTextResponse(
            f"{request_context.request_id}|{request.state.cacheplug is plug}|{calls.n}"
        )

    async def post(request: Request) -> Response:
        calls.n += 1
        return PlainTextResponse("posted")

    app = Starlette(
        routes=[
            Route("/page", page, methods=["GET", "HEAD"]),
            Route("/page", post, methods=["POST"]),
            Route("/big", big),
            Route("/stream", stream),
            Route("/boom", boom),
            Route("/context", context),
        ]
    )
    options.setdefault("policy", HttpCachePolicy(clock=lambda: clocks.wall))
    app.add_middleware(CachePlugMiddleware, plug=plug, cache_responses=cache_responses, **options)
    return app, calls


@pytest.fixture
def site(plug, clocks):
    app, calls = make_app(plug, clocks)
    with TestClient(app) as client:
        yield client, calls


# ------------------------------------------------------------------ hits and misses


def test_second_get_is_a_hit_served_without_calling_the_app(site, clocks):
    client, calls = site
    first = client.get("/page")
    assert first.headers["x-cache"] == "MISS"
    clocks.advance(3)
    second = client.get("/page")
    assert (second.text, second.headers["x-cache"], calls.n) == ("call 1 user -", "HIT", 1)
    assert second.headers["age"] == "3"
    etag = second.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert not etag.startswith("W/")
    assert second.headers["content-length"] == str(len(second.content))


def test_caching_is_off_by_default_and_follows_path_prefixes(plug, clocks):
    app, _ = make_app(plug, clocks, cache_responses=False)
    with TestClient(app) as client:
        assert "x-cache" not in client.get("/page").headers
        assert client.get("/page").text == "call 2 user -"
    other = CachePlug(ttl=60, timer=lambda: clocks.mono, sweep_interval=0)
    app, _calls = make_app(other, clocks, cache_responses=["/stream"])
    with TestClient(app) as client:
        client.get("/page")
        assert client.get("/page").text == "call 2 user -"
        client.get("/stream")
        assert client.get("/stream").headers["x-cache"] == "HIT"


def test_head_is_served_from_the_get_entry_and_never_stored(site):
    client, calls = site
    head = client.head("/page")
    assert head.headers["x-cache"] == "MISS"
    assert head.content == b""
    assert client.get("/page").headers["x-cache"] == "MISS"  # the HEAD stored nothing
    head = client.head("/page")
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert head.headers["content-length"] == str(len("call 2 user -"))
    assert calls.n == 2


def test_unsafe_method_is_not_cached_and_invalidates_the_url(site):
    client, calls = site
    client.get("/page")
    assert client.get("/page").headers["x-cache"] == "HIT"
    assert client.post("/page").text == "posted"
    assert "x-cache" not in client.post("/page").headers
    assert client.get("/page").headers["x-cache"] == "MISS"
    assert calls.n == 4


def test_query_order_does_not_matter_but_values_do(site):
    client, calls = site
    client.get("/page?a=1&b=2")
    assert client.get("/page?b=2&a=1").headers["x-cache"] == "HIT"
    assert client.get("/page?a=1&b=3").headers["x-cache"] == "MISS"
    assert calls.n == 2


# ------------------------------------------------------------------ storage rules


def test_set_cookie_response_for_user_a_is_never_served_to_user_b(site):
    client, calls = site
    a = client.get("/page?cookie=1", headers={"x-user": "alice"})
    b = client.get("/page?cookie=1", headers={"x-user": "bob"})
    assert "session=alice" in a.headers["set-cookie"]
    assert "session=bob" in b.headers["set-cookie"]
    assert "alice" not in b.text
    assert b.headers["x-cache"] == "MISS"
    assert calls.n == 2


def test_authorization_response_is_not_shared_unless_public(site):
    client, _calls = site
    client.get("/page", headers={"authorization": "Bearer a", "x-user": "alice"})
    b = client.get("/page", headers={"authorization": "Bearer b", "x-user": "bob"})
    assert b.text == "call 2 user bob"
    anonymous = client.get("/page")
    assert anonymous.text == "call 3 user -"  # alice's page was never stored
    url = "/page?h=cache-control:public,max-age=60"
    client.get(url, headers={"authorization": "Bearer a"})
    assert client.get(url, headers={"authorization": "Bearer b"}).headers["x-cache"] == "HIT"


def test_vary_accept_encoding_keeps_gzip_and_identity_apart(site):
    client, calls = site
    url = "/page?h=vary:accept-encoding"
    gzip = client.get(url, headers={"accept-encoding": "gzip", "x-user": "gz"})
    ident = client.get(url, headers={"accept-encoding": "identity", "x-user": "id"})
    assert ident.headers["x-cache"] == "MISS"
    assert ident.text == "call 2 user id"
    again_gzip = client.get(url, headers={"accept-encoding": "gzip"})
    again_ident = client.get(url, headers={"accept-encoding": "identity"})
    assert (again_gzip.text, again_gzip.headers["x-cache"]) == (gzip.text, "HIT")
    assert (again_ident.text, again_ident.headers["x-cache"]) == (ident.text, "HIT")
    assert calls.n == 2


@pytest.mark.parametrize(
    "header",
    [
        "vary:*",
        "cache-control:no-store",
        "cache-control:private",
        "cache-control:no-cache",
        "cache-control:max-age=0",
        "cache-control:max-age=oops",
    ],
)
def test_responses_that_forbid_storing_are_not_stored(site, header):
    client, calls = site
    client.get(f"/page?h={header}")
    assert client.get(f"/page?h={header}").headers["x-cache"] == "MISS"
    assert calls.n == 2


def test_status_codes_need_explicit_freshness_unless_cacheable_by_default(site):
    client, _calls = site
    for status, stored in ((404, True), (500, False), (201, False), (302, False)):
        url = f"/page?status={status}"
        client.get(url)
        assert (client.get(url).headers["x-cache"] == "HIT") is stored, status
    url = "/page?status=201&h=cache-control:max-age=30"
    client.get(url)
    assert client.get(url).headers["x-cache"] == "HIT"


def test_body_over_the_limit_is_streamed_untouched_and_not_stored(plug, clocks):
    policy = HttpCachePolicy(clock=lambda: clocks.wall, max_body_bytes=1000)
    app, calls = make_app(plug, clocks, policy=policy)
    with TestClient(app) as client:
        big = client.get("/big?size=5000")
        assert big.content == b"x" * 5000
        assert big.headers["x-cache"] == "MISS"
        assert client.get("/big?size=5000").headers["x-cache"] == "MISS"
        client.get("/big?size=999")
        assert client.get("/big?size=999").headers["x-cache"] == "HIT"
        assert calls.n == 3


def test_streamed_response_is_stored_whole(site):
    client, calls = site
    assert client.get("/stream").text == "part0;part1;part2;"
    hit = client.get("/stream")
    assert (hit.text, hit.headers["x-cache"], calls.n) == ("part0;part1;part2;", "HIT", 1)


# ------------------------------------------------------------------ freshness


def test_freshness_s_maxage_then_max_age_then_default(site, clocks):
    client, _ = site
    both = "/page?h=cache-control:max-age=10,s-maxage=20"
    max_age = "/page?h=cache-control:max-age=10"
    default = "/page"  # the plug's ttl=60
    for url in (both, max_age, default):
        client.get(url)
    clocks.advance(15)
    assert [client.get(u).headers["x-cache"] for u in (both, max_age, default)] == [
        "HIT",
        "MISS",
        "HIT",
    ]
    clocks.advance(50)  # 65 s after the first store; max_age was re-stored at 15 s
    assert [client.get(u).headers["x-cache"] for u in (both, max_age, default)] == [
        "MISS",
        "MISS",
        "MISS",
    ]


def test_request_no_cache_bypasses_and_refreshes_the_entry(site):
    client, _calls = site
    client.get("/page")
    fresh = client.get("/page", headers={"cache-control": "no-cache"})
    assert (fresh.headers["x-cache"], fresh.text) == ("BYPASS", "call 2 user -")
    assert client.get("/page").text == "call 2 user -"  # the refreshed copy


def test_if_none_match_gets_a_304_on_a_hit(site):
    client, _ = site
    client.get("/page")
    etag = client.get("/page").headers["etag"]
    not_modified = client.get("/page", headers={"if-none-match": f'W/"zz", {etag}'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert "content-type" not in not_modified.headers
    other = client.get("/page", headers={"if-none-match": '"something-else"'})
    assert other.status_code == 200


# ------------------------------------------------------------------ bad input


def test_malformed_request_headers_pass_through_without_a_500(site):
    client, _calls = site
    client.get("/page")
    for headers in (
        {"cache-control": 'max-age="unterminated'},
        {"cache-control": "max-age=, ,=="},
        {"if-none-match": 'W/"broken'},
        {"if-none-match": ",,,"},
    ):
        response = client.get("/page", headers=headers)
        assert response.status_code == 200, headers
    # a malformed request Cache-Control bypasses the cache; If-None-Match junk is a hit
    assert client.get("/page", headers={"cache-control": '"'}).headers["x-cache"] == "BYPASS"
    assert client.get("/page", headers={"if-none-match": "junk"}).headers["x-cache"] == "HIT"


async def call_asgi(app, scope_overrides=None, body=b""):
    """One raw ASGI request; returns (messages sent, exception raised or None)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/page",
        "raw_path": b"/page",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": None,
    }
    scope.update(scope_overrides or {})
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    try:
        await app(scope, receive, send)
    except Exception as exc:
        return sent, exc
    return sent, None


def headers_of(messages):
    return {k.decode(): v.decode("latin-1") for k, v in messages[0]["headers"]}


async def test_missing_host_and_server_passes_through_uncached(plug, clocks):
    app, calls = make_app(plug, clocks)
    for _ in range(2):
        sent, exc = await call_asgi(app, {"headers": []})
        assert exc is None
        assert sent[0]["status"] == 200
        assert "x-cache" not in headers_of(sent)
    assert calls.n == 2


async def test_non_utf8_header_bytes_are_handled(plug, clocks):
    app, _calls = make_app(plug, clocks)
    headers = [(b"host", b"testserver"), (b"x-user", b"caf\xe9\xff"), (b"accept", b"\x80\x81")]
    for expected in ("MISS", "HIT"):
        sent, exc = await call_asgi(app, {"headers": headers})
        assert exc is None
        assert sent[0]["status"] == 200
        assert headers_of(sent)["x-cache"] == expected
    bad_host = [(b"host", b"\xff\xfe/evil")]
    sent, exc = await call_asgi(app, {"headers": bad_host})
    assert exc is None
    assert "x-cache" not in headers_of(sent)


async def test_app_that_raises_fails_as_without_cacheplug_and_stores_nothing(plug, clocks):
    app, calls = make_app(plug, clocks)
    for path in ("/boom", "/boom"):
        sent, exc = await call_asgi(app, {"path": path, "raw_path": path.encode()})
        assert sent[0]["status"] == 500  # Starlette's own error page, as without us
        assert isinstance(exc, RuntimeError)
        assert str(exc) == "boom"
    assert calls.n == 2
    assert not request_context.active


async def test_incomplete_response_is_not_stored(plug, clocks):
    calls = Calls()

    async def half(scope, receive, send):
        calls.n += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        # returns without the final chunk (a crash or a dropped stream)

    app = CachePlugMiddleware(
        half,
        plug=plug,
        cache_responses=True,
        policy=HttpCachePolicy(clock=lambda: clocks.wall),
    )
    for _ in range(2):
        sent, exc = await call_asgi(app)
        assert exc is None
        assert sent[1]["body"] == b"partial"
        assert headers_of(sent)["x-cache"] == "MISS"
    assert calls.n == 2
    assert not [k for k in plug.cache if str(k).startswith("http:")]


async def test_app_that_raises_mid_stream_stores_nothing(plug, clocks):
    async def crash(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise ConnectionResetError("client went away")

    app = CachePlugMiddleware(crash, plug=plug, cache_responses=True)
    _sent, exc = await call_asgi(app)
    assert isinstance(exc, ConnectionResetError)
    assert len(plug.cache) == 0
    assert not request_context.active


# ------------------------------------------------------------------ request id and context


def test_request_id_is_honoured_echoed_and_in_the_context(site):
    client, _ = site
    response = client.get("/context?n=1", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.text.split("|")[:2] == ["abc-123", "True"]
    generated = client.get("/context?n=2")
    rid = generated.headers["x-request-id"]
    assert len(rid) == 32
    assert generated.text.startswith(rid)
    assert client.get("/context?n=3").headers["x-request-id"] != rid
    for bad in ("x" * 500, "evil\x01line"):
        response = client.get("/context?n=4", headers={"x-request-id": bad})
        assert response.status_code == 200
        assert response.headers["x-request-id"] != bad


def test_request_id_can_be_untrusted_or_turned_off(plug, clocks):
    app, _ = make_app(plug, clocks, trust_request_id=False)
    with TestClient(app) as client:
        response = client.get("/context", headers={"x-request-id": "mine"})
        assert response.headers["x-request-id"] != "mine"
    other = CachePlug(ttl=60, timer=lambda: clocks.mono, sweep_interval=0)
    app, _ = make_app(other, clocks, request_id_header=None)
    with TestClient(app) as client:
        response = client.get("/context", headers={"x-request-id": "mine"})
        assert "x-request-id" not in response.headers
        assert len(response.text.split("|")[0]) == 32  # still an id for the logs


def test_hit_echoes_the_request_id_too(site):
    client, _ = site
    client.get("/page")
    hit = client.get("/page", headers={"x-request-id": "second"})
    assert (hit.headers["x-cache"], hit.headers["x-request-id"]) == ("HIT", "second")


async def test_context_is_reset_after_an_exception_and_a_cancellation(plug):
    seen = []

    async def app(scope, receive, send):
        seen.append((request_context.request_id, request_context.get("leak")))
        request_context.set("leak", "yes")
        if scope["path"] == "/raise":
            raise ValueError("x")
        if scope["path"] == "/hang":
            await asyncio.sleep(3600)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = CachePlugMiddleware(app, plug=plug)
    _, exc = await call_asgi(mw, {"path": "/raise"})
    assert isinstance(exc, ValueError)
    assert not request_context.active
    task = asyncio.ensure_future(call_asgi(mw, {"path": "/hang"}))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await call_asgi(mw, {"path": "/ok"})
    assert [leak for _, leak in seen] == [None, None, None]
    assert len({rid for rid, _ in seen}) == 3
    assert not request_context.active


def test_log_filter_stamps_records_with_the_request_id(plug, clocks, caplog):
    log = logging.getLogger("test.asgi.shop")

    async def endpoint(request: Request) -> Response:
        log.info("handling")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(CachePlugMiddleware, plug=plug)
    stamp = RequestIdFilter()
    caplog.handler.addFilter(stamp)
    try:
        with caplog.at_level(logging.INFO, logger="test.asgi.shop"), TestClient(app) as client:
            client.get("/", headers={"x-request-id": "log-me"})
            log.info("outside")
    finally:
        caplog.handler.removeFilter(stamp)
    ids = {r.getMessage(): r.request_id for r in caplog.records if r.name == "test.asgi.shop"}
    assert ids == {"handling": "log-me", "outside": "-"}


def test_websocket_gets_a_request_context(plug):
    async def ws(websocket):
        await websocket.accept()
        await websocket.send_text(str(request_context.request_id))
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app.add_middleware(CachePlugMiddleware, plug=plug, cache_responses=True)
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws", headers={"x-request-id": "ws-1"}) as conn,
    ):
        assert conn.receive_text() == "ws-1"


# ------------------------------------------------------------------ tags and FastAPI


def test_cache_tags_from_the_context_allow_targeted_purges(site, plug):
    client, _calls = site
    client.get("/context?tag=product:1&tag=products")
    client.get("/context?tag=product:2&tag=products&x=1")
    plug.invalidate_tags("product:1")
    assert client.get("/context?tag=product:1&tag=products").headers["x-cache"] == "MISS"
    assert client.get("/context?tag=product:2&tag=products&x=1").headers["x-cache"] == "HIT"
    plug.invalidate_tags("products")
    assert client.get("/context?tag=product:2&tag=products&x=1").headers["x-cache"] == "MISS"


def make_fastapi(plug, clocks):
    app = FastAPI()
    calls = Calls()

    @app.get("/products/{product_id}")
    @cache_endpoint(ttl=5, tags=["products", "product:{product_id}"])
    async def product(
        product_id: int, ctx: Annotated[RequestContext, Depends(request_context_dep)]
    ):
        calls.n += 1
        return {"id": product_id, "request_id": ctx.request_id, "calls": calls.n}

    @app.get("/sync/{name}")
    @cache_endpoint(tags=["sync:{name}"])
    def sync_endpoint(name: str):
        calls.n += 1
        return {"name": name, "calls": calls.n}

    app.add_middleware(
        CachePlugMiddleware,
        plug=plug,
        cache_responses=True,
        policy=HttpCachePolicy(clock=lambda: clocks.wall),
    )
    return app, calls


def test_fastapi_decorator_sets_ttl_and_tags_and_dependency_gives_the_context(plug, clocks):
    app, calls = make_fastapi(plug, clocks)
    with TestClient(app) as client:
        first = client.get("/products/7", headers={"x-request-id": "req-7"})
        assert first.json() == {"id": 7, "request_id": "req-7", "calls": 1}
        assert client.get("/products/7").headers["x-cache"] == "HIT"
        clocks.advance(6)  # the endpoint's ttl=5, not the plug's 60
        assert client.get("/products/7").headers["x-cache"] == "MISS"
        client.get("/products/8")
        plug.invalidate_tags("product:7")
        assert client.get("/products/7").headers["x-cache"] == "MISS"
        assert client.get("/products/8").headers["x-cache"] == "HIT"
        client.get("/sync/a")
        assert client.get("/sync/a").headers["x-cache"] == "HIT"
        plug.invalidate_tags("sync:a")
        assert client.get("/sync/a").json()["calls"] == calls.n


def test_decorator_and_middleware_reject_bad_configuration(plug):
    with pytest.raises(ConfigurationError, match="ttl"):
        cache_endpoint(ttl=0)
    with pytest.raises(ConfigurationError, match="nope"):

        @cache_endpoint(tags=["item:{nope}"])
        async def endpoint(item_id: int): ...

    with pytest.raises(ConfigurationError, match="CachePlug"):
        CachePlugMiddleware(lambda *a: None, plug="not a plug")
    with pytest.raises(ConfigurationError, match="cache_responses"):
        CachePlugMiddleware(lambda *a: None, plug=plug, cache_responses="/x")
    with pytest.raises(ConfigurationError, match="cache_responses"):
        CachePlugMiddleware(lambda *a: None, plug=plug, cache_responses=["nope"])


async def test_dependency_without_the_middleware_says_what_to_add():
    from cacheplug.context import NoActiveScopeError

    with pytest.raises(NoActiveScopeError, match="CachePlugMiddleware"):
        await request_context_dep()
