"""RFC 5861 in ``@plug.cached``: stale-while-revalidate and stale-if-error, with early hits
on and off.

A fake clock drives the app's HTTP policy (entries are stored and judged on it), so
nothing sleeps. Requests use ``buffered=True``: the test client then closes the body
before it returns, as a WSGI server does once the body is out, so a refresh has run by
then.
"""

from __future__ import annotations

import logging
import threading

import pytest
from flask import Flask, abort, request
from werkzeug.test import EnvironBuilder

from cacheplug.http import HttpCachePolicy
from cacheplug.integrations.flask import FlaskCachePlug
from cacheplug.integrations.flask._wsgi import _REFRESHING

from .conftest import FakeTimer

EPOCH = 1_700_000_000.0
LOGGER = "cacheplug.integrations.flask"


class Origin:
    """The view behind the cache: counts calls, records what it saw, fails on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: str | None = None  # None, "raise", "500" or "404"
        self.cache_control = "max-age=10, stale-while-revalidate=30, stale-if-error=60"
        self.seen: list[tuple[str, str | None, str | None]] = []
        self.gate: threading.Event | None = None  # set: calls wait for it
        self.started = threading.Event()
        self.dispatched = 0  # requests Flask dispatched (before_request ran)

    def before_request(self) -> None:
        self.dispatched += 1

    def respond(self):
        self.calls += 1
        self.seen.append(
            (
                request.method,
                request.headers.get("If-None-Match"),
                request.headers.get("Cache-Control"),
            )
        )
        if self.gate is not None:
            self.started.set()
            assert self.gate.wait(10)
        if self.fail == "raise":
            raise RuntimeError("database down")
        if self.fail == "404":
            abort(404)
        if self.fail == "500":
            return "oops", 500, {"Content-Type": "text/plain"}
        return (
            f"call {self.calls}",
            200,
            {"Cache-Control": self.cache_control, "Content-Type": "text/plain"},
        )


@pytest.fixture
def clock() -> FakeTimer:
    return FakeTimer(EPOCH)


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture(params=[True, False], ids=["early", "in-view"])
def app(request, clock, origin):
    """Every behaviour holds with hits answered early and with hits answered in the view."""
    plug = FlaskCachePlug()
    app = Flask(f"stale_{request.param}")
    app.config.update(
        SECRET_KEY="test",
        CACHEPLUG_EARLY_HITS=request.param,
        CACHEPLUG_HTTP_POLICY=HttpCachePolicy(clock=clock),
    )
    plug.init_app(app)
    app.add_url_rule("/page", "page", plug.cached(timeout=60)(origin.respond))
    app.before_request(origin.before_request)
    plug.start(app)  # its worker thread now, so a test can tell that nothing else starts one
    yield app
    plug.close(app)
    assert len(_REFRESHING) == 0  # every claimed key was released


def get(client, path: str = "/page", **kwargs):
    return client.get(path, buffered=True, **kwargs)


def seen(response) -> tuple[int, str | None, str]:
    return response.status_code, response.headers.get("X-Cache"), response.get_data(as_text=True)


# ------------------------------------------------------------- stale-while-revalidate


def test_stale_while_revalidate_serves_stale_then_refreshes_once(app, origin, clock):
    threads_before = set(threading.enumerate())
    client = app.test_client()
    assert seen(get(client)) == (200, "MISS", "call 1")
    clock.advance(15)  # 5 s past max-age=10, inside stale-while-revalidate=30
    stale = get(client)
    assert seen(stale) == (200, "STALE", "call 1")
    assert stale.headers["Age"] == "15"
    assert origin.calls == 2  # the refresh ran after the stale response was sent
    fresh = get(client)
    assert seen(fresh) == (200, "HIT", "call 2")
    assert fresh.headers["Age"] == "0"
    assert origin.calls == 2
    # Early: the stale response and the hit never reach Flask; only the refresh does.
    early = app.extensions["cacheplug"].early_hits
    assert origin.dispatched == (2 if early else 4)
    assert set(threading.enumerate()) == threads_before  # no thread started


def test_refresh_is_a_get_without_conditional_or_cache_control_headers(app, origin, clock):
    client = app.test_client()
    get(client)
    etag = get(client).headers["ETag"]  # a generated ETag shows from the first hit on
    clock.advance(15)
    head = client.head("/page", buffered=True, headers={"If-None-Match": etag})
    assert (head.status_code, head.headers["X-Cache"]) == (304, "STALE")
    assert origin.seen[-1] == ("GET", None, None)
    assert seen(get(client)) == (200, "HIT", "call 2")


def test_concurrent_stale_requests_trigger_one_refresh(app, origin, clock):
    threads_before = set(threading.enumerate())
    get(app.test_client())
    clock.advance(15)
    origin.gate = threading.Event()  # the refresh waits in the view until released
    barrier = threading.Barrier(8)
    responses: list = []
    done = threading.Semaphore(0)

    def request_page() -> None:
        client = app.test_client()
        barrier.wait()
        responses.append(get(client))  # the refreshing thread returns last
        done.release()

    threads = [threading.Thread(target=request_page) for _ in range(8)]
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
    assert seen(get(app.test_client())) == (200, "HIT", "call 2")
    assert set(threading.enumerate()) == threads_before


def test_past_the_window_the_request_is_a_normal_miss(app, origin, clock):
    origin.cache_control = "max-age=10, stale-while-revalidate=30"
    client = app.test_client()
    get(client)
    clock.advance(45)  # past max-age + stale-while-revalidate
    assert seen(get(client)) == (200, "MISS", "call 2")
    assert origin.calls == 2  # the miss itself, no refresh after it
    assert seen(get(client)) == (200, "HIT", "call 2")


def test_must_revalidate_forbids_serving_stale(app, origin, clock):
    origin.cache_control = "max-age=10, must-revalidate, stale-while-revalidate=30"
    client = app.test_client()
    get(client)
    clock.advance(15)
    assert seen(get(client)) == (200, "MISS", "call 2")
    assert origin.calls == 2


def test_request_no_cache_and_max_age_never_get_stale(app, origin, clock):
    client = app.test_client()
    get(client)
    clock.advance(15)
    no_cache = get(client, headers={"Cache-Control": "no-cache"})
    assert seen(no_cache) == (200, "BYPASS", "call 2")
    clock.advance(15)
    limited = get(client, headers={"Cache-Control": "max-age=5"})
    assert seen(limited) == (200, "MISS", "call 3")


@pytest.mark.parametrize("testing", [False, True], ids=["500", "propagate"])
@pytest.mark.parametrize("failure", ["raise", "500"])
def test_a_failed_refresh_keeps_the_stale_entry_and_never_a_500(
    app, origin, clock, caplog, failure, testing
):
    app.testing = testing  # True: Flask lets the view's exception out of wsgi_app
    client = app.test_client()
    get(client)
    clock.advance(15)
    origin.fail = failure
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert seen(get(client)) == (200, "STALE", "call 1")
    assert origin.calls == 2
    assert "refreshing the stale page" in caplog.text
    # nothing was stored: the next request is still stale, and tries again
    assert seen(get(client)) == (200, "STALE", "call 1")
    assert origin.calls == 3
    origin.fail = None
    assert seen(get(client)) == (200, "STALE", "call 1")  # this refresh succeeds
    assert seen(get(client)) == (200, "HIT", "call 4")


def test_refreshes_follow_close_calls_not_stale_responses(app, origin, clock):
    get(app.test_client())
    clock.advance(15)

    def call():
        statuses: list[str] = []
        environ = EnvironBuilder(path="/page").get_environ()
        body = app.wsgi_app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        return statuses, body

    statuses, dropped = call()  # never closed: no refresh, and no key held
    assert (statuses, list(dropped)) == (["200 OK"], [b"call 1"])
    (_, first), (_, second) = call(), call()
    assert origin.calls == 1
    first.close()
    assert origin.calls == 2
    second.close()  # served stale too, closed after the refresh stored a fresh copy
    assert origin.calls == 2
    assert seen(get(app.test_client())) == (200, "HIT", "call 2")


# ---------------------------------------------------------------------- stale-if-error


@pytest.mark.parametrize("failure", ["raise", "500"])
def test_stale_if_error_serves_the_stale_entry_when_the_view_fails(
    app, origin, clock, caplog, failure
):
    origin.cache_control = "max-age=10, stale-if-error=60"
    client = app.test_client()
    get(client)
    clock.advance(30)
    origin.fail = failure
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        stale = get(client)
    assert seen(stale) == (200, "STALE", "call 1")
    assert stale.headers["Age"] == "30"
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1
    assert "stale-if-error" in warnings[0].getMessage()
    head = client.head("/page", buffered=True)
    assert (head.status_code, head.headers["X-Cache"], head.data) == (200, "STALE", b"")
    origin.fail = None  # the view recovers: a normal miss stores the new answer
    assert seen(get(client)) == (200, "MISS", "call 4")
    assert seen(get(client)) == (200, "HIT", "call 4")


def test_stale_if_error_ends_with_its_window(app, origin, clock):
    origin.cache_control = "max-age=10, stale-if-error=60"
    client = app.test_client()
    get(client)
    clock.advance(75)
    origin.fail = "500"
    assert seen(get(client)) == (500, "MISS", "oops")
    origin.fail = "raise"
    assert get(client).status_code == 500  # Flask's own error page, as without cacheplug
    app.testing = True
    with pytest.raises(RuntimeError, match="database down"):
        get(client)


def test_a_client_error_is_not_an_error_for_stale_if_error(app, origin, clock):
    origin.cache_control = "max-age=10, stale-if-error=60"
    client = app.test_client()
    get(client)
    clock.advance(30)
    origin.fail = "404"
    assert get(client).status_code == 404


def test_must_revalidate_forbids_stale_if_error(app, origin, clock):
    origin.cache_control = "max-age=10, must-revalidate, stale-if-error=60"
    client = app.test_client()
    get(client)
    clock.advance(30)
    origin.fail = "500"
    assert seen(get(client)) == (500, "MISS", "oops")
