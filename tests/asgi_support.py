"""Shared by the ASGI middleware tests: the two clocks a cached response depends on."""

from __future__ import annotations

EPOCH = 1_700_000_000.0


class Clocks:
    """The wall clock of the HTTP policy and the monotonic one of the cache, moved together."""

    def __init__(self) -> None:
        self.wall = EPOCH
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds
