"""The invalidation subscriber: one thread and one pub/sub connection per process.

It listens on the namespace's channel and hands every message to the tier. When the
connection drops it reconnects by itself (with backoff, interruptible by ``stop()``);
messages published while it was away are lost, so after every re-subscription it calls
``on_resubscribe`` and the tier flushes its local copies. A periodic ``PING`` detects a
connection that died without closing (no FIN), bounded by the socket timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ("Subscriber",)

logger = logging.getLogger("cacheplug.tier")

_POLL = 0.2  # seconds between stop checks while idle
_PING_EVERY = 1.0


class Subscriber:
    """Run the subscribe loop on a daemon thread named ``cacheplug-redis-<name>``.

    :param connect: returns a new redis-py client (its pubsub() is used).
    :param channel: the channel to subscribe to.
    :param on_message: called with each message's bytes, on the subscriber thread.
    :param on_resubscribe: called after a re-subscription (not the first one).
    :param on_error: called with the exception when the connection fails.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        channel: str,
        on_message: Callable[[bytes], None],
        on_resubscribe: Callable[[], None],
        on_error: Callable[[BaseException], None],
        *,
        name: str,
        max_backoff: float = 2.0,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._on_message = on_message
        self._on_resubscribe = on_resubscribe
        self._on_error = on_error
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"cacheplug-redis-{name}", daemon=True
        )
        #: subscriptions made so far (1 + reconnections)
        self.subscriptions = 0
        #: messages received (including our own, which the tier ignores)
        self.received = 0
        #: connections lost or refused; messages may have been missed at each one
        self.lost = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the first subscription is confirmed; False on timeout."""
        return self._subscribed.wait(timeout)

    @property
    def subscribed(self) -> bool:
        """Whether a subscription is live right now."""
        return self._subscribed.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and join it (bounded by the poll interval + socket timeout)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            client = pubsub = None
            try:
                client = self._connect()
                pubsub = client.pubsub()
                pubsub.subscribe(self._channel)
                backoff = 0.05
                self._listen(pubsub)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._subscribed.clear()
                self.lost += 1
                self._on_error(exc)
                logger.debug("cacheplug subscriber: %s; reconnecting in %.2fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                self._subscribed.clear()
                for closable in (pubsub, client):
                    if closable is not None:
                        try:
                            closable.close()
                        except Exception:
                            pass

    def _listen(self, pubsub: Any) -> None:
        last_ping = last_seen = time.monotonic()
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=_POLL)
            now = time.monotonic()
            if message is not None:
                last_seen = now
                kind = message["type"]
                if kind == "message":
                    self.received += 1
                    self._on_message(message["data"])
                elif kind == "subscribe":
                    self.subscriptions += 1
                    if self.subscriptions > 1:
                        self._on_resubscribe()
                    self._subscribed.set()
            if now - last_ping >= _PING_EVERY:
                if now - last_seen > 3 * _PING_EVERY:
                    raise ConnectionError("no reply to PING on the pub/sub connection")
                pubsub.ping()
                last_ping = now
