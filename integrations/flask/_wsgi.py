"""The WSGI layer ``init_app`` puts around ``app.wsgi_app``: request scope, early hits, stores.

Three jobs, all at the WSGI level because only there is the response final (Flask saves
the session, and may add ``Set-Cookie`` and ``Vary: Cookie``, after every
``after_request`` hook has run):

* **Request scope.** Every request runs inside ``request_context.scope()``, entered and
  reset by a ``with`` around the whole Flask call, so it is reset however the view ends.
* **Early hits.** A ``@plug.cached`` view that answered a ``(scheme, host, script,
  path)`` once is recorded in the app's *early index*; the next GET/HEAD for it is looked
  up and, on a hit, answered from ready-to-send pieces before Flask builds a request.
* **Stores.** The decorator leaves a :class:`StorePlan` in the environ; this layer
  captures status and headers in ``start_response`` and adds ``X-Cache``. If the shared
  policy allows storing, it reads a body of declared length (``Content-Length``, every
  non-streamed Flask response) at once and stores it; a streamed body is buffered as it
  goes out and stored when it ends. Either way what is stored is exactly what the
  server sends, after every ``after_request`` hook and the session save.

RFC 5861: an early lookup that finds only a stale entry inside its
``stale-while-revalidate`` window answers with it (``X-Cache: STALE``) and refreshes it
from the body's ``close()``, after the server sent it (:mod:`._refresh`). An entry
inside its ``stale-if-error`` window is left to the view (:mod:`.decorators`), which
alone sees the view fail.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import ClosingIterator

from cacheplug.context import request_context
from cacheplug.http import (
    X_CACHE,
    X_CACHE_STALE,
    BodyBuffer,
    HttpCachePolicy,
    StoreDecision,
    select_stale,
    within_stale_while_revalidate,
)

# The refresh and the store pieces are re-exported: this module was their home.
from ._refresh import _REFRESHING as _REFRESHING
from ._refresh import REFRESH, refresh_stale
from ._store import (
    STORE_PLAN,
    EnvironHeaders,
    StartResponse,
    StorePlan,
    WSGIApp,
    content_length,
    store_entry,
)
from ._store import store_variant as store_variant

if TYPE_CHECKING:
    from .extension import FlaskPlugState

__all__ = (
    "EARLY_SLOT",
    "REFRESH",
    "STORE_PLAN",
    "CachePlugWSGI",
    "EnvironHeaders",
    "OriginKeys",
    "StorePlan",
    "refresh_stale",
    "sorted_query",
)

#: The environ key of the request's early slot as the WSGI layer saw it (before any
#: middleware inside ``app.wsgi_app`` could rewrite scheme, host or path).
EARLY_SLOT = "cacheplug.early_slot"
_EARLY_INDEX_MAX = 10_000
_MOUNTED = "cacheplug.mounted"
_ORIGIN_MEMO_MAX = 1024


def _status_lines() -> dict[int, str]:
    from werkzeug.http import HTTP_STATUS_CODES

    return {code: f"{code} {HTTP_STATUS_CODES.get(code, 'UNKNOWN')}" for code in range(100, 600)}


_STATUS_LINE = _status_lines()


def sorted_query(query: str) -> str:
    """Sort ``a=1&b=2`` parameters by name (stable for repeats) and drop empty ones.

    Both the early path and the decorator build cache keys with it, so they agree.
    """
    if "&" not in query:
        return query
    params = [p for p in query.split("&") if p]
    params.sort(key=lambda p: p.partition("=")[0])
    return "&".join(params)


def early_slot(environ: Mapping[str, Any]) -> tuple[Any, ...]:
    """The early index's key for a request: what must match for the same view to answer.

    Scheme, authority (the ``Host`` header, else the server's name and port), script
    root and path: every input of a ``@cached`` view's key except the query string.
    """
    return (
        environ.get("wsgi.url_scheme"),
        environ.get("HTTP_HOST") or (environ.get("SERVER_NAME"), environ.get("SERVER_PORT")),
        environ.get("SCRIPT_NAME", ""),
        environ.get("PATH_INFO", ""),
    )


class OriginKeys:
    """Memoized ``scheme://host[:port]<script root>`` of requests: the key's origin part.

    Built with the shared policy's :meth:`~cacheplug.http.HttpCachePolicy.primary_key`
    (scheme and host lowercased, default port dropped, an invalid authority gives
    ``None``). The script root has ``%`` and ``|`` escaped so the ``|`` that ends the
    origin in a view key is unambiguous. Bounded: the ``Host`` header is client input.
    Thread-safe (a racing fill computes the same value twice).
    """

    __slots__ = ("_memo", "_policy")

    def __init__(self, policy: HttpCachePolicy) -> None:
        self._policy = policy
        self._memo: dict[tuple[Any, ...], str | None] = {}

    def __call__(self, environ: Mapping[str, Any]) -> str | None:
        slot = (
            environ.get("wsgi.url_scheme"),
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ.get("SCRIPT_NAME", ""),
        )
        try:
            return self._memo[slot]
        except KeyError:
            pass
        scheme, host, server_name, server_port, script = slot
        server = f"{server_name}:{server_port}" if server_name else None
        url = self._policy.primary_key(scheme or "http", host, "/", server=server)
        origin = None
        if url is not None and isinstance(script, str):
            origin = url[:-1] + script.replace("%", "%25").replace("|", "%7C")
        if len(self._memo) >= _ORIGIN_MEMO_MAX:
            self._memo.clear()
        self._memo[slot] = origin
        return origin


class CachePlugWSGI:
    """Wraps ``app.wsgi_app``: request scope, early hits and response stores (see module).

    Thread-safe: it keeps no per-request state on itself.
    """

    def __init__(self, wsgi_app: WSGIApp, state: FlaskPlugState) -> None:
        self.wsgi_app = wsgi_app
        self.state = state
        self._mounted: tuple[str, ...] = ()
        self._mount_app: WSGIApp | None = None

    def mount(self, prefixes: tuple[str, ...], app: WSGIApp) -> None:
        """Send requests whose path starts with one of ``prefixes`` to ``app`` first.

        ``app`` (the dashboard and ``/metrics``) wraps this layer and passes the paths
        it does not claim back to it, which then serves them as usual.
        """
        self._mounted = prefixes
        self._mount_app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        state = self.state
        if not state.started:
            state.start()
        if (
            self._mounted
            and environ.get("PATH_INFO", "").startswith(self._mounted)
            and _MOUNTED not in environ
        ):
            # The mounted app hands a path it does not claim back to this layer.
            environ[_MOUNTED] = True
            return self._mount_app(environ, start_response)  # type: ignore[misc]
        if state.early_hits:
            raw_slot = environ[EARLY_SLOT] = early_slot(environ)
            if state.early_index:
                method = environ.get("REQUEST_METHOD")
                if method == "GET" or method == "HEAD":
                    slot = state.early_index.get(raw_slot)
                    if slot is not None:
                        served = self._early_hit(environ, start_response, slot, method)
                        if served is not None:
                            return served
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            plan = environ.get(STORE_PLAN)
            if plan is not None:
                headers = [*headers, (X_CACHE, plan.decision.x_cache)]
                captured.append((status, headers))
            return start_response(status, headers, exc_info)

        with request_context.scope():
            app_iter = self.wsgi_app(environ, capture)
        plan = environ.get(STORE_PLAN)
        if plan is None or not captured:
            return app_iter
        status_line, headers = captured[-1]
        try:
            status = int(status_line[:3])
        except ValueError:
            return app_iter
        if plan.decision.invalidate:
            if status < 400:  # RFC 9111 §4.4: a successful unsafe request invalidates
                state.runtime.cache.delete(plan.key)
            return app_iter
        if not plan.decision.store:
            return app_iter
        request_headers = EnvironHeaders(environ)
        now = plan.policy.clock()
        decision = plan.policy.response_store_decision(status, headers, request_headers, now)
        if not decision.store:
            return app_iter
        length = content_length(headers)
        if length is not None and length <= plan.policy.max_body_bytes:
            # A body of declared, bounded size (every non-streamed Flask response): read
            # it now and store it as the request ends, not when (and only if) the server
            # finishes iterating it. A short body (HEAD, a lying generator) is not stored.
            try:
                body = b"".join(app_iter)
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
            if len(body) == length:
                cache = state.runtime.cache
                store_entry(cache, plan, status, headers, body, request_headers, decision)
            return [body]
        return self._stream_and_store(app_iter, plan, status, headers, request_headers, decision)

    def _early_hit(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        slot: tuple[str, bool],
        method: str,
    ) -> Iterable[bytes] | None:
        key, with_query = slot
        if with_query:
            query = environ.get("QUERY_STRING")
            if query:
                key = f"{key}?{sorted_query(query)}"
        variants = self.state.runtime.cache.get(key)
        if type(variants) is not tuple:
            return None
        policy = self.state.policy
        headers = EnvironHeaders(environ)
        decision = policy.request_decision(method, headers)
        if not decision.lookup:
            return None
        now = policy.clock()
        entry = policy.select(variants, headers, decision, now)
        if entry is None:
            # Only after select() said no, so a hit costs nothing more. Outside the
            # stale-while-revalidate window the view answers (and applies stale-if-error).
            entry = select_stale(variants, headers, decision, now)
            if entry is None or not within_stale_while_revalidate(entry, now):
                return None
            status, response_headers, body = entry.respond(
                headers, now, head=method == "HEAD", x_cache=X_CACHE_STALE
            )
            start_response(_STATUS_LINE[status], response_headers)
            # The server calls close() once the body is out: the refresh runs then, in
            # this thread, through the app this layer wraps, with the environ as it came.
            refresh = functools.partial(refresh_stale, self.wsgi_app, environ, self.state, key)
            return ClosingIterator([body], refresh)
        status, response_headers, body = entry.respond(headers, now, head=method == "HEAD")
        start_response(_STATUS_LINE[status], response_headers)
        return [body]

    def _stream_and_store(
        self,
        app_iter: Iterable[bytes],
        plan: StorePlan,
        status: int,
        headers: list[tuple[str, str]],
        request_headers: Mapping[str, str],
        decision: StoreDecision,
    ) -> Iterator[bytes]:
        """Yield the body through, then store it once it has been sent in full."""
        policy = plan.policy
        buffer = BodyBuffer(policy.max_body_bytes)
        try:
            for chunk in app_iter:
                buffer.feed(chunk)
                yield chunk
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        # Reached only when the body ran to its end (not on a client disconnect).
        if not buffer.overflowed:
            cache = self.state.runtime.cache
            store_entry(cache, plan, status, headers, buffer.body, request_headers, decision)
