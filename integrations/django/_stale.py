"""RFC 5861 stale-while-revalidate for the Django page cache: refresh after the response.

:meth:`PageCache.lookup <cacheplug.integrations.django.page_cache.PageCache.lookup>`
answers with a stale entry and hands the refresh to :class:`PageRefresher`, which runs it
from the stale response's ``close()`` (after the server sent it) for a copy of the
request, at most one per page at a time in the process.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import io
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

from asgiref.sync import async_to_sync
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

from cacheplug.http import EnvironHeaders, RefreshGuard, refresh_environ

if TYPE_CHECKING:
    from .page_cache import PageCache

__all__ = ("PageRefresher",)

logger = logging.getLogger("cacheplug.integrations.django")

#: Produces the response to a request: the rest of the middleware chain, or the view
#: (with its URL arguments bound). May return an awaitable (async chain or view).
Produce = Callable[[HttpRequest], Any]

#: The request attribute holding the page cache's per-request state, shared with
#: :mod:`.page_cache`: ``(decision, key, headers, stale-if-error entry)``.
_STATE: Final = "_cacheplug_page"
#: ``(store id, key)`` of the pages being refreshed in this process: one refresh per key.
_REFRESHING: Final = RefreshGuard()
#: What Django answers with a 4xx (``response_for_exception``): not an error under RFC
#: 5861, so it never brings out a stale-if-error entry.
_CLIENT_ERRORS: Final = (
    Http404,
    PermissionDenied,
    BadRequest,
    SuspiciousOperation,
    MultiPartParserError,
)
#: Per-request values Django caches on the request; a refresh copy recomputes them.
_DERIVED: Final = (
    _STATE,
    "headers",
    "accepted_types",
    "accepted_types_by_precedence",
    "_body",
    "_post",
    "_files",
)


def _release(response: HttpResponseBase) -> None:
    """Run the closers of a response nobody will send (files, iterators).

    Not ``response.close()``: that also sends ``request_finished``, and the request that
    made this response (a refresh, or a 5xx replaced by a stale entry) is not over yet.
    """
    closers = response._resource_closers
    for closer in closers:
        try:
            closer()
        except Exception:
            logger.debug("closing a discarded response failed", exc_info=True)
    closers.clear()


def _refresh_request(request: HttpRequest) -> HttpRequest:
    """A copy of ``request`` for a refresh: a GET without conditional/cache-control headers.

    A shallow copy rather than a new request: under :class:`CacheMiddleware` the original
    never went down the chain (the stale response answered first), so it holds only what
    the handler set; under :func:`cache_response` it carries what the middleware set
    (``session``, ``user``), which the view expects. Values cached from ``META`` or the
    body are dropped so the copy computes its own.
    """
    clone = copy.copy(request)
    meta = refresh_environ(request.META)
    clone.META = meta
    if "environ" in clone.__dict__:  # WSGIRequest: environ and META are one dict
        clone.environ = meta  # type: ignore[attr-defined]
    clone.method = "GET"
    for name in _DERIVED:
        clone.__dict__.pop(name, None)
    clone._stream = io.BytesIO()  # type: ignore[attr-defined]
    clone._read_started = False  # type: ignore[attr-defined]
    return clone


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class PageRefresher:
    """Refreshes the stale pages of one :class:`PageCache` (stale-while-revalidate).

    :param page_cache: the page cache whose store and policy it refreshes through.
    :param tasks: where refreshes that must finish as tasks on the event loop are kept
        until done.
    """

    def __init__(self, page_cache: PageCache, tasks: set[asyncio.Task[None]]) -> None:
        self._page = page_cache
        self._tasks = tasks

    def refresh(self, request: HttpRequest, key: str, produce: Produce) -> None:
        """Refresh ``key`` from a copy of ``request`` unless a refresh of it is running.

        Runs from the stale response's ``close()``, in the thread that served it, and
        never raises: a failed refresh stores nothing and the stale entry stays until
        its window ends. The key is claimed here, not when the stale response was
        built, so a response whose ``close()`` never comes (replaced by an outer
        middleware) cannot block the key's refreshes for good; the freshness check
        after the claim keeps a later stale response from refreshing a second time.
        """
        page = self._page
        guard: Hashable = (id(page.store), key)
        if not _REFRESHING.claim(guard):
            return
        handed_off = False
        try:
            clone = _refresh_request(request)
            headers = EnvironHeaders(clone.META)
            decision = page.policy.request_decision("GET", headers)
            if page.policy.select(page.store.get(key), headers, decision) is not None:
                return  # an earlier request's refresh already stored a fresh copy
            clone.__dict__[_STATE] = (decision, key, headers, None)
            result = produce(clone)
            if inspect.isawaitable(result):
                handed_off = self._finish_async(result, clone, key, guard)
            else:
                self._store_refresh(clone, key, result)
        except Exception:
            logger.warning(
                "cacheplug: refreshing the stale page %s failed; it is served stale until "
                "its stale-while-revalidate window ends",
                key,
                exc_info=True,
            )
        finally:
            if not handed_off:
                _REFRESHING.release(guard)

    def _finish_async(
        self, awaitable: Awaitable[Any], clone: HttpRequest, key: str, guard: Hashable
    ) -> bool:
        """Finish an async refresh; True if a task now owns ``guard`` (and releases it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # The usual case: Django's ASGIHandler calls close() through sync_to_async, so
            # this is a worker thread and async_to_sync runs the chain on the server's loop.
            self._store_refresh(clone, key, async_to_sync(_awaited)(awaitable))
            return False
        # close() was called on the event loop itself, where async_to_sync cannot run:
        # finish as a task, referenced until it is done.
        task = loop.create_task(self._refresh_task(awaitable, clone, key, guard))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _refresh_task(
        self, awaitable: Awaitable[Any], clone: HttpRequest, key: str, guard: Hashable
    ) -> None:
        try:
            self._store_refresh(clone, key, await awaitable)
        except Exception:
            logger.warning("cacheplug: refreshing the stale page %s failed", key, exc_info=True)
        finally:
            _REFRESHING.release(guard)

    def _store_refresh(self, clone: HttpRequest, key: str, response: HttpResponseBase) -> None:
        """Store a refresh's response through :meth:`PageCache.save`, unless it is a 5xx."""
        try:
            status = response.status_code
            if status >= 500:  # an error must not replace the stale copy it was to refresh
                logger.warning(
                    "cacheplug: refreshing the stale page %s answered %d; nothing stored",
                    key,
                    status,
                )
                return
            store = self._page.store
            before = store.get(key)
            self._page.save(clone, response)
            if store.get(key) is before:
                logger.debug("cacheplug: the refresh of %s answered %d, not storable", key, status)
        finally:
            _release(response)
