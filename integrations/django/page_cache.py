"""A page cache for Django that follows RFC 9111 and never replays one client's cookie.

Django 5.2's ``UpdateCacheMiddleware`` stores a response that sets a cookie unless it
also carries ``Vary: Cookie``, and then serves that ``Set-Cookie`` to every client.
This page cache decides with :mod:`cacheplug.http` instead: it never stores a response
with ``Set-Cookie`` (Django keeps cookies apart from headers, so they are added back
for the decision), honours ``private``/``no-store``/``no-cache``, keeps responses to
requests with ``Authorization`` private unless ``public``/``s-maxage``, keys variants
by ``Vary`` and answers ``If-None-Match`` with 304. It honours RFC 5861 as the ASGI
middleware does (see :meth:`PageCache.lookup`): a stale entry inside its
``stale-while-revalidate`` window is served at once (``X-Cache: STALE``) and refreshed
after the response went out, and one inside its ``stale-if-error`` window replaces a
view that raises or answers 5xx.

A hit is one dict lookup on the in-process store and no unpickling: the stored
:class:`~cacheplug.http.CachedResponse` is immutable, so it is kept as it is, and the
response is rebuilt from its ready-to-send status, headers and body.

* :class:`CacheMiddleware` goes first in ``MIDDLEWARE``: a hit skips every other
  middleware and the URL resolver, and on the way out it sees the final response,
  cookies and ``Vary`` from ``SessionMiddleware``/``CsrfViewMiddleware`` included.
* :func:`cache_response` caches one view. It sees the view's response only: anything a
  middleware adds afterwards is not part of the decision, so a view that reads the
  session gets ``Vary: Cookie`` added before storing (``SessionMiddleware`` would add
  it too late).

Settings, all optional, in ``CACHEPLUG_PAGE_CACHE`` (a dict): ``ALIAS`` (default
``CACHE_MIDDLEWARE_ALIAS``; must be a CachePlugCache alias), ``KEY_PREFIX`` (default
``CACHE_MIDDLEWARE_KEY_PREFIX``), ``DEFAULT_TTL`` (default ``CACHE_MIDDLEWARE_SECONDS``,
for responses that state no freshness), and the :class:`~cacheplug.http.HttpCachePolicy`
options ``MAX_TTL``, ``MAX_BODY_BYTES``, ``MAX_VARIANTS``, ``CACHEABLE_STATUSES``,
``PRIVATE_REQUEST_HEADERS``, ``UNCACHEABLE_RESPONSE_HEADERS``, ``HONOR_REQUEST_NO_CACHE``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers

from cacheplug.cache import ShardedTTLCache
from cacheplug.http import (
    X_CACHE,
    X_CACHE_STALE,
    CachedResponse,
    HttpCachePolicy,
    RequestDecision,
    add_variant,
    select_stale,
    variants_ttl,
    within_stale_if_error,
    within_stale_while_revalidate,
)
from cacheplug.http import EnvironHeaders as MetaHeaders

from ._stale import _CLIENT_ERRORS, _STATE, PageRefresher, Produce, _release
from ._stale import _REFRESHING as _REFRESHING  # re-exported: the tests reset it

__all__ = ("CacheMiddleware", "PageCache", "cache_response")

logger = logging.getLogger("cacheplug.integrations.django")

#: Settings keys -> HttpCachePolicy keyword.
_POLICY_SETTINGS: Final = {
    "DEFAULT_TTL": "default_ttl",
    "MAX_TTL": "max_ttl",
    "MAX_BODY_BYTES": "max_body_bytes",
    "MAX_VARIANTS": "max_variants",
    "CACHEABLE_STATUSES": "cacheable_statuses",
    "PRIVATE_REQUEST_HEADERS": "private_request_headers",
    "UNCACHEABLE_RESPONSE_HEADERS": "uncacheable_response_headers",
    "HONOR_REQUEST_NO_CACHE": "honor_request_no_cache",
}
_SETTINGS: Final = frozenset({"ALIAS", "KEY_PREFIX", *_POLICY_SETTINGS})


def _build_response(status: int, headers: list[tuple[str, str]], body: bytes) -> HttpResponse:
    """An ``HttpResponse`` from stored, already validated pieces."""
    response = HttpResponse(body, status=status)
    store = response.headers._store
    store.clear()  # drop the default Content-Type; the stored headers carry their own
    for name, value in headers:
        store[name] = (name, value)
    return response


class PageCache:
    """The engine behind :class:`CacheMiddleware` and :func:`cache_response`.

    :param alias: a ``CACHES`` alias whose backend is CachePlugCache.
    :param key_prefix: keeps this cache's pages apart from another's in the same store.
    :param policy: the :class:`~cacheplug.http.HttpCachePolicy` deciding what to store.
    :raises ImproperlyConfigured: on first use, if ``alias`` is not a CachePlugCache.
    """

    def __init__(self, alias: str, key_prefix: str, policy: HttpCachePolicy) -> None:
        self.alias = alias
        self.key_prefix = key_prefix
        self.policy = policy
        self._store: ShardedTTLCache | None = None
        # Refreshes that had to finish as tasks on the event loop, referenced until done.
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher = PageRefresher(self, self._tasks)

    @classmethod
    def from_settings(cls, **overrides: Any) -> PageCache:
        """Build from ``CACHEPLUG_PAGE_CACHE`` and Django's ``CACHE_MIDDLEWARE_*`` settings.

        :param overrides: the same keys in lower case (``alias``, ``ttl`` for
            ``DEFAULT_TTL``, ``key_prefix``, policy options); None values are ignored.
        :raises ImproperlyConfigured: for an unknown key or an invalid value.
        """
        conf = dict(getattr(settings, "CACHEPLUG_PAGE_CACHE", None) or {})
        unknown = sorted(set(conf) - _SETTINGS)
        if unknown:
            raise ImproperlyConfigured(
                f"unknown CACHEPLUG_PAGE_CACHE keys {unknown}; valid: {sorted(_SETTINGS)}"
            )
        conf.setdefault("ALIAS", settings.CACHE_MIDDLEWARE_ALIAS)
        conf.setdefault("KEY_PREFIX", settings.CACHE_MIDDLEWARE_KEY_PREFIX)
        conf.setdefault("DEFAULT_TTL", settings.CACHE_MIDDLEWARE_SECONDS)
        if overrides.get("ttl") is not None:
            overrides["default_ttl"] = overrides.pop("ttl")
        for name, value in overrides.items():
            if value is not None:
                conf[name.upper()] = value
        policy_options = {kw: conf[name] for name, kw in _POLICY_SETTINGS.items() if name in conf}
        for name in ("cacheable_statuses", "private_request_headers"):
            if isinstance(policy_options.get(name), list | tuple):
                policy_options[name] = frozenset(policy_options[name])
        if isinstance(policy_options.get("uncacheable_response_headers"), list | tuple):
            policy_options["uncacheable_response_headers"] = frozenset(
                policy_options["uncacheable_response_headers"]
            )
        try:
            policy = HttpCachePolicy(**policy_options)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"CACHEPLUG_PAGE_CACHE: {exc}") from exc
        return cls(conf["ALIAS"], conf["KEY_PREFIX"], policy)

    @property
    def store(self) -> ShardedTTLCache:
        """The in-process store of the alias's plug (resolved on first use)."""
        store = self._store
        if store is None:
            from .backend import CachePlugCache

            backend = caches[self.alias]
            if not isinstance(backend, CachePlugCache):
                raise ImproperlyConfigured(
                    f"the cacheplug page cache needs CACHES[{self.alias!r}] to be "
                    f"cacheplug.integrations.django.CachePlugCache, not "
                    f"{type(backend).__module__}.{type(backend).__qualname__}; set "
                    "CACHEPLUG_PAGE_CACHE['ALIAS'] to a CachePlugCache alias"
                )
            store = self._store = backend.plug.cache
        return store

    def key(self, request: HttpRequest) -> str | None:
        """The primary key of ``request``'s URL, or None when it must not be cached."""
        try:
            host = request.get_host()
        except DisallowedHost:
            return None  # let the view raise it, as it would without a cache
        primary = self.policy.primary_key(
            request.scheme, host, request.path, request.META.get("QUERY_STRING", "")
        )
        return None if primary is None else f"cacheplug.page:{self.key_prefix}:{primary}"

    def lookup(self, request: HttpRequest, refresh: Produce | None = None) -> HttpResponse | None:
        """Return the cached response for ``request`` (a 304 if it asked), or None.

        A fresh entry answers with ``X-Cache: HIT``. Given ``refresh``, a stale entry
        inside its ``stale-while-revalidate`` window answers with ``X-Cache: STALE``, and
        ``refresh(copy of request)`` runs from that response's ``close()``, after the
        server sent it (at most one refresh per URL at a time in the process). On None,
        remembers on the request what :meth:`save` and :meth:`recover` need, including
        an entry inside its ``stale-if-error`` window.

        :param refresh: produces a response to a request (the rest of the middleware
            chain, or the view); it may return an awaitable. Without it, nothing is
            served stale-while-revalidate.
        """
        headers = MetaHeaders(request.META)
        method = request.method or ""
        decision = self.policy.request_decision(method, headers)
        if not (decision.lookup or decision.store or decision.invalidate):
            request.__dict__[_STATE] = (decision, None, headers, None)
            return None
        key = self.key(request)
        fallback = None
        if key is not None and decision.lookup:
            policy = self.policy
            now = policy.clock()
            variants = self.store.get(key)
            entry = policy.select(variants, headers, decision, now)
            if entry is not None:
                return _build_response(*entry.respond(headers, now, head=method == "HEAD"))
            if variants is not None:  # only after select() said no: a hit costs nothing more
                stale = select_stale(variants, headers, decision, now)
                if stale is not None:
                    if refresh is not None and within_stale_while_revalidate(stale, now):
                        response = self._stale_response(request, stale, headers, now)
                        # Django runs a response's closers from close(), which the server
                        # calls once the body is out (WSGI: before request_finished closes
                        # the database connections; ASGI: in a sync_to_async thread).
                        response._resource_closers.append(
                            functools.partial(self._refresher.refresh, request, key, refresh)
                        )
                        return response
                    if within_stale_if_error(stale, now):
                        fallback = stale
        request.__dict__[_STATE] = (decision, key, headers, fallback)
        return None

    def call(
        self, request: HttpRequest, produce: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        """The miss path: ``produce(request, *args, **kwargs)``, then :meth:`save`.

        If it raises, :meth:`recover` decides between the stale-if-error entry and the
        exception. Call it after :meth:`lookup` returned None.
        """
        try:
            response = produce(request, *args, **kwargs)
        except Exception as exc:
            stale = self.recover(request, exc)
            if stale is None:
                raise
            return stale
        return self.save(request, response)

    async def acall(
        self, request: HttpRequest, produce: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        """:meth:`call` for a ``produce`` that returns an awaitable."""
        try:
            response = await produce(request, *args, **kwargs)
        except Exception as exc:
            stale = self.recover(request, exc)
            if stale is None:
                raise
            return stale
        return self.save(request, response)

    def recover(self, request: HttpRequest, exc: BaseException) -> HttpResponse | None:
        """The stale-if-error response to send instead of raising ``exc``, or None.

        Only when :meth:`lookup` found an entry inside its ``stale-if-error`` window, and
        only for an exception Django would answer with a 5xx (not ``Http404``,
        ``PermissionDenied``, ``BadRequest``, ``SuspiciousOperation``). Logs a warning
        with the exception, which nothing else will report.
        """
        state = request.__dict__.get(_STATE)
        if state is None or state[3] is None or isinstance(exc, _CLIENT_ERRORS):
            return None
        del request.__dict__[_STATE]
        logger.warning(
            "cacheplug: the view of %s raised; serving the stale entry (stale-if-error)",
            request.path,
            exc_info=exc,
        )
        return self._stale_response(request, state[3], state[2], self.policy.clock())

    def save(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Store ``response`` if the policy allows; add ``X-Cache`` and ``ETag``; return it.

        A 5xx for a request whose :meth:`lookup` found a ``stale-if-error`` entry is
        replaced by that entry (``X-Cache: STALE``), which is returned instead.
        """
        state = request.__dict__.pop(_STATE, None)
        if state is None:
            return response
        decision: RequestDecision = state[0]
        key: str | None = state[1]
        headers: MetaHeaders = state[2]
        status = response.status_code
        if decision.invalidate:
            if key is not None and status < 400:
                self.store.delete(key)  # RFC 9111 §4.4: an unsafe method invalidates
            return response
        if status >= 500 and state[3] is not None:
            logger.warning(
                "cacheplug: %s answered %d; serving the stale entry (stale-if-error)",
                request.path,
                status,
            )
            _release(response)
            return self._stale_response(request, state[3], headers, self.policy.clock())
        if X_CACHE not in response:
            response[X_CACHE] = decision.x_cache
        if not decision.store or key is None or response.streaming:
            return response
        session = getattr(request, "session", None)
        if session is not None and getattr(session, "accessed", False):
            patch_vary_headers(response, ("Cookie",))  # as SessionMiddleware will
        pairs = list(response.items())
        # Django keeps cookies out of the headers; the policy must see them to refuse.
        pairs += [("set-cookie", morsel.OutputString()) for morsel in response.cookies.values()]
        policy = self.policy
        now = policy.clock()
        decision_ = policy.response_store_decision(status, pairs, headers, now)
        if not decision_.store:
            return response
        entry = policy.make_entry(status, pairs, response.content, headers, decision_, now=now)
        if entry is None:
            return response
        if entry.etag and "ETag" not in response:
            response["ETag"] = entry.etag
        store = self.store
        variants = add_variant(store.get(key), entry, policy.max_variants, now)
        store.set(key, variants, variants_ttl(variants, now))
        return response

    def _stale_response(
        self, request: HttpRequest, entry: CachedResponse, headers: MetaHeaders, now: float
    ) -> HttpResponse:
        status, pairs, body = entry.respond(
            headers, now, head=request.method == "HEAD", x_cache=X_CACHE_STALE
        )
        return _build_response(status, pairs, body)


class CacheMiddleware:
    """Site-wide page cache; put it first in ``MIDDLEWARE``. Sync and async capable.

    Configured by ``CACHEPLUG_PAGE_CACHE`` (see the module docstring). Adds
    ``X-Cache: HIT`` (with ``Age``), ``MISS``, ``BYPASS`` or ``STALE`` (RFC 5861) to
    responses. A ``stale-while-revalidate`` refresh runs the rest of the chain again
    for a copy of the request, after the stale response was sent.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.page_cache = PageCache.from_settings()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._async:
            return self.__acall__(request)
        hit = self.page_cache.lookup(request, self.get_response)
        if hit is not None:
            return hit
        return self.page_cache.call(request, self.get_response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # A stale-while-revalidate refresh awaits self.get_response too: see PageRefresher.refresh.
        hit = self.page_cache.lookup(request, self.get_response)
        if hit is not None:
            return hit
        return await self.page_cache.acall(request, self.get_response)


def cache_response(
    view: Callable[..., Any] | None = None,
    *,
    ttl: float | None = None,
    alias: str | None = None,
    key_prefix: str | None = None,
    **policy_options: Any,
) -> Any:
    """Cache one view's responses with the page-cache policy; sync and ``async def`` views.

    Usable bare (``@cache_response``) or with options (``@cache_response(ttl=60)``).
    Stale entries are served as by :class:`CacheMiddleware`; a ``stale-while-revalidate``
    refresh calls the view again with a copy of the request (same URL arguments).

    :param ttl: seconds to keep a response that states no freshness of its own (default
        ``CACHEPLUG_PAGE_CACHE['DEFAULT_TTL']``, else ``CACHE_MIDDLEWARE_SECONDS``).
    :param alias: the CachePlugCache alias to store in.
    :param key_prefix: keeps this view's pages apart from other caches of the same URL.
    :param policy_options: other :class:`~cacheplug.http.HttpCachePolicy` options
        (``max_ttl``, ``max_body_bytes``, ...).
    :raises ImproperlyConfigured: for an invalid option (when the view is decorated).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        page_cache = PageCache.from_settings(
            ttl=ttl, alias=alias, key_prefix=key_prefix, **policy_options
        )
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                hit = page_cache.lookup(request, lambda req: func(req, *args, **kwargs))
                if hit is not None:
                    return hit
                return await page_cache.acall(request, func, *args, **kwargs)

            return async_view

        @functools.wraps(func)
        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            hit = page_cache.lookup(request, lambda req: func(req, *args, **kwargs))
            if hit is not None:
                return hit
            return page_cache.call(request, func, *args, **kwargs)

        return sync_view

    if view is not None:
        return decorate(view)
    return decorate
