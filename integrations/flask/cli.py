"""``flask cacheplug stats|save|load|inspect|clear``: the app's cache from the command line.

Each command runs in the app context Flask's CLI pushes and inside a request-context
scope, and acts on the runtime of *this* process. With a server running, that server
holds the state directory's writer lock, so ``save`` and ``clear`` here reach only this
process's copy (the command says so); ``inspect`` reads the files and changes nothing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from cacheplug.context import request_context

__all__ = ("cacheplug_cli",)

cacheplug_cli = AppGroup("cacheplug", help="Inspect, save, load and clear the cacheplug cache.")


def _in_scope(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command body in a request-context scope, as a request would."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with request_context.scope():
            return command(*args, **kwargs)

    return wrapper


def _state() -> Any:
    state = current_app.extensions.get("cacheplug")
    if state is None:
        raise click.ClickException(
            f"cacheplug is not initialised on app {current_app.name!r}: call plug.init_app(app)"
        )
    return state


def _writer_note(runtime: Any) -> str | None:
    stats = runtime.stats().persistence
    if stats is None:
        return "persistence is off (CACHEPLUG_STATE_DIR is not set): nothing is saved"
    if not stats.is_writer:
        return (
            f"read-only: {stats.read_only_reason}; the running server owns the state, so "
            "this command changed only this process's copy"
        )
    return None


@cacheplug_cli.command("stats")
@_in_scope
def stats_command() -> None:
    """Print the cache, worker and persistence counters."""
    state = _state()
    runtime = state.extension.runtime(current_app)
    st = runtime.stats()
    c = st.cache
    click.echo(f"cacheplug {runtime.name!r}")
    click.echo(
        f"cache: {c.size}/{c.maxsize} entries, hits {c.hits}, misses {c.misses} "
        f"(hit ratio {c.hit_ratio:.1%}), sets {c.sets}, deletes {c.deletes}, "
        f"evictions {c.evictions}, expirations {c.expirations}"
    )
    w = st.worker
    click.echo(
        f"worker: submitted {w.submitted}, processed {w.processed}, inline {w.inline_runs}, "
        f"failed {w.failed}, queue depth {w.queue_depth} (high water {w.high_water})"
    )
    p = st.persistence
    if p is None:
        click.echo("persistence: off (CACHEPLUG_STATE_DIR is not set)")
    else:
        role = "writer" if p.is_writer else f"read-only ({p.read_only_reason})"
        click.echo(
            f"persistence: {runtime.config['state_dir']} {role}, loaded {runtime.loaded_entries} "
            f"entries, WAL {p.wal_records} records / {p.wal_bytes} bytes in {p.wal_segments} "
            f"segment(s), lag {p.last_seq - p.last_fsync_seq}, snapshots {p.snapshots_written}"
        )
    click.echo(f"early-hit index: {len(state.early_index)} URL(s)")


@cacheplug_cli.command("save")
@_in_scope
def save_command() -> None:
    """Write a snapshot of this process's cache to CACHEPLUG_STATE_DIR now."""
    runtime = _state().extension.runtime(current_app)
    note = _writer_note(runtime)
    info = runtime.save()
    if info is None or not info.written:
        raise click.ClickException(f"nothing saved: {note or 'the snapshot failed, see the log'}")
    click.echo(f"saved {info.entries} entries to {info.path} ({info.bytes} bytes)")


@cacheplug_cli.command("load")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@_in_scope
def load_command(path: Path | None) -> None:
    """Load the entries saved in PATH (default: CACHEPLUG_STATE_DIR) into the cache.

    Entries keep their remaining time to live and are written through the cache, so
    the next snapshot of this process includes them.
    """
    from cacheplug.cache import NO_EXPIRY
    from cacheplug.persistence import StateStore

    runtime = _state().extension.runtime(current_app)
    target = path or runtime.config["state_dir"]
    if target is None:
        raise click.ClickException("give a PATH or set CACHEPLUG_STATE_DIR")
    if not Path(target).is_dir():
        raise click.ClickException(f"{target} is not a state directory")
    with StateStore(target, secret=runtime.config["secret"], fsync="never") as store:
        result = store.load()
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    now = time.time()
    loaded = 0
    for entry in result.entries:
        ttl = NO_EXPIRY if entry.expires_at is None else entry.expires_at - now
        if ttl > 0 and not math.isnan(ttl):
            runtime.cache.set(entry.key, entry.value, ttl, entry.tags)
            loaded += 1
    click.echo(f"loaded {loaded} entries from {target}")


@cacheplug_cli.command("inspect")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--keys", "pattern", default=None, help="list keys matching this glob")
@click.option("--limit", default=20, show_default=True, help="most keys and prefixes to list")
@_in_scope
def inspect_command(path: Path | None, pattern: str | None, limit: int) -> None:
    """Describe the saved state in PATH (default: CACHEPLUG_STATE_DIR); changes nothing."""
    from cacheplug.persistence import inspect_state

    state = _state()
    config = state.runtime.config  # no need to start the runtime to read files
    target = path or config["state_dir"]
    if target is None:
        raise click.ClickException("give a PATH or set CACHEPLUG_STATE_DIR")
    report = inspect_state(target, secret=config["secret"], pattern=pattern, limit=limit)
    click.echo(report.format())
    if not report.ok:
        raise click.exceptions.Exit(1)


@cacheplug_cli.command("clear")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@_in_scope
def clear_command(yes: bool) -> None:
    """Remove every entry from the cache (and, as the writer, from the saved state)."""
    runtime = _state().extension.runtime(current_app)
    if not yes:
        click.confirm(f"Clear every entry of cacheplug {runtime.name!r}?", abort=True)
    size = len(runtime.cache)
    runtime.cache.clear()
    runtime.worker.flush()
    click.echo(f"cleared {size} entries")
    note = _writer_note(runtime)
    if note is not None:
        click.echo(f"note: {note}")
