"""The asgi benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

from benchmarks import SUITES, _harness, asgi


def test_asgi_suite_smoke(tmp_path, capsys):
    assert SUITES["asgi"] == "benchmarks.asgi"
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = asgi.run(smoke=True)
    measured = [row for row in rows if row["section"] not in ("targets", "floors")]
    ops = {(row["contender"], row["op"]) for row in measured}
    assert (asgi.CACHEPLUG, "GET hit") in ops
    assert (asgi.STARLETTE, "GET hit") in ops
    assert (asgi.CACHEPLUG_MISS, "GET miss") in ops
    assert (asgi.FLOOR_HIT, "GET hit") in ops
    assert (asgi.FLOOR_MISS, "GET miss") in ops
    assert all(row["median_ops"] > 0 and math.isfinite(row["ratio"]) for row in measured)
    floors = [row for row in rows if row["section"] == "floors"]
    assert {(row["op"], row["floor"]) for row in floors} == {
        ("GET hit", asgi.FLOOR_HIT),
        ("GET miss", asgi.FLOOR_MISS),
    }
    assert all(math.isfinite(row["floor_ratio"]) for row in floors)
    assert list(tmp_path.glob("asgi-*.json"))
    out = capsys.readouterr().out
    assert "## Targets" in out
    assert "## Floors" in out
