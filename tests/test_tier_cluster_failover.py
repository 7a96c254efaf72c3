"""The Redis tier through a Redis Cluster failover: a master dies, its replica takes over.

The module starts three masters with one replica each (``redis-cli --cluster create
--cluster-replicas 1``) and a short ``cluster-node-timeout``, so the cluster promotes a
replica a few seconds after its master is killed. Two plugs in one process stand in for
two processes, as in test_tier_cluster.py. One plug is given the URL of the very master
that is killed (the one that owns the namespace's slot), so its clients must find the
promoted replica through the rest of the cluster.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest

redis = pytest.importorskip("redis")

from redis.cluster import RedisCluster  # noqa: E402

from cacheplug import CachePlug  # noqa: E402
from tests.test_tier_cluster import (  # noqa: E402
    LocalCluster,
    _eventually,
    _node,
    _received_all,
    assert_loaded_once_across,
    running,
    started_plugs,
    sync,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

NODE_TIMEOUT_MS = 1500


class ReplicatedCluster(LocalCluster):
    """Three masters, each with one replica in sync; ``kill()`` SIGKILLs one node."""

    replicas = 1
    node_timeout_ms = NODE_TIMEOUT_MS
    # A replica syncs at once (the default waits 5 s for more replicas) and may always
    # take over: a replica that never synced cannot.
    extra_args = ("--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0")

    def _ready(self) -> bool:
        if not super()._ready():
            return False
        for port in self.ports:
            client = _node(port)
            nodes = client.execute_command("CLUSTER NODES").values()
            if sum("slave" in node["flags"] for node in nodes) != 3:
                return False  # every node sees three replicas
            replication = client.info("replication")
            if replication["role"] != "master" and replication["master_link_status"] != "up":
                return False  # and every replica has synced
        return True

    def replica_of(self, master_port: int) -> int:
        """The port of the replica of the master on ``master_port``."""
        nodes = _node(master_port).execute_command("CLUSTER NODES")
        master_id = nodes[f"127.0.0.1:{master_port}"]["node_id"]
        ports = [
            int(name.rsplit(":", 1)[1])
            for name, node in nodes.items()
            if node["master_id"] == master_id
        ]
        assert len(ports) == 1, nodes
        return ports[0]

    def kill(self, port: int) -> None:
        proc = self.procs[self.ports.index(port)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ReplicatedCluster]:
    yield from running(ReplicatedCluster)


@pytest.fixture
def setup(cluster) -> tuple[str, int, int]:
    """A namespace, the port of the master that owns its slot, and another master's."""
    admin = RedisCluster.from_url(cluster.url(0), socket_timeout=2)
    try:
        masters = sorted(node.port for node in admin.get_primaries())
        assert len(masters) == 3
        victim, other = masters[0], masters[1]
        while True:
            name = f"cpfo:{uuid.uuid4().hex[:10]}"
            if admin.get_node_from_key("{" + name + "}").port == victim:
                break
    finally:
        admin.close()
    return name, victim, other


@pytest.fixture
def pair(setup) -> Iterator[tuple[CachePlug, CachePlug]]:
    """Plug a talks to the master that will die, plug b to another master."""
    prefix, victim, other = setup
    urls = [f"redis://127.0.0.1:{port}/0" for port in (victim, other)]
    with started_plugs(urls, prefix, name="fo", socket_timeout=0.5) as (a, b):
        yield a, b


def _recovered(plug: CachePlug) -> bool:
    """Breaker closed and subscribed again (re-subscription flushed the local copies)."""
    plug.cache.get("probe")  # a local miss reads Redis: the half-open breaker's probe
    tier = plug.stats().tier
    return tier.breaker_state == "closed" and tier.subscribed and tier.subscriptions >= 2


def test_the_plugs_ride_out_a_failover_of_the_namespace_master(cluster, setup, pair):
    prefix, victim, _ = setup
    a, b = pair
    replica = cluster.replica_of(victim)
    assert a.stats().tier.subscribed
    assert b.stats().tier.subscribed

    # Before: both plugs hold copies; the values are in Redis on the victim's slot.
    a.cache.set("k", "k-v1", ttl=60)
    a.cache.set("shared", "shared-v1", ttl=60)
    a.cache.set("p1", "teapot", ttl=60, tags=("products",))
    sync(a)
    assert _eventually(lambda: _received_all(b, a))
    assert b.cache.get_many(["k", "shared", "p1"]) == {
        "k": "k-v1",
        "shared": "shared-v1",
        "p1": "teapot",
    }
    # The replica has the values before its master dies (replication is asynchronous).
    assert _node(victim).execute_command("WAIT", 1, 5000) == 1

    cluster.kill(victim)

    # Outage: nothing raises; local copies are served; Redis errors go to the breaker.
    for plug in (a, b):
        assert plug.cache.get("k") == "k-v1"
    a.cache.set("shared", "shared-v2", ttl=60)  # acknowledged locally, cannot be shared
    sync(a)
    assert _eventually(
        lambda: (
            b.cache.get("nowhere") is None  # a local miss: the L2 read fails
            and a.stats().tier.breaker_state != "closed"
            and b.stats().tier.breaker_state != "closed"
        )
    )
    assert a.stats().tier.errors
    assert b.stats().tier.errors
    assert a.stats().tier.dropped >= 1  # the write of "shared" is remembered
    assert a.get_or_set("local-only", lambda: "computed-here") == "computed-here"
    if b.stats().tier.subscriptions == 1:  # not re-subscribed yet, so not flushed
        assert b.cache.get("k") == "k-v1"
        assert b.cache.get("shared") == "shared-v1"  # stale until the recovery

    # Failover: the replica takes the slot; both plugs recover without a restart.
    assert _eventually(lambda: _node(replica).info("replication")["role"] == "master", 15)
    assert _eventually(lambda: _recovered(a) and _recovered(b), 15), (
        a.stats().tier,
        b.stats().tier,
    )
    sync(a, b)  # a replays its dropped write as a delete
    assert a.stats().tier.recoveries >= 1
    assert b.stats().tier.recoveries >= 1

    # Nothing acknowledged is silently lost: the write made during the outage is not
    # shared, but the value it replaced is gone everywhere (no process reads v1 again).
    assert _eventually(lambda: _node(replica).exists("{" + prefix + "}:d:s:shared") == 0)
    assert b.cache.get("shared") is None
    assert a.cache.get("shared") is None
    # What the failed master replicated survives on the promoted replica.
    assert b.cache.get("k") == "k-v1"
    assert a.cache.get("k") == "k-v1"

    # A set in a is readable through L2 in b; a delete reaches b's local copy.
    errors_before = (a.stats().tier.errors, b.stats().tier.errors)
    a.cache.set("after", {"v": 2}, ttl=60, tags=("t",))
    sync(a)
    assert _node(replica).exists("{" + prefix + "}:d:s:after") == 1
    assert _eventually(lambda: _received_all(b, a))
    assert b.cache.get("after") == {"v": 2}
    assert "after" in b.cache
    a.cache.delete("after")
    sync(a)
    assert _eventually(lambda: "after" not in b.cache)
    assert b.cache.get("after") is None

    # Tag invalidations propagate both ways again.
    a.cache.set("p2", "kettle", ttl=60, tags=("products",))
    sync(a)
    assert _eventually(lambda: _received_all(b, a))
    assert b.cache.get("p2") == "kettle"
    assert a.cache.get("p1") == "teapot"
    b.invalidate_tags("products")
    sync(b)
    assert _eventually(lambda: "p1" not in a.cache and "p2" not in a.cache)
    assert a.cache.get("p1") is None
    assert a.cache.get("p2") is None

    # A distributed get_or_set runs the factory once across both plugs.
    assert_loaded_once_across(a, b, "report")

    # No Redis errors once recovered.
    assert (a.stats().tier.errors, b.stats().tier.errors) == errors_before
