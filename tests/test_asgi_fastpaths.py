"""The ASGI miss path's memos and shortcuts never give a wrong answer.

The store plan is memoized per exact response-header bytes, parsed request headers per
exact request-header bytes, and stored header tuples are shared between entries. Each
test drives a real Starlette app through the middleware and shows that responses which
share a memo entry, or nearly do, are still told apart.
"""

from __future__ import annotations

import hashlib

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from cacheplug import CachePlug
from cacheplug.context import request_context
from cacheplug.http import HttpCachePolicy, make_etag, request_headers_from_asgi
from cacheplug.integrations.asgi import CachePlugMiddleware, cache_endpoint

from .asgi_support import Clocks


@pytest.fixture
def clock() -> Clocks:
    return Clocks()


@pytest.fixture
def plug(clock):
    p = CachePlug(ttl=60, timer=lambda: clock.mono, sweep_interval=0)
    yield p
    p.close()


def make_client(plug, clock, **options):
    """Endpoints with fixed header sets; each body names the call number."""
    calls = {"n": 0}

    def endpoint(headers, body=None):
        async def handler(request: Request) -> Response:
            calls["n"] += 1
            text = body if body is not None else f"call {calls['n']}"
            return Response(text, media_type="text/plain", headers=headers)

        return handler

    same = {"cache-control": "max-age=60"}
    routes = [
        Route("/a", endpoint(same)),
        Route("/b", endpoint(same)),
        Route("/cookie", endpoint({**same, "set-cookie": "s=1"})),
        Route("/private", endpoint({"cache-control": "private"})),
        Route("/lang", endpoint({**same, "vary": "accept-language"})),
        Route("/fixed", endpoint(same, body="same body")),
        Route("/fixed2", endpoint(same, body="same body")),
        Route("/expires", endpoint({"expires": "Tue, 14 Nov 2023 22:23:20 GMT"})),
        Route("/plain", endpoint({})),
        Route("/short", cache_endpoint(ttl=5)(endpoint({}))),
    ]
    policy = HttpCachePolicy(default_ttl=60, clock=lambda: clock.wall)
    app = CachePlugMiddleware(
        Starlette(routes=routes), plug=plug, cache_responses=True, policy=policy, **options
    )
    return TestClient(app), calls, policy


def x_cache(response) -> str:
    return response.headers["x-cache"]


def test_same_header_bytes_on_two_urls_are_stored_apart(plug, clock):
    client, calls, _ = make_client(plug, clock)
    first, second = client.get("/a"), client.get("/b")
    assert (first.text, second.text) == ("call 1", "call 2")
    assert client.get("/a").text == "call 1"
    assert client.get("/b").text == "call 2"
    assert x_cache(client.get("/b")) == "HIT"
    assert calls["n"] == 2


def test_a_refusing_header_is_never_hidden_by_a_memoized_shape(plug, clock):
    client, calls, _ = make_client(plug, clock)
    client.get("/a")  # the storable shape is memoized first
    for path in ("/cookie", "/private"):
        client.get(path)
        again = client.get(path)
        assert x_cache(again) == "MISS", path
    assert calls["n"] == 5


def test_authorization_is_in_the_memo_key(plug, clock):
    """One response-header shape, stored for a public request, refused for a private one."""
    client, calls, _ = make_client(plug, clock)
    client.get("/plain?u=1")
    assert x_cache(client.get("/plain?u=1")) == "HIT"
    client.get("/plain?u=2", headers={"authorization": "Bearer t"})
    again = client.get("/plain?u=2", headers={"authorization": "Bearer t"})
    assert x_cache(again) == "MISS"
    assert calls["n"] == 3


def test_vary_values_come_from_each_request_not_the_memo(plug, clock):
    client, calls, _ = make_client(plug, clock)
    fr = client.get("/lang", headers={"accept-language": "fr"})
    de = client.get("/lang", headers={"accept-language": "de"})
    assert client.get("/lang", headers={"accept-language": "fr"}).text == fr.text
    assert client.get("/lang", headers={"accept-language": "de"}).text == de.text
    assert fr.text != de.text
    assert calls["n"] == 2  # the second variant merged with the first, not replaced it


def test_equal_bodies_share_header_tuples_and_other_bodies_get_their_own_etag(plug, clock):
    client, _, _ = make_client(plug, clock)
    client.get("/fixed")
    client.get("/fixed2")
    client.get("/a")
    entries = {
        path: plug.cache.get(f"http:http://testserver{path}")[0]
        for path in ("/fixed", "/fixed2", "/a")
    }
    assert entries["/fixed"].raw_headers is entries["/fixed2"].raw_headers
    assert entries["/fixed"].headers is entries["/fixed2"].headers
    for entry in entries.values():
        assert entry.etag == make_etag(entry.body)
        assert ("etag", entry.etag) in entry.headers
        assert (b"etag", entry.etag.encode()) in entry.raw_headers
        assert ("content-length", str(len(entry.body))) in entry.headers
    assert entries["/a"].etag != entries["/fixed"].etag


def test_expires_is_decided_afresh_against_the_clock(plug, clock):
    """Expires depends on the clock, so its verdict must not be memoized."""
    client, calls, _ = make_client(plug, clock)
    client.get("/expires?v=1")  # Expires is 600 s after EPOCH: stored
    assert x_cache(client.get("/expires?v=1")) == "HIT"
    clock.advance(700)  # the same header bytes now name a past date
    client.get("/expires?v=2")
    assert x_cache(client.get("/expires?v=2")) == "MISS"
    assert calls["n"] == 3


def test_an_endpoint_ttl_gets_its_own_plan(plug, clock):
    client, calls, _ = make_client(plug, clock)
    client.get("/plain")
    client.get("/short")
    clock.advance(10)  # past /short's 5 s, within the default 60 s
    assert x_cache(client.get("/plain")) == "HIT"
    assert x_cache(client.get("/short")) == "MISS"
    assert calls["n"] == 3


def test_content_length_mismatch_is_not_stored_even_when_the_shape_is_memoized(plug, clock):
    """Header bytes with a Content-Length that the body does not match: never stored."""

    async def app(scope, receive, send):
        body = b"12345" if scope["query_string"] == b"ok" else b"1234"
        headers = [(b"content-length", b"5"), (b"cache-control", b"max-age=60")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    client = TestClient(CachePlugMiddleware(app, plug=plug, cache_responses=True))
    client.get("/x?ok")  # memoizes the plan of these header bytes
    client.get("/x?short")  # the same bytes, a body one byte short
    assert plug.cache.get("http:http://testserver/x?ok") is not None
    assert plug.cache.get("http:http://testserver/x?short") is None


def test_header_pairs_as_lists_are_still_decided(plug, clock):
    """ASGI allows lists for header pairs: unhashable, so decided without the memo."""

    async def app(scope, receive, send):
        headers = [[b"cache-control", b"max-age=60"], [b"content-type", b"text/plain"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hi"})

    client = TestClient(CachePlugMiddleware(app, plug=plug, cache_responses=True))
    client.get("/l")
    assert x_cache(client.get("/l")) == "HIT"


def test_request_headers_memo_returns_a_fresh_dict_each_time():
    raw = [(b"Host", b"h"), (b"Accept", b" a "), (b"cookie", b"x=1"), (b"cookie", b"y=2")]
    first = request_headers_from_asgi(list(raw))
    assert first == {"host": "h", "accept": "a", "cookie": "x=1; y=2"}
    first["host"] = "changed"
    assert request_headers_from_asgi(list(raw))["host"] == "h"
    other = request_headers_from_asgi([(b"Host", b"other")])
    assert other == {"host": "other"}
    assert request_headers_from_asgi([[b"host", b"l"]]) == {"host": "l"}  # lists: unhashable


def test_unique_urls_do_not_fill_the_key_memo_but_stored_ones_do(plug, clock):
    client, _, _ = make_client(plug, clock)
    mw = client.app
    client.get("/private?v=1")  # never stored: its key is not remembered
    assert not any("/private" in key for key in mw._keys.values() if key)
    client.get("/a")
    client.get("/a")  # stored: the hit remembers the key
    assert "http:http://testserver/a" in mw._keys.values()


def test_enter_and_exit_open_and_restore_a_scope():
    assert not request_context.active
    outer = request_context.enter("r1")
    try:
        request_context.set("k", 1)
        inner = request_context.enter()
        try:
            assert request_context.get("k") is None  # a fresh store
            assert request_context.request_id not in (None, "r1")
        finally:
            request_context.exit(inner)
        assert (request_context.get("k"), request_context.request_id) == (1, "r1")
    finally:
        request_context.exit(outer)
    assert not request_context.active


def test_make_etag_is_unchanged():
    """ETags must agree across versions and workers: blake2b-128, quoted."""
    assert make_etag(b"") == '"cae66941d9efbd404e4d88758ea67670"'
    body = b"x" * 1000
    assert make_etag(body) == '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def test_generated_request_ids_are_32_hex_digits_and_unique(plug, clock):
    client, _, _ = make_client(plug, clock)
    ids = {client.get(f"/plain?i={i}").headers["x-request-id"] for i in range(3)}
    assert len(ids) == 3
    for rid in ids:
        assert len(rid) == 32
        int(rid, 16)
