"""Real redis-server fixtures (never fakeredis) for the Redis tier's tests.

* ``redis_url``: ``$REDIS_URL`` if set; else 127.0.0.1:6379 if it answers PING; else a
  ``redis-server`` started on a free port for the session and stopped after it.
* ``own_redis``: ALWAYS a fresh ``redis-server`` of the test's own, on a free port, so
  the test can SIGKILL it and restart it on the same port (fault tests).
* ``redis_prefix``: a namespace unique to the test; its keys are deleted afterwards.

Registered through an import line in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

__all__ = ("RedisServer", "own_redis", "redis_prefix", "redis_url")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pings(url: str) -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """A redis-server process of the test's own: start, SIGKILL, restart on the same port."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _pings(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis to test against (see the module docstring)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _pings("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379/0"
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server only this test uses; it may kill and restart it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A namespace of the test's own on ``redis_url``; its keys are removed afterwards."""
    import redis

    prefix = f"cptest:{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        names = list(client.scan_iter(match="{" + prefix + "}*", count=500))
        if names:
            client.delete(*names)
    finally:
        client.close()


# -- a peer process for the multi-process tests -----------------------------------------
#
# ``python -m tests.redis_support URL PREFIX`` runs a CachePlug with the Redis tier and
# answers one JSON command per stdin line with one JSON line on stdout. The tests drive
# the interleavings through these commands and through Redis lists (BLPOP), never sleeps.


class Peer:
    """The test's handle on one peer process."""

    def __init__(self, url: str, prefix: str) -> None:
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.redis_support", url, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert self.call(op="ping")["ok"]

    def send(self, **command: object) -> None:
        import json

        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict:
        import json

        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer exited with {self.proc.wait(5)}")
        return json.loads(line)

    def call(self, **command: object) -> dict:
        self.send(**command)
        return self.reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="exit")
            except (OSError, RuntimeError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _peer_main(url: str, prefix: str) -> None:
    import dataclasses
    import json
    import sys
    import threading

    import redis

    from cacheplug import CachePlug

    plug = CachePlug(redis_url=url, secret="peer-secret", redis_prefix=prefix, sweep_interval=0)
    plug.start()
    control = redis.Redis.from_url(url)
    watches: dict[str, int] = {}

    def watch(key: str) -> None:
        # Local presence only (``in`` never reads Redis); the clock is system-wide.
        while key in plug.cache:
            time.sleep(0.0001)
        watches[key] = time.monotonic_ns()

    def factory_for(cmd: dict) -> object:
        def factory() -> object:
            control.incr(cmd["counter"])
            if cmd.get("gate"):
                control.rpush(cmd["started"], os.getpid())
                control.blpop([cmd["gate"]], timeout=30)
            return cmd["value"]

        return factory

    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        out: dict = {"ok": True}
        if op == "exit":
            break
        if op == "set":
            plug.cache.set(cmd["key"], cmd["value"], tags=tuple(cmd.get("tags", ())))
        elif op == "get":
            value = plug.cache.get(cmd["key"])
            out["value"] = value
        elif op == "local":
            out["present"] = cmd["key"] in plug.cache
        elif op == "delete":
            out["t0"] = time.monotonic_ns()
            plug.cache.delete(cmd["key"])
        elif op == "invalidate_tags":
            plug.invalidate_tags(*cmd["tags"])
        elif op == "flush":
            plug.worker.flush(10)
        elif op == "watch":
            threading.Thread(target=watch, args=(cmd["key"],), daemon=True).start()
        elif op == "watched":
            deadline = time.monotonic() + cmd.get("timeout", 5)
            while cmd["key"] not in watches and time.monotonic() < deadline:
                time.sleep(0.001)
            out["t1"] = watches.pop(cmd["key"], None)
        elif op == "get_or_set":
            control.rpush(cmd["ready"], os.getpid())
            out["value"] = plug.get_or_set(cmd["key"], factory_for(cmd), ttl=60)
        elif op == "stats":
            out["stats"] = dataclasses.asdict(plug.tier.stats())
        print(json.dumps(out), flush=True)
    plug.close()
    control.close()


if __name__ == "__main__":
    import sys

    _peer_main(sys.argv[1], sys.argv[2])
