"""The deferred worker: one background thread draining a bounded queue in batches.

Request handlers hand slow, non-urgent work (write-ahead-log appends, remote deletes,
event delivery) to :class:`DeferredWorker` and return at once. The worker never loses a
task: when its queue is full, or after it is closed, a submitted task runs inline on the
caller's thread instead, and is counted. See ``docs/events.md``.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVarTuple

from cacheplug._worker_periodic import PeriodicScheduling, PeriodicTask
from cacheplug._worker_queue import CLOSED, NEW, RUNNING, STOP, FlushMarker, task_name
from cacheplug._worker_stats import WorkerStats, count_value
from cacheplug.errors import ConfigurationError

__all__ = ("DeferredWorker", "PeriodicTask", "WorkerStats")

logger = logging.getLogger("cacheplug.worker")

_Ts = TypeVarTuple("_Ts")


class DeferredWorker(PeriodicScheduling):
    """Run submitted callables on one background thread, in order, in batches.

    The thread starts on first use (:meth:`submit`, :meth:`add_periodic` or
    :meth:`start`) and takes up to ``batch_size`` queued tasks per wake-up. It is a
    daemon thread, so a forgotten :meth:`close` never hangs interpreter exit, but
    calling :meth:`close` is the contract: it drains the queue and joins the thread,
    and whatever owns the worker (the runtime, an adapter) calls it at shutdown.

    **Back-pressure: a task is never lost.** The queue holds at most about
    ``max_queue`` items (concurrent submitters can overshoot it by one each). When it is
    full, :meth:`submit` waits up to ``put_timeout`` seconds for room, then runs the task
    inline on the caller's thread and counts it in :attr:`WorkerStats.inline_runs`. A
    task submitted from the worker thread to a full queue runs inline at once, since
    waiting for itself would only waste the timeout. Tasks therefore run in submission
    order only while the queue has room; a task run inline can overtake queued ones
    and can run concurrently with the worker thread, so tasks must be thread-safe and
    must not rely on strict ordering across a full queue.

    **Failures.** A task that raises is logged on the ``cacheplug.worker`` logger with
    its qualified name and counted in :attr:`WorkerStats.failed`; the exception never
    reaches the submitter and never stops the thread.

    **Fork.** After :func:`os.fork` (gunicorn ``--preload``) the child's worker is fresh:
    a new lock, an empty queue and no thread; the next use starts a new thread. Tasks
    queued but not yet run in the parent belong to the parent, which still runs them;
    the child never sees them. Periodic tasks stay registered in the child and resume
    once its thread starts (on the first :meth:`submit`, or call :meth:`start`). A
    worker closed before the fork stays closed in the child. Counters restart at zero.

    All public methods are thread-safe.

    :param max_queue: Maximum number of queued items before back-pressure applies.
    :param batch_size: Maximum number of tasks the thread takes per wake-up.
    :param put_timeout: Seconds :meth:`submit` waits for room in a full queue before
        running the task inline; ``0`` runs it inline at once.
    :param name: Name of the worker thread.
    :raises ConfigurationError: If an option is out of range.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        max_queue: int = 10_000,
        batch_size: int = 256,
        put_timeout: float = 0.05,
        name: str = "cacheplug-worker",
    ) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigurationError(f"max_queue must be an int >= 1, got {max_queue!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(put_timeout, int | float) or not put_timeout >= 0:
            raise ConfigurationError(
                f"put_timeout must be a number of seconds >= 0, got {put_timeout!r}"
            )
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._put_timeout = float(put_timeout)
        self._name = name
        self._periodic: list[PeriodicTask] = []
        self._init_process_state(NEW)
        _live_workers.add(self)

    def _init_process_state(self, state: str) -> None:
        """(Re)create everything that must not be shared with a forked parent."""
        self._lock = threading.Lock()
        self._room = threading.Condition(threading.Lock())
        self._room_waiters = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self._state = state
        # Read without the lock on the submit fast path: True only while running.
        self._accepting = False
        self._submitted = itertools.count()
        self._count_lock = threading.Lock()
        self._inline_runs = 0
        self._inline_failed = 0
        # Written by the worker thread only.
        self._processed = 0
        self._worker_failed = 0
        self._batches = 0
        self._high_water = 0
        self._periodic_runs = 0

    # -- public API -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (in this process)."""
        return self._state is CLOSED

    def start(self) -> None:
        """Start the worker thread now instead of on first use; no-op if running or closed.

        Thread-safe.
        """
        with self._lock:
            if self._state is NEW:
                self._start_locked()

    def submit(self, fn: Callable[[*_Ts], object], /, *args: *_Ts) -> None:
        """Run ``fn(*args)`` later on the worker thread; never raises what ``fn`` raises.

        Returns at once while the queue has room. When it is full, waits up to
        ``put_timeout`` seconds for room, then runs the task inline on this thread.
        After :meth:`close` the task also runs inline. Either way nothing is lost and
        the inline run is counted. Thread-safe; cheap enough for the request path.

        :param fn: The callable to run; its return value is discarded.
        :param args: Positional arguments for ``fn``.
        """
        q = self._queue
        if self._accepting and q.qsize() < self._max_queue:
            next(self._submitted)
            q.put((fn, args))
            if self._accepting:
                return
            # close() ran between our check and our put: make sure the task still runs.
            self._drain_inline()
            return
        self._submit_slow(fn, args)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every task submitted before this call has run.

        Thread-safe. Called from a task on the worker thread it cannot wait for
        itself, so it returns ``False`` at once.

        :param timeout: Seconds to wait at most; ``None`` waits as long as it takes.
        :returns: ``True`` if everything ran, ``False`` on timeout.
        """
        if threading.get_ident() == self._thread_ident:
            return False
        if self._state is NEW:
            return True
        marker = FlushMarker()
        self._queue.put(marker)
        if self._accepting:
            # Not closed before our put, so the thread reaches the marker before STOP.
            return marker.done.wait(timeout)
        # Closed or closing: the thread may exit before reaching the marker.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not marker.done.is_set():
            if self._state is CLOSED and not self.running:
                self._drain_inline()
            wait = 0.01 if deadline is None else min(0.01, deadline - time.monotonic())
            if wait <= 0:
                break
            marker.done.wait(wait)
        return marker.done.is_set()

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop intake, run everything queued, and join the worker thread.

        After it returns ``True`` no thread of this worker exists. Later
        :meth:`submit` calls run their task inline (and count it). Safe to call more
        than once: a repeat call only joins again. Called from a task on the worker
        thread, it stops intake and returns ``False`` without joining (the thread
        drains the queue and exits once that task returns). Thread-safe.

        :param timeout: Seconds to wait for the thread; ``None`` waits as long as it
            takes.
        :returns: ``True`` if the thread is gone (or never started), ``False`` if it
            is still running a task after ``timeout`` or if called on the worker thread.
        """
        with self._lock:
            first = self._state is not CLOSED
            self._state = CLOSED
            self._accepting = False
            thread = self._thread
            if first and thread is not None:
                self._queue.put(STOP)
        if first:
            with self._room:  # back-pressure waiters: stop waiting, run inline
                self._room.notify_all()
        if thread is None:
            self._drain_inline()
            return True
        if thread.ident == threading.get_ident():
            return False
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._drain_inline()  # tasks put by submitters that raced with close()
        return True

    def stats(self) -> WorkerStats:
        """Return a snapshot of the counters; thread-safe, values may be a moment apart."""
        with self._count_lock:
            inline_runs = self._inline_runs
            inline_failed = self._inline_failed
        return WorkerStats(
            submitted=count_value(self._submitted),
            processed=self._processed,
            failed=self._worker_failed + inline_failed,
            inline_runs=inline_runs,
            batches=self._batches,
            queue_depth=self._queue.qsize(),
            high_water=self._high_water,
            periodic_runs=self._periodic_runs,
        )

    def __enter__(self) -> DeferredWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<DeferredWorker {self._name!r} {self._state} "
            f"depth={self._queue.qsize()}/{self._max_queue}>"
        )

    # -- submitting ---------------------------------------------------------------------

    def _submit_slow(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Start the thread, wait for room, or run inline; the paths submit() avoids."""
        if self._state is NEW:
            with self._lock:
                if self._state is NEW:
                    self._start_locked()
        if self._state is RUNNING and self._wait_for_room():
            next(self._submitted)
            self._queue.put((fn, args))
            if not self._accepting:
                self._drain_inline()
            return
        next(self._submitted)
        self._run_inline(fn, args)

    def _wait_for_room(self) -> bool:
        """Wait up to ``put_timeout`` for the queue to have room; False if it had none."""
        q = self._queue
        if q.qsize() < self._max_queue:
            return True
        self._high_water = max(self._high_water, q.qsize())
        if threading.get_ident() == self._thread_ident or self._put_timeout == 0:
            return False
        deadline = time.monotonic() + self._put_timeout
        with self._room:
            self._room_waiters += 1
            try:
                while q.qsize() >= self._max_queue and self._accepting:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._room.wait(remaining)
            finally:
                self._room_waiters -= 1
        return self._accepting

    def _run_inline(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Run one task on the calling thread, logging and counting a failure."""
        with self._count_lock:
            self._inline_runs += 1
        try:
            fn(*args)
        except Exception:
            with self._count_lock:
                self._inline_failed += 1
            logger.exception("cacheplug deferred task %s failed (run inline)", task_name(fn))

    def _drain_inline(self) -> None:
        """Run whatever is queued on this thread; for close() and racing submitters."""
        q = self._queue
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return
            if type(item) is tuple:
                self._run_inline(*item)
            elif isinstance(item, FlushMarker):
                item.done.set()
            elif item is STOP and self.running:
                q.put(STOP)  # the live thread still needs it; it drains the rest
                return

    # -- the worker thread --------------------------------------------------------------

    def _start_locked(self) -> None:
        """Start the thread; the caller holds ``self._lock`` and state is new."""
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread = thread
        self._state = RUNNING
        thread.start()
        self._thread_ident = thread.ident
        self._accepting = True

    def _run(self) -> None:
        """The thread body: take a batch, run it, run due periodic tasks, repeat."""
        q = self._queue
        get, get_nowait, qsize = q.get, q.get_nowait, q.qsize
        batch_size = self._batch_size
        stopping = False
        while not stopping:
            timeout = self._seconds_to_next_periodic()
            try:
                if timeout is None:
                    item = get()
                elif timeout > 0:
                    item = get(timeout=timeout)
                else:
                    item = get_nowait()
            except queue.Empty:
                item = None
            if item is not None:
                depth = qsize() + 1
                if depth > self._high_water:
                    self._high_water = depth
                batch = [item]
                while len(batch) < batch_size:
                    try:
                        batch.append(get_nowait())
                    except queue.Empty:
                        break
                if self._room_waiters:
                    with self._room:
                        self._room.notify_all()
                stopping = self._run_batch(batch)
            if not stopping and self._periodic:
                self._run_due_periodics()
        # Stopped: intake is closed; run whatever racing submitters still put.
        while True:
            batch = []
            while len(batch) < batch_size:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            self._run_batch(batch)

    def _run_batch(self, batch: list[Any]) -> bool:
        """Run one batch in order; return True if it held the stop marker."""
        stop = False
        ran = 0
        for item in batch:
            if type(item) is tuple:
                fn, args = item
                ran += 1
                try:
                    fn(*args)
                except BaseException:
                    self._worker_failed += 1
                    logger.exception("cacheplug deferred task %s failed", task_name(fn))
                self._processed += 1
            elif item is STOP:
                stop = True
            elif isinstance(item, FlushMarker):
                item.done.set()
        if ran:
            self._batches += 1
        return stop

    # -- fork ---------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Forget the parent's thread, queue and locks (see the class docstring)."""
        self._init_process_state(CLOSED if self._state is CLOSED else NEW)
        if self._periodic and self._state is NEW:
            now = time.monotonic()
            for task in self._periodic:
                task.next_due = now + task.interval


_live_workers: weakref.WeakSet[DeferredWorker] = weakref.WeakSet()


def _reset_workers_after_fork() -> None:
    for worker in list(_live_workers):
        worker._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_workers_after_fork)
