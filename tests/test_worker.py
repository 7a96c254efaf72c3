"""DeferredWorker: ordering, batching, failures, back-pressure, flush, close, fork."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

import pytest

from cacheplug.errors import ConfigurationError
from cacheplug.worker import DeferredWorker, WorkerStats

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0  # generous upper bound for Event waits; tests never sleep


@pytest.fixture
def worker() -> Iterator[DeferredWorker]:
    w = DeferredWorker(max_queue=1000, batch_size=64)
    yield w
    assert w.close(timeout=WAIT)


def _cacheplug_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cacheplug")]


def test_tasks_run_in_order_on_the_worker_thread(worker: DeferredWorker) -> None:
    seen: list[tuple[int, str]] = []
    for i in range(50):
        worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert worker.flush(timeout=WAIT)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"cacheplug-worker"}
    stats = worker.stats()
    assert (stats.submitted, stats.processed, stats.inline_runs, stats.failed) == (50, 50, 0, 0)


def test_submit_passes_positional_arguments(worker: DeferredWorker) -> None:
    got: list[tuple[int, str]] = []
    worker.submit(lambda a, b: got.append((a, b)), 1, "x")
    assert worker.flush(timeout=WAIT)
    assert got == [(1, "x")]


def test_thread_starts_lazily_and_is_a_daemon() -> None:
    w = DeferredWorker(name="cacheplug-lazy-test")
    assert not w.running
    w.submit(lambda: None)
    assert w.running
    assert w._thread is not None
    assert w._thread.daemon
    assert w._thread.name == "cacheplug-lazy-test"
    assert w.close(timeout=WAIT)
    assert not w.running


def test_tasks_that_pile_up_arrive_in_one_batch(worker: DeferredWorker) -> None:
    started, release = threading.Event(), threading.Event()
    batch_sizes: list[int] = []

    def slow() -> None:
        started.set()
        release.wait(WAIT)

    worker.submit(slow)
    assert started.wait(WAIT)
    before = worker.stats().batches
    for _ in range(10):
        worker.submit(lambda: batch_sizes.append(worker.stats().batches))
    release.set()
    assert worker.flush(timeout=WAIT)
    # All ten ran in one batch, the one right after the slow task's own batch
    # (a batch is counted when it finishes).
    assert batch_sizes == [before + 1] * 10
    assert worker.stats().batches == before + 2
    assert worker.stats().high_water >= 10


def test_batch_size_caps_a_batch() -> None:
    with DeferredWorker(batch_size=3) as w:
        started, release = threading.Event(), threading.Event()
        w.submit(lambda: (started.set(), release.wait(WAIT)))
        assert started.wait(WAIT)
        before = w.stats().batches
        for _ in range(9):
            w.submit(lambda: None)
        release.set()
        assert w.flush(timeout=WAIT)
        # The slow task's batch, then 9 tasks in batches of 3 (the flush marker's own
        # batch holds no task and is not counted).
        assert w.stats().batches == before + 1 + 3


def test_a_failing_task_is_logged_counted_and_the_worker_keeps_going(
    worker: DeferredWorker, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    def broken_task() -> None:
        raise RuntimeError("boom")

    worker.submit(ran.append, 1)
    with caplog.at_level(logging.ERROR, logger="cacheplug.worker"):
        worker.submit(broken_task)
        worker.submit(ran.append, 2)
        assert worker.flush(timeout=WAIT)
    assert ran == [1, 2]
    assert worker.stats().failed == 1
    assert worker.running
    [record] = [r for r in caplog.records if r.name == "cacheplug.worker"]
    assert "broken_task" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_a_full_queue_loses_nothing() -> None:
    w = DeferredWorker(max_queue=4, put_timeout=0.001)
    started, release = threading.Event(), threading.Event()
    w.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)

    counts = [0] * 100
    lock = threading.Lock()

    def task(n: int) -> None:
        with lock:
            counts[n] += 1

    def producer(first: int) -> None:
        for n in range(first, 100, 4):
            w.submit(task, n)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    release.set()
    assert w.flush(timeout=WAIT)
    assert counts == [1] * 100
    stats = w.stats()
    assert stats.inline_runs >= 96 - 4 * 4  # at most ~max_queue (+1 per thread) queued
    assert stats.submitted == 101
    assert stats.processed + stats.inline_runs == 101
    assert stats.high_water >= 4
    assert w.close(timeout=WAIT)


def test_back_pressure_waits_for_room_before_running_inline() -> None:
    w = DeferredWorker(max_queue=1, put_timeout=WAIT)
    started, release = threading.Event(), threading.Event()
    w.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)
    w.submit(lambda: None)  # fills the queue
    done = threading.Event()
    submitter = threading.Thread(target=lambda: (w.submit(lambda: None), done.set()))
    submitter.start()
    assert not done.wait(0.05)  # blocked waiting for room
    release.set()  # the worker drains the queue and wakes the waiter
    assert done.wait(WAIT)
    submitter.join(WAIT)
    assert w.flush(timeout=WAIT)
    assert w.stats().inline_runs == 0
    assert w.close(timeout=WAIT)


def test_submit_from_the_worker_thread_to_a_full_queue_runs_inline() -> None:
    w = DeferredWorker(max_queue=2, put_timeout=WAIT)
    order: list[str] = []
    spawned = threading.Event()

    def spawner() -> None:
        for i in range(5):
            w.submit(order.append, f"child{i}")
        order.append("spawner done")
        spawned.set()

    w.submit(spawner)
    assert spawned.wait(WAIT)  # flush only now, so its marker cannot take a slot
    assert w.flush(timeout=WAIT)
    assert sorted(order) == sorted([*(f"child{i}" for i in range(5)), "spawner done"])
    assert w.stats().inline_runs == 3
    assert w.close(timeout=WAIT)


def test_flush_waits_only_for_earlier_tasks(worker: DeferredWorker) -> None:
    release = threading.Event()
    ran: list[int] = []
    worker.submit(lambda: (release.wait(WAIT), ran.append(1)))
    assert not worker.flush(timeout=0.01)
    release.set()
    assert worker.flush(timeout=WAIT)
    assert ran == [1]


def test_flush_on_a_new_or_closed_worker_returns_true() -> None:
    w = DeferredWorker()
    assert w.flush(timeout=WAIT)
    assert not w.running
    w.submit(lambda: None)
    assert w.close(timeout=WAIT)
    assert w.flush(timeout=WAIT)


def test_flush_from_the_worker_thread_returns_false(worker: DeferredWorker) -> None:
    results: list[bool] = []
    worker.submit(lambda: results.append(worker.flush(timeout=WAIT)))
    assert worker.flush(timeout=WAIT)
    assert results == [False]


def test_periodic_task_runs_on_the_worker_thread(worker: DeferredWorker) -> None:
    runs: list[str] = []
    enough = threading.Event()

    def tick() -> None:
        runs.append(threading.current_thread().name)
        if len(runs) >= 3:
            enough.set()

    task = worker.add_periodic(tick, 0.01)
    assert worker.running
    assert enough.wait(WAIT)
    task.cancel()
    assert set(runs) == {"cacheplug-worker"}
    assert worker.stats().periodic_runs >= 3
    assert worker.stats().submitted == 0


def test_failing_periodic_task_keeps_running(
    worker: DeferredWorker, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    enough = threading.Event()

    def flaky_tick() -> None:
        calls.append(1)
        if len(calls) >= 2:
            enough.set()
        raise ValueError("tick failed")

    with caplog.at_level(logging.ERROR, logger="cacheplug.worker"):
        task = worker.add_periodic(flaky_tick, 0.01)
        assert enough.wait(WAIT)
        task.cancel()
    assert worker.stats().failed >= 2
    assert "flaky_tick" in caplog.text


def test_periodic_and_submitted_tasks_interleave(worker: DeferredWorker) -> None:
    ticked = threading.Event()
    worker.add_periodic(ticked.set, 0.01)
    worker.submit(lambda: None)
    assert ticked.wait(WAIT)
    assert worker.flush(timeout=WAIT)


def test_add_periodic_rejects_bad_interval_and_closed_worker() -> None:
    w = DeferredWorker()
    with pytest.raises(ConfigurationError):
        w.add_periodic(lambda: None, 0)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.add_periodic(lambda: None, 1)


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_queue", 0), ("batch_size", 0), ("put_timeout", -1), ("max_queue", 1.5)],
)
def test_bad_configuration_is_rejected(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        DeferredWorker(**{option: value})  # type: ignore[arg-type]


def test_no_thread_outlives_close_over_many_cycles() -> None:
    before = set(threading.enumerate())
    for _ in range(200):
        w = DeferredWorker()
        ran = threading.Event()
        w.submit(ran.set)
        assert w.close(timeout=WAIT)
        assert ran.is_set()
        assert not w.running
    assert set(threading.enumerate()) == before
    assert _cacheplug_threads() == []


def test_close_drains_queued_tasks() -> None:
    w = DeferredWorker()
    release = threading.Event()
    ran: list[int] = []
    w.submit(release.wait, WAIT)
    for i in range(20):
        w.submit(ran.append, i)
    release.set()
    assert w.close(timeout=WAIT)
    assert ran == list(range(20))


def test_close_twice_and_close_unstarted() -> None:
    w = DeferredWorker()
    assert w.close()
    assert w.close()
    w2 = DeferredWorker()
    w2.submit(lambda: None)
    assert w2.close(timeout=WAIT)
    assert w2.close(timeout=WAIT)
    assert w2.closed


def test_close_times_out_on_a_stuck_task_then_succeeds() -> None:
    w = DeferredWorker()
    started, release = threading.Event(), threading.Event()
    w.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)
    assert not w.close(timeout=0.01)
    release.set()
    assert w.close(timeout=WAIT)
    assert not w.running


def test_submit_after_close_runs_inline_and_is_counted() -> None:
    w = DeferredWorker()
    w.submit(lambda: None)
    assert w.close(timeout=WAIT)
    where: list[str] = []
    w.submit(lambda: where.append(threading.current_thread().name))
    assert where == [threading.current_thread().name]
    stats = w.stats()
    assert stats.inline_runs == 1
    assert stats.submitted == 2
    assert not w.running


def test_inline_failure_does_not_reach_the_submitter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = DeferredWorker()
    w.close()

    def broken_inline() -> None:
        raise KeyError("x")

    with caplog.at_level(logging.ERROR, logger="cacheplug.worker"):
        w.submit(broken_inline)
    assert w.stats().failed == 1
    assert "broken_inline" in caplog.text


def test_close_from_inside_a_task_does_not_deadlock() -> None:
    w = DeferredWorker()
    results: list[bool] = []
    after: list[int] = []
    done, gate = threading.Event(), threading.Event()
    w.submit(lambda: (gate.wait(WAIT), results.append(w.close(timeout=WAIT))))
    w.submit(after.append, 1)  # queued before close: still runs
    w.submit(done.set)
    gate.set()
    assert done.wait(WAIT)
    assert results == [False]
    assert w.closed
    assert w.close(timeout=WAIT)  # joins the thread, which exits on its own
    assert after == [1]
    assert not w.running


def _race_submitters_against_close() -> None:
    w = DeferredWorker(max_queue=8, put_timeout=0.001)
    count = [0]
    lock = threading.Lock()

    def task() -> None:
        with lock:
            count[0] += 1

    go = threading.Event()

    def producer() -> None:
        go.wait(WAIT)
        for _ in range(50):
            w.submit(task)

    threads = [threading.Thread(target=producer) for _ in range(3)]
    for t in threads:
        t.start()
    go.set()
    w.close(timeout=WAIT)
    for t in threads:
        t.join(WAIT)
    assert w.close(timeout=WAIT)
    assert count[0] == 150
    assert w.stats().submitted == 150


def test_concurrent_submit_and_close_loses_nothing() -> None:
    for _ in range(20):
        _race_submitters_against_close()


def test_stats_is_a_frozen_snapshot(worker: DeferredWorker) -> None:
    stats = worker.stats()
    assert isinstance(stats, WorkerStats)
    with pytest.raises(AttributeError):
        stats.submitted = 1  # type: ignore[misc]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_child_gets_a_fresh_worker_after_fork() -> None:
    w = DeferredWorker()
    ran = threading.Event()
    w.submit(ran.set)
    assert w.flush(timeout=WAIT)
    assert ran.is_set()
    assert w.running

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            os.close(read_fd)
            fresh = not w.running and w.stats().submitted == 0
            child_done = threading.Event()
            w.submit(lambda: os.write(write_fd, b"child-task-ran"))
            w.submit(child_done.set)
            ok = fresh and child_done.wait(WAIT) and w.close(timeout=WAIT) and not w.running
        finally:
            os._exit(0 if ok else 1)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        content = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert content == b"child-task-ran"

    # The parent's worker is untouched by the fork.
    again = threading.Event()
    w.submit(again.set)
    assert again.wait(WAIT)
    assert w.close(timeout=WAIT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_closed_worker_stays_closed_in_child() -> None:
    w = DeferredWorker()
    w.submit(lambda: None)
    assert w.close(timeout=WAIT)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            ran: list[int] = []
            w.submit(ran.append, 1)
            ok = w.closed and ran == [1] and not w.running
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_workers_are_not_kept_alive_by_the_fork_registry() -> None:
    import gc
    import weakref

    w = DeferredWorker()
    ref = weakref.ref(w)
    del w
    gc.collect()
    assert ref() is None
