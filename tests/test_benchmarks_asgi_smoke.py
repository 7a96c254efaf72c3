"""The asgi benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

from benchmarks import SUITES, _harness, asgi


def test_asgi_suite_smoke(tmp_path, capsys):
    assert SUITES["asgi"] == "benchmarks.asgi"
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = asgi.run(smoke=True)
    ops = {(row.get("contender"), row["op"]) for row in rows if row["section"] != "targets"}
    assert (asgi.CACHEPLUG, "GET hit") in ops
    assert (asgi.STARLETTE, "GET hit") in ops
    assert (asgi.CACHEPLUG_MISS, "GET miss") in ops
    measured = [row for row in rows if row["section"] != "targets"]
    assert all(row["median_ops"] > 0 and math.isfinite(row["ratio"]) for row in measured)
    assert list(tmp_path.glob("asgi-*.json"))
    assert "## Targets" in capsys.readouterr().out
