"""Per-endpoint helpers: the request-context dependency and the cache TTL/tags decorator.

Nothing here imports FastAPI or Starlette: ``Depends(request_context_dep)`` only needs a
callable, and :func:`cache_endpoint` only writes to the request context, which
:class:`~cacheplug.integrations.asgi.CachePlugMiddleware` reads when it stores the
response.
"""

from __future__ import annotations

import functools
import inspect
import math
import string
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, TypeVar

from cacheplug.context import NoActiveScopeError, RequestContext, request_context
from cacheplug.errors import ConfigurationError

__all__ = (
    "CACHE_TAGS",
    "CACHE_TTL",
    "add_cache_tags",
    "cache_endpoint",
    "request_context_dep",
)

F = TypeVar("F", bound=Callable[..., Any])

#: Request-context name of the tags the middleware stores the response with.
CACHE_TAGS: Final = "cache_tags"
#: Request-context name of the per-endpoint default TTL (seconds) for the stored response.
CACHE_TTL: Final = "cache_ttl"


async def request_context_dep() -> RequestContext:
    """FastAPI dependency: ``ctx: RequestContext = Depends(request_context_dep)``.

    Returns the process-wide :data:`~cacheplug.context.request_context`, whose scope the
    middleware opened for this request. An ``async def`` so FastAPI does not send it to
    its thread pool.

    :raises NoActiveScopeError: no request scope is open (the middleware is missing).
    """
    if not request_context.active:
        raise NoActiveScopeError("Depends(request_context_dep)")
    return request_context


def add_cache_tags(*tags: Hashable) -> None:
    """Add ``tags`` to the response the current request will store.

    ``plug.invalidate_tags(tag)`` later drops every stored page carrying ``tag``. Call it
    from the endpoint (or anything it calls) while the request runs.

    :raises NoActiveScopeError: no request scope is open (the middleware is missing).
    """
    current = request_context.get(CACHE_TAGS)
    merged = tuple(current or ()) + tags
    request_context.set(CACHE_TAGS, merged)


def _check_ttl(ttl: float | None) -> None:
    ok = ttl is None or (
        isinstance(ttl, int | float) and not isinstance(ttl, bool) and math.isfinite(ttl)
    )
    if not ok or (ttl is not None and ttl <= 0):
        raise ConfigurationError(f"cache_endpoint(ttl={ttl!r}): give seconds > 0, or None")


def _tag_fields(tag: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(tag) if field is not None]
    except ValueError as exc:
        raise ConfigurationError(f"cache_endpoint tag {tag!r} is not a valid template") from exc


def cache_endpoint(ttl: float | None = None, *, tags: Iterable[str] = ()) -> Callable[[F], F]:
    """Decorate an endpoint with the TTL and tags its cached response is stored with.

    ``ttl`` replaces the policy's ``default_ttl`` for this endpoint's responses; an
    explicit ``Cache-Control: max-age``/``s-maxage`` or ``Expires`` on the response still
    wins (RFC 9111). ``tags`` are str templates formatted with the endpoint's keyword
    arguments: ``tags=["products", "product:{product_id}"]``. The decorator does not switch
    caching on: the path must be covered by the middleware's ``cache_responses``.
    Works on ``async def`` and plain ``def`` endpoints; the signature FastAPI inspects is
    kept.

    :param ttl: seconds (> 0), or None to keep the policy's default.
    :param tags: tag templates; each ``{name}`` must be a parameter of the endpoint.
    :raises ConfigurationError: a bad ``ttl``, or a template naming no parameter
        (at decoration time).
    """
    _check_ttl(ttl)
    templates = tuple(tags)
    for tag in templates:
        if not isinstance(tag, str):
            raise ConfigurationError(f"cache_endpoint tags must be str templates, got {tag!r}")

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        params = signature.parameters
        for tag in templates:
            missing = [f for f in _tag_fields(tag) if f.split(".")[0].split("[")[0] not in params]
            if missing:
                raise ConfigurationError(
                    f"cache_endpoint tag {tag!r} of {func.__qualname__} names {missing}, "
                    f"which are not among its parameters {list(params)}"
                )
        static = all(not _tag_fields(t) for t in templates)

        def mark(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if ttl is not None:
                request_context.set(CACHE_TTL, ttl)
            if templates:
                if static:
                    made = templates
                else:  # FastAPI passes keywords only; a direct call may pass positions
                    values = signature.bind_partial(*args, **kwargs).arguments if args else kwargs
                    made = tuple(t.format_map(values) for t in templates)
                add_cache_tags(*made)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                mark(args, kwargs)
                return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(args, kwargs)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
