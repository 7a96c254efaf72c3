"""The django benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

import math

from benchmarks import _harness
from benchmarks import django as django_suite


def test_django_suite_smoke(tmp_path, capsys, django_db_blocker):
    # Django's request signals touch any database connection an earlier test opened.
    with django_db_blocker.unblock(), _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = django_suite.run(smoke=True)
    ops = {(row["section"], row["contender"], row["op"]) for row in rows if "op" in row}
    for op in ("get-hit str", "get-hit small dict", "set", "get_many(10)", "incr"):
        assert ("backend", django_suite.CACHEPLUG, op) in ops
        assert ("backend", django_suite.LOCMEM, op) in ops
    assert ("page", django_suite.PAGE_CACHEPLUG, "GET hit") in ops
    assert ("page", django_suite.PAGE_REFERENCE, "GET hit") in ops
    measured = [row for row in rows if "median_ops" in row]
    assert all(row["median_ops"] > 0 and math.isfinite(row["ratio"]) for row in measured)
    assert len([row for row in rows if row.get("section") == "targets"]) == 4
    assert list(tmp_path.glob("django-*.json"))
    assert "## Targets" in capsys.readouterr().out
