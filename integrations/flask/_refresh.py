"""RFC 5861 stale-while-revalidate for Flask: refresh a stale page after it was sent.

The WSGI layer's early lookup (:mod:`._wsgi`) and ``@cached`` (:mod:`.decorators`)
answer with a stale entry inside its ``stale-while-revalidate`` window and call
:func:`refresh_stale` from the body's ``close()``, once the server sent it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from cacheplug.context import request_context
from cacheplug.http import BodyBuffer, RefreshGuard, refresh_environ

from ._store import (
    STORE_PLAN,
    EnvironHeaders,
    StorePlan,
    WSGIApp,
    content_length,
    store_entry,
)

if TYPE_CHECKING:
    from .extension import FlaskPlugState

__all__ = ("REFRESH", "refresh_stale")

logger = logging.getLogger("cacheplug.integrations.flask")

#: The environ key that marks a ``stale-while-revalidate`` refresh: ``@cached`` then
#: never answers with the stale entry it is refreshing.
REFRESH = "cacheplug.refresh"
#: ``(cache id, key)`` of the views being refreshed in this process: one refresh per key.
_REFRESHING: Final = RefreshGuard()
#: Environ keys a refresh does not inherit: cacheplug's per-request marks, and the
#: objects Werkzeug and Flask hang on the environ (the request, a test client's
#: context-preserving hook).
_REQUEST_PRIVATE: Final = ("cacheplug.", "werkzeug.")


def refresh_stale(
    wsgi_app: WSGIApp, environ: Mapping[str, Any], state: FlaskPlugState, key: str
) -> None:
    """Refresh the stale entry under ``key`` now, unless a refresh of it is running.

    Called from the ``close()`` of the stale response, in the thread that served it,
    after the server sent it; never raises. ``wsgi_app`` (the app below this layer, or
    Flask's own ``wsgi_app``) gets a copy of ``environ``: a GET without conditional and
    cache-control headers, marked :data:`REFRESH`. The ``@cached`` view leaves its
    :class:`StorePlan` as on any miss, and the response is stored by the same rules,
    unless it is a 5xx: a failed refresh stores nothing, and the stale entry is served
    until its window ends. The key is claimed here rather than when the stale response
    was built, so a response whose ``close()`` never comes cannot block its key; the
    freshness check after the claim keeps a later stale response from refreshing again.
    """
    cache = state.runtime.cache
    guard = (id(cache), key)
    if not _REFRESHING.claim(guard):
        return
    try:
        fresh = _refresh_environ(environ)
        headers = EnvironHeaders(fresh)
        decision = state.policy.request_decision("GET", headers)
        variants = cache.get(key)
        if type(variants) is tuple and state.policy.select(variants, headers, decision):
            return  # an earlier request's refresh already stored a fresh copy
        _run_refresh(wsgi_app, fresh, cache, key)
    except Exception:
        logger.warning(
            "cacheplug: refreshing the stale page %s failed; it is served stale until its "
            "stale-while-revalidate window ends",
            key,
            exc_info=True,
        )
    finally:
        _REFRESHING.release(guard)


def _refresh_environ(environ: Mapping[str, Any]) -> dict[str, Any]:
    fresh = {
        name: value
        for name, value in refresh_environ(environ).items()
        if not name.startswith(_REQUEST_PRIVATE)
    }
    fresh.pop("CONTENT_LENGTH", None)
    fresh.pop("CONTENT_TYPE", None)
    fresh["wsgi.input"] = io.BytesIO()
    fresh[REFRESH] = True
    return fresh


def _ignore_write(data: bytes) -> None:
    """The ``write`` callable a refresh's ``start_response`` returns: nobody reads it."""


def _run_refresh(wsgi_app: WSGIApp, environ: dict[str, Any], cache: Any, key: str) -> None:
    """Call the app for a refresh, read the whole body, store it if the policy allows."""
    captured: list[tuple[str, list[tuple[str, str]]]] = []

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.append((status, list(headers)))
        return _ignore_write

    with request_context.scope():
        app_iter = wsgi_app(environ, capture)
    plan: StorePlan | None = environ.get(STORE_PLAN)
    buffer = BodyBuffer(plan.policy.max_body_bytes if plan is not None else 0)
    try:
        for chunk in app_iter:
            if not buffer.feed(chunk):
                break
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
    if plan is None or not plan.decision.store or not captured or buffer.overflowed:
        logger.debug("cacheplug: the refresh of %s gave nothing to store", key)
        return
    status_line, headers = captured[-1]
    status = int(status_line[:3])
    if status >= 500:  # an error must not replace the stale copy it was to refresh
        logger.warning("cacheplug: refreshing the stale page %s answered %d", key, status)
        return
    length = content_length(headers)
    request_headers = EnvironHeaders(environ)
    decision = plan.policy.response_store_decision(status, headers, request_headers)
    if not decision.store or (length is not None and length != buffer.size):
        logger.debug("cacheplug: the refresh of %s answered %d, not storable", key, status)
        return
    store_entry(cache, plan, status, headers, buffer.body, request_headers, decision)
