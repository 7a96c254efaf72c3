"""CACHEPLUG_DASHBOARD / CACHEPLUG_METRICS: opt-in routes on real Flask apps."""

from __future__ import annotations

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from cacheplug import request_context
from cacheplug.errors import ConfigurationError
from cacheplug.integrations.flask import FlaskCachePlug

TOKEN = "flask-dashboard-token-0123456789"
REMOTE = {"REMOTE_ADDR": "203.0.113.9"}


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)


@pytest.fixture
def plug():
    return FlaskCachePlug()


@pytest.fixture
def make_app(plug):
    made: list[Flask] = []

    def make(**config) -> Flask:
        app = Flask(f"observed{len(made)}")
        app.config.update({"SECRET_KEY": "test", **config})
        plug.init_app(app)

        @app.get("/page")
        @plug.cached(timeout=60)
        def page():
            return "page"

        @app.get("/metrics-help")
        def metrics_help():  # shares the /metrics prefix but is the app's own route
            return f"help, request {request_context.request_id is not None}"

        made.append(app)
        return app

    yield make
    for app in made:
        plug.close(app)


def test_off_by_default(make_app):
    client = make_app().test_client()
    assert client.get("/_cacheplug/").status_code == 404
    assert client.get("/_cacheplug/api/stats").status_code == 404
    assert client.get("/metrics").status_code == 404


def test_dashboard_page_and_json_for_a_loopback_client(make_app):
    app = make_app(CACHEPLUG_DASHBOARD=True)
    client = app.test_client()  # Werkzeug's test client connects from 127.0.0.1
    client.get("/page")
    client.get("/page")
    page = client.get("/_cacheplug/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "content-security-policy" in page.headers
    assert "X-Cache" not in page.headers
    stats = client.get("/_cacheplug/api/stats")
    assert stats.status_code == 200
    data = stats.get_json()
    assert data["name"] == app.name
    assert data["started"] is True
    assert data["cache"]["hits"] >= 1
    assert data["cache"]["entries"] >= 1
    redirect = client.get("/_cacheplug")
    assert (redirect.status_code, redirect.headers["Location"]) == (301, "/_cacheplug/")
    assert client.post("/_cacheplug/api/stats").status_code == 405


def test_dashboard_token_refusals(make_app):
    client = make_app(CACHEPLUG_DASHBOARD=True, CACHEPLUG_DASHBOARD_TOKEN=TOKEN).test_client()
    url = "/_cacheplug/api/stats"
    assert client.get(url, environ_base=REMOTE).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
    assert client.get(url, headers=wrong, environ_base=REMOTE).status_code == 403
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get(url, headers=bearer, environ_base=REMOTE).status_code == 200
    assert client.get(f"{url}?token={TOKEN}", environ_base=REMOTE).status_code == 200
    # Loopback gets in without a token, unless a proxy header says it is relayed.
    assert client.get(url).status_code == 200
    assert client.get(url, headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 401


def test_without_a_token_only_loopback_gets_in(make_app):
    client = make_app(CACHEPLUG_DASHBOARD=True).test_client()
    assert client.get("/_cacheplug/", environ_base=REMOTE).status_code == 403
    assert client.get("/_cacheplug/").status_code == 200


def test_token_from_the_environment(make_app, monkeypatch):
    monkeypatch.setenv("CACHEPLUG_DASHBOARD_TOKEN", TOKEN)
    client = make_app(CACHEPLUG_DASHBOARD=True).test_client()
    assert client.get("/_cacheplug/", environ_base=REMOTE).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/_cacheplug/", headers=bearer, environ_base=REMOTE).status_code == 200


def test_metrics_scrape_parses_and_counts_real_hits(make_app):
    app = make_app(CACHEPLUG_METRICS=True)
    client = app.test_client()
    for _ in range(3):
        client.get("/page")
    scrape = client.get("/metrics", environ_base=REMOTE)  # open, like most scrape targets
    assert scrape.status_code == 200
    assert scrape.mimetype == "text/plain"
    samples = {
        (sample.name, sample.labels.get("cache")): sample.value
        for family in text_string_to_metric_families(scrape.get_data(as_text=True))
        for sample in family.samples
    }
    stats = app.extensions["cacheplug"].runtime.stats().cache
    assert samples[("cacheplug_hits_total", app.name)] == stats.hits >= 2
    assert samples[("cacheplug_misses_total", app.name)] == stats.misses >= 1
    assert samples[("cacheplug_entries", app.name)] == 1
    assert samples[("cacheplug_max_entries", app.name)] == stats.maxsize
    assert "X-Cache" not in scrape.headers
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.mimetype == "application/openmetrics-text"


def test_paths_the_routes_do_not_claim_reach_flask_in_a_request_scope(make_app):
    client = make_app(CACHEPLUG_DASHBOARD=True, CACHEPLUG_METRICS=True).test_client()
    assert client.get("/metrics-help").data == b"help, request True"
    assert client.get("/_cacheplugX").status_code == 404  # Flask's own 404
    assert client.get("/page").headers["X-Cache"] == "MISS"
    assert client.get("/page").headers["X-Cache"] == "HIT"


def test_dashboard_and_metrics_together_on_two_apps(make_app):
    """Each app serves its own runtime's numbers (private registries never collide)."""
    one = make_app(CACHEPLUG_DASHBOARD=True, CACHEPLUG_METRICS=True)
    two = make_app(CACHEPLUG_DASHBOARD=True, CACHEPLUG_METRICS=True)
    one.test_client().get("/page")
    assert one.test_client().get("/_cacheplug/api/stats").get_json()["name"] == one.name
    assert two.test_client().get("/_cacheplug/api/stats").get_json()["name"] == two.name
    assert f'cache="{two.name}"' in two.test_client().get("/metrics").get_data(as_text=True)


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"CACHEPLUG_DASHBOARD": "yes"}, "CACHEPLUG_DASHBOARD"),
        ({"CACHEPLUG_METRICS": 1}, "CACHEPLUG_METRICS"),
        ({"CACHEPLUG_DASHBOARD": True, "CACHEPLUG_DASHBOARD_TOKEN": "short"}, "TOKEN"),
        ({"CACHEPLUG_DASHBOARD": True, "CACHEPLUG_DASHBOARD_TOKEN": 12345}, "TOKEN"),
    ],
)
def test_bad_config_fails_in_init_app(plug, config, names):
    app = Flask("badly_observed")
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=names):
        plug.init_app(app)
    assert "cacheplug" not in app.extensions
