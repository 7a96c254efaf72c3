"""The redis benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

import pytest

from benchmarks import _harness
from benchmarks import redis as redis_suite

pytestmark = pytest.mark.redis


def test_redis_suite_smoke(tmp_path, capsys, redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = redis_suite.run(smoke=True)
    ops = {(row.get("contender"), row.get("op")) for row in rows}
    assert (redis_suite.LOCAL, "get-hit") in ops
    assert (redis_suite.REDIS_PY, "get-hit") in ops
    assert (redis_suite.L2, "get-hit") in ops
    assert (redis_suite.WB, "set") in ops
    timed = [row for row in rows if "median_ops" in row]
    assert all(row["median_ops"] > 0 for row in timed)
    assert any(row.get("section") == "propagation" and math.isfinite(row["p99_ms"]) for row in rows)
    assert list(tmp_path.glob("redis-*.json"))
    assert "## Targets" in capsys.readouterr().out
