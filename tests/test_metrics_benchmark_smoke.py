"""The metrics benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

from benchmarks import SUITES, _harness, metrics


def test_metrics_suite_smoke(tmp_path, capsys):
    assert SUITES["metrics"] == "benchmarks.metrics"
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = metrics.run(smoke=True)
    ops = {(row["section"], row["contender"]) for row in rows}
    assert ("hot path", metrics.REFERENCE) in ops
    assert ("scrape", "dashboard build_payload") in ops
    assert len(rows) == 6
    assert all(row["median_ops"] > 0 and math.isfinite(row["ratio"]) for row in rows)
    assert list(tmp_path.glob("metrics-*.json"))
    assert "## scrape" in capsys.readouterr().out
