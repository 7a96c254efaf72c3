"""The deferred worker's states, its queue's control markers, and task names for logs.

A task in the queue is a ``(fn, args)`` tuple; anything else is a :class:`Marker`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ("CLOSED", "NEW", "RUNNING", "STOP", "WAKE", "FlushMarker", "Marker", "task_name")

NEW, RUNNING, CLOSED = "new", "running", "closed"


class Marker:
    """A control item in the queue (stop, wake-up); never counted as a task."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


STOP = Marker("stop")
WAKE = Marker("wake")


class FlushMarker(Marker):
    """Set when the worker reaches it, that is once every task queued before it has run."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        super().__init__("flush")
        self.done = threading.Event()


def task_name(fn: Callable[..., object]) -> str:
    """Return ``module.qualname`` of ``fn`` for log messages, or its repr."""
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else qualname
