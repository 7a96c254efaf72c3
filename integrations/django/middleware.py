"""``RequestContextMiddleware``: one :data:`cacheplug.request_context` scope per request.

Put it first in ``MIDDLEWARE`` so everything after it, the view and the template run
inside the scope. The scope always closes (its ContextVar token is reset in a
``finally``), whether the view returns, raises or is cancelled, so no value leaks into
the next request on the same thread or task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import SimpleLazyObject

from cacheplug import request_context
from cacheplug.http import environ_key

__all__ = ("RequestContextMiddleware",)

#: Longest incoming request id accepted; longer (or non-printable) ones are replaced.
MAX_REQUEST_ID_LENGTH: Final = 200


class RequestContextMiddleware:
    """Open a request-context scope per request, sync or async (per Django's middleware docs).

    Inside the scope, :data:`cacheplug.request_context` holds:

    * ``request_context.request_id``: the incoming ``CACHEPLUG_REQUEST_ID_HEADER``
      (e.g. ``"X-Request-ID"``) when that setting names one and the value is printable
      ASCII of at most 200 characters; otherwise a new uuid4 hex, made on first read.
      With the setting, the id is echoed on the response under the same header.
    * ``"request"``: the ``HttpRequest``.
    * ``"user"``: a lazy object resolving to ``request.user`` on first use, i.e. the user
      once ``AuthenticationMiddleware`` (placed after this one) has authenticated it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        header = getattr(settings, "CACHEPLUG_REQUEST_ID_HEADER", None)
        self._header: str | None = header
        self._meta_key = environ_key(header.lower()) if header else None
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def _incoming_id(self, request: HttpRequest) -> str | None:
        if self._meta_key is None:
            return None
        value = request.META.get(self._meta_key)
        if (
            value
            and len(value) <= MAX_REQUEST_ID_LENGTH
            and value.isascii()
            and value.isprintable()
        ):
            return value
        return None

    def _open(self, request: HttpRequest) -> Any:
        user = SimpleLazyObject(lambda: request.user)
        return request_context.scope(self._incoming_id(request), request=request, user=user)

    def _finish(self, response: HttpResponseBase) -> HttpResponseBase:
        if self._header is not None and self._header not in response:
            response[self._header] = request_context.request_id
        return response

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._async:
            return self.__acall__(request)
        with self._open(request):
            return self._finish(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        async with self._open(request):
            return self._finish(await self.get_response(request))
