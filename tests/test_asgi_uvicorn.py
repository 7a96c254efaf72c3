"""Warm restart through the lifespan hooks, with a real uvicorn process and SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import os
    from fastapi import FastAPI
    from cacheplug import CachePlug
    from cacheplug.integrations.asgi import CachePlugMiddleware

    plug = CachePlug(ttl=300, state_dir=os.environ["SHOP_STATE_DIR"])
    app = FastAPI()
    CALLS = []

    @app.get("/products/{pid}")
    async def product(pid: int):
        CALLS.append(pid)
        return {"id": pid, "pid": os.getpid()}

    app.add_middleware(CachePlugMiddleware, plug=plug, cache_responses=["/products"])
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(tmp_path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "CACHEPLUG_SECRET": "uvicorn-test-secret-0123456789abcdef",
        "SHOP_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(tmp_path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "warm_app:app", "--port", str(port), "--lifespan", "on"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited: {proc.stdout.read().decode()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("uvicorn did not start within 30 s")


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read().decode() if proc.stdout else ""


def test_sigterm_then_restart_serves_the_first_request_from_the_saved_cache(tmp_path):
    (tmp_path / "warm_app.py").write_text(APP)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start(tmp_path, port)
    try:
        wait_ready(first, f"{base}/health")
        miss = httpx.get(f"{base}/products/1")
        assert miss.headers["x-cache"] == "MISS"
        assert httpx.get(f"{base}/products/1").headers["x-cache"] == "HIT"
    finally:
        log = stop(first)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too
    assert first.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log

    second = start(tmp_path, port)
    try:
        wait_ready(second, f"{base}/health")
        warm = httpx.get(f"{base}/products/1")
        assert warm.headers["x-cache"] == "HIT"
        assert warm.json() == miss.json()  # the first process's body, pid included
        assert warm.json()["pid"] != second.pid
    finally:
        log = stop(second)
    assert second.returncode in (0, -signal.SIGTERM), log
