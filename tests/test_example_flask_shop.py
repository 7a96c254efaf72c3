"""example_projects/flask_shop end to end: test client flows, the CLI, and a real server
process that saves its cache on exit and starts warm."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_FILE = ROOT / "example_projects" / "flask_shop" / "app.py"


@pytest.fixture
def shop():
    spec = importlib.util.spec_from_file_location("flask_shop_app", APP_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.create_app({"TESTING": True})
    yield module, app
    module.plug.close(app)


def test_cached_pages_memoize_and_tag_invalidation(shop):
    module, app = shop
    client = app.test_client()
    first = client.get("/products/1")
    assert first.json["price"] == 25.0
    assert first.headers["X-Cache"] == "MISS"
    assert client.get("/products/1").headers["X-Cache"] == "HIT"
    assert client.get("/products").headers["X-Cache"] == "MISS"
    assert client.get("/products").headers["X-Cache"] == "HIT"
    queries = dict(module.QUERIES)

    assert client.post("/products/1/price", json={"price": 30}).json == {"ok": True}
    updated = client.get("/products/1")
    assert (updated.json["price"], updated.headers["X-Cache"]) == (30.0, "MISS")
    listing = client.get("/products")
    assert listing.headers["X-Cache"] == "MISS"
    assert [p["price"] for p in listing.json] == [30.0, 40.0, 8.5]
    assert module.QUERIES["products"] == queries["products"] + 2  # one load, one listing

    client.get("/products/2")
    etag = client.get("/products/2").headers["ETag"]  # the stored response carries one
    assert client.get("/products/2", headers={"If-None-Match": etag}).status_code == 304


def test_private_account_is_never_shared(shop):
    _, app = shop
    client = app.test_client()
    alice = client.get("/account", headers={"Authorization": "Bearer alice-token"})
    bob = client.get("/account", headers={"Authorization": "Bearer bob-token"})
    assert alice.json["user"] == "alice"
    assert bob.json["user"] == "bob"
    assert bob.headers["X-Cache"] == "MISS"


def test_request_context_and_per_request_memo(shop):
    module, app = shop
    client = app.test_client()
    before = module.QUERIES["users"]
    one = client.get("/whoami", headers={"Authorization": "Bearer alice-token"})
    two = client.get("/whoami")
    assert one.json["user"] == "alice"
    assert two.json["user"] is None
    assert module.QUERIES["users"] == before + 2  # once per request, not per call
    assert one.json["request_id"] == one.headers["X-Request-ID"]
    assert one.json["request_id"] != two.json["request_id"]


def test_dashboard_and_metrics_from_the_environment(monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    monkeypatch.setenv("FLASK_CACHEPLUG_DASHBOARD", "true")  # JSON, as from_prefixed_env reads
    monkeypatch.setenv("FLASK_CACHEPLUG_METRICS", "true")
    spec = importlib.util.spec_from_file_location("flask_shop_observed", APP_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.create_app({"TESTING": True})
    try:
        client = app.test_client()
        client.get("/products/1")
        client.get("/products/1")
        stats = client.get("/_cacheplug/api/stats").get_json()
        assert (stats["name"], stats["cache"]["hits"] >= 1) == ("flask_shop", True)
        assert (
            client.get("/_cacheplug/", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code
            == 403
        )
        assert 'cacheplug_hits_total{cache="flask_shop"}' in client.get("/metrics").get_data(
            as_text=True
        )
    finally:
        module.plug.close(app)


def test_cached_pages_are_kept_per_host(shop):
    _, app = shop
    client = app.test_client()
    assert client.get("/products", headers={"Host": "eu.shop.test"}).headers["X-Cache"] == "MISS"
    assert client.get("/products", headers={"Host": "us.shop.test"}).headers["X-Cache"] == "MISS"
    assert client.get("/products", headers={"Host": "eu.shop.test"}).headers["X-Cache"] == "HIT"


def test_cli_stats(shop):
    _, app = shop
    result = app.test_cli_runner().invoke(args=["cacheplug", "stats"])
    assert result.exit_code == 0, result.output
    assert "cacheplug 'flask_shop'" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(state_dir: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "FLASK_SECRET_KEY": "e2e-secret",
        "FLASK_CACHEPLUG_STATE_DIR": str(state_dir),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", str(APP_FILE), "run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Python exits normally and atexit saves
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output


@pytest.mark.slow
def test_real_server_saves_at_exit_and_restarts_warm(tmp_path):
    state_dir = tmp_path / "state"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(state_dir, port)
    try:
        _wait_until_up(f"{base}/stats", proc)
        assert httpx.get(f"{base}/products/3").headers["x-cache"] == "MISS"
        assert httpx.get(f"{base}/products/3").headers["x-cache"] == "HIT"
    finally:
        output = _stop(proc)
    assert proc.returncode is not None
    from cacheplug._snapshot import SNAPSHOT_NAME

    assert (state_dir / SNAPSHOT_NAME).exists(), output

    # Same address: the host and port are part of a cached page's key.
    proc = _serve(state_dir, port)
    try:
        _wait_until_up(f"{base}/stats", proc)
        warm = httpx.get(f"{base}/products/3")
        assert warm.headers["x-cache"] == "HIT", warm.headers
        assert warm.json()["name"] == "Mug"
        assert httpx.get(f"{base}/stats").json()["queries"]["products"] == 0
    finally:
        _stop(proc)
