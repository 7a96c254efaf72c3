"""The runtime benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

from benchmarks import _harness, runtime


def test_runtime_suite_smoke(tmp_path, capsys):
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = runtime.run(smoke=True)
    ops = {(row["section"], row["contender"], row["op"]) for row in rows}
    assert ("handler", "cacheplug (deferred)", "delete + 3 slow receivers") in ops
    assert ("handler", "blinker send inline", "invalidate_tags + 3 slow receivers") in ops
    assert ("context", "request_context.scope() + 3 set + 3 get", "per-request context") in ops
    assert all(row["median_ops"] > 0 and math.isfinite(row["ratio"]) for row in rows)
    assert list(tmp_path.glob("runtime-*.json"))
    assert "## Targets" in capsys.readouterr().out
