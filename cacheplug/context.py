"""Per-request state on :mod:`contextvars`, and memoisation for the lifetime of a request.

One :class:`~contextvars.ContextVar` holds the current request's store (a plain ``dict``)
or ``None``. :meth:`RequestContext.scope` opens a fresh store and always resets the
variable on exit, with its token, so neither a thread reused by a pool nor a later
asyncio task ever sees a finished request's values. The adapters open the scope for
every request; scripts and tests use ``with request_context.scope():``.

Private entries (the request id, :func:`request_cached` memos) live in the same store
under keys that are instances of a private class, so they never collide with user
names and never show up in :meth:`RequestContext.as_dict`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar, Token
from typing import Any, Final, ParamSpec, TypeVar, overload

from cachetools.keys import hashkey

from cacheplug.errors import CachePlugError

__all__ = (
    "NoActiveScopeError",
    "RequestContext",
    "request_cached",
    "request_context",
)

P = ParamSpec("P")
R = TypeVar("R")

_MISSING: Final = object()


class NoActiveScopeError(CachePlugError, RuntimeError):
    """A write to the request context happened while no request scope was open."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"{operation} needs an open request scope, and none is open. Add the adapter "
            "that opens one per request: cacheplug.integrations.django.RequestContextMiddleware "
            "(Django), FlaskCachePlug.init_app(app) (Flask) or "
            "cacheplug.integrations.asgi.CachePlugMiddleware (ASGI); in scripts and tests, "
            "wrap the code in `with request_context.scope():`"
        )


class _PrivateKey:
    """A store key only this module can produce; equal to itself alone, so never to a name."""

    __slots__ = ("_label",)

    def __init__(self, label: str) -> None:
        self._label = label

    def __repr__(self) -> str:
        return f"<cacheplug private key {self._label}>"


_REQUEST_ID: Final = _PrivateKey("request_id")


class _Scope:
    """One request's scope: a context manager, sync and async, that is used once.

    A small slotted class rather than ``contextlib.contextmanager``: the generator
    machinery would cost more than everything else a request does with the context.
    """

    __slots__ = ("_context", "_store", "_token")

    def __init__(self, context: RequestContext, store: dict[Hashable, Any]) -> None:
        self._context = context
        self._store = store
        self._token: Token[dict[Hashable, Any] | None] | None = None

    def __enter__(self) -> RequestContext:
        if self._token is not None:
            # The store is owned by this scope; entering twice would share it.
            raise RuntimeError("a request scope can be entered only once; call scope() again")
        self._token = self._context._var.set(self._store)
        return self._context

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # ``with`` runs this on every exit (return, exception, CancelledError): the reset
        # starlette-context's request_cycle_context skips on exceptions and
        # asgi-correlation-id never does.
        self._context._var.reset(self._token)  # type: ignore[arg-type]

    async def __aenter__(self) -> RequestContext:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)


class RequestContext:
    """A request-scoped key/value store, isolated per thread and per asyncio task.

    Reads outside a scope return their defaults; writes raise :class:`NoActiveScopeError`.
    Threads that inherit the scope (``asyncio.to_thread``, ``copy_context().run``) share
    the same store, and each single operation on it is atomic.

    Create instances at module level only: a :class:`~contextvars.ContextVar` is never
    freed, so one made per call would leak.
    """

    __slots__ = ("_var",)

    def __init__(self, name: str = "cacheplug.request_context") -> None:
        """Create a store backed by one new :class:`~contextvars.ContextVar`.

        :param name: the variable's name, shown in its ``repr``.
        """
        self._var: ContextVar[dict[Hashable, Any] | None] = ContextVar(name, default=None)

    def scope(self, request_id: str | None = None, **initial: Any) -> _Scope:
        """Return a context manager (``with`` or ``async with``) that opens a fresh store.

        On exit, however it happens, the previous state is restored: outside any scope,
        or the enclosing scope's store for a nested scope. The returned object can be
        entered once; entering it returns this :class:`RequestContext`.

        :param request_id: the request's id; when omitted, one is generated on the first
            read of :attr:`request_id` and stays the same for the rest of the scope.
        :param initial: values the store starts with.
        """
        # ``initial`` is a new dict on every call, so it can be the store as it is.
        if request_id is not None:
            initial[_REQUEST_ID] = request_id
        return _Scope(self, initial)

    def enter(self, request_id: str | None = None) -> Token[dict[Hashable, Any] | None]:
        """Open a fresh store, as :meth:`scope` does, and return the token that closes it.

        For adapters' per-request hot path, where the context manager's calls show:
        always pass the token to :meth:`exit` in a ``finally`` block.

        :param request_id: the request's id, as for :meth:`scope`.
        """
        return self._var.set({} if request_id is None else {_REQUEST_ID: request_id})

    def exit(self, token: Token[dict[Hashable, Any] | None]) -> None:
        """Close the store :meth:`enter` opened: the previous state is restored.

        :param token: the token :meth:`enter` returned.
        :raises ValueError: the token was already used, or comes from another context.
        """
        self._var.reset(token)

    def get(self, name: str, default: Any = None) -> Any:
        """Return the value stored under ``name``, or ``default`` if absent or outside a scope.

        :param name: the value's name.
        :param default: returned when there is no such value.
        """
        store = self._var.get()
        if store is None:
            return default
        return store.get(name, default)

    def set(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` until the current scope ends.

        :param name: the value's name.
        :param value: any object; it is stored as is, not copied.
        :raises NoActiveScopeError: no scope is open.
        """
        store = self._var.get()
        if store is None:
            raise NoActiveScopeError(f"request_context.set({name!r}, ...)")
        store[name] = value

    def pop(self, name: str, default: Any = _MISSING) -> Any:
        """Remove ``name`` and return its value, or ``default`` if it is absent.

        Removing is a write, so it needs a scope even when ``default`` is given.

        :param name: the value's name.
        :param default: returned when there is no such value.
        :raises KeyError: ``name`` is absent and no ``default`` was given.
        :raises NoActiveScopeError: no scope is open.
        """
        store = self._var.get()
        if store is None:
            raise NoActiveScopeError(f"request_context.pop({name!r})")
        if default is _MISSING:
            return store.pop(name)
        return store.pop(name, default)

    def __contains__(self, name: object) -> bool:
        """Return whether ``name`` is set in the current scope (``False`` outside one)."""
        store = self._var.get()
        return store is not None and name in store

    def as_dict(self) -> dict[str, Any]:
        """Return a copy of the current scope's values (``{}`` outside a scope).

        The request id and :func:`request_cached` memos are not included.
        """
        store = self._var.get()
        if store is None:
            return {}
        return {k: v for k, v in store.items() if type(k) is not _PrivateKey}  # type: ignore[misc]

    @property
    def request_id(self) -> str | None:
        """The current request's id: the one given to :meth:`scope`, else a generated
        ``uuid4`` hex string that stays the same for the whole scope; ``None`` outside one.
        """
        store = self._var.get()
        if store is None:
            return None
        request_id = store.get(_REQUEST_ID)
        if request_id is None:
            # Generated lazily, as most requests never read it. ``setdefault`` is atomic,
            # so threads sharing the store agree on one id even if they race here.
            request_id = store.setdefault(_REQUEST_ID, uuid.uuid4().hex)
        return request_id

    @property
    def active(self) -> bool:
        """Whether a scope is open in the current context."""
        return self._var.get() is not None

    def __repr__(self) -> str:
        store = self._var.get()
        if store is None:
            return f"<RequestContext {self._var.name!r} inactive>"
        return f"<RequestContext {self._var.name!r} active, {len(self.as_dict())} values>"


#: The request context the adapters open a scope on for every request.
request_context: Final = RequestContext()


@overload
def request_cached(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def request_cached(
    *, key: Callable[..., Hashable] = ...
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def request_cached(
    func: Callable[..., Any] | None = None, /, *, key: Callable[..., Hashable] = hashkey
) -> Any:
    """Memoise a function's results for the lifetime of the current request scope.

    Usable bare (``@request_cached``) or with options (``@request_cached(key=...)``), on
    sync and ``async def`` functions. Each decorated function keeps one memo per scope,
    inside the scope's store, so it dies with the scope and a nested scope starts empty.
    Outside a scope the function simply runs, uncached. A raised exception is never
    cached.

    For ``async def`` functions, concurrent calls with the same arguments in one scope
    run the coroutine once and all receive its result or its exception; if the caller
    running it is cancelled, a waiting caller runs it instead. Sync functions called
    from several threads sharing a scope may run more than once, and the first result
    stored wins.

    :param func: the function to memoise.
    :param key: builds the memo key from the call's arguments, like
        :func:`cachetools.keys.hashkey` (the default); the arguments must then be hashable.
    """
    if func is None:
        return functools.partial(_decorate, key=key)
    return _decorate(func, key=key)


def _decorate(func: Callable[..., Any], *, key: Callable[..., Hashable]) -> Callable[..., Any]:
    var = request_context._var
    memo_key = _PrivateKey(f"request_cached:{getattr(func, '__qualname__', repr(func))}")

    if inspect.iscoroutinefunction(func):
        return _decorate_async(func, key, var, memo_key)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        store = var.get()
        if store is None:
            return func(*args, **kwargs)
        memo = store.get(memo_key)
        if memo is None:
            memo = store.setdefault(memo_key, {})
        k = key(*args, **kwargs)
        try:
            return memo[k]
        except KeyError:
            pass
        return memo.setdefault(k, func(*args, **kwargs))

    return wrapper


def _decorate_async(
    func: Callable[..., Awaitable[Any]],
    key: Callable[..., Hashable],
    var: ContextVar[dict[Hashable, Any] | None],
    memo_key: _PrivateKey,
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        store = var.get()
        if store is None:
            return await func(*args, **kwargs)
        memo = store.get(memo_key)
        if memo is None:
            memo = store.setdefault(memo_key, {})
        k = key(*args, **kwargs)
        while True:
            shared: asyncio.Future[Any] | None = memo.get(k)
            if shared is None:
                return await _run_shared(func, args, kwargs, memo, k)
            if shared.done():
                # Failed and cancelled futures leave the memo before they complete,
                # so a done one here holds a result.
                return shared.result()
            try:
                # shield: a waiter's own cancellation must not cancel the shared future.
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if shared.cancelled() and task is not None and not task.cancelling():
                    continue  # the caller running it was cancelled, not us: run it here
                raise

    return wrapper


async def _run_shared(
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    memo: dict[Hashable, asyncio.Future[Any]],
    k: Hashable,
) -> Any:
    """Run ``func`` in the caller's task, publishing the outcome to concurrent callers."""
    # The coroutine runs in the caller's own task (not a new one), so it behaves as a
    # plain ``await`` would: same context, and it is cancelled with its caller.
    shared: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    memo[k] = shared
    try:
        result = await func(*args, **kwargs)
    except Exception as exc:
        if memo.get(k) is shared:
            del memo[k]  # not cached: the next call runs it again
        shared.set_exception(exc)
        # Waiters re-raise it themselves; without this, a future nobody awaited would
        # log "exception was never retrieved" when collected.
        shared.exception()
        raise
    except BaseException:
        if memo.get(k) is shared:
            del memo[k]
        shared.cancel()  # waiters retry rather than inherit our cancellation
        raise
    shared.set_result(result)
    return result
