"""``@plug.cached`` for views and ``@plug.memoize`` for functions.

``cached`` applies the shared HTTP policy (:mod:`cacheplug.http`): only GET and HEAD are
looked up, and a response is stored only if RFC 9111 allows a shared cache to store it
(never with ``Set-Cookie``, ``private``, ``no-store``, nor for a request with
``Authorization`` unless ``public``/``s-maxage``; ``Vary`` becomes part of the key). The
decorator looks up and, on a miss, leaves a :class:`~._wsgi.StorePlan` in the environ;
the WSGI layer stores the *final* response, after Flask has saved the session.

``cached`` also honours RFC 5861 in the responses' ``Cache-Control``: a stale entry
inside its ``stale-while-revalidate`` window is served (``X-Cache: STALE``) and refreshed
after the response went out (:func:`~._wsgi.refresh_stale`); one inside its
``stale-if-error`` window replaces a view that raises or answers 5xx.

``memoize`` uses the core's single-flight ``get_or_set``: concurrent misses on the same
arguments run the function once. It also carries the core's freshness options
(``stale_while_revalidate``, ``stale_if_error``, ``early_refresh``).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from cachetools.keys import hashkey
from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException

from cacheplug.cache import NO_EXPIRY, ShardedTTLCache
from cacheplug.errors import ConfigurationError
from cacheplug.http import (
    X_CACHE_STALE,
    CachedResponse,
    HttpCachePolicy,
    RequestDecision,
    select_stale,
    within_stale_if_error,
    within_stale_while_revalidate,
)

from ._refresh import REFRESH, refresh_stale
from ._response import hit_response
from ._store import STORE_PLAN, EnvironHeaders, StorePlan
from ._wsgi import sorted_query

if TYPE_CHECKING:
    from .extension import FlaskCachePlug, FlaskPlugState

__all__ = ("cached_view", "delete_memoized", "memoize")

logger = logging.getLogger("cacheplug.integrations.flask")

_MEMOIZED: Final = "__cacheplug_memoized__"
#: Keyword options of the core's get_or_set that memoize forwards (the freshness
#: options: ``early_refresh``, ``stale_while_revalidate``, ``stale_if_error``...).
_GET_OR_SET_OPTIONS: Final = frozenset(inspect.signature(ShardedTTLCache.get_or_set).parameters) - {
    "self",
    "key",
    "factory",
    "ttl",
    "tags",
}


def _seconds(timeout: object, what: str) -> float | None:
    """Validate a decorator ``timeout``: None (default), 0 (never expires) or seconds > 0."""
    if timeout is None:
        return None
    if isinstance(timeout, dt.timedelta):
        timeout = timeout.total_seconds()
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise ConfigurationError(
            f"{what} timeout must be None (the default), 0 (never expires), seconds > 0 or a "
            f"timedelta, got {timeout!r}"
        )
    return float(timeout)


def _call_view(view: Callable[..., Any], is_async: bool, args: Any, kwargs: Any) -> Any:
    if is_async:
        return current_app.ensure_sync(view)(*args, **kwargs)
    return view(*args, **kwargs)


def _stale(
    app: Flask,
    state: FlaskPlugState,
    environ: dict[str, Any],
    key: str,
    variants: tuple[CachedResponse, ...],
    headers: EnvironHeaders,
    decision: RequestDecision,
    now: float,
) -> tuple[Any, CachedResponse | None]:
    """After a miss on ``variants``: ``(stale response, None)`` inside the entry's
    ``stale-while-revalidate`` window, ``(None, entry)`` inside its ``stale-if-error``
    window (the fallback if the view fails), else ``(None, None)``."""
    if REFRESH in environ:  # this request is the refresh: it must reach the view
        return None, None
    entry = select_stale(variants, headers, decision, now)
    if entry is None:
        return None, None
    if not within_stale_while_revalidate(entry, now):
        return None, entry if within_stale_if_error(entry, now) else None
    response = _stale_response(app, entry, headers, now)
    # The refresh runs from the response's close(), after the server sent it. It calls
    # Flask's own wsgi_app (not app.wsgi_app, whose cacheplug layer would answer from
    # the cache) with a copy of this environ, exactly as Flask saw it: WSGI middleware
    # applied before init_app already rewrote it and must not rewrite it twice.
    flask_wsgi_app = functools.partial(type(app).wsgi_app, app)
    response.call_on_close(functools.partial(refresh_stale, flask_wsgi_app, environ, state, key))
    return response, None


def _stale_response(app: Flask, entry: CachedResponse, headers: EnvironHeaders, now: float) -> Any:
    status, stale_headers, body = entry.respond(headers, now, x_cache=X_CACHE_STALE)
    return hit_response(app.response_class, status, stale_headers, body)


def _call_with_fallback(
    app: Flask,
    view: Callable[..., Any],
    is_async: bool,
    args: Any,
    kwargs: Any,
    fallback: CachedResponse,
    headers: EnvironHeaders,
    environ: dict[str, Any],
    policy: HttpCachePolicy,
) -> Any:
    """Call the view; if it raises or answers 5xx, answer with the stale-if-error entry.

    An ``HTTPException`` below 500 (``abort(404)``) is the view's answer, not an error.
    """
    try:
        response = app.make_response(_call_view(view, is_async, args, kwargs))
    except Exception as exc:
        if isinstance(exc, HTTPException) and exc.code is not None and exc.code < 500:
            raise
        logger.warning(
            "cacheplug: the view of %s raised; serving the stale entry (stale-if-error)",
            environ.get("PATH_INFO"),
            exc_info=True,
        )
    else:
        if response.status_code < 500:
            return response
        logger.warning(
            "cacheplug: the view of %s answered %d; serving the stale entry (stale-if-error)",
            environ.get("PATH_INFO"),
            response.status_code,
        )
        response.close()
    environ.pop(STORE_PLAN, None)  # the stale entry is already stored: nothing to store
    return _stale_response(app, fallback, headers, policy.clock())


def _key_path(path: str) -> str:
    """Escape ``%`` and ``?`` in a decoded path so it cannot pass for a query string."""
    if "%" in path or "?" in path:
        return path.replace("%", "%25").replace("?", "%3F")
    return path


def cached_view(
    plug: FlaskCachePlug,
    timeout: float | None = None,
    key_prefix: str | Callable[[], str] = "view/%s",
    query_string: bool = False,
    unless: Callable[[], bool] | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] = (),
) -> Callable[[Any], Any]:
    """Build the ``@plug.cached(...)`` decorator for a view (sync or ``async def``).

    :param timeout: seconds to keep a response that states no freshness of its own
        (its ``s-maxage``/``max-age``/``Expires`` win); None uses the app's policy
        default (``CACHEPLUG_TTL``), 0 keeps it until invalidated.
    :param key_prefix: ``"view/%s"`` (``%s`` gets ``request.path``) or a fixed string:
        the key is then ``"<scheme>://<host>[:port]<script root>|" + key_prefix % path``,
        so the same path on two hosts (tenants by host, http and https) never shares an
        entry; a request whose ``Host`` is not a valid authority is not cached. Or a
        callable returning the whole key (called in the request): it is used as is,
        and keeping hosts apart is then up to it.
    :param query_string: add the sorted query string to the key. When False (Flask-Caching's
        default) ``/items?page=1`` and ``/items?page=2`` share one entry.
    :param unless: called with no arguments per request; True bypasses the cache.
    :param tags: tags for :meth:`FlaskCachePlug.invalidate_tags`, or a callable
        receiving the view's keyword arguments and returning them.
    :raises ConfigurationError: an argument has the wrong type or range.

    A hit adds ``X-Cache: HIT`` and ``Age``, a stored 2xx carries an ``ETag`` and a
    matching ``If-None-Match`` gets a 304. A response served stale under RFC 5861
    (``stale-while-revalidate``, ``stale-if-error``) says ``X-Cache: STALE``. Hits for
    views without ``unless`` and with a str ``key_prefix`` are answered before Flask
    dispatches (``CACHEPLUG_EARLY_HITS``), so ``before_request`` hooks do not run for
    them; everything that decides what may be shared must therefore show in the
    response's headers (``Vary``, ``Cache-Control``), as it must for any HTTP cache. A
    successful POST/PUT/PATCH/DELETE to the same URL drops the entry (RFC 9111 §4.4).
    """
    ttl = _seconds(timeout, "@cached")
    view_timeout = (2.0**31) if ttl == 0 else ttl
    if not (isinstance(key_prefix, str) or callable(key_prefix)):
        raise ConfigurationError(f"key_prefix must be a str or a callable, got {key_prefix!r}")
    if unless is not None and not callable(unless):
        raise ConfigurationError(f"unless must be a callable or None, got {unless!r}")
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be an iterable of str, not a str: {tags!r}")
    fixed_tags = () if callable(tags) else tuple(tags)
    early = unless is None and isinstance(key_prefix, str)
    key_function = None if isinstance(key_prefix, str) else key_prefix
    path_template = isinstance(key_prefix, str) and "%s" in key_prefix

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        is_async = inspect.iscoroutinefunction(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # One proxy lookup each: this is the hit path when early hits are off.
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            state = plug.state(app)
            if unless is not None and unless():
                return _call_view(view, is_async, args, kwargs)
            req = request._get_current_object()  # type: ignore[attr-defined]
            environ = req.environ
            if key_function is None:
                origin = state.origin(environ)
                if origin is None:  # no usable Host: nothing to keep hosts apart by
                    return _call_view(view, is_async, args, kwargs)
                if path_template:
                    base = f"{origin}|{key_prefix % _key_path(req.path)}"
                else:
                    base = f"{origin}|{key_prefix}"
            else:
                base = key_function()
            headers = EnvironHeaders(environ)
            decision = state.policy.request_decision(environ["REQUEST_METHOD"], headers)
            key = base
            if query_string:
                query = environ.get("QUERY_STRING")
                if query:
                    key = f"{base}?{sorted_query(query)}"
            fallback = None
            if decision.lookup:
                policy = state.policy
                variants = state.runtime.cache.get(key)
                if early:
                    state.remember_early(environ, base, query_string)
                if type(variants) is tuple:
                    now = policy.clock()
                    entry = policy.select(variants, headers, decision, now)
                    if entry is not None:
                        status, hit_headers, body = entry.respond(headers, now)
                        return hit_response(app.response_class, status, hit_headers, body)
                    stale, fallback = _stale(
                        app, state, environ, key, variants, headers, decision, now
                    )
                    if stale is not None:
                        return stale
            entry_tags = tuple(tags(**kwargs)) if callable(tags) else fixed_tags
            environ[STORE_PLAN] = StorePlan(
                key, decision, state.policy_for(view_timeout), entry_tags
            )
            if fallback is None:
                return _call_view(view, is_async, args, kwargs)
            return _call_with_fallback(
                app, view, is_async, args, kwargs, fallback, headers, environ, state.policy
            )

        wrapper.__cacheplug_cached__ = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


def memoize(
    plug: FlaskCachePlug,
    timeout: float | None = None,
    tags: Iterable[str] = (),
    options: dict[str, Any] | None = None,
) -> Callable[[Any], Any]:
    """Build the ``@plug.memoize(...)`` decorator (sync or ``async def`` functions).

    Results live in the current app's cache (an app context is needed) under the key
    ``("memoize:<module>.<qualname>", hashkey(*args, **kwargs))``, so arguments must be
    hashable. ``None`` results are cached too; exceptions are not. Every result carries
    the tag ``"memoize:<module>.<qualname>"`` plus ``tags``.

    :param timeout: None (the app's ``ttl``), 0 (never expires), seconds or a timedelta.
    :param tags: extra tags for :meth:`FlaskCachePlug.invalidate_tags`.
    :param options: further keyword options of the core's ``get_or_set``.
    :raises ConfigurationError: a bad ``timeout``/``tags`` or an unknown option.
    """
    seconds = _seconds(timeout, "@memoize")
    ttl = NO_EXPIRY if seconds == 0 else seconds
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be an iterable of str, not a str: {tags!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - _GET_OR_SET_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown @memoize option(s) {unknown}; this cacheplug's get_or_set accepts "
            f"{sorted(_GET_OR_SET_OPTIONS) or 'none'}"
        )

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = f"memoize:{fn.__module__}.{fn.__qualname__}"
        all_tags = (name, *tags)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                cache = plug.runtime().cache
                return await cache.aget_or_set(
                    (name, hashkey(*args, **kwargs)),
                    lambda: fn(*args, **kwargs),
                    ttl,
                    all_tags,
                    **options,
                )

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                cache = plug.runtime().cache
                return cache.get_or_set(
                    (name, hashkey(*args, **kwargs)),
                    lambda: fn(*args, **kwargs),
                    ttl,
                    all_tags,
                    **options,
                )

            wrapper = sync_wrapper
        setattr(wrapper, _MEMOIZED, name)
        wrapper.uncached = fn  # type: ignore[attr-defined]
        return wrapper

    return decorator


def delete_memoized(plug: FlaskCachePlug, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """Drop ``fn``'s result for ``args``/``kwargs``; with neither, drop all its results."""
    name = getattr(fn, _MEMOIZED, None)
    if name is None:
        raise TypeError(f"{fn!r} is not decorated with @plug.memoize; pass the decorated function")
    runtime = plug.runtime()
    if not args and not kwargs:
        runtime.invalidate_tags(name)
    else:
        runtime.cache.delete((name, hashkey(*args, **kwargs)))
