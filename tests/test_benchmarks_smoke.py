"""Smoke tests: the benchmark suites still run. Nothing here asserts on timing."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from cacheplug import cli

# benchmarks/ is not installed; cli puts the checkout root on sys.path, as `bench` does.
assert cli._import_benchmarks() is not None, "run the tests from a cacheplug checkout"
h = importlib.import_module("benchmarks._harness")
core = importlib.import_module("benchmarks.core")

GHOST = "ghost cache"
OPS = ["get-hit", "get-miss", "set-overwrite", "set-new", "delete", "get-hit-2t"]
MEMORY = [
    core.REFERENCE,
    "dict (no lock)",
    core.CACHEPLUG,
    core.CACHETOOLS,
    core.LOCMEM,
    "theine Cache",
    "cachebox TTLCache",
]


def _ghost_prepare() -> h.Target:
    import cacheplug_no_such_module  # type: ignore[import-not-found]  # noqa: F401

    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``core`` once in smoke mode, with one contender that cannot be imported."""
    out_dir = tmp_path_factory.mktemp("results")
    stream = io.StringIO()
    real = core.memory_contenders

    def with_ghost(wl: core.Workload) -> list[h.Contender]:
        return [*real(wl), h.Contender(GHOST, "0.0", _ghost_prepare)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core, "memory_contenders", with_ghost)
        with h.use_settings(out_dir=out_dir, stream=stream):
            rows = core.run(smoke=True)
    return {"rows": rows, "out_dir": out_dir, "text": stream.getvalue()}


def _measured(rows: list[dict[str, Any]], section: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["section"] == section]


def test_core_rows_cover_every_contender_and_op(smoke_run: dict[str, Any]) -> None:
    rows, text = smoke_run["rows"], smoke_run["text"]
    memory = _measured(rows, "in-memory")
    measured = {r["contender"] for r in memory}
    for name in MEMORY:
        assert name in measured or f"skipped **{name}**" in text, name
    assert core.REFERENCE in measured
    for name in measured:
        assert sorted(r["op"] for r in memory if r["contender"] == name) == sorted(OPS)


def test_core_rows_have_positive_speed_and_finite_ratio(smoke_run: dict[str, Any]) -> None:
    rows = [*_measured(smoke_run["rows"], "in-memory"), *_measured(smoke_run["rows"], "persistent")]
    assert rows
    for row in rows:
        assert row["median_ops"] > 0
        assert 0 < row["min_ops"] <= row["median_ops"] <= row["max_ops"]
        assert math.isfinite(row["ratio"])
        assert row["ratio"] > 0
    assert {r["threads"] for r in rows if r["op"] == "get-hit-2t"} == {2}


def test_core_reports_hit_ratio_and_targets(smoke_run: dict[str, Any]) -> None:
    ratios = _measured(smoke_run["rows"], "hit-ratio")
    assert any(r["contender"].startswith("LRU") for r in ratios)
    assert all(0.0 <= r["hit_ratio"] <= 1.0 for r in ratios)
    targets = _measured(smoke_run["rows"], "targets")
    assert len(targets) == len(core.TARGETS)
    assert {t["status"] for t in targets} <= {"met", "missed", "n/a"}
    assert "## Targets" in smoke_run["text"]


def test_missing_contender_is_reported_as_skipped(smoke_run: dict[str, Any]) -> None:
    assert f"skipped **{GHOST}**: not installed" in smoke_run["text"]
    assert GHOST not in {r.get("contender") for r in smoke_run["rows"]}


def test_core_writes_json_with_documented_fields(smoke_run: dict[str, Any]) -> None:
    files = list(Path(smoke_run["out_dir"]).glob("core-*.json"))
    assert len(files) == 1
    assert re.fullmatch(r"core-\d{8}T\d{6}Z\.json", files[0].name)
    document = json.loads(files[0].read_text(encoding="utf-8"))
    for key in ("suite", "date", "python", "cpu_count", "gc", "versions", "rows"):
        assert key in document, key
    assert document["suite"] == "core"
    assert document["smoke"] is True
    assert core.REFERENCE in document["versions"]
    assert GHOST in document["versions"]
    assert len(document["rows"]) == len(smoke_run["rows"])


def test_cacheplug_row_present_when_importable(smoke_run: dict[str, Any]) -> None:
    spec = importlib.util.find_spec("cacheplug.cache")
    if spec is None:
        pytest.skip("cacheplug.cache is not written yet")
    assert h.find(smoke_run["rows"], core.CACHEPLUG, "get-hit") is not None


def test_cli_bench_core_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "core", "--smoke", "--no-json"]) == 0
    assert "# Benchmark suite `core`" in capsys.readouterr().out


def test_cli_bench_unknown_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "no-such-suite", "--smoke", "--no-json"]) == 2
    assert "unknown suite" in capsys.readouterr().out


def test_cli_bench_without_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_import_benchmarks", lambda: None)
    assert cli.main(["bench", "core", "--smoke", "--no-json"]) == 1
    assert "checkout" in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "bench" in capsys.readouterr().out
