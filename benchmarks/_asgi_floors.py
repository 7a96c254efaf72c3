"""Floor contenders of the ``asgi`` suite: the least any middleware in that place can cost.

They are not caches anyone should use. Each does only the work its position forces, so
its ratio is the best any middleware can score there, cacheplug's included:

- :class:`PrecomputedAnswer`, added with ``app.add_middleware``, answers every request
  with bytes it already holds: no lookup, no headers, no policy. Its hit path is FastAPI's
  own outer stack (``FastAPI.__call__``, ``ServerErrorMiddleware``) plus one call.
- :class:`MinimalStore` does the least a response cache must do on a miss: build a key
  from the URL, look it up, pass the response through while keeping its start and body,
  and store them in a bounded ``OrderedDict``. No request id, no request context, no
  ``Cache-Control`` rules, no ETag, no ``X-Cache``, no thread safety.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

Scope = dict[str, Any]


class PrecomputedAnswer:
    """Answer every HTTP request with one precomputed response; never call the app."""

    def __init__(self, app: Any, body: bytes) -> None:
        self.app = app
        self.body = body
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class MinimalStore:
    """Store each complete one-message response under its URL; serve it on the next request."""

    def __init__(self, app: Any, maxsize: int = 20_000) -> None:
        self.app = app
        self.maxsize = maxsize
        self.pages: OrderedDict[str, tuple[int, Any, bytes]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        key = f"{scope['path']}?{scope['query_string'].decode('latin-1')}"
        page = self.pages.get(key)
        if page is not None:
            status, headers, body = page
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        start: dict[str, Any] = {}

        async def keep(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif not message.get("more_body", False):
                self.pages[key] = (start["status"], start.get("headers", []), message["body"])
                if len(self.pages) > self.maxsize:
                    self.pages.popitem(last=False)
            await send(message)

        await self.app(scope, receive, keep)
