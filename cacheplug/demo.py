"""``cacheplug demo``: run the FastAPI example shop on the embedded default.

No Redis or other server is needed: the cache lives in the process and its state in a
local directory. On the first run a random persistence secret is created in that
directory (mode 0600) so warm restarts need no setup; production configurations set
their own secret (``CACHEPLUG_SECRET`` or the ``secret`` option) instead.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SECRET_FILE", "demo_secret", "find_example", "run_demo"]

#: The file in the state directory holding the demo's generated secret.
SECRET_FILE = "demo-secret"

EXAMPLE = Path("example_projects") / "fastapi_shop"


def find_example() -> Path | None:
    """Return the ``example_projects/fastapi_shop`` folder of this source checkout, if any."""
    root = Path(__file__).resolve().parent.parent
    folder = root / EXAMPLE
    return folder if (folder / "app.py").is_file() else None


def demo_secret(state_dir: Path) -> str:
    """Return the demo secret kept in ``state_dir``, creating it (mode 0600) on first use.

    :raises OSError: the directory or the file cannot be created or read.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SECRET_FILE
    try:
        # O_EXCL: two demos starting at once never overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(32))
    return path.read_text(encoding="ascii").strip()


def _announce_state(out: Callable[[str], Any]) -> list[Callable[..., None]]:
    """Connect (and return) receivers that report the warm start and the final save."""
    from cacheplug import events

    def on_loaded(sender: object, *, entries: int, seconds: float, **_: object) -> None:
        if entries:
            out(f"cacheplug demo: warm start, loaded {entries} entries in {seconds:.3f} s")
        else:
            out("cacheplug demo: cold start (no saved entries yet)")

    def on_saved(sender: object, *, entries: int, seconds: float, **_: object) -> None:
        out(f"cacheplug demo: saved {entries} entries in {seconds:.3f} s")

    events.state_loaded.connect(on_loaded)
    events.state_saved.connect(on_saved)
    return [on_loaded, on_saved]


def run_demo(host: str, port: int, state_dir: Path, *, out: Callable[[str], Any] = print) -> int:
    """Serve the example shop under uvicorn until Ctrl-C; return the exit status.

    Sets ``CACHEPLUG_STATE_DIR`` (and ``CACHEPLUG_SECRET`` when it is not set already)
    for the example app, which builds its ``CachePlug`` from them.
    """
    example = find_example()
    if example is None:
        out(
            "cacheplug demo needs the example_projects/ folder of a cacheplug source "
            "checkout; run it from a checkout installed with: pip install -e '.[demo]'"
        )
        return 1
    try:
        import fastapi  # noqa: F401  (the example needs it)
        import uvicorn
    except ImportError as exc:
        out(f"cacheplug demo needs {exc.name}: pip install -e '.[demo]'")
        return 1
    state_dir = state_dir.resolve()
    os.environ["CACHEPLUG_STATE_DIR"] = str(state_dir)
    if not os.environ.get("CACHEPLUG_SECRET"):
        os.environ["CACHEPLUG_SECRET"] = demo_secret(state_dir)
    receivers = _announce_state(out)
    base = f"http://{host}:{port}"
    out(f"cacheplug demo: serving {EXAMPLE} at {base} (state in {state_dir})")
    out(f"  try:  curl -i {base}/products      # 2nd request answers X-Cache: HIT")
    out(f"        curl -i {base}/products/1")
    out(f"        curl -i {base}/online")
    out("  Ctrl-C saves the cache; the next run starts warm.")
    sys.stdout.flush()
    try:
        uvicorn.run("app:app", app_dir=str(example), host=host, port=port, log_level="info")
    finally:
        from cacheplug import events

        events.state_loaded.disconnect(receivers[0])
        events.state_saved.disconnect(receivers[1])
    return 0
