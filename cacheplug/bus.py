"""The event bus: publish blinker signals now, deliver them on the deferred worker.

:meth:`EventBus.publish` is on the request path (every delete publishes), so it returns
at once and costs almost nothing when a signal has no receivers. Delivery happens on
the :class:`~cacheplug.worker.DeferredWorker` thread, where a failing receiver is
logged, counted and reported through :data:`cacheplug.events.receiver_failed` without
stopping the receivers after it.
"""

from __future__ import annotations

import logging
import threading
from inspect import iscoroutinefunction
from typing import Any

from blinker import Signal

from cacheplug.events import receiver_failed
from cacheplug.worker import DeferredWorker

__all__ = ("EventBus",)

logger = logging.getLogger("cacheplug.bus")


def _receiver_name(receiver: object) -> str:
    """Return ``module.qualname`` of ``receiver`` for log messages, or its repr."""
    qualname = getattr(receiver, "__qualname__", None)
    if qualname is None:
        return repr(receiver)
    module = getattr(receiver, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def _signal_name(signal: Signal) -> str:
    return getattr(signal, "name", None) or repr(signal)


class EventBus:
    """Deliver blinker signals asynchronously, on a :class:`DeferredWorker`'s thread.

    Receivers connect with blinker's own API (``events.cache_deleted.connect(fn)``) and
    are called as ``receiver(sender, **kwargs)`` on the worker thread, in publish order
    while the worker's queue has room (under back-pressure the worker may run a
    delivery inline on the publishing thread; see :class:`DeferredWorker`). Receivers
    must be synchronous functions: a coroutine function is not called; each attempt is
    logged as an error and counted in :attr:`receiver_errors`.

    Which receivers run is decided at delivery time, except that a signal with no
    receivers for ``sender``, or muted with :meth:`blinker.Signal.muted`, when
    :meth:`publish` is called is dropped there.

    Thread-safe.

    :param worker: The worker that runs deliveries. The bus does not own it: whoever
        created the worker closes it.

    .. versionadded:: 0.1
    """

    def __init__(self, worker: DeferredWorker) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._receiver_errors = 0

    @property
    def worker(self) -> DeferredWorker:
        """The worker this bus delivers on."""
        return self._worker

    @property
    def receiver_errors(self) -> int:
        """How many receiver calls raised, or were skipped as coroutine functions."""
        return self._receiver_errors

    def publish(self, signal: Signal, sender: Any, /, **kwargs: Any) -> None:
        """Queue ``signal`` for delivery to its receivers; returns at once, never raises.

        Does nothing, and queues nothing, if ``signal`` has no receivers for
        ``sender`` or is muted. Thread-safe.

        :param signal: The blinker signal to send, usually one from
            :mod:`cacheplug.events`.
        :param sender: Passed to each receiver as its first positional argument.
        :param kwargs: Passed to each receiver as keyword arguments.
        """
        if not signal.receivers:
            return
        # is_muted is absent before blinker 1.8; pyproject allows 1.7.
        if getattr(signal, "is_muted", False) or not signal.has_receivers_for(sender):
            return
        self._worker.submit(self._deliver, signal, sender, kwargs)

    def _deliver(self, signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
        """Call every receiver of ``signal`` for ``sender``; one failing stops none."""
        for receiver in signal.receivers_for(sender):
            if iscoroutinefunction(receiver):
                self._count_error()
                logger.error(
                    "cacheplug skipped async receiver %s of signal %s: the event bus "
                    "calls receivers on a worker thread without an event loop; "
                    "connect a plain (sync) function instead",
                    _receiver_name(receiver),
                    _signal_name(signal),
                )
                continue
            try:
                receiver(sender, **kwargs)
            except Exception as exc:
                self._count_error()
                logger.exception(
                    "cacheplug receiver %s of signal %s failed",
                    _receiver_name(receiver),
                    _signal_name(signal),
                )
                # A failing receiver_failed receiver is logged, never re-reported.
                if signal is not receiver_failed and receiver_failed.receivers:
                    self._deliver(
                        receiver_failed,
                        self,
                        {"receiver": receiver, "signal": signal, "exception": exc},
                    )

    def _count_error(self) -> None:
        with self._lock:
            self._receiver_errors += 1

    def __repr__(self) -> str:
        return f"<EventBus worker={self._worker!r} receiver_errors={self._receiver_errors}>"
