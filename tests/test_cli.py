"""The cacheplug command: inspect on real state files."""

from __future__ import annotations

from cacheplug import CachePlug
from cacheplug.cli import main


def test_inspect_a_state_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CACHEPLUG_SECRET", "k")
    with CachePlug(state_dir=tmp_path) as plug:
        for i in range(30):
            plug.cache.set(f"user:{i}", i)
        plug.cache.set("item:1", 1)
    assert main(["inspect", str(tmp_path), "--keys", "user:1*"]) == 0
    out = capsys.readouterr().out
    assert "signature ok" in out
    assert "entries decoded: 31" in out
    assert "user:1" in out
    assert "user:19" in out
    assert "user:2 " not in out


def test_inspect_refuses_a_tampered_snapshot(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CACHEPLUG_SECRET", "k")
    with CachePlug(state_dir=tmp_path) as plug:
        plug.cache.set("a", 1)
    snapshot = next(p for p in tmp_path.iterdir() if "snapshot" in p.name)
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    assert main(["inspect", str(snapshot)]) == 1
    assert "tampered" in capsys.readouterr().out


def test_inspect_missing_and_foreign_files(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 1
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"not a cacheplug file at all")
    assert main(["inspect", str(foreign)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out
    assert "foreign" in out
