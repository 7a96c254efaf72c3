"""CachePlugMiddleware's opt-in dashboard and Prometheus routes, on a real FastAPI app."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from cacheplug import CachePlug
from cacheplug.errors import ConfigurationError
from cacheplug.integrations.asgi import CachePlugMiddleware

TOKEN = "t0ken-for-the-dashboard-0123456789"
LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.9", 50000)


@pytest.fixture
def plug():
    p = CachePlug(ttl=60, sweep_interval=0, name="admin-test")
    yield p
    p.close()


def make_app(plug, **options):
    app = FastAPI()

    @app.get("/items")
    async def items():
        return {"items": [1, 2]}

    @app.get("/metrics-like")
    async def other():
        return {"ok": True}

    app.add_middleware(CachePlugMiddleware, plug=plug, cache_responses=True, **options)
    return app


def test_admin_routes_are_off_by_default(plug, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    with TestClient(make_app(plug), client=LOOPBACK) as client:
        assert client.get("/_cacheplug/").status_code == 404
        assert client.get("/_cacheplug/api/stats").status_code == 404
        assert client.get("/metrics").status_code == 404
        assert client.get("/items").json() == {"items": [1, 2]}


def test_dashboard_page_and_json_for_a_loopback_client(plug, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    with TestClient(make_app(plug, dashboard=True), client=LOOPBACK) as client:
        client.get("/items")
        client.get("/items")  # a hit
        page = client.get("/_cacheplug/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "x-cache" not in page.headers  # never cached or tagged by the middleware
        stats = client.get("/_cacheplug/api/stats")
        assert stats.status_code == 200
        doc = stats.json()
        assert doc["name"] == "admin-test"
        assert doc["cache"]["hits"] >= 1
        assert doc["cache"]["entries"] >= 1
        assert client.get("/_cacheplug", follow_redirects=False).status_code == 301
        assert client.get("/metrics").status_code == 404  # metrics stay off


def test_dashboard_refuses_remote_clients_without_the_token(plug, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    app = make_app(plug, dashboard=True)
    with TestClient(app, client=REMOTE) as client:
        assert client.get("/_cacheplug/api/stats").status_code == 403
        assert client.get("/_cacheplug/").status_code == 403
        assert client.get("/items").status_code == 200  # the app itself is unaffected
    client = TestClient(app, client=LOOPBACK)  # no lifespan: the plug closed above
    response = client.get("/_cacheplug/api/stats", headers={"x-forwarded-for": "1.2.3.4"})
    assert response.status_code == 403  # loopback behind a proxy is not trusted


def test_dashboard_token_admits_remote_clients_and_refuses_wrong_ones(plug, monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    app = make_app(plug, dashboard=True, dashboard_token=TOKEN)
    with TestClient(app, client=REMOTE) as client:
        assert client.get("/_cacheplug/api/stats").status_code == 401
        bad = client.get("/_cacheplug/api/stats", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 403
        ok = client.get("/_cacheplug/api/stats", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert ok.json()["name"] == "admin-test"
        assert client.get(f"/_cacheplug/?token={TOKEN}").status_code == 200


def test_dashboard_token_from_the_environment(plug, monkeypatch):
    monkeypatch.setenv("CACHEPLUG_DASHBOARD_TOKEN", TOKEN)
    with TestClient(make_app(plug, dashboard=True), client=REMOTE) as client:
        assert client.get("/_cacheplug/api/stats").status_code == 401
        ok = client.get("/_cacheplug/api/stats", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_metrics_scrape_parses_and_counts_the_cache(plug):
    with TestClient(make_app(plug, metrics=True), client=REMOTE) as client:
        client.get("/items")
        client.get("/items")
        client.get("/items")
        scrape = client.get("/metrics")
        assert scrape.status_code == 200
        assert client.get("/metrics-like").json() == {"ok": True}  # only the exact path
        assert client.get("/_cacheplug/").status_code == 404  # dashboard stays off
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    hits = [s for s in families["cacheplug_hits"].samples if s.name == "cacheplug_hits_total"]
    assert [s.labels["cache"] for s in hits] == ["admin-test"]
    assert hits[0].value >= 2
    entries = families["cacheplug_entries"].samples[0]
    assert entries.value >= 1


def test_admin_options_are_checked(plug):
    app = FastAPI()
    with pytest.raises(ConfigurationError, match="dashboard"):
        CachePlugMiddleware(app, plug=plug, dashboard="yes")
    with pytest.raises(ConfigurationError, match="dashboard_token"):
        CachePlugMiddleware(app, plug=plug, dashboard_token=TOKEN)
    with pytest.raises(ConfigurationError, match="16"):
        CachePlugMiddleware(app, plug=plug, dashboard=True, dashboard_token="short")
