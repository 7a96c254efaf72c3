"""Request ids: generated cheaply per request, or taken from a header when trustworthy."""

from __future__ import annotations

import itertools
import os

__all__ = ("MAX_REQUEST_ID", "new_request_id", "valid_request_id")

#: Longest incoming id honoured.
MAX_REQUEST_ID = 200
_BASE = 1 << 64


class _RequestIds:
    """A random per-process prefix plus a counter (uuid4 costs a syscall per id)."""

    def __init__(self) -> None:
        self.reseed()
        # A forked worker must not repeat its parent's ids.
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        # Counting from 2**64, hex() gives "0x1" and then the 16 digits we keep: cheaper
        # than formatting with zero padding.
        self.counter = itertools.count(_BASE + 1)

    def new(self) -> str:
        return self.prefix + hex(next(self.counter))[3:]


_IDS = _RequestIds()

#: A new 32-hex-digit id, unique in this process and, in practice, across processes.
new_request_id = _IDS.new


def valid_request_id(value: str) -> bool:
    """An incoming id is honoured only if short, ASCII and printable (no log injection)."""
    return 0 < len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable()
