"""Smoke test: the ``persistence`` benchmark suite still runs. Never asserts on timing."""

from __future__ import annotations

import importlib
import io
import json
import math
from pathlib import Path

from cacheplug import cli

# benchmarks/ is not installed; cli puts the checkout root on sys.path, as `bench` does.
assert cli._import_benchmarks() is not None, "run the tests from a cacheplug checkout"
h = importlib.import_module("benchmarks._harness")
persistence = importlib.import_module("benchmarks.persistence")


def test_persistence_suite_smoke(tmp_path: Path) -> None:
    assert importlib.import_module("benchmarks").SUITES["persistence"] == "benchmarks.persistence"
    stream = io.StringIO()
    with h.use_settings(out_dir=tmp_path, stream=stream):
        rows = persistence.run(smoke=True)
    text = stream.getvalue()
    assert "# Benchmark suite `persistence`" in text
    assert "## Targets" in text

    snapshot = [r for r in rows if r["section"] == "snapshot"]
    names = {r["contender"] for r in snapshot}
    assert {persistence.PICKLE, persistence.STATESTORE} <= names
    for name in (persistence.PICKLE, persistence.STATESTORE, persistence.DISKCACHE):
        if name not in names:
            assert f"skipped **{name}**" in text, name
            continue
        assert sorted(r["op"] for r in snapshot if r["contender"] == name) == ["load", "save"]
    for row in snapshot:
        assert row["entries"] > 0
        assert row["median_s"] > 0
        assert row["median_ops"] > 0
        assert math.isfinite(row["time_ratio"])
        assert row["time_ratio"] > 0

    sets = [r for r in rows if r["section"] == "set"]
    set_names = {r["contender"] for r in sets}
    assert {persistence.NO_PERSIST, persistence.WAL_EVERYSEC} <= set_names
    for row in sets:
        assert row["op"] == "set"
        assert row["median_ops"] > 0
        assert math.isfinite(row["ratio"])
        assert row["ratio"] > 0

    targets = [r for r in rows if r["section"] == "targets"]
    assert len(targets) == 4
    assert {t["status"] for t in targets} <= {"met", "missed", "n/a"}

    files = list(tmp_path.glob("persistence-*.json"))
    assert len(files) == 1
    document = json.loads(files[0].read_text(encoding="utf-8"))
    assert document["suite"] == "persistence"
    assert document["smoke"] is True
    assert len(document["rows"]) == len(rows)
