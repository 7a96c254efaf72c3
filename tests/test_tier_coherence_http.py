"""``scripts/check_coherence.py`` against two real ``uvicorn --workers 2`` processes
sharing one SQLite database: without the Redis tier it finds stale responses (each
worker keeps its copy), with it none. Real Redis, real HTTP, real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.redis_support import free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def start_server(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.tier_coherence_app:app",
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "COHERENCE_DB": str(tmp_path / "items.db"), **env},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"uvicorn-{port}.log", "wb"),  # noqa: SIM115 (closed by the child)
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    url = f"http://127.0.0.1:{port}/items/1"
    request = urllib.request.Request(url, data=b'{"price": 0}', method="PUT")
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_server(proc)
                raise RuntimeError((tmp_path / f"uvicorn-{port}.log").read_text()) from None
            time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # uvicorn's workers run their lifespan shutdown
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def check(port: int) -> subprocess.CompletedProcess[str]:
    base = f"http://127.0.0.1:{port}/items/1"
    return subprocess.run(
        [
            sys.executable,
            "scripts/check_coherence.py",
            "--read",
            base,
            "--write",
            base,
            "--method",
            "PUT",
            "--body",
            '{"price": {n}}',
            "--workers",
            "2",
            "--rounds",
            "6",
            "--reads",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_the_tier_workers_serve_stale_copies(tmp_path):
    """The control: proves the check can fail, so its pass below means something."""
    port = free_port()
    proc = start_server(tmp_path, port, {"CACHEPLUG_REDIS_URL": ""})
    try:
        result = check(port)
    finally:
        stop_server(proc)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "STALE" in result.stdout
    assert "workers seen: 2" in result.stdout


def test_with_the_tier_two_uvicorn_workers_stay_coherent(tmp_path, redis_url):
    prefix = f"cptest:http:{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "CACHEPLUG_REDIS_URL": redis_url,
        "CACHEPLUG_SECRET": "coherence-secret",
        "COHERENCE_PREFIX": prefix,
    }
    proc = start_server(tmp_path, port, env)
    try:
        result = check(port)
    finally:
        stop_server(proc)
        import redis

        client = redis.Redis.from_url(redis_url)
        names = list(client.scan_iter(match="{" + prefix + "}*"))
        if names:
            client.delete(*names)
        client.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workers seen: 2" in result.stdout
    assert "rounds with stale reads: 0/6" in result.stdout
