"""The Redis tier's context-local flags: which changes the tier must not publish.

Context-local, so a flag set in one thread or asyncio task never affects another.
"""

from __future__ import annotations

import contextvars

__all__ = ("local_only", "remote", "scoped")

#: set while applying a remote invalidation or a fill: the tier must not publish it
remote: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cacheplug_tier_remote", default=False
)
#: set while reading the local tier only (get_many, inside get_or_set)
local_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cacheplug_tier_local_only", default=False
)


class scoped:  # lower case: used like a function, ``with scoped(remote, True):``
    """Set a ContextVar for a ``with`` block (sync and async code alike)."""

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[bool], value: bool) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc_info: object) -> None:
        self._var.reset(self._token)
