"""Shared fixtures: a fake clock, and a guard that no test leaks a thread."""

from __future__ import annotations

import threading

import pytest

from tests.redis_support import own_redis, redis_prefix, redis_url  # noqa: F401


class FakeTimer:
    """A monotonic clock that moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves a cacheplug thread running after it returns."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith("cacheplug")
    ]
    for thread in leaked:  # give a closing thread a moment to finish
        thread.join(timeout=2.0)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads outlived the test: {leaked}"
