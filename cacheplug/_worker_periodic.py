"""Periodic tasks of the deferred worker: :class:`PeriodicTask` and their scheduling.

The worker thread waits for its queue at most until the next periodic task is due,
then runs the due ones (:class:`PeriodicScheduling`, a mixin of ``DeferredWorker``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from cacheplug._worker_queue import CLOSED, NEW, WAKE, task_name
from cacheplug.errors import ConfigurationError

__all__ = ("PeriodicScheduling", "PeriodicTask")

logger = logging.getLogger("cacheplug.worker")


class PeriodicTask:
    """A callable that a :class:`DeferredWorker` runs every ``interval`` seconds.

    Returned by :meth:`DeferredWorker.add_periodic`; :meth:`cancel` stops it.
    """

    __slots__ = ("_worker_ref", "cancelled", "fn", "interval", "next_due")

    def __init__(
        self, worker: PeriodicScheduling, fn: Callable[[], object], interval: float, now: float
    ) -> None:
        self._worker_ref = weakref.ref(worker)
        self.fn = fn
        self.interval = interval
        self.next_due = now + interval
        self.cancelled = False

    def cancel(self) -> None:
        """Stop running this task; a run already in progress finishes. Thread-safe."""
        self.cancelled = True
        worker = self._worker_ref()
        if worker is not None:
            worker._remove_periodic(self)

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<PeriodicTask {task_name(self.fn)} every {self.interval}s{state}>"


class PeriodicScheduling:
    """Add, run and remove the periodic tasks of a ``DeferredWorker``.

    A mixin: the worker sets the attributes annotated below (``_periodic`` in
    ``__init__``, the rest in ``_init_process_state``).
    """

    _lock: threading.Lock
    _queue: queue.SimpleQueue[Any]
    _state: str
    _periodic: list[PeriodicTask]
    _worker_failed: int
    _periodic_runs: int
    _start_locked: Callable[[], None]

    def add_periodic(self, fn: Callable[[], object], interval: float) -> PeriodicTask:
        """Run ``fn()`` on the worker thread every ``interval`` seconds until cancelled.

        The first run is ``interval`` seconds from now. A run that falls behind (a slow
        batch) is not repeated to catch up: the next run is scheduled ``interval``
        after the late one. Failures are logged and counted like those of submitted
        tasks. Starts the worker thread if needed. Thread-safe.

        :param fn: A callable taking no arguments.
        :param interval: Seconds between runs, greater than zero.
        :returns: A :class:`PeriodicTask` whose :meth:`~PeriodicTask.cancel` stops it.
        :raises ConfigurationError: If ``interval`` is not a positive number.
        :raises RuntimeError: If the worker is closed.
        """
        if not isinstance(interval, int | float) or not interval > 0:
            raise ConfigurationError(
                f"interval must be a positive number of seconds, got {interval!r}"
            )
        with self._lock:
            if self._state is CLOSED:
                raise RuntimeError(
                    f"cannot add periodic task {task_name(fn)} to a closed DeferredWorker"
                )
            task = PeriodicTask(self, fn, float(interval), time.monotonic())
            self._periodic = [*self._periodic, task]
            if self._state is NEW:
                self._start_locked()
        self._queue.put(WAKE)  # let the thread recompute its wait
        return task

    def _seconds_to_next_periodic(self) -> float | None:
        """Seconds until the next periodic task is due, or None if there is none."""
        periodic = self._periodic
        if not periodic:
            return None
        return min(task.next_due for task in periodic) - time.monotonic()

    def _run_due_periodics(self) -> None:
        """Run each periodic task that is due and schedule its next run."""
        now = time.monotonic()
        for task in self._periodic:
            if task.cancelled or task.next_due > now:
                continue
            try:
                task.fn()
            except BaseException:
                self._worker_failed += 1
                logger.exception("cacheplug periodic task %s failed", task_name(task.fn))
            self._periodic_runs += 1
            now = time.monotonic()
            task.next_due += task.interval
            if task.next_due <= now:  # fell behind: skip the missed runs
                task.next_due = now + task.interval

    def _remove_periodic(self, task: PeriodicTask) -> None:
        with self._lock:
            self._periodic = [t for t in self._periodic if t is not task]
