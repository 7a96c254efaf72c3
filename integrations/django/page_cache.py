"""A page cache for Django that follows RFC 9111 and never replays one client's cookie.

Django 5.2's ``UpdateCacheMiddleware`` stores a response that sets a cookie unless it
also carries ``Vary: Cookie``, and then serves that ``Set-Cookie`` to every client.
This page cache decides with :mod:`cacheplug.http` instead: it never stores a response
with ``Set-Cookie`` (Django keeps cookies apart from headers, so they are added back
for the decision), honours ``private``/``no-store``/``no-cache``, keeps responses to
requests with ``Authorization`` private unless ``public``/``s-maxage``, keys variants
by ``Vary`` and answers ``If-None-Match`` with 304.

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

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
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
    HttpCachePolicy,
    RequestDecision,
    add_variant,
    request_headers_from_environ,
    variants_ttl,
)

__all__ = ("CacheMiddleware", "PageCache", "cache_response")

_MISSING: Any = object()
_STATE: Final = "_cacheplug_page"
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
_META_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def _meta_key(name: str) -> str:
    key = _META_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_META_KEYS) < 1024:
            _META_KEYS[name] = key
    return key


class MetaHeaders(Mapping[str, str]):
    """``request.META`` seen as the policy's request-header mapping, read lazily.

    The same names and values as :func:`cacheplug.http.request_headers_from_environ`, but
    only the few headers the policy asks for are ever looked at.
    """

    __slots__ = ("_meta",)

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self._meta = meta

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._meta.get(_meta_key(name)) if type(name) is str else None
        if type(value) is not str or (not value and name in ("content-type", "content-length")):
            return default
        return value.strip(" \t")

    def __getitem__(self, name: str) -> str:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return self.get(name, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(request_headers_from_environ(self._meta))

    def __len__(self) -> int:
        return len(request_headers_from_environ(self._meta))


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

    def lookup(self, request: HttpRequest) -> HttpResponse | None:
        """Return the cached response for ``request`` (a 304 if it asked), or None.

        On None, remembers what :meth:`store` needs on the request.
        """
        headers = MetaHeaders(request.META)
        method = request.method or ""
        decision = self.policy.request_decision(method, headers)
        if not (decision.lookup or decision.store or decision.invalidate):
            request.__dict__[_STATE] = (decision, None, headers)
            return None
        key = self.key(request)
        if key is not None and decision.lookup:
            now = self.policy.clock()
            entry = self.policy.select(self.store.get(key), headers, decision, now)
            if entry is not None:
                return _build_response(*entry.respond(headers, now, head=method == "HEAD"))
        request.__dict__[_STATE] = (decision, key, headers)
        return None

    def save(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Store ``response`` if the policy allows; add ``X-Cache`` and ``ETag``; return it."""
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


class CacheMiddleware:
    """Site-wide page cache; put it first in ``MIDDLEWARE``. Sync and async capable.

    Configured by ``CACHEPLUG_PAGE_CACHE`` (see the module docstring). Adds
    ``X-Cache: HIT`` (with ``Age``), ``MISS`` or ``BYPASS`` to responses.
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
        hit = self.page_cache.lookup(request)
        if hit is not None:
            return hit
        return self.page_cache.save(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        hit = self.page_cache.lookup(request)
        if hit is not None:
            return hit
        return self.page_cache.save(request, await self.get_response(request))


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
                hit = page_cache.lookup(request)
                if hit is not None:
                    return hit
                return page_cache.save(request, await func(request, *args, **kwargs))

            return async_view

        @functools.wraps(func)
        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            hit = page_cache.lookup(request)
            if hit is not None:
                return hit
            return page_cache.save(request, func(request, *args, **kwargs))

        return sync_view

    if view is not None:
        return decorate(view)
    return decorate
