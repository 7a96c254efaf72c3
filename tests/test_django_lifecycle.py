"""Lifecycle, system checks and ``manage.py cacheplug``: real state dirs, real subprocesses."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command

from cacheplug import CachePlug
from cacheplug.integrations.django import checks, lifecycle

ROOT = Path(__file__).resolve().parent.parent
BACKEND = "cacheplug.integrations.django.CachePlugCache"
_names = itertools.count()


@pytest.fixture
def persistent(settings, tmp_path):
    """A CACHES alias ``"persistent"`` with its own LOCATION and STATE_DIR."""
    location = f"persistent-{next(_names)}"
    settings.CACHES = {
        **settings.CACHES,
        "persistent": {
            "BACKEND": BACKEND,
            "LOCATION": location,
            "OPTIONS": {"STATE_DIR": tmp_path / "state", "SWEEP_INTERVAL": 0},
        },
    }
    yield tmp_path / "state"
    plug = lifecycle.plugs().get(location)
    if plug is not None:
        plug.close()


def _ids(messages):
    return sorted(m.id for m in messages)


# -- autostart rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "run_main", "expected"),
    [
        (["gunicorn", "mysite.wsgi"], None, True),
        (["uvicorn", "mysite.asgi:application"], None, True),
        (["manage.py", "runserver"], None, False),  # the autoreloader's parent
        (["manage.py", "runserver"], "true", True),  # its child serves
        (["manage.py", "runserver", "--noreload"], None, True),
        (["manage.py", "migrate"], None, False),
        (["manage.py", "cacheplug", "save"], None, False),
        (["django-admin", "shell"], None, False),
    ],
)
def test_should_autostart(argv, run_main, expected):
    environ = {} if run_main is None else {"RUN_MAIN": run_main}
    assert lifecycle.should_autostart(argv, environ) is expected


def test_start_all_starts_only_cacheplug_aliases_and_close_all_saves(persistent):
    started = lifecycle.start_all(["persistent", "locmem"])
    assert len(started) == 1
    assert started[0].started
    caches["persistent"].set("greeting", {"hello": "world"})
    lifecycle.start_all(["persistent"])  # idempotent
    started[0].close()
    assert (persistent / "snapshot.cps").exists() or any(persistent.iterdir())
    fresh = CachePlug(state_dir=str(persistent), secret="cacheplug-tests-not-secret").start()
    try:
        assert [k for k in fresh.cache if k.endswith("greeting")] == [":1:greeting"]
    finally:
        fresh.close()


def _run_django(script: str, state_dir: Path, location: str) -> subprocess.CompletedProcess:
    prelude = f"""
        import django
        from django.conf import settings
        settings.configure(
            SECRET_KEY="subprocess-secret",
            INSTALLED_APPS=["cacheplug.integrations.django"],
            CACHES={{"default": {{"BACKEND": "{BACKEND}", "LOCATION": "{location}",
                     "OPTIONS": {{"STATE_DIR": {str(state_dir)!r}}}}}}},
        )
        django.setup()
        from django.core.cache import cache
    """
    code = textwrap.dedent(prelude) + textwrap.dedent(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_state_survives_a_restart_of_a_real_process(tmp_path):
    state = tmp_path / "state"
    first = _run_django("cache.set('k', [1, 2], None)\nprint('stored')", state, "restart")
    assert first.returncode == 0, first.stderr
    second = _run_django("print(repr(cache.get('k')))", state, "restart")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "[1, 2]"


# -- checks --------------------------------------------------------------------------------


def _with_options(settings, **options):
    settings.CACHES = {
        "default": {"BACKEND": BACKEND, "LOCATION": f"checks-{next(_names)}", "OPTIONS": options}
    }


def test_checks_pass_on_the_test_settings():
    assert checks.check_caches() == []


def test_e001_state_dir_not_writable(settings, tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    _with_options(settings, STATE_DIR=not_a_dir / "state")
    assert _ids(checks.check_caches()) == ["cacheplug.E001"]


def test_e002_missing_secret(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_SECRET", raising=False)
    settings.SECRET_KEY = ""
    _with_options(settings, STATE_DIR=tmp_path / "state")
    assert _ids(checks.check_caches()) == ["cacheplug.E002"]


def test_e003_unknown_option(settings):
    _with_options(settings, MAXSIZE=10)
    messages = checks.check_caches()
    assert _ids(messages) == ["cacheplug.E003"]
    assert "MAXSIZE" in messages[0].msg


@pytest.mark.parametrize(
    "options", [{"SHARDS": 3}, {"FSYNC": "sometimes"}, {"EVICTION": "lru"}, {"QUEUE_SIZE": 0}]
)
def test_e004_invalid_value(settings, options):
    _with_options(settings, **options)
    assert _ids(checks.check_caches()) == ["cacheplug.E004"]


def test_e005_aliases_sharing_a_location_disagree(settings):
    settings.CACHES = {
        "a": {"BACKEND": BACKEND, "LOCATION": "same", "OPTIONS": {"SHARDS": 4}},
        "b": {"BACKEND": BACKEND, "LOCATION": "same", "OPTIONS": {"SHARDS": 8}},
        "c": {"BACKEND": BACKEND, "LOCATION": "same", "OPTIONS": {"SHARDS": 4, "MAX_ENTRIES": 5}},
    }
    assert _ids(checks.check_caches()) == ["cacheplug.E005"]


def test_w001_redis_unreachable(settings):
    _with_options(settings, REDIS_URL="redis://127.0.0.1:1/0")
    assert "cacheplug.W001" in _ids(checks.check_caches())


def test_w001_not_raised_for_a_live_redis(settings):
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    _with_options(settings, REDIS_URL=url)
    assert "cacheplug.W001" not in _ids(checks.check_caches())


def test_manage_py_check_reports_errors(settings, tmp_path, monkeypatch):
    from django.core.management.base import SystemCheckError

    monkeypatch.delenv("CACHEPLUG_SECRET", raising=False)
    settings.SECRET_KEY = ""
    _with_options(settings, STATE_DIR=tmp_path / "state")
    with pytest.raises(SystemCheckError, match=r"cacheplug\.E002"):
        call_command("check")


def test_invalid_value_fails_at_first_use_with_a_clear_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    _with_options(settings, SHARDS=3)
    with pytest.raises(ImproperlyConfigured, match="shards must be a power of two"):
        caches["default"]


# -- management command ----------------------------------------------------------------------


def test_command_save_load_inspect_clear(persistent, capsys):
    # Nothing started: save borrows the lock for itself, then lets it go.
    plug = CachePlug(state_dir=str(persistent), secret="cacheplug-tests-not-secret").start()
    plug.cache.set(":1:a", "x", None)
    plug.cache.set(":1:b", "y", None)
    plug.close()
    call_command("cacheplug", "save", alias="persistent")
    call_command("cacheplug", "load", alias="persistent")
    call_command("cacheplug", "inspect", alias="persistent", keys=":1:*")
    call_command("cacheplug", "stats", alias="persistent")
    out = capsys.readouterr().out
    assert "persistent: saved 2 entries" in out
    assert "persistent: 2 live entries load" in out
    assert ":1:a" in out
    assert "persistence:" in out
    call_command("cacheplug", "clear", alias="persistent")
    call_command("cacheplug", "load", alias="persistent")
    assert "persistent: 0 live entries load" in capsys.readouterr().out


def test_command_acts_on_a_live_plug(persistent, capsys):
    lifecycle.start_all(["persistent"])
    caches["persistent"].set("k", "v")
    call_command("cacheplug", "stats", alias="persistent")
    call_command("cacheplug", "save", alias="persistent")
    out = capsys.readouterr().out
    assert "live: 1 entries" in out
    assert "saved 1 entries" in out
    call_command("cacheplug", "clear", alias="persistent")
    assert caches["persistent"].get("k") is None


def test_command_refuses_while_a_server_holds_the_lock(persistent):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from cacheplug import CachePlug;"
            f"p = CachePlug(state_dir={str(persistent)!r}, secret='cacheplug-tests-not-secret')"
            ".start(); print('ready', flush=True); sys.stdin.read(); p.close()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(CommandError, match="save failed"):
            call_command("cacheplug", "save", alias="persistent")
        with pytest.raises(CommandError, match="clear failed"):
            call_command("cacheplug", "clear", alias="persistent")
        call_command("cacheplug", "load", alias="persistent")  # reading needs no lock
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    call_command("cacheplug", "save", alias="persistent")  # released: works now


def test_command_errors(persistent):
    with pytest.raises(CommandError, match="not a CachePlugCache alias"):
        call_command("cacheplug", "stats", alias="locmem")
    with pytest.raises(CommandError, match="failed"):
        call_command("cacheplug", "save", alias="default")  # no STATE_DIR


def test_a_closed_plug_is_replaced_and_an_unstarted_one_is_shared():
    location = f"lifecycle-replace-{next(itertools.count())}-{os.getpid()}"
    options = {"name": location, "sweep_interval": 0}
    plug = lifecycle.plug_for(location, options)
    assert lifecycle.plug_for(location, options) is plug  # not started yet: still shared
    plug.start()
    assert lifecycle.plug_for(location, options) is plug
    plug.close()
    fresh = lifecycle.plug_for(location, options)
    assert fresh is not plug
    assert not fresh.started
    assert lifecycle.plug_for(location, options) is fresh
