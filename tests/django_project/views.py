"""Views of the test project; each counts its calls so a test can tell a hit."""

from __future__ import annotations

import itertools
import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_page

from cacheplug import request_context
from cacheplug.integrations.django import cache_response

calls: dict[str, itertools.count] = {}


def _count(name: str) -> int:
    return next(calls.setdefault(name, itertools.count(1)))


def counter(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"counter {_count('counter')}", content_type="text/plain")


def cookie(request: HttpRequest) -> HttpResponse:
    """Sets a per-client cookie and says nothing about caching: the leak case."""
    response = HttpResponse(f"hello {_count('cookie')}", content_type="text/plain")
    response.set_cookie("visitor", uuid.uuid4().hex)
    return response


def page(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(f"page {_count('page')}", content_type="text/plain")
    response["Cache-Control"] = "max-age=60"
    return response


def private(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(f"private {_count('private')}", content_type="text/plain")
    response["Cache-Control"] = "private, max-age=60"
    return response


def vary_lang(request: HttpRequest) -> HttpResponse:
    lang = request.headers.get("Accept-Language", "none")
    response = HttpResponse(f"{lang} {_count('vary')}", content_type="text/plain")
    response["Vary"] = "Accept-Language"
    return response


def fragment(request: HttpRequest) -> HttpResponse:
    return render(request, "fragment.html", {"calls": _count("fragment")})


def context(request: HttpRequest) -> JsonResponse:
    request_context.set("seen", True)
    return JsonResponse(
        {"request_id": request_context.request_id, "values": sorted(request_context.as_dict())}
    )


def whoami(request: HttpRequest) -> HttpResponse:
    user = request_context.get("user")
    return HttpResponse(str(user.is_authenticated), content_type="text/plain")


def session_view(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]), content_type="text/plain")


@cache_response(ttl=30)
def decorated(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"decorated {_count('decorated')}", content_type="text/plain")


@cache_response(ttl=30)
async def decorated_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"async {_count('decorated_async')}", content_type="text/plain")


@cache_page(60)
def django_cache_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"cache_page {_count('cache_page')}", content_type="text/plain")


@cache_page(60, cache="locmem")
def django_cache_page_locmem(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"cache_page {_count('cache_page_locmem')}", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"a", f"{_count('stream')}".encode()]))


def item(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(f"item {_count('item')}", content_type="text/plain")
    response["Cache-Control"] = "max-age=60"
    return response
