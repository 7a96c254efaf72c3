"""The dashboard's payload, access check and ASGI/WSGI apps (the browser test is separate)."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client as WerkzeugClient

from cacheplug import CachePlug, ConfigurationError
from cacheplug.dashboard import (
    AccessPolicy,
    Request,
    build_payload,
    dashboard_asgi_app,
    dashboard_handler,
    dashboard_wsgi_app,
    is_loopback,
    key_prefix,
    tier_status,
)
from cacheplug.dashboard.access import TOKEN_ENV

TOKEN = "dashboard-token-0123456789"
REMOTE = ("203.0.113.7", 40000)


@pytest.fixture
def plug(timer):
    with CachePlug(name="shop", maxsize=64, shards=4, ttl=60, timer=timer, sweep_interval=0) as p:
        yield p


# -- payload ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("user:42", "user:"),
        ("user:42:profile", "user:"),
        (":1:user:42", ":1:user:"),  # Django's KEY_PREFIX:VERSION:key
        ("myapp:1:session:ab", "myapp:"),
        ("/products?page=3", "/products"),
        ("/api/items/7", "/api/items/7"),
        ("plainkey", "(no prefix)"),
        ("12:34", "(no prefix)"),
        (b"bytes:1", "bytes:"),
        (("user:1", "extra"), "user:"),
        (42, "<int>"),
        ("x" * 200 + ":1", "x" * 63 + ":"),
    ],
)
def test_key_prefix(key, prefix):
    assert key_prefix(key) == prefix


def test_payload_numbers_match_the_cache(plug):
    cache = plug.cache
    for i in range(100):  # 64 slots: evictions in every shard
        cache.set(f"user:{i}", i)
    for i in range(90, 100):
        cache.get(f"user:{i}")
    cache.get("missing")
    cache.delete("user:99")
    payload = build_payload(plug)
    json.dumps(payload)  # JSON-ready
    stats = plug.stats().cache
    assert payload["name"] == "shop"
    assert payload["started"] is True
    for field in ("hits", "misses", "sets", "deletes", "evictions", "expirations", "maxsize"):
        assert payload["cache"][field] == getattr(stats, field), field
    assert payload["cache"]["entries"] == stats.size == len(cache)
    assert payload["cache"]["hit_ratio"] == pytest.approx(stats.hit_ratio)
    shards = payload["shards"]
    assert len(shards) == 4
    assert sum(s["entries"] for s in shards) == stats.size
    assert sum(s["evictions"] for s in shards) == stats.evictions > 0
    assert payload["worker"]["queue_depth"] == plug.worker.stats().queue_depth
    assert payload["persistence"] is None
    assert payload["tier"] == {"state": "off"}
    assert payload["top_prefixes"][0]["prefix"] == "user:"
    assert payload["top_prefixes"][0]["share"] == 1.0


def test_sample_keys_is_bounded_and_estimates_the_mix():
    with CachePlug(maxsize=10_000, sweep_interval=0) as plug:
        cache = plug.cache
        assert cache.sample_keys(10) == []
        for i in range(3000):
            cache.set(f"user:{i}", i)
        for i in range(1000):
            cache.set(f"/products?page={i}", i)
        for i in range(0, 3000, 2):  # holes in the shard queues
            cache.delete(f"user:{i}")
        sample = cache.sample_keys(1000, random.Random(7))
        assert len(sample) == 1000
        assert all(key in cache for key in sample)
        ranked = build_payload(plug, sample=1000)["top_prefixes"]
        shares = {row["prefix"]: row["share"] for row in ranked}
        # 1500 user: keys and 1000 /products: 60% / 40%; binomial sd is ~1.5%.
        assert shares["user:"] == pytest.approx(0.6, abs=0.08)
        assert shares["/products"] == pytest.approx(0.4, abs=0.08)
        assert cache.sample_keys(0) == []


def test_payload_with_persistence(tmp_path):
    plug = CachePlug(name="d", state_dir=tmp_path, secret="s" * 32, fsync="never", sweep_interval=0)
    with plug:
        for i in range(3):
            plug.cache.set(f"k:{i}", i)
        plug.worker.flush()
        section = build_payload(plug)["persistence"]
        stats = plug.stats().persistence
        assert section["wal_lag_records"] == stats.last_seq - stats.last_fsync_seq
        assert section["wal_records"] == stats.wal_records
        plug.save()
        section = build_payload(plug)["persistence"]
        assert section["last_snapshot_at"] == plug.stats().persistence.last_snapshot_at
        assert section["snapshots_written"] >= 1


class Tier:
    def __init__(self, **stats):
        self._stats = stats

    def stats(self):
        return self._stats


def test_tier_status_reads_the_tier_defensively(plug):
    assert tier_status(plug) == {"state": "off"}
    # Any object with a ``tier`` attribute will do: the reader only duck-types.
    holder = SimpleNamespace(tier=Tier(connected=True, errors=2, nested={"not": "scalar"}))
    assert tier_status(holder) == {"connected": True, "errors": 2, "state": "up"}
    holder.tier = Tier(breaker_state="open")
    assert tier_status(holder)["state"] == "down"
    holder.tier = Tier(breaker_state="half-open")
    assert tier_status(holder)["state"] == "down"
    holder.tier = Tier(breaker_state="closed")
    assert tier_status(holder)["state"] == "up"
    holder.tier = Tier()
    assert tier_status(holder)["state"] == "unknown"

    class Broken:
        def stats(self):
            raise ConnectionError("redis is down")

    holder.tier = Broken()
    status = tier_status(holder)
    assert status["state"] == "unknown"
    assert "redis is down" in status["error"]


# -- access -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("203.0.113.7", False),
        ("localhost", False),  # names are not trusted
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_access_policy_decisions(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    loopback_only = AccessPolicy()
    assert loopback_only.check(client_host="127.0.0.1", headers={}).allowed
    denied = loopback_only.check(client_host="10.1.2.3", headers={})
    assert (denied.allowed, denied.status) == (False, 403)
    proxied = loopback_only.check(client_host="127.0.0.1", headers={"x-forwarded-for": "10.1.2.3"})
    assert not proxied.allowed

    policy = AccessPolicy(token=TOKEN)
    remote = "198.51.100.1"
    assert policy.check(client_host=remote, headers={"authorization": f"Bearer {TOKEN}"}).allowed
    assert policy.check(client_host=remote, headers={"authorization": f"bearer  {TOKEN} "}).allowed
    assert policy.check(client_host=remote, headers={}, query_token=TOKEN).allowed
    assert policy.check(client_host=remote, headers={}).status == 401
    wrong = policy.check(client_host="127.0.0.1", headers={}, query_token=TOKEN + "x")
    assert (wrong.allowed, wrong.status) == (False, 403)  # a wrong token is never excused
    assert policy.check(client_host=remote, headers={"authorization": "Basic abc"}).status == 401

    strict = AccessPolicy(token=TOKEN, allow_loopback=False)
    assert not strict.check(client_host="127.0.0.1", headers={}).allowed
    assert strict.check(client_host="127.0.0.1", headers={}, query_token=TOKEN).allowed


def test_access_policy_configuration_errors(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="at least 16"):
        AccessPolicy(token="short")
    with pytest.raises(ConfigurationError, match="lets nobody in"):
        AccessPolicy(allow_loopback=False)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    from_env = AccessPolicy(allow_loopback=False)
    assert from_env.check(client_host=None, headers={"authorization": f"Bearer {TOKEN}"}).allowed
    assert TOKEN not in repr(from_env)


# -- the ASGI app -----------------------------------------------------------------------


def asgi_client(app, client=REMOTE) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_asgi_routes_for_a_token_holder(plug):
    plug.cache.set("user:1", 1)
    plug.cache.get("user:1")
    app = dashboard_asgi_app(plug, access=AccessPolicy(token=TOKEN))
    async with asgi_client(app) as c:
        auth = {"authorization": f"Bearer {TOKEN}"}
        page = await c.get("/_cacheplug/", headers=auth)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "script-src 'sha256-" in csp
        assert "connect-src 'self'" in csp
        assert "<script>" in page.text
        assert "http" not in page.text.split("<script>")[0].lower()
        data = (await c.get("/_cacheplug/api/stats", headers=auth)).json()
        assert data["cache"]["hits"] == 1
        assert data["cache"]["entries"] == 1
        assert (await c.get(f"/_cacheplug/api/stats?token={TOKEN}")).status_code == 200
        head = await c.head("/_cacheplug/api/stats", headers=auth)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["cache-control"] == "no-store"
        assert (await c.post("/_cacheplug/api/stats", headers=auth)).status_code == 405
        redirect = await c.get(f"/_cacheplug?token={TOKEN}")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == f"/_cacheplug/?token={TOKEN}"
        assert (await c.get("/_cacheplug/nope", headers=auth)).status_code == 404


async def test_asgi_refuses_remote_clients_without_the_token(plug, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with_token = dashboard_asgi_app(plug, access=AccessPolicy(token=TOKEN))
    async with asgi_client(with_token) as c:
        response = await c.get("/_cacheplug/api/stats")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "hits" not in response.text
        assert (
            await c.get("/_cacheplug/", headers={"authorization": "Bearer wrong"})
        ).status_code == 403
    loopback_only = dashboard_asgi_app(plug)
    async with asgi_client(loopback_only) as c:
        assert (await c.get("/_cacheplug/api/stats")).status_code == 403
    async with asgi_client(loopback_only, client=("127.0.0.1", 5000)) as c:
        assert (await c.get("/_cacheplug/api/stats")).status_code == 200


async def test_asgi_raw_scope_from_a_non_loopback_client(plug, monkeypatch):
    """Call the app with a hand-built scope, as a server would for a remote peer."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    app = dashboard_asgi_app(plug)
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/_cacheplug/api/stats",
        "raw_path": b"/_cacheplug/api/stats",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "client": ("192.0.2.10", 51000),
        "server": ("192.0.2.1", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 403


async def test_asgi_middleware_mode_passes_everything_else_through(plug):
    calls = []

    async def inner(scope, receive, send):
        calls.append(scope["type"])
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"shop"})

    app = dashboard_asgi_app(plug, app=inner)
    async with asgi_client(app, client=("127.0.0.1", 1)) as c:
        assert (await c.get("/products")).text == "shop"
        assert (await c.get("/api/stats")).text == "shop"  # not under the prefix: not ours
        assert (await c.get("/_cacheplug/api/stats")).json()["name"] == "shop"
    messages = []

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        messages.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert calls == ["http", "http", "lifespan"]
    assert messages == [{"type": "lifespan.startup.complete"}]


async def test_asgi_mounted_in_starlette(plug):
    plug.cache.set("/products?page=1", b"...")

    async def home(request):
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home), Mount("/_cacheplug", app=dashboard_asgi_app(plug))])
    async with asgi_client(app, client=("127.0.0.1", 1)) as c:
        assert (await c.get("/")).text == "home"
        data = (await c.get("/_cacheplug/api/stats")).json()
        assert data["top_prefixes"][0]["prefix"] == "/products"
        assert (await c.get("/_cacheplug/")).headers["content-type"].startswith("text/html")


def test_bad_prefix_is_refused(plug):
    with pytest.raises(ConfigurationError, match="prefix"):
        dashboard_asgi_app(plug, prefix="_cacheplug/")


# -- the WSGI app -------------------------------------------------------------------------


def test_wsgi_middleware_in_a_flask_app(plug, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    plug.cache.set("user:1", 1)
    app = flask.Flask(__name__)

    @app.get("/")
    def home():
        return "home"

    app.wsgi_app = dashboard_wsgi_app(plug, app=app.wsgi_app, access=AccessPolicy(token=TOKEN))
    client = app.test_client()
    assert client.get("/").text == "home"
    local = client.get("/_cacheplug/api/stats")  # the test client is 127.0.0.1
    assert local.status_code == 200
    assert local.json["cache"]["entries"] == 1
    remote = {"REMOTE_ADDR": "198.51.100.20"}
    assert client.get("/_cacheplug/api/stats", environ_overrides=remote).status_code == 401
    ok = client.get(
        "/_cacheplug/api/stats",
        environ_overrides=remote,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert ok.status_code == 200
    page = client.get("/_cacheplug/")
    assert page.status_code == 200
    assert b"cacheplug dashboard" in page.data
    assert client.get("/_cacheplug").headers["location"].endswith("/_cacheplug/")


def test_wsgi_standalone_mounted_under_a_script_name(plug):
    def root(environ, start_response):
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"root"]

    app = DispatcherMiddleware(root, {"/ops": dashboard_wsgi_app(plug)})
    client = WerkzeugClient(app)
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/").text == "root"
    assert client.get("/ops/api/stats", environ_base=local).json["name"] == "shop"
    assert client.get("/ops", environ_base=local).headers["location"] == "/ops/"
    assert client.get("/ops/_cacheplug/api/stats", environ_base=local).status_code == 200
    assert client.get("/ops/", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 403
    assert client.get("/ops/api/stats").status_code == 403  # no address at all: not loopback


def test_dashboard_handler_for_adapters_without_asgi_or_wsgi(plug, monkeypatch):
    """What a Django view does: build a Request, get a Response (access check included)."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    handler = dashboard_handler(plug, access=AccessPolicy(token=TOKEN))

    def request(path: str, host: str, headers: dict[str, str] | None = None) -> Request:
        return Request("GET", path, path, "", {}, headers or {}, host)

    assert handler(request("/products", "127.0.0.1")) is None  # not ours
    assert handler(request("/_cacheplug/api/stats", "198.51.100.3")).status == 401
    ok = handler(
        request("/_cacheplug/api/stats", "198.51.100.3", {"authorization": f"Bearer {TOKEN}"})
    )
    assert ok.status == 200
    assert json.loads(ok.body)["name"] == "shop"
    assert ("cache-control", "no-store") in ok.header_list()
