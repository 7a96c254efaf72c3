"""The flask benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

from benchmarks import SUITES, _harness
from benchmarks import flask as flask_suite


def test_flask_suite_smoke(tmp_path, capsys):
    assert SUITES["flask"] == "benchmarks.flask"
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = flask_suite.run(smoke=True)
    measured = {row["contender"] for row in rows if row.get("op") == flask_suite.OP}
    assert measured == {
        "uncached view",
        "Flask-Caching SimpleCache @cached",
        "cacheplug @cached (early hits)",
        "cacheplug @cached (hits in view)",
    }
    assert all(
        row["median_ops"] > 0 and math.isfinite(row["ratio"])
        for row in rows
        if row.get("op") == flask_suite.OP
    )
    assert [row["target"] for row in rows if row["section"] == "targets"] == [1.3, 1.3]
    assert list(tmp_path.glob("flask-*.json"))
    assert "## Targets" in capsys.readouterr().out
