"""The Redis tier against a real three-master Redis Cluster (``redis_cluster=True``).

The module starts its own cluster from the ``redis-server`` binary on free ports (no
persistence, config files in a temporary directory), joins it with ``redis-cli --cluster
create`` (or ``CLUSTER ADDSLOTSRANGE``/``MEET`` without redis-cli) and removes it all
afterwards. As in test_tier.py, two plugs in one process stand in for two processes;
here each talks to a different node, and the namespace's slot lives on a third one, so
every write, read, lease and message crosses a MOVED redirection or the cluster bus.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

redis = pytest.importorskip("redis")

from redis.cluster import RedisCluster  # noqa: E402

from cacheplug import CachePlug  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

SLOTS = 16384
C = TypeVar("C", bound="LocalCluster")


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class LocalCluster:
    """Three cluster-enabled redis-server masters covering all slots; stop() removes them."""

    #: replicas per master (needs redis-cli when more than 0)
    replicas = 0
    #: how long a node may be unreachable before the cluster fails it over
    node_timeout_ms = 5000
    #: further ``redis-server`` options for every node
    extra_args: tuple[str, ...] = ()

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="cacheplug-cluster-"))
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def url(self, node: int = 0) -> str:
        return f"redis://127.0.0.1:{self.ports[node]}/0"

    def start(self) -> LocalCluster:
        for _ in range(3 * (1 + self.replicas)):
            self._start_node(_cluster_port())
        for port in self.ports:
            self._wait(lambda port=port: _node(port).ping(), f"node {port} to answer PING")
        if shutil.which("redis-cli"):
            self._create_with_redis_cli()
        else:
            self._create_by_hand()
        self._wait(self._ready, "cluster_state:ok on every node")
        return self

    def _start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir()
        # stdout/stderr go to a file: a full pipe would block the server
        log = (node_dir / "redis.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [
                    *(self.binary, "--port", str(port), "--bind", "127.0.0.1"),
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(self.node_timeout_ms), "--dir", str(node_dir)),
                    *("--save", "", "--appendonly", "no"),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        self.ports.append(port)

    def _create_with_redis_cli(self) -> None:
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def _create_by_hand(self) -> None:
        step = SLOTS // len(self.ports) + 1
        for i, port in enumerate(self.ports):
            client = _node(port)
            client.execute_command(
                "CLUSTER ADDSLOTSRANGE", i * step, min((i + 1) * step, SLOTS) - 1
            )
        first = _node(self.ports[0])
        for port in self.ports[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", port)

    def _ready(self) -> bool:
        for port in self.ports:
            info = _node(port).execute_command("CLUSTER INFO")  # parsed into a dict
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.ports):
                return False
        return True

    def _wait(self, condition, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"local Redis Cluster: timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _node(port: int) -> redis.Redis:
    """A plain (non-cluster) client of one node; closed by garbage collection."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)


def running(kind: type[C]) -> Iterator[C]:
    """Start a cluster of ``kind`` for a fixture to yield, and stop it after; or skip."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: cannot start a local Redis Cluster")
    if kind.replicas and shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed: cannot create a cluster with replicas")
    nodes = kind(binary)
    try:
        yield nodes.start()
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running(LocalCluster)


@pytest.fixture
def admin(cluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url(0), socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def prefix(cluster, admin) -> Iterator[str]:
    """A namespace whose slot lives on node 2, which neither plug is given as its URL."""
    owner = f"127.0.0.1:{cluster.ports[2]}"
    while True:
        name = f"cpcl:{uuid.uuid4().hex[:10]}"
        if admin.get_node_from_key("{" + name + "}").name == owner:
            break
    yield name
    names = list(admin.scan_iter(match="{" + name + "}*", count=500))
    if names:
        admin.delete(*names)


@contextlib.contextmanager
def started_plugs(
    urls: list[str], prefix: str, *, name: str, socket_timeout: float
) -> Iterator[list[CachePlug]]:
    """One started cluster-mode plug per URL, all on namespace ``prefix``; closed after."""
    plugs = [
        CachePlug(
            name=f"{name}{i}",
            redis_url=url,
            redis_cluster=True,
            secret="s3cret",
            redis_prefix=prefix,
            sweep_interval=0,
            redis_socket_timeout=socket_timeout,
        )
        for i, url in enumerate(urls)
    ]
    try:
        for plug in plugs:
            plug.start()
        yield plugs
    finally:
        for plug in plugs:
            plug.close()


@pytest.fixture
def pair(cluster, prefix) -> Iterator[tuple[CachePlug, CachePlug]]:
    """Two plugs, one connected through node 0 and one through node 1."""
    urls = [cluster.url(0), cluster.url(1)]
    with started_plugs(urls, prefix, name="p", socket_timeout=1.0) as (a, b):
        yield a, b


def sync(*plugs: CachePlug) -> None:
    for plug in plugs:
        plug.worker.flush(5)


def _eventually(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _received_all(receiver: CachePlug, sender: CachePlug) -> bool:
    return receiver.stats().tier.applied >= sender.stats().tier.published


def test_the_cluster_has_three_masters_and_the_plugs_use_the_cluster_client(pair, admin):
    a, b = pair
    assert len(admin.get_primaries()) == 3
    assert isinstance(a.tier.link.client, RedisCluster)
    assert a.stats().tier.subscribed
    assert b.stats().tier.subscribed


def test_set_and_get_through_l2(pair, admin, prefix):
    a, b = pair
    a.cache.set("k", {"v": 1}, ttl=30, tags=("t",))
    sync(a)
    assert not a.stats().tier.errors
    assert admin.exists("{" + prefix + "}:d:s:k") == 1  # stored on the slot's node
    assert _eventually(lambda: _received_all(b, a))
    assert "k" not in b.cache
    assert b.cache.get("k") == {"v": 1}  # a local miss filled from L2
    assert b.stats().tier.l2_hits == 1
    entry = b.cache.get_entry("k")
    assert entry.tags == ("t",)
    assert 0 < entry.expires_at - b.cache.timer() <= 30
    assert b.cache.get_many(["k", "missing"]) == {"k": {"v": 1}}


def test_delete_overwrite_and_delete_matching_reach_the_other_plug(pair):
    a, b = pair
    for key in ("k", "page:1", "page:2"):
        a.cache.set(key, f"{key}-v1")
    sync(a)
    assert _eventually(lambda: _received_all(b, a))
    assert b.cache.get_many(["k", "page:1", "page:2"]) == {
        "k": "k-v1",
        "page:1": "page:1-v1",
        "page:2": "page:2-v1",
    }

    a.cache.delete("k")
    sync(a)
    assert _eventually(lambda: "k" not in b.cache)
    assert b.cache.get("k") is None  # gone from Redis too

    b.cache.set("k", "k-v2")
    sync(b)
    assert _eventually(lambda: _received_all(a, b))
    assert a.cache.get("k") == "k-v2"
    assert "k" in a.cache
    b.cache.set("k", "k-v3")
    sync(b)
    assert _eventually(lambda: "k" not in a.cache)  # a's copy was invalidated
    assert a.cache.get("k") == "k-v3"

    a.delete_matching("page:*")  # SCAN over every master, UNLINK on the slot's node
    sync(a)
    assert _eventually(lambda: "page:1" not in b.cache and "page:2" not in b.cache)
    assert b.cache.get_many(["page:1", "page:2"]) == {}
    assert not a.stats().tier.errors
    assert not b.stats().tier.errors


def test_tag_invalidation_reaches_the_other_plug_and_redis(pair):
    a, b = pair
    a.cache.set("p1", "teapot", tags=("products",))
    a.cache.set("p2", "kettle", tags=("products", "sale"))
    a.cache.set("u1", "ann", tags=("users",))
    sync(a)
    assert _eventually(lambda: _received_all(b, a))
    assert b.cache.get_many(["p1", "p2", "u1"]) == {"p1": "teapot", "p2": "kettle", "u1": "ann"}

    b.invalidate_tags("products")  # hides b's copies, bumps the tag in Redis, tells a
    sync(b)
    assert b.cache.get("p1") is None
    assert _eventually(lambda: "p1" not in a.cache and "p2" not in a.cache)
    assert a.cache.get("p1") is None  # the L2 copy carries the old generation
    assert a.cache.get("p2") is None
    assert a.cache.get("u1") == "ann"
    assert b.cache.get("u1") == "ann"


def assert_loaded_once_across(a: CachePlug, b: CachePlug, key: str) -> None:
    """``get_or_set(key)`` in a and b at once: a's loader runs, b waits on a's lease."""
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []
    results: dict[str, object] = {}

    def slow_load() -> dict[str, str]:
        calls.append("a")
        started.set()
        assert release.wait(10)
        return {"loaded_by": "a"}

    def other_load() -> dict[str, str]:
        calls.append("b")
        return {"loaded_by": "b"}

    runs_before = [p.stats().tier.factory_runs for p in (a, b)]
    holder = threading.Thread(target=lambda: results.update(a=a.get_or_set(key, slow_load)))
    waiter = threading.Thread(target=lambda: results.update(b=b.get_or_set(key, other_load)))
    holder.start()
    try:
        assert started.wait(10)  # a holds the lease and is computing
        waiter.start()
        assert _eventually(lambda: b.stats().tier.lock_waits >= 1)  # b waits on a's lease
    finally:
        release.set()
        holder.join(10)
        if waiter.ident is not None:
            waiter.join(10)
    assert results == {"a": {"loaded_by": "a"}, "b": {"loaded_by": "a"}}
    assert calls == ["a"]
    runs = (
        a.stats().tier.factory_runs - runs_before[0],
        b.stats().tier.factory_runs - runs_before[1],
    )
    assert runs == (1, 0)
    assert b.get_or_set(key, other_load) == {"loaded_by": "a"}  # now a local hit
    assert calls == ["a"]


def test_get_or_set_runs_the_factory_once_across_the_cluster(pair):
    a, b = pair
    assert_loaded_once_across(a, b, "report")
