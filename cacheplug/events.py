"""The signals cacheplug emits, declared in one blinker :class:`~blinker.Namespace`.

Connect with blinker's own API::

    from cacheplug import events

    @events.cache_deleted.connect
    def on_delete(sender, key):
        ...

Every receiver is called as ``receiver(sender, **kwargs)`` with the keyword arguments
listed above each signal. cacheplug publishes these signals through
:class:`cacheplug.bus.EventBus`, so receivers run later, on the deferred worker's
thread, never inside the request that caused the event; see ``docs/events.md``.
Receivers connected with the default ``weak=True`` are dropped when they are garbage
collected, as with any blinker signal.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = (
    "cache_cleared",
    "cache_deleted",
    "cache_evicted",
    "cache_expired",
    "cache_set",
    "receiver_failed",
    "signals",
    "state_loaded",
    "state_saved",
    "tags_invalidated",
)

#: The namespace holding every cacheplug signal, keyed by signal name.
signals = Namespace()

#: An entry was stored. Sender: the cache. Keyword arguments: ``key`` (the stored key),
#: ``version`` (the entry's version), ``ttl`` (seconds to live, or ``None`` for no
#: expiry) and ``tags`` (a frozenset of tag names, possibly empty).
cache_set = signals.signal("cache-set")

#: An entry was deleted explicitly. Sender: the cache. Keyword arguments: ``key``.
cache_deleted = signals.signal("cache-deleted")

#: An entry was evicted to make room. Sender: the cache. Keyword arguments: ``key``.
cache_evicted = signals.signal("cache-evicted")

#: An entry was removed because its time to live ran out. Sender: the cache.
#: Keyword arguments: ``key``.
cache_expired = signals.signal("cache-expired")

#: Tags were invalidated; entries carrying them now read as misses. Sender: the cache.
#: Keyword arguments: ``tags`` (a frozenset of tag names).
tags_invalidated = signals.signal("tags-invalidated")

#: Every entry was removed. Sender: the cache. No keyword arguments.
cache_cleared = signals.signal("cache-cleared")

#: Saved state was loaded at startup. Sender: the state store. Keyword arguments:
#: ``entries`` (how many live entries were restored) and ``seconds`` (how long it took).
state_loaded = signals.signal("state-loaded")

#: State was saved. Sender: the state store. Keyword arguments: ``entries`` (how many
#: entries were written) and ``seconds`` (how long it took).
state_saved = signals.signal("state-saved")

#: A receiver raised while the event bus delivered a signal. Sender: the
#: :class:`~cacheplug.bus.EventBus`. Keyword arguments: ``receiver`` (the callable that
#: raised), ``signal`` (the signal being delivered) and ``exception`` (what it raised).
#: A receiver of this signal that raises is logged and counted, never re-reported.
receiver_failed = signals.signal("receiver-failed")
