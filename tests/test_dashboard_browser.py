"""The dashboard page in a real headless Chromium, served by a real uvicorn server.

Needs Debian's ``chromium`` (``apt-get install chromium``) at /usr/bin/chromium; the
python ``playwright`` package drives it (no browser download). The screenshot goes to
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from cacheplug import CachePlug
from cacheplug.dashboard import AccessPolicy, dashboard_asgi_app
from tests.redis_support import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "browser-test-token-0123456789"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} is absent: apt-get install chromium to run the browser test",
    ),
]


class Server:
    """uvicorn on a free loopback port, in a thread; stop() shuts it down and joins."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve()), name="dashboard-test-uvicorn"
        )

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def busy_plug(tmp_path):
    """A plug with hits, misses, evictions, a snapshot and a mix of key prefixes."""
    plug = CachePlug(
        name="shop",
        maxsize=400,
        shards=8,
        ttl=None,
        sweep_interval=0,
        state_dir=tmp_path / "state",
        secret="s" * 32,
    )
    with plug:
        cache = plug.cache
        for i in range(500):  # 100 over maxsize: evictions
            cache.set(f"product:{i}", {"id": i, "name": f"Product {i}"})
        for i in range(60):
            cache.set(f"/products?page={i}", b"<html>...</html>")
        for i in range(20):
            cache.set(f"online:user{i}", True)
        for i in range(400, 500):
            cache.get(f"product:{i}")
        for i in range(30):
            cache.get(f"absent:{i}")
        plug.worker.flush()
        plug.save()
        yield plug


def rendered_fields(page) -> dict[str, str]:
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('[data-field]')]"
        ".map((el) => [el.dataset.field, el.dataset.value]))"
    )


def lookup(data, path: str):
    for part in path.split("."):
        data = None if data is None else data.get(part)
    return data


def test_dashboard_renders_the_json_numbers_in_chromium(busy_plug):
    from playwright.sync_api import sync_playwright

    # Loopback is not enough here: the page must carry the token to the JSON endpoint.
    app = dashboard_asgi_app(busy_plug, access=AccessPolicy(token=TOKEN, allow_loopback=False))
    server = Server(app).start()
    base = f"http://127.0.0.1:{server.port}/_cacheplug"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                problems: list[str] = []
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.goto(f"{base}/?token={TOKEN}&interval=500")
                page.wait_for_function("() => window.cacheplugRefreshes >= 3", timeout=20_000)
                assert "token" not in page.url  # dropped from the address bar

                data = httpx.get(f"{base}/api/stats", headers={"authorization": f"Bearer {TOKEN}"})
                data.raise_for_status()
                payload = data.json()
                shown = rendered_fields(page)
                assert len(shown) >= 15
                for field, value in shown.items():
                    expected = lookup(payload, field)
                    if isinstance(expected, bool) or not isinstance(expected, int | float):
                        assert value == str(expected), field
                    else:
                        assert float(value) == pytest.approx(expected), field
                cache = payload["cache"]
                assert cache["evictions"] > 0
                assert cache["misses"] == 30
                assert cache["hits"] == 100
                text = lambda sel: page.locator(sel).first.inner_text()  # noqa: E731
                assert text('[data-field="cache.hits"]') == f"{cache['hits']:,}"
                assert text('[data-field="cache.entries"]') == f"{cache['entries']:,}"
                assert text('[data-field="cache.hit_ratio"]') == f"{cache['hit_ratio'] * 100:.1f}%"
                assert text('[data-field="tier.state"]') == "off"
                assert text('[data-field="persistence.last_snapshot_at"]').endswith("ago")

                bars = page.eval_on_selector_all(
                    "#shards .shard",
                    "els => els.map(e => [Number(e.dataset.entries), Number(e.dataset.evictions)])",
                )
                assert bars == [[s["entries"], s["evictions"]] for s in payload["shards"]]
                points = page.get_attribute("#spark-line", "points").split()
                assert len(points) == int(page.inner_text("#spark-count")) >= 3
                prefixes = page.eval_on_selector_all(
                    "#prefixes tr", "rows => rows.map(r => r.dataset.prefix)"
                )
                assert prefixes[0] == "product:"  # ~83% of the entries
                assert set(prefixes) <= {"product:", "/products", "online:"}

                assert problems == []  # no CSP violation, no script error, no failed load
                # The browser itself is refused without the token (loopback is off here).
                status = page.evaluate("async () => (await fetch('api/stats')).status")
                assert status == 401

                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        server.stop()


async def test_non_loopback_client_is_refused_by_the_asgi_app(busy_plug, monkeypatch):
    """The same app a browser sees, called as a server would for a remote peer."""
    monkeypatch.delenv("CACHEPLUG_DASHBOARD_TOKEN", raising=False)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    def scope(path: str, client: tuple[str, int], headers=()) -> dict:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"shop.example"), *headers],
            "client": client,
            "server": ("10.0.0.5", 8000),
        }

    remote = ("198.51.100.77", 40000)
    open_to_loopback = dashboard_asgi_app(busy_plug)
    await open_to_loopback(scope("/_cacheplug/api/stats", remote), receive, send)
    assert sent[0]["status"] == 403
    sent.clear()
    with_token = dashboard_asgi_app(busy_plug, access=AccessPolicy(token=TOKEN))
    await with_token(scope("/_cacheplug/", remote), receive, send)
    assert sent[0]["status"] == 401
    sent.clear()
    auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
    await with_token(scope("/_cacheplug/api/stats", remote, auth), receive, send)
    assert sent[0]["status"] == 200
