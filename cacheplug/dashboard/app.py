"""The dashboard as a tiny pure-ASGI app and a tiny WSGI app.

Routes, under ``prefix`` (default ``/_cacheplug``):

* ``GET {prefix}/`` — the self-contained page (``dashboard.html``);
* ``GET {prefix}/api/stats`` — the JSON document of :func:`build_payload`;
* ``GET {prefix}`` — a redirect to ``{prefix}/``.

Every route goes through an :class:`AccessPolicy` (token or loopback). Given ``app=``,
the dashboard wraps it and passes every other path through, so an adapter mounts it in
one line; without ``app`` it answers other paths with 404, and a router may mount it
(Starlette's ``Mount`` and WSGI's ``SCRIPT_NAME`` are honoured).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from importlib.resources import files
from typing import Any, Final

from cacheplug.dashboard._http import Request, Response, guarded, make_asgi_app, make_wsgi_app
from cacheplug.dashboard.access import AccessPolicy
from cacheplug.dashboard.payload import PREFIX_SAMPLE, build_payload
from cacheplug.errors import ConfigurationError

__all__ = ("DEFAULT_PREFIX", "dashboard_asgi_app", "dashboard_handler", "dashboard_wsgi_app")

DEFAULT_PREFIX: Final = "/_cacheplug"


@functools.cache
def _page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy (the inline script allowed by hash)."""
    html = files("cacheplug.dashboard").joinpath("dashboard.html").read_bytes()
    scripts = re.findall(rb"<script>(.*?)</script>", html, re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'" for s in scripts
    )
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html, csp


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigurationError(
            f"prefix must start with '/' and not end with one, like '/_cacheplug'; got {prefix!r}"
        )
    return prefix


def dashboard_handler(
    plug: Any,
    *,
    access: AccessPolicy | None = None,
    prefix: str = DEFAULT_PREFIX,
    standalone: bool = False,
    sample: int = PREFIX_SAMPLE,
) -> Callable[[Request], Response | None]:
    """The framework-free routing function behind both apps, access check included.

    It maps a :class:`Request` to a :class:`Response`, or to None for a path that is
    not the dashboard's. An adapter without ASGI/WSGI access (Django) builds the
    ``Request`` from its own request object and copies the ``Response`` back.

    :param access: who may look (default ``AccessPolicy()``).
    :param standalone: also match routes without ``prefix`` (when a router has already
        stripped it); otherwise only paths under ``prefix`` are claimed.
    :param sample: keys sampled for the top prefixes.
    """
    _check_prefix(prefix)
    access = access or AccessPolicy()

    def handle(request: Request) -> Response | None:
        path = request.path
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        elif not standalone:
            return None
        if path == "":
            query = f"?{request.query_string}" if request.query_string else ""
            location = request.full_path + "/" + query
            return Response(301, b"", headers=[("location", location)])
        if path == "/":
            html, csp = _page()
            return Response(
                200,
                html,
                "text/html; charset=utf-8",
                [("content-security-policy", csp), ("referrer-policy", "no-referrer")],
            )
        if path == "/api/stats":
            body = json.dumps(build_payload(plug, sample=sample), default=str).encode()
            return Response(200, body, "application/json")
        return None

    return guarded(handle, access)


def dashboard_asgi_app(
    plug: Any,
    *,
    app: Any | None = None,
    access: AccessPolicy | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> Callable[..., Any]:
    """Serve the dashboard of ``plug`` as a pure ASGI app (or middleware around ``app``).

    :param plug: a :class:`cacheplug.CachePlug`; the caller starts and closes it.
    :param app: an ASGI app to wrap; paths outside ``prefix`` and non-HTTP scopes
        (lifespan, websocket) go to it unchanged.
    :param access: who may look; default ``AccessPolicy()`` (token from
        ``$CACHEPLUG_DASHBOARD_TOKEN``, else loopback only).
    :param prefix: where the routes live.
    :raises ConfigurationError: for a bad ``prefix`` or access policy.
    """
    handler = dashboard_handler(plug, access=access, prefix=prefix, standalone=app is None)
    return make_asgi_app(handler, app)


def dashboard_wsgi_app(
    plug: Any,
    *,
    app: Callable[..., Iterable[bytes]] | None = None,
    access: AccessPolicy | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> Callable[..., Iterable[bytes]]:
    """Serve the dashboard of ``plug`` as a WSGI app (or middleware around ``app``).

    Same parameters as :func:`dashboard_asgi_app`; for Flask:
    ``flask_app.wsgi_app = dashboard_wsgi_app(plug, app=flask_app.wsgi_app)``.
    """
    handler = dashboard_handler(plug, access=access, prefix=prefix, standalone=app is None)
    return make_wsgi_app(handler, app)
