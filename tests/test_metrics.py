"""cacheplug.metrics: scrape the real exposition text after real cache activity."""

from __future__ import annotations

import subprocess
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cacheplug import CachePlug, ConfigurationError
from cacheplug.dashboard import AccessPolicy
from cacheplug.metrics import CachePlugCollector, metrics_asgi_app, metrics_wsgi_app, register
from tests.redis_support import free_port

TOKEN = "metrics-token-0123456789"


def samples(text: str) -> dict[tuple[str, str], float]:
    """{(sample name, cache label): value} from exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, sample.labels.get("cache", "")] = sample.value
    return out


@pytest.fixture
def plug(timer):
    with CachePlug(name="shop", maxsize=4, shards=1, ttl=60, timer=timer, sweep_interval=0) as p:
        yield p


def activity(plug, timer) -> None:
    cache = plug.cache
    for i in range(6):  # maxsize 4: two evictions
        cache.set(f"user:{i}", i)
    cache.get("user:5")
    cache.get("user:4")
    cache.get("absent")
    cache.delete("user:5")
    cache.set("short", 1, ttl=1)
    timer.advance(2)
    cache.get("short")  # found expired: a miss and an expiration


def scrape(registry) -> dict[tuple[str, str], float]:
    return samples(prometheus_client.generate_latest(registry).decode())


def test_counters_and_gauges_match_stats_after_activity(plug, timer):
    registry = register(plug)
    activity(plug, timer)
    plug.worker.flush()
    got = scrape(registry)
    stats = plug.stats()
    c = stats.cache
    assert c.evictions >= 2
    assert c.expirations >= 1
    assert c.deletes == 1
    assert got["cacheplug_hits_total", "shop"] == c.hits == 2
    assert got["cacheplug_misses_total", "shop"] == c.misses == 2
    assert got["cacheplug_sets_total", "shop"] == c.sets
    assert got["cacheplug_deletes_total", "shop"] == c.deletes
    assert got["cacheplug_evictions_total", "shop"] == c.evictions
    assert got["cacheplug_expirations_total", "shop"] == c.expirations
    assert got["cacheplug_entries", "shop"] == c.size == len(plug.cache)
    assert got["cacheplug_max_entries", "shop"] == 4
    assert got["cacheplug_queue_depth", "shop"] == stats.worker.queue_depth
    assert got["cacheplug_wal_lag_records", "shop"] == 0  # no state_dir
    assert ("cacheplug_wal_bytes", "shop") not in got
    assert ("cacheplug_tier_up", "shop") not in got  # no tier configured


def test_scrape_reads_fresh_values_each_time(plug):
    registry = register(plug)
    assert scrape(registry)["cacheplug_hits_total", "shop"] == 0
    plug.cache.set("a", 1)
    plug.cache.get("a")
    assert scrape(registry)["cacheplug_hits_total", "shop"] == 1


def test_persistence_metrics(tmp_path, timer):
    plug = CachePlug(
        name="durable", state_dir=tmp_path, secret="s" * 32, fsync="never", sweep_interval=0
    )
    with plug:
        registry = register(plug)
        for i in range(5):
            plug.cache.set(f"k{i}", i)
        plug.worker.flush()
        got = scrape(registry)
        persistence = plug.stats().persistence
        expected_lag = persistence.last_seq - persistence.last_fsync_seq
        assert got["cacheplug_wal_lag_records", "durable"] == expected_lag
        assert got["cacheplug_wal_bytes", "durable"] == persistence.wal_bytes > 0
        assert ("cacheplug_last_snapshot_timestamp_seconds", "durable") not in got or (
            persistence.last_snapshot_at is not None
        )
        plug.save()
        got = scrape(registry)
        saved_at = plug.stats().persistence.last_snapshot_at
        assert got["cacheplug_last_snapshot_timestamp_seconds", "durable"] == pytest.approx(
            saved_at
        )


@pytest.mark.redis
def test_tier_up_gauge_with_a_real_redis_tier(redis_url, redis_prefix):
    options = {"secret": "s" * 32, "sweep_interval": 0, "redis_socket_timeout": 0.2}
    with CachePlug(name="tiered", redis_url=redis_url, redis_prefix=redis_prefix, **options) as p:
        p.cache.get("absent")  # one L2 round trip
        assert scrape(register(p))["cacheplug_tier_up", "tiered"] == 1
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    with CachePlug(
        name="cut-off",
        redis_url=unreachable,
        redis_prefix=redis_prefix,
        redis_breaker_threshold=1,
        redis_breaker_reset=60.0,
        **options,
    ) as p:
        p.cache.get("absent")  # the L2 read fails and opens the breaker
        assert scrape(register(p))["cacheplug_tier_up", "cut-off"] == 0


def test_several_plugs_in_one_collector(plug, timer):
    with CachePlug(name="other", sweep_interval=0, timer=timer) as other:
        registry = register(plug, other)
        other.cache.set("x", 1)
        other.cache.get("x")
        got = scrape(registry)
        assert got["cacheplug_hits_total", "other"] == 1
        assert got["cacheplug_hits_total", "shop"] == 0


def test_bad_registrations_are_refused(plug):
    with pytest.raises(ConfigurationError, match="own name"):
        CachePlugCollector(plug, plug)
    with pytest.raises(ConfigurationError, match="at least one"):
        CachePlugCollector()
    registry = register(plug)
    with pytest.raises(ConfigurationError, match="already has cacheplug metrics"):
        register(plug, registry=registry)
    with pytest.raises(ConfigurationError, match="path must start"):
        metrics_asgi_app(plug, path="metrics")


def test_default_registry_opt_in(plug):
    collector_names_before = set(prometheus_client.REGISTRY._names_to_collectors)
    register(plug, registry=prometheus_client.REGISTRY)
    try:
        text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
        assert 'cacheplug_hits_total{cache="shop"}' in text
        assert "python_info" in text or "process_" in text  # the usual default collectors too
    finally:
        for name, collector in list(prometheus_client.REGISTRY._names_to_collectors.items()):
            if name not in collector_names_before and isinstance(collector, CachePlugCollector):
                prometheus_client.REGISTRY.unregister(collector)
                break


async def test_asgi_app_serves_exposition_and_negotiates_openmetrics(plug):
    plug.cache.set("a", 1)
    plug.cache.get("a")
    app = metrics_asgi_app(plug)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert samples(response.text)["cacheplug_hits_total", "shop"] == 1
        om = await c.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        assert (await c.post("/metrics")).status_code == 405


async def test_asgi_app_wraps_another_app(plug):
    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    app = metrics_asgi_app(plug, app=inner)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/products")).text == "inner"
        assert "cacheplug_entries" in (await c.get("/metrics")).text


async def test_asgi_app_with_access_policy_rejects_remote_clients(plug):
    app = metrics_asgi_app(plug, access=AccessPolicy(token=TOKEN))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/metrics")).status_code == 401
        ok = await c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_wsgi_app_over_a_real_socket(plug):
    plug.cache.set("a", 1)
    plug.cache.get("a")
    plug.cache.get("b")

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, metrics_wsgi_app(plug), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="metrics-test-server")
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        response = httpx.get(url)
        assert response.status_code == 200
        got = samples(response.text)
        assert got["cacheplug_hits_total", "shop"] == 1
        assert got["cacheplug_misses_total", "shop"] == 1
        assert httpx.head(url).content == b""
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_wsgi_middleware_passes_other_paths():
    def inner(environ, start_response):
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"inner"]

    with CachePlug(name="w", sweep_interval=0) as plug:
        app = metrics_wsgi_app(plug, app=inner)
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as c:
            assert c.get("/").text == "inner"
            assert "cacheplug_hits_total" in c.get("/metrics").text


def test_importing_metrics_does_not_import_prometheus():
    code = (
        "import sys, cacheplug, cacheplug.metrics, cacheplug.dashboard;"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_prometheus_client_names_the_extra():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from cacheplug import CachePlug\n"
        "from cacheplug.metrics import register\n"
        "try:\n"
        "    register(CachePlug())\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'cacheplug[prometheus]'" in out.stdout
