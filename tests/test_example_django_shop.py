"""example_projects/django_shop end to end, in real server processes.

The example has its own settings, apps and database, so it cannot share this test
session's Django (pytest-django set up ``tests.django_project.settings``). Each server is
``manage.py runserver --noreload`` on a free port, with its database and state directory
in a temporary folder, driven over HTTP with httpx: the page-cached catalogue, tag
invalidation when a product changes, per-user "recently viewed", "who is online" from
expiring entries, the dashboard and /metrics, and a warm restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "example_projects" / "django_shop"
PASSWORD = "shop-demo-password"  # the seed command's demo password
ONLINE_SECONDS = 1

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ShopServer:
    """One ``manage.py runserver`` process; :meth:`stop` sends SIGINT as Ctrl-C does."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
                cwd=SHOP,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/stats/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the server did not answer:\n{log.read_text()}")
            time.sleep(0.2)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def shop_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("django_shop")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shop.settings",  # not this session's test settings
        "DJANGO_SHOP_DB": str(folder / "db.sqlite3"),
        "DJANGO_SHOP_STATE_DIR": str(folder / "state"),
        "DJANGO_DEBUG": "0",
        "SHOP_ONLINE_SECONDS": str(ONLINE_SECONDS),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CACHEPLUG_DASHBOARD_TOKEN", None)
    for command in (["migrate", "-v0"], ["seed"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=SHOP,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    env["SHOP_LOG"] = str(folder / "server.log")
    return env


@pytest.fixture(scope="module")
def server(shop_env):
    shop = ShopServer(shop_env, Path(shop_env["SHOP_LOG"]))
    yield shop
    assert shop.stop() == 0, Path(shop_env["SHOP_LOG"]).read_text()


def _login(server: ShopServer, username: str) -> httpx.Client:
    client = server.client()
    assert client.get("/login/").status_code == 200
    response = client.post(
        "/login/",
        data={"username": username, "password": PASSWORD},
        headers={"X-CSRFToken": client.cookies["csrftoken"]},
    )
    assert response.json() == {"user": username}, response.text
    return client


def _loads(client: httpx.Client) -> dict[str, int]:
    return client.get("/stats/").json()["loads"]


def _samples(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("cache") == "shop"
    }


def test_catalogue_is_page_cached_and_loaded_once(server):
    with server.client() as client:
        first = client.get("/")
        second = client.get("/")
        assert first.status_code == second.status_code == 200
        assert first.headers["X-Cache"] in ("MISS", "HIT")  # another test may have been first
        assert second.headers["X-Cache"] == "HIT"
        assert second.text == first.text
        assert "Teapot" in second.text
        assert _loads(client)["catalog"] == 1  # the store's copy fed every page


def test_price_change_invalidates_data_pages_and_fragments(server):
    alice = _login(server, "alice")
    with closing(alice), server.client() as anonymous:
        assert anonymous.get("/").headers["X-Cache"] in ("MISS", "HIT")
        assert anonymous.get("/").headers["X-Cache"] == "HIT"
        assert "1800 cents" in alice.get("/products/4/").text  # fills the price fragment
        before = _loads(anonymous)

        refused = anonymous.post("/products/4/price/", data={"price_cents": 1})
        assert refused.status_code == 403  # no CSRF token, no session: nothing changes

        changed = alice.post(
            "/products/4/price/",
            data={"price_cents": 2500},
            headers={"X-CSRFToken": alice.cookies["csrftoken"]},
        )
        assert changed.json() == {"id": 4, "price_cents": 2500}
        page = anonymous.get("/")
        assert page.headers["X-Cache"] == "MISS"  # the stored page was dropped
        assert '<span class="price">2500</span>' in page.text
        assert "2500 cents" in alice.get("/products/4/").text  # data and fragment dropped
        after = _loads(anonymous)
        assert after["catalog"] == before["catalog"] + 1  # reloaded once, by tag
        assert after["product"] == before.get("product", 0) + 1
        assert anonymous.get("/").headers["X-Cache"] == "HIT"


def test_recently_viewed_is_per_user_and_read_once_per_request(server):
    alice = _login(server, "alice")
    bob = _login(server, "bob")
    with closing(alice), closing(bob):
        for pk in (1, 2, 3):
            assert alice.get(f"/products/{pk}/").status_code == 200
        bob.get("/products/4/")
        before = _loads(alice)["recent"]
        page = alice.get("/products/1/")
        # The view, the template and remember_view() all ask; the cache is read once.
        assert _loads(alice)["recent"] == before + 1
        assert '<span class="recent">3,2,1' in page.text  # as it was before this view
        assert page.headers["Cache-Control"].startswith("max-age=0")  # never shared
        assert alice.get("/recent/").json()["recent"][:3] == [1, 3, 2]
        bobs = bob.get("/recent/").json()
        assert (bobs["user"], bobs["recent"][0], bobs["names"][0]) == ("bob", 4, "Saucer")
        assert 1 not in bobs["recent"]
    with server.client() as anonymous:
        assert anonymous.get("/recent/").json() == {"user": None, "recent": [], "names": []}


def test_who_is_online_comes_from_expiring_entries(server):
    alice = _login(server, "alice")
    bob = _login(server, "bob")
    with closing(alice), closing(bob):
        alice.get("/online/")
        assert {"alice", "bob"} <= set(bob.get("/online/").json()["online"])
        # Alice goes quiet; Bob keeps his entry fresh until Alice's has expired.
        deadline = time.monotonic() + 10 * ONLINE_SECONDS + 10
        while True:
            online = bob.get("/online/").json()["online"]
            if "alice" not in online:
                break
            assert time.monotonic() < deadline, "alice's entry never expired"
            time.sleep(ONLINE_SECONDS / 4)
        assert "bob" in online
        alice.get("/online/")
        assert "alice" in bob.get("/online/").json()["online"]


def test_dashboard_and_metrics(server):
    with server.client() as client:
        client.get("/")
        page = client.get("/_cacheplug/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        payload = client.get("/_cacheplug/api/stats").json()
        assert payload["name"] == "shop"
        assert payload["started"] is True
        assert payload["cache"]["entries"] > 0
        assert payload["persistence"] is not None
        proxied = client.get("/_cacheplug/api/stats", headers={"X-Forwarded-For": "203.0.113.1"})
        assert proxied.status_code == 403
        samples = _samples(client.get("/_cacheplug/metrics").text)
        assert samples["cacheplug_entries"] > 0
        assert samples["cacheplug_hits_total"] > 0
        assert samples["cacheplug_wal_bytes"] >= 0  # present: the store persists


def test_warm_restart(shop_env, tmp_path):
    # Its own state directory: the module's server holds (and writes) the shared one.
    shop_env = {**shop_env, "DJANGO_SHOP_STATE_DIR": str(tmp_path / "state")}
    first = ShopServer(shop_env, tmp_path / "first.log")
    try:
        with first.client() as client:
            client.get("/")
            assert client.get("/").headers["X-Cache"] == "HIT"
            assert client.get("/products/2/").status_code == 200
    finally:
        assert first.stop() == 0, (tmp_path / "first.log").read_text()
    assert any(Path(shop_env["DJANGO_SHOP_STATE_DIR"]).iterdir())

    # The same port: the page cache keys pages by host, port included.
    second = ShopServer(shop_env, tmp_path / "second.log", port=first.port)
    try:
        with second.client() as client:
            assert client.get("/_cacheplug/api/stats").json()["persistence"]["loaded_entries"] > 0
            assert client.get("/").headers["X-Cache"] == "HIT"  # the saved page
            assert "Kettle" in client.get("/products/2/").text
            assert _loads(client).get("catalog", 0) == 0  # no database load after restart
            assert _loads(client).get("product", 0) == 0
    finally:
        assert second.stop() == 0, (tmp_path / "second.log").read_text()
