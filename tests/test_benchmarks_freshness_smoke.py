"""The freshness benchmark suite runs end to end (smoke mode: numbers mean nothing)."""

from __future__ import annotations

from benchmarks import _harness, freshness


def test_freshness_suite_smoke(tmp_path, capsys):
    with _harness.use_settings(smoke=True, out_dir=tmp_path):
        rows = freshness.run(smoke=True)
    scenario = {row["contender"]: row for row in rows if row["section"] == "hot-key"}
    for name in (
        "cacheplug plain TTL",
        "cacheplug early_refresh=1",
        "cacheplug stale_while_revalidate",
        "cacheplug stale_while_revalidate (async)",
    ):
        assert scenario[name]["reads"] > 0
        assert scenario[name]["loader_calls"] >= 1
    assert all(row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] for row in scenario.values())
    assert list(tmp_path.glob("freshness-*.json"))
    assert "## Targets" in capsys.readouterr().out
