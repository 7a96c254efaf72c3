"""CachePlugCache under Django's own cache users: cache middleware, cache_page, template
fragments and the cache/cached_db session engines, in the real test project."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import Client

from tests.django_project import views

DJANGO_CACHE_MIDDLEWARE = [
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
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


def _body(response) -> str:
    return response.content.decode()


def test_django_cache_middleware_serves_hits_from_cacheplug(settings):
    settings.MIDDLEWARE = DJANGO_CACHE_MIDDLEWARE
    settings.CACHE_MIDDLEWARE_ALIAS = "default"
    client = Client()
    first = client.get("/counter/")
    second = client.get("/counter/")
    assert _body(first) == _body(second) == "counter 1"
    assert any(key.startswith(":1:views.decorators.cache") for key in caches["default"].plug.cache)


def test_cache_page_decorator_on_cacheplug():
    client = Client()
    assert _body(client.get("/cache-page/")) == "cache_page 1"
    assert _body(client.get("/cache-page/")) == "cache_page 1"
    caches["default"].clear()
    assert _body(client.get("/cache-page/")) == "cache_page 2"


def test_template_fragment_cache_on_cacheplug():
    client = Client()
    assert _body(client.get("/fragment/")).strip() == "sidebar rendered 1"
    assert _body(client.get("/fragment/")).strip() == "sidebar rendered 1"
    assert views._count("fragment") == 3  # the view ran twice; the fragment once


def test_cache_session_engine(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    settings.SESSION_CACHE_ALIAS = "default"
    client = Client()
    assert [_body(client.get("/session/")) for _ in range(3)] == ["1", "2", "3"]
    other = Client()
    assert _body(other.get("/session/")) == "1"
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    stored = caches["default"].get(f"django.contrib.sessions.cache{session_key}")
    assert stored == {"visits": 3}


@pytest.mark.django_db
def test_cached_db_session_engine(settings):
    from django.contrib.sessions.models import Session

    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    settings.SESSION_CACHE_ALIAS = "default"
    client = Client()
    assert [_body(client.get("/session/")) for _ in range(2)] == ["1", "2"]
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert caches["default"].get(f"django.contrib.sessions.cached_db{session_key}") == {"visits": 2}
    assert Session.objects.get(session_key=session_key).get_decoded() == {"visits": 2}
    caches["default"].clear()  # the database still has it
    assert _body(client.get("/session/")) == "3"
