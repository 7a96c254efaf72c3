"""The ``runtime`` suite: what a request handler pays for deferred work and request context.

1. **Handler cost of ``delete`` and ``invalidate_tags`` with 3 slow receivers** (each
   sleeps 1 ms). cacheplug hands delivery to its worker; the reference sends the blinker
   signal inline in the handler, as a plain blinker user would. Bursts are shorter than
   the worker's queue and the backlog drains between rounds, untimed: the claim is that
   the handler's cost does not depend on its receivers, not that 1 ms receivers can keep
   up with an unbounded rate (a bounded queue applies back-pressure then, by design).
2. **``request_context.scope()`` + 3 ``set`` + 3 ``get`` per request** against a bare
   ``ContextVar`` ``set``/``reset`` pair.

Rounds are interleaved (A B, A B, ...), as the harness does; custom loops are needed
because a burst must be followed by an untimed drain.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import Any

import blinker

from benchmarks._harness import (
    Measurement,
    current_settings,
    dist_version,
    header,
    out,
    results_table,
    rows_from,
    write_results,
)
from cacheplug import CachePlug, request_context, signals

SLOW_RECEIVERS = 3
RECEIVER_SLEEP = 0.001


def _slow_receiver(sender: Any, **kwargs: Any) -> None:
    time.sleep(RECEIVER_SLEEP)


def _interleave(
    contenders: dict[str, Callable[[int], int]], loops: dict[str, int], rounds: int, op: str
) -> list[Measurement]:
    """Run each contender's ``timed(n) -> elapsed_ns`` in interleaved rounds."""
    found = {name: Measurement(name, op, 1, loops[name]) for name in contenders}
    for _ in range(rounds):
        for name, timed in contenders.items():
            n = loops[name]
            found[name].samples.append(n * 1e9 / max(timed(n), 1))
    return list(found.values())


def _handler_section(rounds: int, smoke: bool) -> list[dict[str, Any]]:
    inline_signal = blinker.Signal("bench-inline-deleted")  # not in cacheplug's namespace
    receivers = [
        (lambda sender, _i=i, **kw: _slow_receiver(sender, **kw)) for i in range(SLOW_RECEIVERS)
    ]
    for receiver in receivers:
        signals.cache_deleted.connect(receiver)
        signals.tags_invalidated.connect(receiver)
        inline_signal.connect(receiver)
    plug = CachePlug(maxsize=200_000, queue_size=100_000, sweep_interval=0).start()
    store: dict[str, int] = {}
    burst = 20 if smoke else 500
    inline_n = 2 if smoke else 20

    def cacheplug_delete(n: int) -> int:
        keys = [f"user:{i}" for i in range(n)]
        for key in keys:
            plug.cache.set(key, 1)
        delete = plug.cache.delete
        start = time.perf_counter_ns()
        for key in keys:
            delete(key)
        elapsed = time.perf_counter_ns() - start
        plug.worker.flush()  # drain the receivers' backlog, untimed
        return elapsed

    def cacheplug_invalidate(n: int) -> int:
        invalidate = plug.invalidate_tags
        start = time.perf_counter_ns()
        for i in range(n):
            invalidate(f"tag:{i}")
        elapsed = time.perf_counter_ns() - start
        plug.worker.flush()
        return elapsed

    def inline_delete(n: int) -> int:
        keys = [f"user:{i}" for i in range(n)]
        store.update(dict.fromkeys(keys, 1))
        send = inline_signal.send
        start = time.perf_counter_ns()
        for key in keys:
            store.pop(key, None)
            send(store, key=key)
        return time.perf_counter_ns() - start

    try:
        results = _interleave(
            {"cacheplug (deferred)": cacheplug_delete, "blinker send inline": inline_delete},
            {"cacheplug (deferred)": burst, "blinker send inline": inline_n},
            rounds,
            "delete + 3 slow receivers",
        )
        results += _interleave(
            {"cacheplug (deferred)": cacheplug_invalidate, "blinker send inline": inline_delete},
            {"cacheplug (deferred)": burst, "blinker send inline": inline_n},
            rounds,
            "invalidate_tags + 3 slow receivers",
        )
    finally:
        plug.close()
        for receiver in receivers:
            signals.cache_deleted.disconnect(receiver)
            signals.tags_invalidated.disconnect(receiver)
            inline_signal.disconnect(receiver)
    return rows_from(results, reference="blinker send inline", section="handler")


def _context_section(rounds: int, smoke: bool) -> list[dict[str, Any]]:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("bench")
    n = 2_000 if smoke else 200_000
    scope = request_context.scope
    ctx_set = request_context.set
    ctx_get = request_context.get

    def bare(n: int) -> int:
        set_, reset = var.set, var.reset
        start = time.perf_counter_ns()
        for _ in range(n):
            reset(set_(1))
        return time.perf_counter_ns() - start

    def cacheplug_scope(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            with scope():
                ctx_set("user", 1)
                ctx_set("tenant", 2)
                ctx_set("locale", 3)
                ctx_get("user")
                ctx_get("tenant")
                ctx_get("locale")
        return time.perf_counter_ns() - start

    def hand_written(n: int) -> int:
        # What the same work costs written out by hand: a ContextVar holding a dict.
        set_, reset, get = var.set, var.reset, var.get
        start = time.perf_counter_ns()
        for _ in range(n):
            token = set_({})
            get()["user"] = 1
            get()["tenant"] = 2
            get()["locale"] = 3
            get().get("user")
            get().get("tenant")
            get().get("locale")
            reset(token)
        return time.perf_counter_ns() - start

    names = {
        "bare ContextVar set/reset": bare,
        "hand-written ContextVar dict, 3 set + 3 get": hand_written,
        "request_context.scope() + 3 set + 3 get": cacheplug_scope,
    }
    results = _interleave(names, dict.fromkeys(names, n), rounds, "per-request context")
    return rows_from(results, reference="bare ContextVar set/reset", section="context")


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run both sections; print markdown tables and the targets; write JSON."""
    settings = current_settings()
    smoke = smoke or settings.smoke
    rounds = 1 if smoke else settings.round_count()
    versions = {"cacheplug": dist_version("cacheplug"), "blinker": dist_version("blinker")}
    out(header("runtime", versions, "ops/s are per handler call; receivers drain untimed"))
    rows = _handler_section(rounds, smoke) + _context_section(rounds, smoke)
    out()
    out("## Handler cost with 3 receivers that sleep 1 ms each")
    out(results_table([r for r in rows if r["section"] == "handler"], "blinker send inline"))
    out()
    out("## Per-request context")
    out(results_table([r for r in rows if r["section"] == "context"], "bare ContextVar set/reset"))
    out()
    out("## Targets")
    out("| target | measured | status |")
    out("|---|---|---|")
    for row in rows:
        if row["section"] == "handler" and row["contender"].startswith("cacheplug"):
            met = row["ratio"] >= 50
            out(
                f"| {row['op']}: >= 50x cheaper than inline send | {row['ratio']:.0f}x | "
                f"{'met' if met else 'missed'} |"
            )
        if row["section"] == "context" and row["contender"].startswith("request_context"):
            cost = 1 / row["ratio"]
            met = cost <= 3
            out(
                f"| scope + 3 set/get <= 3x a bare set/reset | {cost:.1f}x | "
                f"{'met' if met else 'missed'} |"
            )
    write_results("runtime", versions, rows)
    return rows
