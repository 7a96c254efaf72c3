"""The fastapi_shop example, driven end to end through its real app and lifespan."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from cacheplug.integrations.asgi import RequestIdFilter

APP_PATH = Path(__file__).resolve().parent.parent / "example_projects" / "fastapi_shop" / "app.py"


def load_shop(monkeypatch, state_dir: Path, name: str):
    monkeypatch.setenv("CACHEPLUG_STATE_DIR", str(state_dir))
    monkeypatch.setenv("CACHEPLUG_SECRET", "example-shop-secret-0123456789")
    monkeypatch.setenv("SHOP_LOOKUP_DELAY", "0.001")
    spec = importlib.util.spec_from_file_location(name, APP_PATH)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shop(monkeypatch, tmp_path):
    module = load_shop(monkeypatch, tmp_path / "state", "fastapi_shop_app")
    yield module
    module.plug.close()


def test_catalog_is_cached_and_a_price_update_purges_its_pages(shop):
    with TestClient(shop.app) as client:
        assert client.get("/products/1").headers["x-cache"] == "MISS"
        client.get("/products")
        client.get("/products/2")
        hit = client.get("/products/1")
        assert (hit.headers["x-cache"], hit.json()["price"]) == ("HIT", 25.0)
        assert shop.LOOKUPS["count"] == 3
        assert client.put("/products/1/price", json={"price": 30.0}).status_code == 200
        fresh = client.get("/products/1")
        assert (fresh.headers["x-cache"], fresh.json()["price"]) == ("MISS", 30.0)
        assert client.get("/products").headers["x-cache"] == "MISS"
        assert client.get("/products/2").headers["x-cache"] == "HIT"  # untouched
        assert client.get("/products/99").status_code == 404


def test_who_is_online_uses_ttl_entries_refreshed_per_request(shop):
    with TestClient(shop.app) as client:
        client.get("/products/1", headers={"x-user": "alice"})
        client.get("/products/1", headers={"x-user": "bob"})  # a cached hit still counts
        assert client.get("/online").json()["online"] == ["alice", "bob"]
        shop.plug.cache.set("online:alice", True, ttl=0)  # as if her TTL ran out
        assert client.get("/online").json()["online"] == ["bob"]


def test_every_log_line_carries_the_request_id(shop):
    (handler,) = [
        h for h in shop.log.handlers if any(isinstance(f, RequestIdFilter) for f in h.filters)
    ]
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    try:
        with TestClient(shop.app) as client:
            response = client.get("/whoami", headers={"x-request-id": "req-42"})
            assert response.json() == {"request_id": "req-42"}
            client.get("/products/3", headers={"x-request-id": "req-43"})
    finally:
        handler.setStream(old)
    lines = buffer.getvalue()
    assert "[req-42] fastapi_shop: whoami" in lines
    assert "[req-43] fastapi_shop: loading product 3" in lines


def test_warm_restart_serves_the_catalog_from_the_saved_state(monkeypatch, tmp_path):
    first = load_shop(monkeypatch, tmp_path / "state", "fastapi_shop_first")
    with TestClient(first.app) as client:
        client.get("/products/2")
    second = load_shop(monkeypatch, tmp_path / "state", "fastapi_shop_second")
    try:
        with TestClient(second.app) as client:
            assert client.get("/products/2").headers["x-cache"] == "HIT"
        assert second.LOOKUPS["count"] == 0
    finally:
        second.plug.close()


def test_every_response_names_its_worker_pid(shop):
    with TestClient(shop.app) as client:
        miss = client.get("/products/1")
        hit = client.get("/products/1")
        other = client.get("/stats")
    assert hit.headers["x-cache"] == "HIT"
    assert {r.headers["x-worker-pid"] for r in (miss, hit, other)} == {str(os.getpid())}


def test_dashboard_is_loopback_only_and_metrics_are_scraped(shop, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    with TestClient(shop.app, client=("127.0.0.1", 40000)) as local:
        local.get("/products/1")
        local.get("/products/1")
        stats = local.get("/_cacheplug/api/stats")
        assert stats.status_code == 200
        assert stats.json()["cache"]["hits"] >= 1
        assert local.get("/_cacheplug/").status_code == 200
        scrape = local.get("/metrics")
    remote = TestClient(shop.app, client=("198.51.100.7", 40000))  # lifespan already ran
    assert remote.get("/_cacheplug/api/stats").status_code == 403
    families = {f.name for f in text_string_to_metric_families(scrape.text)}
    assert {"cacheplug_hits", "cacheplug_entries"} <= families
