"""Just enough ASGI and WSGI plumbing to serve a few fixed routes without a framework.

Handlers are plain functions from a :class:`Request` to a :class:`Response` (or None
when the path is not theirs); :func:`serve_asgi` and :func:`serve_wsgi` adapt them to
each server interface, passing unmatched requests to an optional wrapped app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from cacheplug.dashboard.access import AccessPolicy

__all__ = ("Request", "Response", "guarded", "make_asgi_app", "make_wsgi_app")

_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
}


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler needs from a request.

    ``path`` is relative to any mount point (ASGI ``root_path``, WSGI ``SCRIPT_NAME``);
    ``full_path`` includes it. ``headers`` have lower-case names; ``client_host`` is the
    peer address as the server saw it, or None.
    """

    method: str
    path: str
    full_path: str
    query_string: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    client_host: str | None


@dataclass(slots=True)
class Response:
    """A complete response; :meth:`header_list` adds the headers every answer carries."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header_list(self) -> list[tuple[str, str]]:
        return [
            ("content-type", self.content_type),
            ("content-length", str(len(self.body))),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            *self.headers,
        ]


Handler = Callable[[Request], "Response | None"]


def text(status: int, message: str, **kw: Any) -> Response:
    return Response(status, message.encode() + b"\n", **kw)


def guarded(handler: Handler, access: AccessPolicy) -> Handler:
    """Run ``handler``; if it claims the request, check access and allowed methods first."""

    def run(request: Request) -> Response | None:
        response = handler(request)
        if response is None:
            return None
        decision = access.check(
            client_host=request.client_host,
            headers=request.headers,
            query_token=(request.query.get("token") or [None])[0],
        )
        if not decision.allowed:
            extra = [("www-authenticate", "Bearer")] if decision.status == 401 else []
            return text(decision.status, f"cacheplug: {decision.reason}", headers=extra)
        if request.method not in ("GET", "HEAD"):
            return text(405, "cacheplug: only GET and HEAD", headers=[("allow", "GET, HEAD")])
        return response

    return run


def _relative(path: str, root_path: str) -> str:
    # ASGI servers and Starlette's Mount keep the full path and set root_path.
    if root_path and path.startswith(root_path):
        return path[len(root_path) :]
    return path


def make_asgi_app(handler: Handler, app: Any | None) -> Callable[..., Any]:
    """An ASGI app serving ``handler``; other requests go to ``app`` (or get a 404)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if app is not None:
                await app(scope, receive, send)
            elif scope["type"] == "lifespan":
                await _null_lifespan(receive, send)
            return
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            key = name.decode("latin-1").lower()
            # Repeated headers are joined with commas (RFC 9110 §5.3).
            text_value = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text_value}" if key in headers else text_value
        client = scope.get("client")
        full_path = scope.get("path", "/")
        request = Request(
            method=scope.get("method", "GET"),
            path=_relative(full_path, scope.get("root_path", "")),
            full_path=full_path,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            client_host=client[0] if client else None,
        )
        response = handler(request)
        if response is None:
            if app is not None:
                await app(scope, receive, send)
                return
            response = text(404, "cacheplug: not found")
        raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.header_list()
        ]
        await send(
            {"type": "http.response.start", "status": response.status, "headers": raw_headers}
        )
        body = b"" if request.method == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    return asgi


async def _null_lifespan(receive: Any, send: Any) -> None:
    """Answer lifespan events when served alone (the plug's owner runs its lifecycle)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def make_wsgi_app(handler: Handler, app: Any | None) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving ``handler``; other requests go to ``app`` (or get a 404)."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        script_name = environ.get("SCRIPT_NAME", "")
        path_info = environ.get("PATH_INFO", "")
        request = Request(
            method=environ.get("REQUEST_METHOD", "GET"),
            path=path_info,  # WSGI already splits the mount point off into SCRIPT_NAME
            full_path=script_name + path_info,
            query_string=environ.get("QUERY_STRING", ""),
            query=parse_qs(environ.get("QUERY_STRING", "")),
            headers=headers,
            client_host=environ.get("REMOTE_ADDR"),
        )
        response = handler(request)
        if response is None:
            if app is not None:
                return app(environ, start_response)
            response = text(404, "cacheplug: not found")
        status = f"{response.status} {_REASONS.get(response.status, 'Unknown')}"
        start_response(status, response.header_list())
        return [b"" if request.method == "HEAD" else response.body]

    return wsgi
