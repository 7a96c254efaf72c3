"""``flask cacheplug stats|save|load|inspect|clear`` through app.test_cli_runner()."""

from __future__ import annotations

import pytest
from flask import Flask

from cacheplug import request_context
from cacheplug.integrations.flask import FlaskCachePlug


@pytest.fixture
def plug():
    return FlaskCachePlug()


@pytest.fixture
def make_app(plug, tmp_path):
    made: list[Flask] = []

    def make(state_dir=tmp_path / "state", name="cli", secret="cli-secret") -> Flask:
        app = Flask(name)
        app.config.update(SECRET_KEY=secret)
        if state_dir is not None:
            app.config["CACHEPLUG_STATE_DIR"] = str(state_dir)
        plug.init_app(app)
        made.append(app)
        return app

    yield make
    for app in made:
        plug.close(app)


def test_stats(make_app, plug):
    app = make_app()
    with app.app_context():
        plug.cache.set("user:1", "alice")
        plug.cache.get("user:1")
        plug.cache.get("user:2")
    result = app.test_cli_runner().invoke(args=["cacheplug", "stats"])
    assert result.exit_code == 0, result.output
    assert "1/100000 entries, hits 1, misses 1" in result.output
    assert "writer" in result.output


def test_save_then_inspect(make_app, plug, tmp_path):
    app = make_app()
    with app.app_context():
        plug.cache.set("user:1", "alice", ttl=600)
        plug.cache.set("user:2", "bob", ttl=600)
    runner = app.test_cli_runner()
    saved = runner.invoke(args=["cacheplug", "save"])
    assert saved.exit_code == 0, saved.output
    assert "saved 2 entries" in saved.output
    inspected = runner.invoke(args=["cacheplug", "inspect", "--keys", "user:*"])
    assert inspected.exit_code == 0, inspected.output
    assert "signature ok" in inspected.output
    assert "user:1" in inspected.output
    assert "user:2" in inspected.output


def test_inspect_with_the_wrong_secret_fails(make_app, plug, tmp_path):
    app = make_app()
    with app.app_context():
        plug.cache.set("k", "v", ttl=600)
    app.test_cli_runner().invoke(args=["cacheplug", "save"])
    other = make_app(state_dir=None, name="other", secret="different")
    result = other.test_cli_runner().invoke(args=["cacheplug", "inspect", str(tmp_path / "state")])
    assert result.exit_code == 1
    assert "other secret" in result.output


def test_load_copies_saved_entries_into_the_running_cache(make_app, plug, tmp_path):
    source = make_app(state_dir=tmp_path / "backup", name="source")
    with source.app_context():
        plug.cache.set("product:1", {"price": 10}, ttl=600, tags=("products",))
    plug.close(source)
    target = make_app(name="target")
    result = target.test_cli_runner().invoke(args=["cacheplug", "load", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert "loaded 1 entries" in result.output
    with target.app_context():
        assert plug.cache.get("product:1") == {"price": 10}
        plug.invalidate_tags("products")  # the tags came along
        assert plug.cache.get("product:1") is None


def test_load_and_inspect_need_a_path(make_app):
    app = make_app(state_dir=None)
    runner = app.test_cli_runner()
    for command in ("load", "inspect"):
        result = runner.invoke(args=["cacheplug", command])
        assert result.exit_code != 0
        assert "CACHEPLUG_STATE_DIR" in result.output


def test_save_without_persistence_says_why(make_app):
    app = make_app(state_dir=None)
    result = app.test_cli_runner().invoke(args=["cacheplug", "save"])
    assert result.exit_code == 1
    assert "persistence is off" in result.output


def test_clear_asks_then_clears_and_persists(make_app, plug, tmp_path):
    app = make_app()
    with app.app_context():
        plug.cache.set("a", 1, ttl=600)
        plug.cache.set("b", 2, ttl=600)
    runner = app.test_cli_runner()
    aborted = runner.invoke(args=["cacheplug", "clear"], input="n\n")
    assert aborted.exit_code == 1
    with app.app_context():
        assert plug.cache.get("a") == 1
    result = runner.invoke(args=["cacheplug", "clear", "--yes"])
    assert result.exit_code == 0, result.output
    assert "cleared 2 entries" in result.output
    plug.close(app)
    again = make_app(name="again")
    with again.app_context():
        assert plug.runtime().loaded_entries == 0  # the clear reached the saved state


def test_commands_run_in_a_request_scope(make_app):
    app = make_app(state_dir=None)
    seen = []

    @app.cli.command("peek")
    def peek():
        seen.append(request_context.active)

    from cacheplug.integrations.flask.cli import _in_scope

    @app.cli.command("peek-scoped")
    @_in_scope
    def peek_scoped():
        seen.append(request_context.active)

    runner = app.test_cli_runner()
    runner.invoke(args=["peek"])
    runner.invoke(args=["peek-scoped"])
    stats = runner.invoke(args=["cacheplug", "stats"])
    assert stats.exit_code == 0
    assert seen == [False, True]
    assert not request_context.active
