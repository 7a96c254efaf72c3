"""The deferred worker's counters: :class:`WorkerStats` snapshots."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ("WorkerStats", "count_value")


def count_value(counter: itertools.count[int]) -> int:
    """Return the next value ``counter`` would yield, without advancing it."""
    # repr(count(7)) == "count(7)"; reading it is the only way that neither advances
    # the counter nor uses the pickling support deprecated in Python 3.12.
    return int(repr(counter)[6:-1])


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """An immutable snapshot of a :class:`DeferredWorker`'s counters.

    ``submitted`` counts every task handed to :meth:`DeferredWorker.submit`;
    ``processed`` those run on the worker thread and ``inline_runs`` those run on a
    caller's thread (queue full, worker closed); ``failed`` those that raised, wherever
    they ran. ``batches`` counts wake-ups that found work, ``queue_depth`` is the number
    of items queued now and ``high_water`` the deepest queue the worker has seen.
    ``periodic_runs`` counts runs of periodic tasks, which are not in ``submitted``.
    Once the worker is idle, ``submitted == processed + inline_runs``.
    """

    submitted: int
    processed: int
    failed: int
    inline_runs: int
    batches: int
    queue_depth: int
    high_water: int
    periodic_runs: int
