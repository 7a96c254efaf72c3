"""RFC 5861 in the Django page cache: stale-while-revalidate and stale-if-error.

A fake clock drives the page cache's policy (entries are stored and judged on it), so
nothing sleeps. The Django test clients call ``response.close()`` before they return,
as a WSGI/ASGI server does once the body is out, so a refresh has run by then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading

import pytest
from django.core.cache import caches
from django.core.signals import request_finished
from django.db import close_old_connections
from django.http import Http404, HttpRequest, HttpResponse
from django.test import AsyncClient, AsyncRequestFactory, Client
from django.urls import path

from cacheplug.integrations.django import cache_response
from cacheplug.integrations.django.page_cache import _REFRESHING, CacheMiddleware, PageCache

from .conftest import FakeTimer

EPOCH = 1_700_000_000.0
MIDDLEWARE = [
    "cacheplug.integrations.django.CacheMiddleware",
    "cacheplug.integrations.django.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


class Origin:
    """The view behind the cache: counts calls, records what it saw, fails on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: str | None = None  # None, "raise", "500" or "404"
        self.cache_control = "max-age=10, stale-while-revalidate=30, stale-if-error=60"
        self.seen: list[tuple[str, str | None, str | None, bool]] = []
        self.gate: threading.Event | None = None  # set: calls wait for it
        self.started = threading.Event()

    def respond(self, request: HttpRequest) -> HttpResponse:
        self.calls += 1
        self.seen.append(
            (
                request.method,
                request.headers.get("If-None-Match"),
                request.headers.get("Cache-Control"),
                request.user.is_authenticated,  # set by AuthenticationMiddleware
            )
        )
        if self.gate is not None:
            self.started.set()
            assert self.gate.wait(10)
        if self.fail == "raise":
            raise RuntimeError("database down")
        if self.fail == "404":
            raise Http404("gone")
        if self.fail == "500":
            return HttpResponse("oops", status=500, content_type="text/plain")
        response = HttpResponse(f"call {self.calls}", content_type="text/plain")
        response["Cache-Control"] = self.cache_control
        return response


class URLConf:
    """A per-test URLconf (a fresh object, so Django builds a fresh resolver)."""

    def __init__(self, origin: Origin) -> None:
        @cache_response
        def decorated(request: HttpRequest) -> HttpResponse:
            return origin.respond(request)

        @cache_response
        async def decorated_async(request: HttpRequest) -> HttpResponse:
            return origin.respond(request)

        self.urlpatterns = [
            path("page/", origin.respond),
            path("decorated/", decorated),
            path("decorated-async/", decorated_async),
        ]


@pytest.fixture
def clock(monkeypatch) -> FakeTimer:
    """Every PageCache built from now on judges freshness on this clock."""
    fake = FakeTimer(EPOCH)
    build = PageCache.from_settings.__func__  # type: ignore[attr-defined]

    def from_settings(cls, **overrides):
        page_cache = build(cls, **overrides)
        page_cache.policy = dataclasses.replace(page_cache.policy, clock=fake)
        return page_cache

    monkeypatch.setattr(PageCache, "from_settings", classmethod(from_settings))
    return fake


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture(autouse=True)
def _project(settings, clock, origin):
    settings.ROOT_URLCONF = URLConf(origin)
    settings.MIDDLEWARE = list(settings.MIDDLEWARE)
    caches["default"].clear()
    yield
    caches["default"].clear()
    assert len(_REFRESHING) == 0  # every claimed key was released


@pytest.fixture
def cached_site(settings):
    settings.MIDDLEWARE = MIDDLEWARE


@pytest.fixture(params=["middleware", "decorator"])
def url(request, settings) -> str:
    """Each behaviour through CacheMiddleware (site-wide) and through @cache_response."""
    if request.param == "middleware":
        settings.MIDDLEWARE = MIDDLEWARE
        return "/page/"
    return "/decorated/"  # the project's own middleware, without the page cache


def seen(response) -> tuple[int, str | None, str]:
    return response.status_code, response.get("X-Cache"), response.content.decode()


# ------------------------------------------------------------- stale-while-revalidate


def test_stale_while_revalidate_serves_stale_then_refreshes_once(url, origin, clock):
    threads_before = set(threading.enumerate())
    client = Client()
    assert seen(client.get(url)) == (200, "MISS", "call 1")
    clock.advance(15)  # 5 s past max-age=10, inside stale-while-revalidate=30
    stale = client.get(url)
    assert seen(stale) == (200, "STALE", "call 1")
    assert stale["Age"] == "15"
    assert origin.calls == 2  # the refresh ran after the stale response was sent
    fresh = client.get(url)
    assert seen(fresh) == (200, "HIT", "call 2")
    assert fresh["Age"] == "0"
    assert origin.calls == 2
    assert set(threading.enumerate()) == threads_before  # no thread started


def test_refresh_is_a_get_without_conditional_or_cache_control_headers(origin, clock):
    client = Client()
    etag = client.get("/decorated/")["ETag"]
    clock.advance(15)
    head = client.head("/decorated/", headers={"If-None-Match": etag})
    assert (head.status_code, head["X-Cache"]) == (304, "STALE")
    assert origin.seen[-1] == ("GET", None, None, False)  # the refresh, past the middleware
    assert seen(client.get("/decorated/")) == (200, "HIT", "call 2")


def test_concurrent_stale_requests_trigger_one_refresh(url, origin, clock):
    threads_before = set(threading.enumerate())
    Client().get(url)
    clock.advance(15)
    origin.gate = threading.Event()  # the refresh waits in the view until released
    barrier = threading.Barrier(8)
    responses: list = []
    done = threading.Semaphore(0)

    def request() -> None:
        client = Client()
        barrier.wait()
        responses.append(client.get(url))  # the refreshing thread returns last
        done.release()

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert origin.started.wait(10)  # one thread's close() is refreshing
    for _ in range(7):  # every other stale request was served and skipped the refresh
        assert done.acquire(timeout=10)
    origin.gate.set()
    for thread in threads:
        thread.join(10)
    assert [seen(r) for r in responses] == [(200, "STALE", "call 1")] * 8
    assert origin.calls == 2  # eight stale responses, one refresh
    origin.gate = None
    assert seen(Client().get(url)) == (200, "HIT", "call 2")
    assert set(threading.enumerate()) == threads_before


def test_past_the_window_the_request_is_a_normal_miss(url, origin, clock):
    origin.cache_control = "max-age=10, stale-while-revalidate=30"
    client = Client()
    client.get(url)
    clock.advance(45)  # past max-age + stale-while-revalidate
    assert seen(client.get(url)) == (200, "MISS", "call 2")
    assert origin.calls == 2  # the miss itself, no refresh after it
    assert seen(client.get(url)) == (200, "HIT", "call 2")


def test_must_revalidate_forbids_serving_stale(url, origin, clock):
    origin.cache_control = "max-age=10, must-revalidate, stale-while-revalidate=30"
    client = Client()
    client.get(url)
    clock.advance(15)
    assert seen(client.get(url)) == (200, "MISS", "call 2")
    assert origin.calls == 2


def test_request_no_cache_and_max_age_never_get_stale(url, origin, clock):
    client = Client()
    client.get(url)
    clock.advance(15)
    no_cache = client.get(url, headers={"Cache-Control": "no-cache"})
    assert seen(no_cache) == (200, "BYPASS", "call 2")
    clock.advance(15)
    limited = client.get(url, headers={"Cache-Control": "max-age=5"})
    assert seen(limited) == (200, "MISS", "call 3")


@pytest.mark.parametrize("failure", ["raise", "500"])
def test_a_failed_refresh_keeps_the_stale_entry_and_never_a_500(
    cached_site, origin, clock, caplog, failure
):
    client = Client(raise_request_exception=False)
    client.get("/page/")
    clock.advance(15)
    origin.fail = failure
    with caplog.at_level(logging.WARNING, logger="cacheplug.integrations.django"):
        assert seen(client.get("/page/")) == (200, "STALE", "call 1")
    assert origin.calls == 2
    assert "refreshing the stale page" in caplog.text
    # nothing was stored: the next request is still stale, and tries again
    assert seen(client.get("/page/")) == (200, "STALE", "call 1")
    assert origin.calls == 3
    origin.fail = None
    assert seen(client.get("/page/")) == (200, "STALE", "call 1")  # this refresh succeeds
    assert seen(client.get("/page/")) == (200, "HIT", "call 4")


def test_a_raising_refresh_of_a_decorated_view_is_logged_not_raised(origin, clock, caplog):
    client = Client()  # re-raises any exception Django reports: there must be none
    client.get("/decorated/")
    clock.advance(15)
    origin.fail = "raise"
    with caplog.at_level(logging.WARNING, logger="cacheplug.integrations.django"):
        assert seen(client.get("/decorated/")) == (200, "STALE", "call 1")
    assert "database down" in caplog.text
    assert seen(client.get("/decorated/")) == (200, "STALE", "call 1")


def test_refreshes_follow_close_calls_not_stale_responses(clock, origin):
    middleware = CacheMiddleware(lambda request: origin.respond(_authenticated(request)))
    middleware(_get("/page/"))
    clock.advance(15)
    dropped = middleware(_get("/page/"))
    assert dropped["X-Cache"] == "STALE"  # never closed: no refresh, and no key held
    first, second = middleware(_get("/page/")), middleware(_get("/page/"))
    assert origin.calls == 1
    _close(first)
    assert origin.calls == 2
    _close(second)  # served stale too, closed after the refresh stored a fresh copy
    assert origin.calls == 2
    assert middleware(_get("/page/"))["X-Cache"] == "HIT"


def _close(response: HttpResponse) -> None:
    """``response.close()`` as a server calls it, without the database clean-up that
    ``request_finished`` triggers (Django's test client leaves it out the same way)."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def _get(url: str) -> HttpRequest:
    from django.test import RequestFactory

    return RequestFactory().get(url)


def _authenticated(request: HttpRequest) -> HttpRequest:
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    return request


# ---------------------------------------------------------------------- stale-if-error


@pytest.mark.parametrize("failure", ["raise", "500"])
def test_stale_if_error_serves_the_stale_entry_when_the_view_fails(
    url, origin, clock, caplog, failure
):
    origin.cache_control = "max-age=10, stale-if-error=60"
    client = Client(raise_request_exception=False)
    client.get(url)
    clock.advance(30)
    origin.fail = failure
    with caplog.at_level(logging.WARNING, logger="cacheplug.integrations.django"):
        stale = client.get(url)
    assert seen(stale) == (200, "STALE", "call 1")
    assert stale["Age"] == "30"
    warnings = [r for r in caplog.records if r.name == "cacheplug.integrations.django"]
    assert len(warnings) == 1
    assert "stale-if-error" in warnings[0].getMessage()
    head = client.head(url)
    assert (head.status_code, head["X-Cache"], head.content) == (200, "STALE", b"")
    origin.fail = None  # the view recovers: a normal miss stores the new answer
    assert seen(client.get(url)) == (200, "MISS", "call 4")
    assert seen(client.get(url)) == (200, "HIT", "call 4")


def test_stale_if_error_ends_with_its_window(url, origin, clock):
    origin.cache_control = "max-age=10, stale-if-error=60"
    Client().get(url)
    clock.advance(75)
    origin.fail = "raise"
    with pytest.raises(RuntimeError, match="database down"):  # as without cacheplug
        Client().get(url)
    origin.fail = "500"
    assert seen(Client().get(url)) == (500, "MISS", "oops")


def test_a_client_error_is_not_an_error_for_stale_if_error(origin, clock):
    origin.cache_control = "max-age=10, stale-if-error=60"
    Client().get("/decorated/")
    clock.advance(30)
    origin.fail = "404"
    assert Client().get("/decorated/").status_code == 404


def test_must_revalidate_forbids_stale_if_error(origin, clock):
    origin.cache_control = "max-age=10, must-revalidate, stale-if-error=60"
    Client().get("/decorated/")
    clock.advance(30)
    origin.fail = "500"
    assert seen(Client().get("/decorated/")) == (500, "MISS", "oops")


# ----------------------------------------------------------------------------- async


async def test_async_middleware_chain_serves_stale_and_refreshes(cached_site, origin, clock):
    client = AsyncClient()
    assert seen(await client.get("/page/")) == (200, "MISS", "call 1")
    clock.advance(15)
    assert seen(await client.get("/page/")) == (200, "STALE", "call 1")
    assert origin.calls == 2  # close() ran in a worker thread; the chain on the loop
    assert seen(await client.get("/page/")) == (200, "HIT", "call 2")


async def test_async_view_serves_stale_and_refreshes(origin, clock):
    client = AsyncClient()
    await client.get("/decorated-async/")
    clock.advance(15)
    assert seen(await client.get("/decorated-async/")) == (200, "STALE", "call 1")
    assert origin.calls == 2
    assert seen(await client.get("/decorated-async/")) == (200, "HIT", "call 2")
    clock.advance(45)  # past the stale-while-revalidate window, inside stale-if-error
    origin.fail = "raise"
    assert seen(await client.get("/decorated-async/")) == (200, "STALE", "call 2")
    assert origin.calls == 3


async def test_close_on_the_event_loop_refreshes_in_a_tracked_task(clock, origin, settings):
    async def chain(request: HttpRequest) -> HttpResponse:
        return origin.respond(_authenticated(request))

    middleware = CacheMiddleware(chain)
    factory = AsyncRequestFactory()
    await middleware(factory.get("/page/"))
    clock.advance(15)
    stale = await middleware(factory.get("/page/"))
    assert stale["X-Cache"] == "STALE"
    _close(stale)  # here, on the loop: async_to_sync cannot run, so a task does the work
    tasks = set(middleware.page_cache._tasks)
    assert len(tasks) == 1
    await asyncio.gather(*tasks)
    assert not middleware.page_cache._tasks
    assert origin.calls == 2
    assert seen(await middleware(factory.get("/page/"))) == (200, "HIT", "call 2")
