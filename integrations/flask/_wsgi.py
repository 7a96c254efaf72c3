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
from the body's ``close()``, after the server sent it (:func:`refresh_stale`). An entry
inside its ``stale-if-error`` window is left to the view (:mod:`.decorators`), which
alone sees the view fail.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from werkzeug.wsgi import ClosingIterator

from cacheplug.context import request_context
from cacheplug.http import (
    X_CACHE,
    X_CACHE_STALE,
    BodyBuffer,
    CachedResponse,
    HttpCachePolicy,
    RefreshGuard,
    RequestDecision,
    StoreDecision,
    add_variant,
    refresh_environ,
    select_stale,
    variants_ttl,
    within_stale_while_revalidate,
)

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

logger = logging.getLogger("cacheplug.integrations.flask")

#: The environ key under which ``@cached`` leaves its :class:`StorePlan`.
STORE_PLAN = "cacheplug.store_plan"
#: The environ key of the request's early slot as the WSGI layer saw it (before any
#: middleware inside ``app.wsgi_app`` could rewrite scheme, host or path).
EARLY_SLOT = "cacheplug.early_slot"
#: The environ key that marks a ``stale-while-revalidate`` refresh: ``@cached`` then
#: never answers with the stale entry it is refreshing.
REFRESH = "cacheplug.refresh"
#: ``(cache id, key)`` of the views being refreshed in this process: one refresh per key.
_REFRESHING: Final = RefreshGuard()
#: Environ keys a refresh does not inherit: cacheplug's per-request marks, and the
#: objects Werkzeug and Flask hang on the environ (the request, a test client's
#: context-preserving hook).
_REQUEST_PRIVATE: Final = ("cacheplug.", "werkzeug.")
_EARLY_INDEX_MAX = 10_000
_MOUNTED = "cacheplug.mounted"
_ORIGIN_MEMO_MAX = 1024

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _status_lines() -> dict[int, str]:
    from werkzeug.http import HTTP_STATUS_CODES

    return {code: f"{code} {HTTP_STATUS_CODES.get(code, 'UNKNOWN')}" for code in range(100, 600)}


_STATUS_LINE = _status_lines()
_ENVIRON_NAMES: dict[str, str] = {
    "content-type": "CONTENT_TYPE",
    "content-length": "CONTENT_LENGTH",
}


def _environ_name(name: str) -> str:
    """``"accept-encoding"`` -> ``"HTTP_ACCEPT_ENCODING"`` (memoized: few names recur)."""
    key = _ENVIRON_NAMES.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_NAMES) < 1024:
            _ENVIRON_NAMES[name] = key
    return key


class EnvironHeaders(Mapping[str, str]):
    """A read-only view of a WSGI environ as the policy's request-header mapping.

    Same names and values as :func:`cacheplug.http.request_headers_from_environ`, but
    nothing is copied: a lookup reads one environ key, which keeps the hit path cheap.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:  # the hot path: no exceptions
        value = self._environ.get(_environ_name(name))
        if value is None or not isinstance(value, str):
            return default
        return value.strip(" \t")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if not isinstance(value, str):
                continue
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def sorted_query(query: str) -> str:
    """Sort ``a=1&b=2`` parameters by name (stable for repeats) and drop empty ones.

    Both the early path and the decorator build cache keys with it, so they agree.
    """
    if "&" not in query:
        return query
    params = [p for p in query.split("&") if p]
    params.sort(key=lambda p: p.partition("=")[0])
    return "&".join(params)


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """The response's ``Content-Length`` as an int, or None if absent or malformed."""
    for name, value in headers:
        if name.lower() == "content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


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


@dataclass(slots=True)
class StorePlan:
    """What ``@cached`` decided before its view ran; the WSGI layer acts on the response.

    :ivar key: the cache key of the URL's variants.
    :ivar decision: the policy's request decision (``X-Cache``, store, invalidate).
    :ivar policy: the policy to store with (its ``default_ttl`` is the view's timeout).
    :ivar tags: tags for the stored entry.
    """

    key: str
    decision: RequestDecision
    policy: HttpCachePolicy
    tags: tuple[str, ...] = ()


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
        length = _content_length(headers)
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
                self._store(plan, status, headers, body, request_headers, decision)
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
            self._store(plan, status, headers, buffer.body, request_headers, decision)

    def _store(
        self,
        plan: StorePlan,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        request_headers: Mapping[str, str],
        decision: StoreDecision,
    ) -> None:
        _store_entry(
            self.state.runtime.cache, plan, status, headers, body, request_headers, decision
        )


def _store_entry(
    cache: Any,
    plan: StorePlan,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    request_headers: Mapping[str, str],
    decision: StoreDecision,
) -> None:
    policy = plan.policy
    now = policy.clock()
    entry = policy.make_entry(
        status, headers, body, request_headers, decision, now=now, tags=plan.tags
    )
    if entry is not None:
        store_variant(cache, plan.key, entry, policy, now)


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
    length = _content_length(headers)
    request_headers = EnvironHeaders(environ)
    decision = plan.policy.response_store_decision(status, headers, request_headers)
    if not decision.store or (length is not None and length != buffer.size):
        logger.debug("cacheplug: the refresh of %s answered %d, not storable", key, status)
        return
    _store_entry(cache, plan, status, headers, buffer.body, request_headers, decision)


def store_variant(
    cache: Any, key: str, entry: CachedResponse, policy: HttpCachePolicy, now: float
) -> None:
    """Add ``entry`` to the variants under ``key``; the entry's tags cover them all."""
    old = cache.get(key)
    variants = add_variant(old if type(old) is tuple else None, entry, policy.max_variants, now)
    tags: set[Hashable] = set()
    for variant in variants:
        tags.update(variant.tags)
    cache.set(key, variants, ttl=variants_ttl(variants, now), tags=tags)
