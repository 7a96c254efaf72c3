"""Lifespan handling: start the plug before the app's own startup, close it after shutdown.

Two entry points. :func:`run_lifespan` is what :class:`CachePlugMiddleware` does with a
``lifespan`` scope: it works whether the wrapped app has its own ``lifespan=``, answers
nothing, or raises because it does not speak the lifespan protocol at all (the server
still gets ``startup.complete`` and ``shutdown.complete``). :func:`cacheplug_lifespan`
is for FastAPI's and Starlette's own ``lifespan=`` argument.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from cacheplug.runtime import CachePlug

from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ("STATE_KEY", "attach_to_lifespan", "cacheplug_lifespan", "run_lifespan")

logger = logging.getLogger("cacheplug.asgi")

#: Key of the plug in ``scope["state"]`` (``request.state.cacheplug`` in Starlette).
STATE_KEY = "cacheplug"

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


class _Companion(Protocol):
    """Something tied to a plug's lifespan: reopened after start, closed before close."""

    def reopen(self) -> None: ...

    async def aclose(self) -> None: ...


# Held weakly both ways: registering never keeps a middleware or a plug alive.
_COMPANIONS: weakref.WeakKeyDictionary[CachePlug, weakref.WeakSet[Any]] = (
    weakref.WeakKeyDictionary()
)


def attach_to_lifespan(plug: CachePlug, companion: _Companion) -> None:
    """Reopen ``companion`` after ``plug`` starts and close it before ``plug`` closes.

    Both :func:`run_lifespan` and :func:`cacheplug_lifespan` honour it, so the
    middleware's background refreshes end at shutdown whichever of the two runs the plug.
    """
    _COMPANIONS.setdefault(plug, weakref.WeakSet()).add(companion)


def _reopen_companions(plug: CachePlug) -> None:
    for companion in list(_COMPANIONS.get(plug, ())):
        companion.reopen()


async def _close_companions(plug: CachePlug) -> None:
    for companion in list(_COMPANIONS.get(plug, ())):
        try:
            await companion.aclose()
        except Exception:  # the plug must still close and save
            logger.exception("cacheplug: %r did not close cleanly", companion)


def cacheplug_lifespan(
    plug: CachePlug, lifespan: Lifespan | None = None
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """Return a ``lifespan=`` for FastAPI/Starlette that starts and closes ``plug``.

    ``FastAPI(lifespan=cacheplug_lifespan(plug))``. On startup ``await plug.astart()``
    (load saved state, start the worker) runs before ``lifespan``'s own startup (if
    given); on shutdown ``await plug.aclose()`` (drain, save) runs after it, also when it
    raised. The state it yields is ``lifespan``'s plus ``{"cacheplug": plug}``, so
    ``request.state.cacheplug`` is the plug.

    :param plug: the plug to run.
    :param lifespan: the app's own lifespan, composed inside the plug's.
    """

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        await plug.astart()
        _reopen_companions(plug)
        try:
            if lifespan is None:
                yield {STATE_KEY: plug}
            else:
                async with lifespan(app) as state:
                    yield {**(state or {}), STATE_KEY: plug}
        finally:
            try:
                await _close_companions(plug)
            finally:
                await plug.aclose()

    return _lifespan


class _LifespanOver(Exception):
    """Raised into an app that asks for an event after shutdown was answered."""


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def run_lifespan(
    app: ASGIApp, plug: CachePlug, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run one ``lifespan`` scope: the plug's startup and shutdown around the app's.

    Startup: read ``lifespan.startup`` from the server, ``await plug.astart()`` (a failure
    is reported as ``lifespan.startup.failed``), then let ``app`` see the startup event;
    its ``startup.complete``/``failed`` is passed on. Shutdown: the app's shutdown runs
    first, then ``await plug.aclose()``, then the server hears ``shutdown.complete`` (or
    ``failed`` with the reason). When the app raises before answering, returns without
    answering, or asks for the next event without answering startup, the app is taken
    not to support lifespan and the plug is still started, closed and reported.
    """
    first = await receive()
    if first["type"] != "lifespan.startup":  # a server that breaks the protocol
        await app(scope, receive, send)
        return
    state = scope.get("state")
    if isinstance(state, dict):
        state[STATE_KEY] = plug
    try:
        await plug.astart()
    except Exception as exc:
        logger.exception("cacheplug could not start")
        await send({"type": "lifespan.startup.failed", "message": _error_text(exc)})
        raise  # as Starlette does: servers and TestClient expect the app to end in error
    _reopen_companions(plug)

    phase = "starting"  # -> "started" -> "stopping" -> "done"
    close_error: Exception | None = None

    async def close_plug() -> str | None:
        nonlocal close_error
        try:
            await _close_companions(plug)
            await plug.aclose()
        except Exception as exc:
            logger.exception("cacheplug could not close cleanly")
            close_error = exc
            return _error_text(exc)
        return None

    async def finish_startup() -> None:
        nonlocal phase
        phase = "started"
        await send({"type": "lifespan.startup.complete"})

    async def finish_shutdown(app_error: str | None = None) -> None:
        nonlocal phase
        phase = "done"
        error = await close_plug()
        error = app_error or error
        if error is None:
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "lifespan.shutdown.failed", "message": error})

    delivered = False

    async def app_receive() -> Message:
        nonlocal phase, delivered
        if not delivered:
            delivered = True
            return first
        if phase == "starting":  # asks for more without answering startup: unsupported
            await finish_startup()
        if phase == "started":
            message = await receive()
            phase = "stopping"
            return message
        if phase == "stopping":  # asks for more without answering shutdown
            await finish_shutdown()
        raise _LifespanOver  # nothing more will come; ends the app's call, caught below

    async def app_send(message: Message) -> None:
        nonlocal phase
        kind = message["type"]
        if kind == "lifespan.startup.complete" and phase == "starting":
            await finish_startup()
        elif kind == "lifespan.startup.failed" and phase == "starting":
            phase = "done"
            await close_plug()
            await send(message)
        elif kind == "lifespan.shutdown.complete" and phase == "stopping":
            await finish_shutdown()
        elif kind == "lifespan.shutdown.failed" and phase == "stopping":
            await finish_shutdown(message.get("message") or "the app's shutdown failed")
        else:
            logger.warning("ignoring out-of-order lifespan message %r from the app", kind)

    try:
        await app(scope, app_receive, app_send)
    except _LifespanOver:
        pass
    except Exception as exc:
        if phase == "starting":  # raised before answering: lifespan is not supported
            logger.debug("the app does not support lifespan (%r); cacheplug runs it", exc)
        elif phase == "stopping":
            await finish_shutdown(_error_text(exc))
            raise
        elif phase == "started":
            logger.exception("the app's lifespan raised after startup")
        else:  # it reported startup/shutdown failed and raised, as Starlette does
            raise
    if phase == "starting":
        await finish_startup()
    if phase == "started":
        await receive()  # lifespan.shutdown
        phase = "stopping"
    if phase == "stopping":
        await finish_shutdown()
    if close_error is not None:
        raise close_error
