"""What the adapters share to refresh a ``stale-while-revalidate`` entry (RFC 5861 §3).

The Django and Flask page caches serve the stale entry at once and refresh it in the
request's own thread after the response went out (from the response's ``close()``).
Two things are the same for both and live here: :class:`RefreshGuard`, the set of keys
being refreshed in this process (single-flight), and :func:`refresh_environ`, the
request the refresh sends: a GET for the same URL without the client's conditional,
range and cache-control headers, so the app answers with the full, current response.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping
from typing import Any, Final

__all__ = ("REFRESH_DROPPED_HEADERS", "RefreshGuard", "refresh_environ")

#: Request headers a refresh drops (lowercase names): it must fetch the full, current
#: representation, not a 304, a range, or whatever the client allowed to be stale.
REFRESH_DROPPED_HEADERS: Final = frozenset(
    {
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
        "range",
        "cache-control",
        "pragma",
    }
)
_DROPPED_ENVIRON: Final = frozenset(
    "HTTP_" + name.upper().replace("-", "_") for name in REFRESH_DROPPED_HEADERS
)


def refresh_environ(environ: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of a WSGI environ (or Django's ``request.META``) for a refresh.

    ``REQUEST_METHOD`` becomes ``GET`` (a HEAD is refreshed with a GET, which is what
    gets stored) and the :data:`REFRESH_DROPPED_HEADERS` are removed; every other key,
    cookies included, is kept, so the app sees the request it answered before. Pure.
    """
    copy = {key: value for key, value in environ.items() if key not in _DROPPED_ENVIRON}
    copy["REQUEST_METHOD"] = "GET"
    return copy


class RefreshGuard:
    """The keys being refreshed in this process: at most one refresh per key at a time.

    An adapter calls :meth:`claim` before it refreshes a key and :meth:`release` in a
    ``finally``; a caller whose claim fails skips its refresh. Thread-safe.
    """

    __slots__ = ("_keys", "_lock")

    def __init__(self) -> None:
        self._keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def claim(self, key: Hashable) -> bool:
        """True if ``key`` was free and is now held by the caller; False if it is held."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: Hashable) -> None:
        """Free ``key`` (a no-op if it is not held)."""
        with self._lock:
            self._keys.discard(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<RefreshGuard refreshing={len(self._keys)}>"
