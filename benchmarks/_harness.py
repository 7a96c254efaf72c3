"""Benchmark harness: interleaved rounds, median ops/s, ratios, markdown and JSON reports.

The protocol is the one in BENCHMARKS.md. A suite declares :class:`Contender` objects
(each builds a :class:`Target` with the same keys and values) and :class:`Op` objects
(each turns a target into a :class:`Runner`). :func:`measure` calibrates a loop count
per (contender, op) so one round takes about ``target_seconds``, then runs the rounds
interleaved (A B C, A B C, ...) and returns one row per (contender, op).

Run-wide options (rounds, smoke mode, where JSON goes) live in :class:`Settings`, set
by ``python -m benchmarks`` with :func:`use_settings`, so a suite only needs
``run(smoke: bool = False) -> list[dict]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GC_NOTE = "GC enabled for all contenders"


def _noop() -> None:
    """Do nothing (default ``Target.close``)."""


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Run-wide options; a field left as None means "the suite's own default"."""

    smoke: bool = False
    rounds: int | None = None
    target_seconds: float = 0.2
    write_json: bool = True
    out_dir: Path = RESULTS_DIR
    stream: TextIO | None = None  # None means sys.stdout at print time

    def round_count(self, default: int = 5) -> int:
        """Rounds to run: 1 in smoke mode, else ``rounds`` or ``default``."""
        if self.smoke:
            return 1
        return max(1, self.rounds or default)


_settings: ContextVar[Settings] = ContextVar("benchmark_settings", default=Settings())  # noqa: B039


def current_settings() -> Settings:
    """The settings of the run in progress."""
    return _settings.get()


@contextlib.contextmanager
def use_settings(**changes: Any) -> Iterator[Settings]:
    """Run the ``with`` body with the current settings updated by ``changes``."""
    new = dataclasses.replace(_settings.get(), **changes)
    token = _settings.set(new)
    try:
        yield new
    finally:
        _settings.reset(token)


def progress(text: str) -> None:
    """Print a progress line on stderr (not in smoke mode), so stdout stays markdown."""
    if not current_settings().smoke:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    """Print ``text`` to the run's stream (stdout by default)."""
    print(text, file=current_settings().stream or sys.stdout, flush=True)


# -- declarations ------------------------------------------------------------------------------


@dataclass
class Target:
    """A prepared contender: bound get/set/delete callables plus a ``close`` hook.

    ``get(key)`` returns the value or a miss marker, ``set(key, value)`` stores,
    ``delete(key)`` removes. ``raw`` keeps the underlying object for suite-specific ops.
    """

    get: Callable[[Any], Any]
    set: Callable[[Any, Any], Any]
    delete: Callable[[Any], Any]
    raw: Any = None
    close: Callable[[], None] = _noop


@dataclass(frozen=True)
class Contender:
    """A thing to measure.

    :param name: label in the tables, e.g. ``"dict+Lock"``.
    :param version: version string of the package under test (see :func:`dist_version`).
    :param prepare: builds a populated :class:`Target`; raising ImportError means "not
        installed" and the contender is skipped with a printed line.
    """

    name: str
    version: str
    prepare: Callable[[], Target]


@dataclass
class Runner:
    """What an op produces for one target: ``run(n)`` does n operations (timed),
    ``reset(n)`` undoes the effect of ``run(n)`` (untimed, optional)."""

    run: Callable[[int], None]
    reset: Callable[[int], None] | None = None


@dataclass(frozen=True)
class Op:
    """An operation to time.

    :param name: label, e.g. ``"get-hit"``.
    :param make: ``make(target, part, parts) -> Runner``; a single-threaded op is made
        with ``part=0, parts=1``; with ``threads=N`` each thread gets its own part.
    :param threads: threads running the loop at once; ops/s is the aggregate.
    :param max_batch: largest ``n`` one ``run(n)`` may take (e.g. keys available to
        delete); longer rounds are split into batches with ``reset`` in between.
    """

    name: str
    make: Callable[[Target, int, int], Runner]
    threads: int = 1
    max_batch: int | None = None


@dataclass
class Prepared:
    """A contender whose target was built."""

    contender: Contender
    target: Target


@dataclass
class Measurement:
    """Raw per-round ops/s for one (contender, op)."""

    contender: str
    op: str
    threads: int
    loops: int
    samples: list[float] = field(default_factory=list)


# -- helpers -------------------------------------------------------------------------------


def dist_version(dist: str) -> str:
    """Installed version of distribution ``dist``, or ``"not installed"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def python_version() -> str:
    """Short Python version used for stdlib contenders, e.g. ``"3.11.9"``."""
    return platform.python_version()


def prepare_all(contenders: Sequence[Contender]) -> list[Prepared]:
    """Build every contender; print a "skipped" line for each one that is not installed."""
    prepared: list[Prepared] = []
    for contender in contenders:
        try:
            target = contender.prepare()
        except ImportError as exc:
            skipped(contender.name, exc)
            continue
        prepared.append(Prepared(contender, target))
    if len(prepared) < len(contenders):
        out()
    return prepared


def skipped(name: str, exc: ImportError) -> None:
    """Print the line that says a contender was skipped because it cannot be imported."""
    out(f"- skipped **{name}**: not installed or not importable ({exc})")


def close_all(prepared: Sequence[Prepared]) -> None:
    """Call every target's ``close`` hook."""
    for item in prepared:
        item.target.close()


def _batches(n: int, max_batch: int | None) -> list[int]:
    """Split ``n`` operations into batch sizes of at most ``max_batch``."""
    if not max_batch or n <= max_batch:
        return [n]
    full, rest = divmod(n, max_batch)
    return [max_batch] * full + ([rest] if rest else [])


def _time_single(runner: Runner, n: int, max_batch: int | None) -> int:
    """Run ``n`` operations in batches; return the timed nanoseconds (resets untimed)."""
    total = 0
    for size in _batches(n, max_batch):
        start = time.perf_counter_ns()
        runner.run(size)
        total += time.perf_counter_ns() - start
        if runner.reset is not None:
            runner.reset(size)
    return total


def _time_threads(runners: Sequence[Runner], n: int) -> int:
    """Run ``n`` operations in each runner's own thread, started by a barrier.

    Each thread reads the clock itself right after the barrier and after its loop (the
    main thread may wait long for the GIL, so its clock would start late). Returns the
    nanoseconds from the first thread's start to the last thread's end.
    """
    barrier = threading.Barrier(len(runners))
    spans: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def work(runner: Runner) -> None:
        barrier.wait()
        start = time.perf_counter_ns()
        try:
            runner.run(n)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
        spans.append((start, time.perf_counter_ns()))

    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for runner in runners:
        if runner.reset is not None:
            runner.reset(n)
    return max(end for _, end in spans) - min(start for start, _ in spans)


def _time_op(op: Op, runners: Sequence[Runner], n: int) -> int:
    """Nanoseconds for ``n`` operations per runner."""
    if op.threads == 1:
        return _time_single(runners[0], n, op.max_batch)
    return _time_threads(runners, n)


def _calibrate(op: Op, runners: Sequence[Runner], target_ns: int) -> int:
    """Loop count (per thread) that makes one round last about ``target_ns``."""
    n = 256
    while True:
        elapsed = _time_op(op, runners, n)
        if elapsed >= target_ns // 10 or n >= 1 << 26:
            break
        n *= 4
    per_op = max(elapsed, 1) / n
    return max(1, int(target_ns / per_op))


# -- measuring -----------------------------------------------------------------------------


def measure(
    prepared: Sequence[Prepared],
    ops: Sequence[Op],
    *,
    reference: str,
    section: str = "",
    smoke_loops: int = 200,
) -> list[dict[str, Any]]:
    """Time every op on every prepared contender in interleaved rounds.

    :param reference: contender name the ``ratio`` column divides by (same op).
    :param section: label copied into each row (e.g. ``"in-memory"``).
    :param smoke_loops: fixed loop count per round in smoke mode (no calibration).
    :returns: one row per (contender, op) — see :func:`make_row`.
    """
    settings = current_settings()
    rounds = settings.round_count()
    target_ns = int(settings.target_seconds * 1e9)
    results: list[Measurement] = []
    for op in ops:
        runners = {
            p.contender.name: [op.make(p.target, i, op.threads) for i in range(op.threads)]
            for p in prepared
        }
        started = time.perf_counter()
        loops: dict[str, int] = {}
        for name, rs in runners.items():
            loops[name] = smoke_loops if settings.smoke else _calibrate(op, rs, target_ns)
            progress(f"{section or 'measure'}: {op.name}: {name} calibrated to {loops[name]:,}")
        found = {name: Measurement(name, op.name, op.threads, loops[name]) for name in runners}
        for _ in range(rounds):
            for name, rs in runners.items():
                n = loops[name]
                elapsed = max(_time_op(op, rs, n), 1)
                found[name].samples.append(n * op.threads * 1e9 / elapsed)
                if not settings.smoke and elapsed > 3 * target_ns:
                    # cost grew with the cache's state (e.g. an O(n) delete): keep rounds short
                    loops[name] = found[name].loops = max(1, int(n * target_ns / elapsed))
        results.extend(found.values())
        took = time.perf_counter() - started
        progress(f"{section or 'measure'}: {op.name}: done in {took:.1f} s")
    return rows_from(results, reference=reference, section=section)


def rows_from(
    results: Sequence[Measurement], *, reference: str, section: str
) -> list[dict[str, Any]]:
    """Turn measurements into rows with the median and the ratio to ``reference``."""
    ref = {m.op: statistics.median(m.samples) for m in results if m.contender == reference}
    return [make_row(m, ref.get(m.op), section) for m in results]


def make_row(m: Measurement, ref_ops: float | None, section: str) -> dict[str, Any]:
    """One JSON-ready result row."""
    median = statistics.median(m.samples)
    return {
        "section": section,
        "contender": m.contender,
        "op": m.op,
        "threads": m.threads,
        "median_ops": median,
        "ratio": median / ref_ops if ref_ops else math.nan,
        "min_ops": min(m.samples),
        "max_ops": max(m.samples),
        "rounds": len(m.samples),
        "loops": m.loops,
    }


def find(rows: Sequence[dict[str, Any]], contender: str, op: str) -> dict[str, Any] | None:
    """The row for (contender, op), or None."""
    for row in rows:
        if row.get("contender") == contender and row.get("op") == op:
            return row
    return None


def ratio_of(rows: Sequence[dict[str, Any]], a: str, b: str, op: str) -> float:
    """Median ops/s of ``a`` divided by that of ``b`` for ``op``; NaN if either is absent."""
    ra, rb = find(rows, a, op), find(rows, b, op)
    if ra is None or rb is None or not rb["median_ops"]:
        return math.nan
    return ra["median_ops"] / rb["median_ops"]


# -- reporting -----------------------------------------------------------------------------


def fmt_ops(value: float) -> str:
    """Human ops/s: ``12.3M``, ``456.7k``, ``89``."""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def fmt_ratio(value: float) -> str:
    """``1.23x``, or ``n/a`` when the ratio could not be computed."""
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def results_table(rows: Sequence[dict[str, Any]], reference: str) -> str:
    """The standard table: contender, op, threads, median, ratio, min-max."""
    body = [
        [
            row["op"],
            row["contender"],
            str(row["threads"]),
            fmt_ops(row["median_ops"]),
            fmt_ratio(row["ratio"]),
            f"{fmt_ops(row['min_ops'])}-{fmt_ops(row['max_ops'])}",
        ]
        for row in rows
    ]
    headers = ["op", "contender", "threads", "median ops/s", f"vs {reference}", "min-max ops/s"]
    return markdown_table(headers, body)


def targets_table(found: Sequence[dict[str, Any]]) -> str:
    """Markdown: target, measured ratio, met/missed and by how much.

    Each target dict has ``target_name``, ``target``, ``ratio``, ``status`` and
    optionally ``sense``: ``"ge"`` (at least, the default) or ``"le"`` (at most).
    """
    body = []
    for t in found:
        status = t["status"]
        if status == "missed":
            if t.get("sense", "ge") == "le":
                status = f"missed (by {(t['ratio'] / t['target'] - 1) * 100:.0f}%)"
            else:
                status = f"missed (by {(1 - t['ratio'] / t['target']) * 100:.0f}%)"
        body.append([t["target_name"], fmt_ratio(t["ratio"]), status])
    return markdown_table(["target", "measured", "status"], body)


def header(suite: str, versions: dict[str, str], note: str = "") -> str:
    """Markdown header: suite, machine, Python, GC policy, rounds, contender versions."""
    settings = current_settings()
    rounds = settings.round_count()
    mode = (
        "smoke (1 round, tiny loops — numbers mean nothing)"
        if settings.smoke
        else (f"{rounds} interleaved rounds of ~{settings.target_seconds:g} s per contender")
    )
    lines = [
        f"# Benchmark suite `{suite}`",
        "",
        f"- date (UTC): {utc_now().isoformat(timespec='seconds')}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"os.cpu_count() = {os.cpu_count()}, {platform.machine()}",
        f"- {mode}; {GC_NOTE}; timer: time.perf_counter_ns",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    if note:
        lines.append(f"- {note}")
    return "\n".join(lines)


def utc_now() -> dt.datetime:
    """Current time in UTC."""
    return dt.datetime.now(dt.UTC)


def write_results(
    suite: str, versions: dict[str, str], rows: Sequence[dict[str, Any]]
) -> Path | None:
    """Write ``<out_dir>/<suite>-<UTC timestamp>.json`` unless JSON output is off.

    Fields: suite, date, python, cpu_count, gc, smoke, versions, rows.
    :returns: the path written, or None when ``write_json`` is False.
    """
    settings = current_settings()
    if not settings.write_json:
        return None
    now = utc_now()
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    path = settings.out_dir / f"{suite}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "suite": suite,
        "date": now.isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "gc": GC_NOTE,
        "smoke": settings.smoke,
        "rounds": settings.round_count(),
        "versions": versions,
        "rows": [_jsonable(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    out(f"\nResults written to `{path}`")
    return path


def run_simple(
    suite: str,
    contenders: Sequence[Contender],
    ops: Sequence[Op],
    *,
    reference: str,
    note: str = "",
) -> list[dict[str, Any]]:
    """The whole protocol for a one-table suite: header, measure, table, JSON.

    :returns: the rows (also written to JSON unless disabled).
    """
    versions = {c.name: c.version for c in contenders}
    out(header(suite, versions, note))
    out()
    prepared = prepare_all(contenders)
    try:
        rows = measure(prepared, ops, reference=reference)
    finally:
        close_all(prepared)
    out()
    out(results_table(rows, reference))
    write_results(suite, versions, rows)
    return rows


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN (not valid JSON) with None."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
