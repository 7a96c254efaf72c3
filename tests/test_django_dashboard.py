"""The dashboard and /metrics views of the Django adapter, through Django's test client
on the test project (``path("_cacheplug/", include("cacheplug.integrations.django.urls"))``).

Django's test client connects from 127.0.0.1 (``REMOTE_ADDR``); other addresses and
proxy headers are passed explicitly.
"""

from __future__ import annotations

import json

import prometheus_client
import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from cacheplug.integrations.django.checks import check_dashboard_and_metrics

TOKEN = "dashboard-token-0123456789"
ON = {"ENABLED": True}


@pytest.fixture(autouse=True)
def _clean():
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def client():
    return Client()


def _samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("cache", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- off by default ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/_cacheplug/", "/_cacheplug/api/stats", "/_cacheplug/metrics"])
def test_everything_is_404_until_enabled(client, url):
    assert client.get(url).status_code == 404


def test_disabled_explicitly_is_404(client, settings):
    settings.CACHEPLUG_DASHBOARD = {"ENABLED": False, "TOKEN": TOKEN}
    settings.CACHEPLUG_METRICS = {"ENABLED": False}
    assert client.get("/_cacheplug/").status_code == 404
    assert client.get("/_cacheplug/metrics").status_code == 404


def test_url_names():
    assert reverse("cacheplug:dashboard") == "/_cacheplug/"
    assert reverse("cacheplug:dashboard-stats") == "/_cacheplug/api/stats"
    assert reverse("cacheplug:metrics") == "/_cacheplug/metrics"


# -- the dashboard -----------------------------------------------------------------------


def test_page_for_a_loopback_client(client, settings):
    settings.CACHEPLUG_DASHBOARD = ON
    response = client.get("/_cacheplug/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    assert "script-src 'sha256-" in response["Content-Security-Policy"]
    assert b'fetch("api/stats"' in response.content  # relative: works under any mount


def test_stats_json_reflects_the_default_alias(client, settings):
    settings.CACHEPLUG_DASHBOARD = ON
    cache = caches["default"]
    cache.set("user:1", "alice")
    cache.set("user:2", "bob")
    before = cache.plug.stats().cache
    cache.get("user:1")
    cache.get("user:404")
    response = client.get("/_cacheplug/api/stats")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    payload = json.loads(response.content)
    assert payload["name"] == "tests-default"
    assert payload["cache"]["hits"] == before.hits + 1
    assert payload["cache"]["misses"] == before.misses + 1
    assert payload["cache"]["entries"] == 2
    assert {p["prefix"] for p in payload["top_prefixes"]} == {":1:user:"}
    assert payload["persistence"] is None
    assert payload["tier"] == {"state": "off"}


def test_dashboard_alias_setting(client, settings):
    settings.CACHES = {
        **settings.CACHES,
        "other": {
            "BACKEND": "cacheplug.integrations.django.CachePlugCache",
            "LOCATION": "tests-dashboard-other",
            "OPTIONS": {"SWEEP_INTERVAL": 0},
        },
    }
    settings.CACHEPLUG_DASHBOARD = {"ENABLED": True, "ALIAS": "other"}
    caches["other"].set("k", "v")
    payload = json.loads(client.get("/_cacheplug/api/stats").content)
    assert (payload["name"], payload["cache"]["entries"]) == ("tests-dashboard-other", 1)
    caches["other"].clear()


def test_proxied_loopback_request_is_refused(client, settings):
    settings.CACHEPLUG_DASHBOARD = ON
    response = client.get("/_cacheplug/", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert response.status_code == 403
    assert b"loopback" in response.content


def test_remote_client_needs_the_token(client, settings):
    settings.CACHEPLUG_DASHBOARD = {"ENABLED": True, "TOKEN": TOKEN}
    remote = {"REMOTE_ADDR": "198.51.100.7"}
    missing = client.get("/_cacheplug/api/stats", **remote)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == "Bearer"
    wrong = client.get("/_cacheplug/api/stats", HTTP_AUTHORIZATION="Bearer nope", **remote)
    assert wrong.status_code == 403
    bearer = client.get("/_cacheplug/api/stats", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **remote)
    assert bearer.status_code == 200
    assert client.get(f"/_cacheplug/?token={TOKEN}", **remote).status_code == 200


def test_loopback_can_be_turned_off(client, settings):
    settings.CACHEPLUG_DASHBOARD = {"ENABLED": True, "TOKEN": TOKEN, "ALLOW_LOOPBACK": False}
    assert client.get("/_cacheplug/").status_code == 401
    assert client.get("/_cacheplug/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_token_from_the_environment(client, settings, monkeypatch):
    monkeypatch.setenv("CACHEPLUG_DASHBOARD_TOKEN", TOKEN)
    settings.CACHEPLUG_DASHBOARD = ON
    remote = {"REMOTE_ADDR": "198.51.100.7"}
    assert client.get("/_cacheplug/", **remote).status_code == 401
    assert client.get(f"/_cacheplug/?token={TOKEN}", **remote).status_code == 200


def test_other_methods_get_405_and_head_no_body(client, settings):
    settings.CACHEPLUG_DASHBOARD = ON
    posted = client.post("/_cacheplug/api/stats")
    assert posted.status_code == 405
    assert posted["Allow"] == "GET, HEAD"
    head = client.head("/_cacheplug/")
    assert head.status_code == 200
    assert head.content == b""


def test_dashboard_under_the_page_cache_is_never_stored(client, settings):
    settings.CACHEPLUG_DASHBOARD = ON
    settings.MIDDLEWARE = ["cacheplug.integrations.django.CacheMiddleware", *settings.MIDDLEWARE]
    caches["default"].set("a", 1)
    first = json.loads(client.get("/_cacheplug/api/stats").content)
    caches["default"].set("b", 2)
    second = client.get("/_cacheplug/api/stats")
    assert second["X-Cache"] != "HIT"
    assert json.loads(second.content)["cache"]["entries"] == first["cache"]["entries"] + 1


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"ENABLED": True, "TOKEN": "short"}, "at least 16 characters"),
        ({"ENABLED": True, "ALLOW_LOOPBACK": False}, "lets nobody in"),
        ({"ENABLED": True, "TOKN": TOKEN}, "unknown CACHEPLUG_DASHBOARD keys"),
        ({"ENABLED": "yes"}, "must be True or False"),
    ],
)
def test_bad_dashboard_settings_are_reported(client, settings, monkeypatch, conf, message):
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    settings.CACHEPLUG_DASHBOARD = conf
    errors = check_dashboard_and_metrics()
    assert [e.id for e in errors] == ["cacheplug.E006"]
    assert message in errors[0].msg
    with pytest.raises(ImproperlyConfigured, match=message):
        client.get("/_cacheplug/")


def test_dashboard_on_a_non_cacheplug_alias_is_reported(client, settings):
    settings.CACHEPLUG_DASHBOARD = {"ENABLED": True, "ALIAS": "locmem"}
    errors = check_dashboard_and_metrics()
    assert [e.id for e in errors] == ["cacheplug.E006"]
    assert "'locmem'" in errors[0].msg
    with pytest.raises(ImproperlyConfigured, match="CachePlugCache"):
        client.get("/_cacheplug/")


def test_valid_settings_pass_the_checks(settings):
    settings.CACHEPLUG_DASHBOARD = {"ENABLED": True, "TOKEN": TOKEN}
    settings.CACHEPLUG_METRICS = {"ENABLED": True, "ALIASES": ["default"]}
    assert check_dashboard_and_metrics() == []


# -- /metrics ------------------------------------------------------------------------------


def test_scrape_matches_the_plug_stats(client, settings):
    settings.CACHEPLUG_METRICS = ON
    cache = caches["default"]
    cache.set("user:1", "alice")
    cache.get("user:1")
    cache.get("user:2")
    cache.delete("user:1")
    stats = cache.plug.stats().cache
    response = client.get("/_cacheplug/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response.content.decode())
    label = "tests-default"
    assert samples[("cacheplug_hits_total", label)] == stats.hits
    assert samples[("cacheplug_misses_total", label)] == stats.misses
    assert samples[("cacheplug_sets_total", label)] == stats.sets
    assert samples[("cacheplug_deletes_total", label)] == stats.deletes
    assert samples[("cacheplug_entries", label)] == 0
    assert samples[("cacheplug_wal_lag_records", label)] == 0
    assert ("cacheplug_tier_up", label) not in samples
    # The next scrape reads the counters afresh (nothing is registered twice).
    cache.get("user:3")
    again = _samples(client.get("/_cacheplug/metrics").content.decode())
    assert again[("cacheplug_misses_total", label)] == stats.misses + 1


def test_openmetrics_when_asked(client, settings):
    settings.CACHEPLUG_METRICS = ON
    response = client.get(
        "/_cacheplug/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_every_cacheplug_location_is_exported_once(client, settings):
    settings.CACHES = {
        **settings.CACHES,
        "default-alias": {  # same LOCATION as "default": one store, one series
            "BACKEND": "cacheplug.integrations.django.CachePlugCache",
            "LOCATION": "tests-default",
            "OPTIONS": {"MAX_ENTRIES": 10_000, "SWEEP_INTERVAL": 0},
        },
        "sessions": {
            "BACKEND": "cacheplug.integrations.django.CachePlugCache",
            "LOCATION": "tests-metrics-sessions",
            "OPTIONS": {"SWEEP_INTERVAL": 0},
        },
    }
    settings.CACHEPLUG_METRICS = ON
    caches["sessions"].set("s", 1)
    samples = _samples(client.get("/_cacheplug/metrics").content.decode())
    entries = {label for name, label in samples if name == "cacheplug_entries"}
    assert entries == {"tests-default", "tests-metrics-sessions"}
    assert samples[("cacheplug_entries", "tests-metrics-sessions")] == 1
    settings.CACHEPLUG_METRICS = {"ENABLED": True, "ALIASES": ["sessions"]}
    samples = _samples(client.get("/_cacheplug/metrics").content.decode())
    assert {label for name, label in samples if name == "cacheplug_entries"} == {
        "tests-metrics-sessions"
    }
    caches["sessions"].clear()


def test_metrics_token(client, settings):
    settings.CACHEPLUG_METRICS = {"ENABLED": True, "TOKEN": TOKEN, "ALLOW_LOOPBACK": False}
    denied = client.get("/_cacheplug/metrics")
    assert denied.status_code == 401
    assert denied["WWW-Authenticate"] == "Bearer"
    ok = client.get("/_cacheplug/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200
    assert b"cacheplug_hits_total" in ok.content


def test_metrics_are_open_without_a_token(client, settings):
    settings.CACHEPLUG_METRICS = ON
    remote = client.get("/_cacheplug/metrics", REMOTE_ADDR="198.51.100.7")
    assert remote.status_code == 200
    assert client.post("/_cacheplug/metrics").status_code == 405


def test_default_registry_serves_process_metrics_and_is_released(client, settings):
    settings.CACHEPLUG_METRICS = {"ENABLED": True, "REGISTRY": "default"}
    text = client.get("/_cacheplug/metrics").content.decode()
    assert "python_info" in text  # the default registry's own collectors
    assert "cacheplug_hits_total" in text
    assert "cacheplug_hits_total" in prometheus_client.generate_latest().decode()
    settings.CACHEPLUG_METRICS = ON  # a settings change unregisters the collector
    assert "cacheplug_hits_total" not in prometheus_client.generate_latest().decode()


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"ENABLED": True, "ALIASES": "default"}, "list of CACHES aliases"),
        ({"ENABLED": True, "REGISTRY": "global"}, "REGISTRY"),
        ({"ENABLED": True, "TOKEN": "short"}, "at least 16 characters"),
        ({"ENABLED": True, "ALIASES": ["locmem"]}, "'locmem'"),
    ],
)
def test_bad_metrics_settings_are_reported(settings, conf, message):
    settings.CACHEPLUG_METRICS = conf
    errors = check_dashboard_and_metrics()
    assert [e.id for e in errors] == ["cacheplug.E006"]
    assert message in errors[0].msg
