"""EventBus: deferred delivery on the worker thread, isolation of failing receivers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from blinker import NamedSignal

from cacheplug import events
from cacheplug.bus import EventBus
from cacheplug.worker import DeferredWorker

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0


@pytest.fixture
def worker() -> Iterator[DeferredWorker]:
    w = DeferredWorker()
    yield w
    assert w.close(timeout=WAIT)


@pytest.fixture
def bus(worker: DeferredWorker) -> EventBus:
    return EventBus(worker)


@pytest.fixture
def signal(request: pytest.FixtureRequest) -> NamedSignal:
    """A fresh signal per test, outside any namespace, so receivers never leak."""
    return NamedSignal(f"test-{request.node.name}")


def test_publish_returns_before_a_slow_receiver_finishes(
    bus: EventBus, worker: DeferredWorker
) -> None:
    release, finished = threading.Event(), threading.Event()
    calls: list[tuple[object, dict[str, object]]] = []

    def slow_receiver(sender: object, **kwargs: object) -> None:
        release.wait(WAIT)
        calls.append((sender, kwargs))
        finished.set()

    sender = object()
    with events.cache_deleted.connected_to(slow_receiver):
        bus.publish(events.cache_deleted, sender, key="k1")
        assert not finished.is_set()  # publish returned while the receiver waits
        release.set()
        assert finished.wait(WAIT)
    assert calls == [(sender, {"key": "k1"})]


def test_receivers_run_on_the_worker_thread(bus: EventBus, worker: DeferredWorker) -> None:
    names: list[str] = []

    def receiver(sender: object, **kwargs: object) -> None:
        names.append(threading.current_thread().name)

    with events.cache_set.connected_to(receiver):
        bus.publish(events.cache_set, None, key="k", version=1, ttl=None, tags=frozenset())
        assert worker.flush(timeout=WAIT)
    assert names == ["cacheplug-worker"]


def test_no_receivers_enqueues_nothing(
    bus: EventBus, worker: DeferredWorker, signal: NamedSignal
) -> None:
    assert not signal.receivers
    bus.publish(signal, None, key="k")
    stats = worker.stats()
    assert stats.submitted == 0
    assert not worker.running  # not even started


def test_receiver_for_another_sender_enqueues_nothing(
    bus: EventBus, worker: DeferredWorker, signal: NamedSignal
) -> None:
    mine, other = object(), object()
    got: list[object] = []
    signal.connect(lambda sender, **kw: got.append(sender), sender=mine, weak=False)
    bus.publish(signal, other)
    assert worker.stats().submitted == 0
    bus.publish(signal, mine)
    assert worker.flush(timeout=WAIT)
    assert got == [mine]


def test_muted_signal_enqueues_nothing(
    bus: EventBus, worker: DeferredWorker, signal: NamedSignal
) -> None:
    signal.connect(lambda sender, **kw: None, weak=False)
    with signal.muted():
        bus.publish(signal, None)
    assert worker.stats().submitted == 0


def test_failing_receiver_is_isolated_logged_counted_and_reported(
    bus: EventBus,
    worker: DeferredWorker,
    signal: NamedSignal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good_calls: list[dict[str, object]] = []
    failures: list[dict[str, object]] = []
    error = RuntimeError("receiver broke")

    def exploding_receiver(sender: object, **kwargs: object) -> None:
        raise error

    def good_receiver(sender: object, **kwargs: object) -> None:
        good_calls.append(kwargs)

    def on_failure(sender: object, **kwargs: object) -> None:
        assert sender is bus
        failures.append(kwargs)

    signal.connect(exploding_receiver)
    signal.connect(good_receiver)
    with (
        events.receiver_failed.connected_to(on_failure),
        caplog.at_level(logging.ERROR, logger="cacheplug.bus"),
    ):
        bus.publish(signal, None, key="a")
        bus.publish(signal, None, key="b")
        assert worker.flush(timeout=WAIT)

    # Receiver order is undefined; every publish still reached the good receiver.
    assert good_calls == [{"key": "a"}, {"key": "b"}]
    assert bus.receiver_errors == 2
    assert failures == [
        {"receiver": exploding_receiver, "signal": signal, "exception": error},
        {"receiver": exploding_receiver, "signal": signal, "exception": error},
    ]
    records = [r for r in caplog.records if r.name == "cacheplug.bus"]
    assert len(records) == 2
    assert all("exploding_receiver" in r.getMessage() for r in records)
    assert all(r.exc_info is not None and r.exc_info[1] is error for r in records)
    assert worker.stats().failed == 0  # the bus caught it; the task itself succeeded


def test_failing_receiver_failed_receiver_does_not_recurse(
    bus: EventBus,
    worker: DeferredWorker,
    signal: NamedSignal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[object] = []

    def exploding_receiver(sender: object, **kwargs: object) -> None:
        raise ValueError("first")

    def broken_failure_handler(sender: object, **kwargs: object) -> None:
        reports.append(kwargs["receiver"])
        raise ValueError("second")

    signal.connect(exploding_receiver)
    with (
        events.receiver_failed.connected_to(broken_failure_handler),
        caplog.at_level(logging.ERROR, logger="cacheplug.bus"),
    ):
        bus.publish(signal, None)
        assert worker.flush(timeout=WAIT)
    assert reports == [exploding_receiver]
    assert bus.receiver_errors == 2
    assert "broken_failure_handler" in caplog.text
    assert worker.stats().failed == 0


def test_async_receiver_is_skipped_with_an_error(
    bus: EventBus,
    worker: DeferredWorker,
    signal: NamedSignal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sync_calls: list[object] = []

    async def async_receiver(sender: object, **kwargs: object) -> None:  # pragma: no cover
        raise AssertionError("must not be called")

    signal.connect(async_receiver)
    signal.connect(lambda sender, **kw: sync_calls.append(sender), weak=False)
    with caplog.at_level(logging.ERROR, logger="cacheplug.bus"):
        bus.publish(signal, "s")
        assert worker.flush(timeout=WAIT)
    assert sync_calls == ["s"]
    assert bus.receiver_errors == 1
    assert "async_receiver" in caplog.text
    assert "sync" in caplog.text


def test_events_are_delivered_in_publish_order(
    bus: EventBus, worker: DeferredWorker, signal: NamedSignal
) -> None:
    keys: list[int] = []
    signal.connect(lambda sender, key: keys.append(key), weak=False)
    for i in range(100):
        bus.publish(signal, None, key=i)
    assert worker.flush(timeout=WAIT)
    assert keys == list(range(100))


def test_publish_after_close_delivers_inline(worker: DeferredWorker, signal: NamedSignal) -> None:
    bus = EventBus(worker)
    got: list[str] = []
    signal.connect(lambda sender, **kw: got.append(threading.current_thread().name), weak=False)
    assert worker.close(timeout=WAIT)
    bus.publish(signal, None)
    assert got == [threading.current_thread().name]


def test_signals_are_declared_in_one_namespace() -> None:
    expected = {
        "cache_set",
        "cache_deleted",
        "cache_evicted",
        "cache_expired",
        "tags_invalidated",
        "cache_cleared",
        "state_loaded",
        "state_saved",
        "receiver_failed",
    }
    for name in expected:
        sig = getattr(events, name)
        assert events.signals[sig.name] is sig
    assert len(events.signals) == len(expected)
