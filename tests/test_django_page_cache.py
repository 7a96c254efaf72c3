"""The page cache: Django's own middleware leaks Set-Cookie, cacheplug's does not; and
the RFC 9111 rules through CacheMiddleware and @cache_response in the real project."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client

from cacheplug.http import request_headers_from_environ
from cacheplug.integrations.django.page_cache import MetaHeaders, PageCache
from tests.django_project import views

OURS = ["cacheplug.integrations.django.CacheMiddleware"]
DJANGOS = [
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
]


@pytest.fixture(autouse=True)
def _clean_caches():
    views.calls.clear()
    caches["default"].clear()
    caches["locmem"].clear()
    yield
    caches["default"].clear()
    caches["locmem"].clear()


@pytest.fixture
def ours(settings):
    settings.MIDDLEWARE = OURS + settings.MIDDLEWARE
    return settings


def _body(response) -> str:
    return response.content.decode()


# -- the leak -----------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["locmem", "default"])
def test_djangos_cache_middleware_leaks_one_clients_cookie_to_another(settings, alias):
    settings.MIDDLEWARE = DJANGOS
    settings.CACHE_MIDDLEWARE_ALIAS = alias
    alice, bob = Client(), Client()
    alice_cookie = alice.get("/cookie/").cookies["visitor"].value
    to_bob = bob.get("/cookie/")
    assert to_bob.cookies["visitor"].value == alice_cookie  # Bob got Alice's cookie
    assert views._count("cookie") == 2  # the view ran once before this call


def test_cacheplug_page_cache_never_replays_a_cookie(ours):
    alice, bob = Client(), Client()
    first = alice.get("/cookie/")
    second = bob.get("/cookie/")
    assert first.cookies["visitor"].value != second.cookies["visitor"].value
    assert _body(first) == "hello 1"
    assert _body(second) == "hello 2"  # not stored at all
    assert first["X-Cache"] == second["X-Cache"] == "MISS"


# -- CacheMiddleware ----------------------------------------------------------------------


def test_hit_after_miss(ours):
    client = Client()
    first = client.get("/page/")
    second = client.get("/page/")
    assert _body(first) == _body(second) == "page 1"
    assert first["X-Cache"] == "MISS"
    assert second["X-Cache"] == "HIT"
    assert second["Age"] == "0"
    assert second["Content-Type"] == "text/plain"
    assert second["Cache-Control"] == "max-age=60"
    assert second["ETag"] == first["ETag"]


def test_if_none_match_gets_304(ours):
    client = Client()
    etag = client.get("/page/")["ETag"]
    revalidated = client.get("/page/", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    assert revalidated["ETag"] == etag


def test_private_response_is_not_stored(ours):
    client = Client()
    assert _body(client.get("/private/")) == "private 1"
    assert _body(client.get("/private/")) == "private 2"


def test_authorization_request_is_not_shared(ours):
    client = Client()
    client.get("/counter/", headers={"Authorization": "Bearer alice"})
    response = Client().get("/counter/", headers={"Authorization": "Bearer bob"})
    assert _body(response) == "counter 2"


def test_vary_keeps_variants_apart(ours):
    client = Client()
    assert _body(client.get("/vary/", headers={"Accept-Language": "fr"})) == "fr 1"
    assert _body(client.get("/vary/", headers={"Accept-Language": "de"})) == "de 2"
    assert _body(client.get("/vary/", headers={"Accept-Language": "fr"})) == "fr 1"
    assert _body(client.get("/vary/", headers={"Accept-Language": "de"})) == "de 2"


def test_session_read_varies_on_cookie(ours):
    ours.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    # SessionMiddleware adds Vary: Cookie, and Set-Cookie on the first visit: not stored.
    client = Client()
    assert _body(client.get("/session/")) == "1"
    assert _body(client.get("/session/")) == "2"


def test_request_no_cache_skips_the_lookup_and_refreshes(ours):
    client = Client()
    client.get("/page/")
    fresh = client.get("/page/", headers={"Cache-Control": "no-cache"})
    assert _body(fresh) == "page 2"
    assert _body(client.get("/page/")) == "page 2"


def test_post_invalidates_the_url(ours):
    client = Client()
    client.get("/item/")
    client.post("/item/")
    assert _body(client.get("/item/")) == "item 3"


def test_query_order_does_not_split_the_cache(ours):
    client = Client()
    assert _body(client.get("/page/?b=2&a=1")) == "page 1"
    assert _body(client.get("/page/?a=1&b=2")) == "page 1"
    assert _body(client.get("/page/?a=2")) == "page 2"


def test_head_is_served_from_the_get_entry(ours):
    client = Client()
    client.get("/page/")
    head = client.head("/page/")
    assert head["X-Cache"] == "HIT"
    assert head.content == b""


def test_streaming_response_passes_through(ours):
    client = Client()
    assert b"".join(client.get("/stream/").streaming_content) == b"a1"
    assert b"".join(client.get("/stream/").streaming_content) == b"a2"


def test_disallowed_host_bypasses_the_cache(ours):
    client = Client()
    assert _body(client.get("/page/", HTTP_HOST="evil.example")) == "page 1"
    assert _body(client.get("/page/", HTTP_HOST="evil.example")) == "page 2"
    assert not [k for k in caches["default"].plug.cache if "evil" in k]


async def test_async_middleware_chain(ours):
    client = AsyncClient()
    first = await client.get("/page/")
    second = await client.get("/page/")
    assert second["X-Cache"] == "HIT"
    assert second.content == first.content == b"page 1"


def test_settings_configure_the_policy(ours):
    ours.CACHEPLUG_PAGE_CACHE = {"KEY_PREFIX": "site", "DEFAULT_TTL": 5, "MAX_BODY_BYTES": 3}
    page_cache = PageCache.from_settings()
    assert page_cache.policy.default_ttl == 5
    assert page_cache.key_prefix == "site"
    client = Client()
    client.get("/page/")
    assert _body(client.get("/page/")) == "page 2"  # 6 bytes > MAX_BODY_BYTES


def test_bad_settings_raise_improperly_configured(settings):
    settings.CACHEPLUG_PAGE_CACHE = {"TTL": 5}
    with pytest.raises(ImproperlyConfigured, match="unknown CACHEPLUG_PAGE_CACHE keys"):
        PageCache.from_settings()
    settings.CACHEPLUG_PAGE_CACHE = {"MAX_VARIANTS": 0}
    with pytest.raises(ImproperlyConfigured, match="max_variants"):
        PageCache.from_settings()


def test_page_cache_needs_a_cacheplug_alias(settings):
    settings.CACHEPLUG_PAGE_CACHE = {"ALIAS": "locmem"}
    with pytest.raises(ImproperlyConfigured, match="CachePlugCache"):
        _ = PageCache.from_settings().store


# -- @cache_response ----------------------------------------------------------------------


def test_cache_response_decorator():
    client = Client()
    assert _body(client.get("/decorated/")) == "decorated 1"
    second = client.get("/decorated/")
    assert _body(second) == "decorated 1"
    assert second["X-Cache"] == "HIT"


async def test_cache_response_on_an_async_view():
    client = AsyncClient()
    assert (await client.get("/decorated-async/")).content == b"async 1"
    assert (await client.get("/decorated-async/")).content == b"async 1"


# -- MetaHeaders ----------------------------------------------------------------------------


def test_meta_headers_match_the_policy_helper():
    meta = {
        "HTTP_ACCEPT_LANGUAGE": " fr ",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "HTTP_COOKIE": "a=1",
        "wsgi.input": object(),
    }
    headers = MetaHeaders(meta)
    assert dict(headers) == request_headers_from_environ(meta)
    assert headers.get("accept-language") == "fr"
    assert "cookie" in headers
    assert "content-length" not in headers
    assert headers.get("authorization") is None
    with pytest.raises(KeyError):
        headers["authorization"]
