"""@plug.cached: the shared HTTP policy on real Flask apps, early hits, and Flask-Caching's leak."""

from __future__ import annotations

import pytest
from flask import Flask, make_response, request, session

from cacheplug.errors import ConfigurationError
from cacheplug.integrations.flask import FlaskCachePlug


@pytest.fixture
def plug():
    return FlaskCachePlug()


@pytest.fixture
def make_app(plug):
    made: list[Flask] = []

    def make(**config) -> Flask:
        app = Flask(f"cached{len(made)}")
        app.config.update({"SECRET_KEY": "test", **config})
        plug.init_app(app)
        made.append(app)
        return app

    yield make
    for app in made:
        plug.close(app)


@pytest.fixture(params=[True, False], ids=["early", "in-view"])
def app(request, make_app):
    """Every behaviour holds with hits answered early and with hits answered in the view."""
    return make_app(CACHEPLUG_EARLY_HITS=request.param)


def test_miss_then_hit_runs_the_view_once(app, plug):
    calls = []

    @app.get("/items")
    @plug.cached(timeout=60)
    def items():
        calls.append(1)
        return f"items v{len(calls)}"

    client = app.test_client()
    first = client.get("/items")
    assert (first.data, first.headers["X-Cache"]) == (b"items v1", "MISS")
    for _ in range(3):
        hit = client.get("/items")
        assert (hit.data, hit.headers["X-Cache"]) == (b"items v1", "HIT")
        assert hit.headers["Age"] == "0"
        assert hit.headers["ETag"].startswith('"')
        assert hit.headers["Content-Type"] == "text/html; charset=utf-8"
    assert calls == [1]


def test_query_string_false_shares_true_separates(app, plug):
    @app.get("/shared")
    @plug.cached()
    def shared():
        return request.args.get("page", "none")

    @app.get("/separate")
    @plug.cached(query_string=True)
    def separate():
        return request.args.get("page", "none")

    client = app.test_client()
    assert client.get("/shared?page=1").data == b"1"
    assert client.get("/shared?page=2").data == b"1"  # Flask-Caching's default semantics
    assert client.get("/separate?page=1&x=1").data == b"1"
    assert client.get("/separate?page=2").data == b"2"
    hit = client.get("/separate?x=1&page=1")  # parameter order does not matter
    assert (hit.data, hit.headers["X-Cache"]) == (b"1", "HIT")


def test_key_prefix_string_and_callable(app, plug):
    @app.get("/a")
    @plug.cached(key_prefix="fixed-key")
    def a():
        return "a"

    @app.get("/b")
    @plug.cached(key_prefix=lambda: f"custom/{request.args.get('lang', 'en')}")
    def b():
        return f"b-{request.args.get('lang', 'en')}"

    client = app.test_client()
    client.get("/a")
    client.get("/b?lang=fr")
    with app.app_context():
        # A str key_prefix is qualified by the origin; a key function is used as is.
        assert plug.cache.get("http://localhost|fixed-key")[0].body == b"a"
        assert plug.cache.get("custom/fr")[0].body == b"b-fr"
    assert client.get("/b?lang=fr").headers["X-Cache"] == "HIT"
    assert client.get("/b?lang=de").data == b"b-de"


def test_unless_bypasses(app, plug):
    calls = []

    @app.get("/u")
    @plug.cached(unless=lambda: request.args.get("fresh") == "1")
    def u():
        calls.append(1)
        return str(len(calls))

    client = app.test_client()
    assert client.get("/u").data == b"1"
    assert client.get("/u").data == b"1"
    bypassed = client.get("/u?fresh=1")
    assert bypassed.data == b"2"
    assert "X-Cache" not in bypassed.headers


def test_tags_invalidate_views(app, plug):
    version = {"n": 1}

    @app.get("/products/<int:pid>")
    @plug.cached(tags=lambda pid: ["products", f"product:{pid}"])
    def product(pid: int):
        return f"product {pid} v{version['n']}"

    client = app.test_client()
    assert client.get("/products/1").data == b"product 1 v1"
    assert client.get("/products/2").data == b"product 2 v1"
    version["n"] = 2
    with app.app_context():
        plug.invalidate_tags("product:1")
    assert client.get("/products/1").data == b"product 1 v2"
    assert client.get("/products/2").data == b"product 2 v1"
    plug.invalidate_tags("products", app=app)
    assert client.get("/products/2").data == b"product 2 v2"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Cache-Control": "private"}, "private"),
        ({"Cache-Control": "no-store"}, "no-store"),
        ({"Cache-Control": "no-cache"}, "no-cache"),
        ({"Set-Cookie": "sid=abc; HttpOnly"}, "set-cookie"),
        ({"Vary": "*"}, "vary star"),
    ],
)
def test_responses_the_policy_refuses_are_never_stored(app, plug, headers, why):
    calls = []

    @app.get("/r")
    @plug.cached()
    def r():
        calls.append(1)
        return "body", 200, headers

    client = app.test_client()
    client.get("/r")
    second = client.get("/r")
    assert second.headers["X-Cache"] == "MISS", why
    assert len(calls) == 2


def test_authorization_needs_public(app, plug):
    calls = []

    @app.get("/private")
    @plug.cached()
    def private():
        calls.append("private")
        return "for " + request.headers.get("Authorization", "nobody")

    @app.get("/public")
    @plug.cached()
    def public():
        calls.append("public")
        return "same for all", 200, {"Cache-Control": "public, max-age=60"}

    client = app.test_client()
    assert client.get("/private", headers={"Authorization": "alice"}).data == b"for alice"
    assert client.get("/private", headers={"Authorization": "bob"}).data == b"for bob"
    client.get("/public", headers={"Authorization": "alice"})
    hit = client.get("/public", headers={"Authorization": "bob"})
    assert hit.headers["X-Cache"] == "HIT"
    assert calls == ["private", "private", "public"]


def test_vary_keeps_one_variant_per_header_value(app, plug):
    calls = []

    @app.get("/greet")
    @plug.cached()
    def greet():
        lang = request.headers.get("Accept-Language", "en")
        calls.append(lang)
        return {"en": "hello", "fr": "bonjour"}[lang], 200, {"Vary": "Accept-Language"}

    client = app.test_client()
    for lang in ("en", "fr", "en", "fr"):
        response = client.get("/greet", headers={"Accept-Language": lang})
        assert response.data == {"en": b"hello", "fr": b"bonjour"}[lang]
    assert calls == ["en", "fr"]


def test_session_views_vary_on_cookie_and_never_cross_users(app, plug):
    """Flask adds ``Vary: Cookie`` when a view reads the session; a login sets a cookie."""

    @app.get("/login/<name>")
    def login(name: str):
        session["user"] = name
        return "ok"

    @app.get("/me")
    @plug.cached()
    def me():
        return f"user={session.get('user')}"

    @app.get("/login-cached/<name>")
    @plug.cached()
    def login_cached(name: str):
        session["user"] = name  # Set-Cookie: never stored
        return "logged in"

    alice, bob = app.test_client(), app.test_client()
    alice.get("/login/alice")
    bob.get("/login/bob")
    assert alice.get("/me").data == b"user=alice"
    assert alice.get("/me").headers["X-Cache"] == "HIT"
    assert bob.get("/me").data == b"user=bob"
    assert app.test_client().get("/me").data == b"user=None"
    carol = app.test_client()
    carol.get("/login-cached/carol")
    response = carol.get("/login-cached/carol")
    assert response.headers["X-Cache"] == "MISS"


def test_etag_gives_304_and_head_uses_the_get_entry(app, plug):
    @app.get("/doc")
    @plug.cached()
    def doc():
        return "document body"

    client = app.test_client()
    client.get("/doc")
    etag = client.get("/doc").headers["ETag"]
    not_modified = client.get("/doc", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.data == b""
    head = client.head("/doc")
    assert head.headers["X-Cache"] == "HIT"
    assert head.data == b""
    assert head.headers["Content-Length"] == str(len(b"document body"))


def test_request_no_cache_refreshes_the_entry(app, plug):
    calls = []

    @app.get("/n")
    @plug.cached()
    def n():
        calls.append(1)
        return f"v{len(calls)}"

    client = app.test_client()
    client.get("/n")
    refreshed = client.get("/n", headers={"Cache-Control": "no-cache"})
    assert (refreshed.data, refreshed.headers["X-Cache"]) == (b"v2", "BYPASS")
    assert client.get("/n").data == b"v2"


def test_successful_post_invalidates_the_url(app, plug):
    state = {"v": 1}

    @app.route("/cart", methods=["GET", "POST"])
    @plug.cached()
    def cart():
        if request.method == "POST":
            state["v"] += 1
            return "updated"
        return f"cart v{state['v']}"

    client = app.test_client()
    assert client.get("/cart").data == b"cart v1"
    assert client.get("/cart").headers["X-Cache"] == "HIT"
    client.post("/cart")
    assert client.get("/cart").data == b"cart v2"


def test_after_request_headers_are_part_of_the_stored_response(app, plug):
    @app.after_request
    def security_headers(response):
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/h")
    @plug.cached()
    def h():
        return "h"

    client = app.test_client()
    client.get("/h")
    hit = client.get("/h")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers.getlist("X-Frame-Options") == ["DENY"]


def test_an_after_request_hook_that_replaces_the_response_is_what_is_stored(app, plug):
    @app.after_request
    def wrap_in_layout(response):
        if request.path != "/replaced":
            return response
        return app.response_class(b"<layout>" + response.get_data() + b"</layout>")

    calls = []

    @app.get("/replaced")
    @plug.cached()
    def replaced():
        calls.append(1)
        return "inner"

    client = app.test_client()
    assert client.get("/replaced").data == b"<layout>inner</layout>"
    hit = client.get("/replaced")
    assert calls == [1]
    # A hit answered in the view passes the hook again; early hits skip it.
    assert hit.data in (b"<layout>inner</layout>", b"<layout><layout>inner</layout></layout>")
    with app.app_context():
        (stored,) = plug.cache.get("http://localhost|view//replaced")
    assert stored.body == b"<layout>inner</layout>"


def test_hooks_that_add_headers_do_not_pile_up_on_in_view_hits(make_app, plug):
    app = make_app(CACHEPLUG_EARLY_HITS=False)

    @app.after_request
    def add_header(response):
        response.headers.add("X-Served", "1")
        return response

    @app.get("/p")
    @plug.cached()
    def p():
        return "p"

    client = app.test_client()
    for _ in range(4):
        response = client.get("/p")
    assert response.headers["X-Cache"] == "HIT"
    # The stored copy carries the miss's header; each hit passes the hook once more.
    assert response.headers.getlist("X-Served") == ["1", "1"]


def test_a_head_miss_stores_no_empty_body(app, plug):
    @app.get("/doc")
    @plug.cached()
    def doc():
        return "full body"

    client = app.test_client()
    assert client.head("/doc").data == b""
    assert client.get("/doc").data == b"full body"
    assert client.get("/doc").data == b"full body"


def test_async_view(app, plug):
    calls = []

    @app.get("/async")
    @plug.cached()
    async def async_view():
        calls.append(1)
        return "async body"

    client = app.test_client()
    assert client.get("/async").data == b"async body"
    assert client.get("/async").data == b"async body"
    assert calls == [1]


def test_streamed_response_is_stored_once_fully_sent(app, plug):
    @app.get("/stream")
    @plug.cached()
    def stream():
        return app.response_class((chunk for chunk in (b"a", b"b", b"c")), mimetype="text/plain")

    client = app.test_client()
    assert client.get("/stream").data == b"abc"
    hit = client.get("/stream")
    assert (hit.data, hit.headers["X-Cache"]) == (b"abc", "HIT")


def test_early_hits_skip_flask_dispatch_and_can_be_turned_off(make_app, plug):
    early, late = make_app(), make_app(CACHEPLUG_EARLY_HITS=False)
    for app in (early, late):
        app.before_request_calls = []  # type: ignore[attr-defined]

        @app.before_request
        def count(app=app):
            app.before_request_calls.append(request.path)

        @app.get("/page")
        @plug.cached()
        def page():
            return "page"

        client = app.test_client()
        for _ in range(3):
            assert client.get("/page").data == b"page"
    assert early.before_request_calls == ["/page"]  # hits 2 and 3 answered before Flask
    assert late.before_request_calls == ["/page"] * 3


def test_early_hits_are_per_scheme_and_host(make_app, plug):
    app = make_app()

    @app.before_request
    def force_https():
        if request.scheme != "https":
            return "redirect", 301, {"Location": "https://" + request.host + request.path}
        return None

    @app.get("/secure")
    @plug.cached()
    def secure():
        return "secret-free but https only"

    client = app.test_client()
    assert client.get("/secure", base_url="https://shop.test").status_code == 200
    assert client.get("/secure", base_url="https://shop.test").headers["X-Cache"] == "HIT"
    assert client.get("/secure", base_url="http://shop.test").status_code == 301


@pytest.mark.parametrize("key_prefix", ["view/%s", "fixed-key"])
def test_same_path_on_two_hosts_never_shares_an_entry(app, plug, key_prefix):
    """Tenants by host: host B must not get host A's page (early hits on and off)."""
    calls = []

    @app.get("/home")
    @plug.cached(timeout=60, key_prefix=key_prefix)
    def home():
        calls.append(request.host)
        return f"home of {request.host}"

    client = app.test_client()
    for _ in range(2):
        for host in ("a.shop.test", "b.shop.test"):
            response = client.get("/home", headers={"Host": host})
            assert response.data == f"home of {host}".encode()
    assert calls == ["a.shop.test", "b.shop.test"]
    # Host case and the default port do not split the entry; the scheme does.
    assert client.get("/home", headers={"Host": "A.Shop.Test:80"}).headers["X-Cache"] == "HIT"
    https = client.get("/home", base_url="https://a.shop.test")
    assert (https.data, https.headers["X-Cache"]) == (b"home of a.shop.test", "MISS")
    assert len(calls) == 3


def test_script_root_is_part_of_the_key(app, plug):
    @app.get("/home")
    @plug.cached()
    def home():
        return f"home under {request.script_root or '/'}"

    client = app.test_client()
    assert client.get("/home").data == b"home under /"
    assert client.get("/home", environ_overrides={"SCRIPT_NAME": "/eu"}).data == b"home under /eu"
    assert client.get("/home", environ_overrides={"SCRIPT_NAME": "/eu"}).headers["X-Cache"] == "HIT"
    assert client.get("/home").data == b"home under /"


def test_invalid_host_is_served_but_not_cached(app, plug):
    calls = []

    @app.get("/h")
    @plug.cached()
    def h():
        calls.append(1)
        return "h"

    client = app.test_client()
    for _ in range(2):
        assert client.get("/h", headers={"Host": "evil.test/x?"}).data == b"h"
    assert len(calls) == 2


def test_key_function_is_used_as_is_and_may_share_across_hosts(app, plug):
    @app.get("/shared")
    @plug.cached(key_prefix=lambda: "one-key-for-all-hosts")
    def shared():
        return f"rendered for {request.host}"

    client = app.test_client()
    assert client.get("/shared", headers={"Host": "a.test"}).data == b"rendered for a.test"
    assert client.get("/shared", headers={"Host": "b.test"}).data == b"rendered for a.test"


def test_proxy_fix_inside_the_plug_keeps_forwarded_hosts_apart(make_app, plug):
    """ProxyFix applied before init_app: every request reaches the WSGI layer with the
    proxy's Host, and only the view sees the tenant. Early hits must not mix them."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = Flask("proxied")
    app.config["SECRET_KEY"] = "test"
    app.wsgi_app = ProxyFix(app.wsgi_app, x_host=1)
    plug.init_app(app)
    try:

        @app.get("/home")
        @plug.cached(timeout=60)
        def home():
            return f"home of {request.host}"

        def get(host: str, forwarded: str):
            return client.get("/home", headers={"Host": host, "X-Forwarded-Host": forwarded})

        client = app.test_client()
        for _ in range(2):
            for tenant in ("a.shop.test", "b.shop.test"):
                assert get("backend:8000", tenant).data == f"home of {tenant}".encode()
        assert get("backend:8000", "a.shop.test").headers["X-Cache"] == "HIT"
        # The view saw host a for a request whose Host was "backend:8000": that must not
        # teach the WSGI layer that Host a.shop.test means tenant a.
        assert get("a.shop.test", "b.shop.test").data == b"home of b.shop.test"
    finally:
        plug.close(app)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": -1},
        {"timeout": "10"},
        {"key_prefix": 3},
        {"unless": "yes"},
        {"tags": "products"},
    ],
)
def test_bad_arguments_fail_at_decoration(plug, kwargs):
    with pytest.raises(ConfigurationError):
        plug.cached(**kwargs)


def _alice_then_bob(client):
    alice = client.get("/account", headers={"Authorization": "Bearer alice"})
    bob = client.get("/account", headers={"Authorization": "Bearer bob"})
    return alice, bob


def _account_view():
    user = request.headers["Authorization"].split()[-1]
    response = make_response(f"account of {user}")
    response.set_cookie("session", f"session-of-{user}")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def test_flask_caching_serves_alices_page_and_cookie_to_bob(recwarn):
    """The bug reproduced with Flask-Caching 2.5.1: ``private, no-store`` is ignored."""
    from flask_caching import Cache

    app = Flask("flask_caching_leak")
    cache = Cache(app, config={"CACHE_TYPE": "SimpleCache"})
    app.add_url_rule("/account", "account", cache.cached(timeout=60)(_account_view))
    alice, bob = _alice_then_bob(app.test_client())
    assert alice.data == b"account of alice"
    assert bob.data == b"account of alice"  # Bob sees Alice's page...
    assert "session=session-of-alice" in bob.headers["Set-Cookie"]  # ...and her cookie


def test_cacheplug_does_not_leak_alices_page_or_cookie(make_app, plug):
    app = make_app()
    app.add_url_rule("/account", "account", plug.cached(timeout=60)(_account_view))
    alice, bob = _alice_then_bob(app.test_client())
    assert alice.data == b"account of alice"
    assert bob.data == b"account of bob"
    assert "session=session-of-bob" in bob.headers["Set-Cookie"]
    assert "alice" not in bob.headers["Set-Cookie"]
    with app.app_context():
        assert plug.cache.get("http://localhost|view//account") is None
