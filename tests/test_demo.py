"""``cacheplug demo``: a real uvicorn process, a HIT on the second request, a save on
SIGINT, and a warm second run that says how many entries it loaded."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cacheplug.demo import SECRET_FILE, demo_secret

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(state_dir: Path, port: int, **extra_env: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPLUG_")}
    env["SHOP_LOOKUP_DELAY"] = "0.01"
    env.update(extra_env)
    command = [sys.executable, "-m", "cacheplug.cli", "demo", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _get(url: str, deadline: float) -> tuple[int, dict[str, str]]:
    """GET ``url``, retrying while the server is still starting."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                return response.status, {k.lower(): v for k, v in response.headers.items()}
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return out


@pytest.mark.timeout(120)
def test_demo_serves_hits_saves_on_ctrl_c_and_restarts_warm(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/products"

    first = _start(state_dir, port)
    try:
        deadline = time.monotonic() + 30
        assert _get(url, deadline)[1]["x-cache"] == "MISS"
        assert _get(url, deadline)[1]["x-cache"] == "HIT"
    finally:
        out = _interrupt(first)
    assert first.returncode == 0, out
    assert "cold start" in out, out
    assert re.search(r"saved [1-9]\d* entries", out), out
    secret = state_dir / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) == 64

    second = _start(state_dir, port)
    try:
        status, headers = _get(url, time.monotonic() + 30)
        assert status == 200
        assert headers["x-cache"] == "HIT"  # served from the state saved on Ctrl-C
    finally:
        out = _interrupt(second)
    assert second.returncode == 0, out
    assert "warm start, loaded" in out, out


def test_demo_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = demo_secret(tmp_path / "s")
    assert demo_secret(tmp_path / "s") == first
    assert stat.S_IMODE((tmp_path / "s" / SECRET_FILE).stat().st_mode) == 0o600


def test_demo_keeps_a_secret_the_user_set(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(tmp_path, port, CACHEPLUG_SECRET="operator-chosen-secret")
    try:
        _get(f"http://127.0.0.1:{port}/products", time.monotonic() + 30)
    finally:
        out = _interrupt(proc)
    assert proc.returncode == 0, out
    assert not (tmp_path / SECRET_FILE).exists()
