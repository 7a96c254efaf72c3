"""RequestContextMiddleware in the real project, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import iscoroutinefunction
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from cacheplug import request_context
from cacheplug.integrations.django import RequestContextMiddleware


def test_scope_is_open_in_the_view_and_closed_after():
    response = Client().get("/context/")
    body = response.json()
    assert len(body["request_id"]) == 32  # generated uuid4 hex
    assert body["values"] == ["request", "seen", "user"]
    assert response["X-Request-ID"] == body["request_id"]
    assert not request_context.active


def test_incoming_request_id_is_honoured():
    response = Client().get("/context/", headers={"X-Request-ID": "abc-123"})
    assert response.json()["request_id"] == "abc-123"
    assert response["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize("bad", ["x" * 201, "bad\tid", "ünïcode"])
def test_unsafe_incoming_request_id_is_replaced(bad):
    response = Client().get("/context/", headers={"X-Request-ID": bad})
    assert response.json()["request_id"] != bad
    assert len(response.json()["request_id"]) == 32


def test_without_the_setting_no_header_is_read_or_echoed(settings):
    settings.CACHEPLUG_REQUEST_ID_HEADER = None
    response = Client().get("/context/", headers={"X-Request-ID": "abc"})
    assert response.json()["request_id"] != "abc"
    assert "X-Request-ID" not in response


@pytest.mark.django_db
def test_user_is_resolved_lazily_after_authentication():
    from django.contrib.auth.models import User

    client = Client()
    assert Client().get("/whoami/").content == b"False"
    User.objects.create_user("ann", password="pw")
    client.login(username="ann", password="pw")
    assert client.get("/whoami/").content == b"True"


def test_scope_closes_when_the_view_raises():
    def view(request):
        assert request_context.active
        raise RuntimeError("boom")

    middleware = RequestContextMiddleware(view)
    with pytest.raises(RuntimeError):
        middleware(RequestFactory().get("/"))
    assert not request_context.active


async def test_async_chain_gets_an_async_middleware():
    seen = []

    async def view(request):
        await asyncio.sleep(0)
        seen.append(request_context.request_id)
        return HttpResponse("ok")

    middleware = RequestContextMiddleware(view)
    assert iscoroutinefunction(middleware)
    requests = [RequestFactory().get("/", headers={"X-Request-ID": f"r{i}"}) for i in range(5)]
    responses = await asyncio.gather(*(middleware(r) for r in requests))
    assert sorted(seen) == [f"r{i}" for i in range(5)]
    assert [r["X-Request-ID"] for r in responses] == [f"r{i}" for i in range(5)]
    assert not request_context.active


async def test_async_client_through_the_project():
    response = await AsyncClient().get("/context/", headers={"X-Request-ID": "async-1"})
    assert response.json()["request_id"] == "async-1"


def test_sync_chain_gets_a_sync_middleware():
    middleware = RequestContextMiddleware(lambda request: HttpResponse("ok"))
    assert not iscoroutinefunction(middleware)
    assert middleware(RequestFactory().get("/")).content == b"ok"
