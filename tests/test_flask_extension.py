"""FlaskCachePlug: registration, configuration, lifecycle, request scope, several apps."""

from __future__ import annotations

import threading

import pytest
from flask import Flask

from cacheplug import request_context
from cacheplug.errors import ConfigurationError
from cacheplug.integrations.flask import CachePlug, FlaskCachePlug, FlaskPlugState


def _worker_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"cacheplug-worker-{name}"]


@pytest.fixture
def apps():
    """Build apps with a shared plug; close every one at teardown."""
    made: list[tuple[FlaskCachePlug, Flask]] = []

    def make(name: str = "shop", plug: FlaskCachePlug | None = None, **config) -> Flask:
        plug = plug or FlaskCachePlug()
        app = Flask(name)
        app.config.update(config)
        plug.init_app(app)
        made.append((plug, app))
        return app

    yield make
    for plug, app in made:
        plug.close(app)


def test_init_app_registers_state_and_alias():
    assert CachePlug is FlaskCachePlug
    plug = FlaskCachePlug()
    app = Flask("alias")
    plug.init_app(app)
    state = app.extensions["cacheplug"]
    assert isinstance(state, FlaskPlugState)
    assert state.extension is plug
    assert not hasattr(plug, "app")
    with app.app_context():
        assert plug.state() is state
    plug.close(app)


def test_app_argument_calls_init_app():
    app = Flask("direct")
    plug = FlaskCachePlug(app)
    assert app.extensions["cacheplug"].extension is plug
    plug.close(app)


def test_starts_on_first_request_not_in_init_app(apps):
    app = apps("lazy")
    state = app.extensions["cacheplug"]
    assert not state.started
    assert _worker_threads("lazy") == []
    app.add_url_rule("/", "index", lambda: "ok")
    assert app.test_client().get("/").status_code == 200
    assert state.started
    assert state.runtime.started
    assert len(_worker_threads("lazy")) == 1


def test_explicit_start_and_close_stop_every_thread():
    plug = FlaskCachePlug()
    app = Flask("eager")
    plug.init_app(app)
    runtime = plug.start(app)
    assert runtime.started
    assert plug.start(app) is runtime  # idempotent
    plug.close(app)
    plug.close(app)  # idempotent
    assert _worker_threads("eager") == []
    assert not runtime.started


def test_init_twice_is_an_error(apps):
    app = apps("twice")
    with pytest.raises(RuntimeError, match="already initialised"):
        FlaskCachePlug().init_app(app)


def test_uninitialised_app_gets_a_clear_error():
    plug = FlaskCachePlug()
    app = Flask("bare")
    with pytest.raises(RuntimeError, match=r"plug\.init_app\(app\)"):
        plug.state(app)
    with app.app_context(), pytest.raises(RuntimeError, match="not initialised"):
        plug.runtime()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"CACHEPLUG_BOGUS": 1}, "unknown CachePlug option"),
        ({"CACHEPLUG_SHARDS": 3}, "shards must be a power of two"),
        ({"CACHEPLUG_FSYNC": "sometimes"}, "fsync must be one of"),
        ({"CACHEPLUG_EARLY_HITS": "yes"}, "CACHEPLUG_EARLY_HITS must be True or False"),
        ({"CACHEPLUG_HTTP_POLICY": {"default_ttl": 5}}, "CACHEPLUG_HTTP_POLICY must be"),
    ],
)
def test_bad_config_fails_in_init_app(config, match):
    app = Flask("bad")
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=match):
        FlaskCachePlug().init_app(app)
    assert "cacheplug" not in app.extensions


def test_state_dir_without_any_secret_fails_at_startup(tmp_path, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_SECRET", raising=False)
    app = Flask("nosecret")
    app.config["CACHEPLUG_STATE_DIR"] = str(tmp_path)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        FlaskCachePlug().init_app(app)


def test_unknown_constructor_option():
    with pytest.raises(ConfigurationError, match="unknown FlaskCachePlug option"):
        FlaskCachePlug(max_size=10)


def test_secret_defaults_to_secret_key_and_config_overrides_options(apps, tmp_path):
    plug = FlaskCachePlug(maxsize=50, ttl=10)
    app = apps("cfg", plug=plug, SECRET_KEY="s3cret", CACHEPLUG_TTL=99)
    config = app.extensions["cacheplug"].runtime.config
    assert config["secret"] == "s3cret"
    assert config["ttl"] == 99  # app.config wins over the constructor
    assert config["maxsize"] == 50  # the constructor's default stays
    assert config["name"] == "cfg"
    other = apps("cfg2", SECRET_KEY="s3cret", CACHEPLUG_SECRET="own")
    assert other.extensions["cacheplug"].runtime.config["secret"] == "own"


def test_two_apps_in_one_process_get_their_own_runtime(apps):
    plug = FlaskCachePlug()
    one = apps("one", plug=plug)
    two = apps("two", plug=plug)
    with one.app_context():
        plug.cache.set("k", "from one")
    with two.app_context():
        assert plug.cache.get("k") is None
        plug.cache.set("k", "from two")
    with one.app_context():
        assert plug.cache.get("k") == "from one"
    assert len(_worker_threads("one")) == len(_worker_threads("two")) == 1
    plug.close(one)
    assert _worker_threads("one") == []
    assert len(_worker_threads("two")) == 1
    with two.app_context():
        assert plug.runtime().started


def test_request_runs_in_a_scope_that_does_not_leak(apps):
    app = apps("scope")
    seen = []

    @app.get("/set")
    def set_value():
        seen.append(("before", request_context.get("user")))
        request_context.set("user", "alice")
        return request_context.request_id or ""

    @app.get("/boom")
    def boom():
        request_context.set("user", "mallory")
        raise ValueError("view failed")

    @app.get("/read")
    def read():
        seen.append(("read", request_context.get("user"), request_context.active))
        return "ok"

    client = app.test_client()
    first, second = client.get("/set").data, client.get("/set").data
    assert first
    assert second
    assert first != second
    assert client.get("/boom").status_code == 500
    client.get("/read")
    assert seen == [("before", None), ("before", None), ("read", None, True)]
    assert not request_context.active  # nothing left open on the test's thread


def test_scope_is_reset_when_the_exception_propagates(apps):
    app = apps("propagate", TESTING=True)  # the exception reaches the test client

    @app.get("/boom")
    def boom():
        request_context.set("user", "mallory")
        raise ValueError("view failed")

    @app.get("/read")
    def read():
        return repr(request_context.get("user"))

    client = app.test_client()
    with pytest.raises(ValueError, match="view failed"):
        client.get("/boom")
    assert not request_context.active
    assert client.get("/read").data == b"None"


def test_requests_on_one_pooled_thread_never_see_each_other(apps):
    """A one-thread pool, as under a WSGI server: each request starts empty."""
    app = apps("pool")

    @app.get("/r/<int:i>")
    def r(i: int):
        previous = request_context.get("i")
        request_context.set("i", i)
        if i == 1:
            raise RuntimeError("boom")
        return repr(previous)

    results: list[bytes] = []

    def serve() -> None:
        client = app.test_client()
        for i in range(4):
            results.append(client.get(f"/r/{i}").data)

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join()
    assert [results[0], results[2], results[3]] == [b"None"] * 3


def test_state_saved_by_one_app_is_loaded_by_the_next(tmp_path):
    config = {"SECRET_KEY": "k", "CACHEPLUG_STATE_DIR": str(tmp_path / "state")}
    plug = FlaskCachePlug()
    calls = []

    def create_app() -> Flask:
        app = Flask("warm")
        app.config.update(config)
        plug.init_app(app)

        @app.get("/page")
        @plug.cached(timeout=600)
        def page():
            calls.append(1)
            return "rendered once"

        return app

    first = create_app()
    assert first.test_client().get("/page").headers["X-Cache"] == "MISS"
    with first.app_context():
        plug.cache.set("user:1", {"name": "alice"}, ttl=600)
    plug.close(first)  # saves the snapshot

    second = create_app()
    try:
        response = second.test_client().get("/page")
        assert response.headers["X-Cache"] == "HIT"
        assert response.data == b"rendered once"
        assert calls == [1]
        with second.app_context():
            assert plug.cache.get("user:1") == {"name": "alice"}
            assert plug.runtime().loaded_entries == 2
    finally:
        plug.close(second)
