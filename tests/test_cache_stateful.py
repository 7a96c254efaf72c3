"""A hypothesis state machine: ShardedTTLCache against a simple model.

The model is a dict of key -> (value, expires_at, tags) plus tag generations. The
cache may evict, so the model only holds an upper bound on what is present: every
value the cache returns must be the model's live value (never stale, never expired),
and with room for every key nothing may be evicted at all.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cacheplug import ShardedTTLCache

from .conftest import FakeTimer

KEYS = st.sampled_from([f"k{i}" for i in range(12)])
TAGS = st.lists(st.sampled_from(["red", "blue", "green"]), max_size=2, unique=True)
TTLS = st.one_of(st.none(), st.integers(-1, 20))


class CacheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.timer = FakeTimer()
        self.maxsize = 8
        self.cache = ShardedTTLCache(maxsize=self.maxsize, ttl=10, shards=2, timer=self.timer)
        self.model: dict[str, tuple[int, float, frozenset[str]]] = {}
        self.dead_tags: dict[str, set[str]] = {}
        self.counter = 0

    def _live(self, key: str):
        entry = self.model.get(key)
        if entry is None or entry[1] <= self.timer.now:
            return None
        return entry

    @rule(key=KEYS, ttl=TTLS, tags=TAGS)
    def set(self, key, ttl, tags):
        self.counter += 1
        self.cache.set(key, self.counter, ttl=ttl, tags=tags)
        effective = 10 if ttl is None else ttl
        if effective <= 0:
            self.model.pop(key, None)
        else:
            self.model[key] = (self.counter, self.timer.now + effective, frozenset(tags))

    @rule(key=KEYS)
    def get(self, key):
        value = self.cache.get(key)
        live = self._live(key)
        if value is not None:
            assert live is not None, f"{key} returned {value} but it is dead in the model"
            assert value == live[0]

    @rule(key=KEYS)
    def delete(self, key):
        removed = self.cache.delete(key)
        live = self._live(key)
        if removed:
            assert live is not None
        self.model.pop(key, None)

    @rule(key=KEYS, ttl=st.integers(-1, 20))
    def touch(self, key, ttl):
        touched = self.cache.touch(key, ttl=ttl)
        live = self._live(key)
        if touched:
            assert live is not None
            if ttl <= 0:
                del self.model[key]
            else:
                self.model[key] = (live[0], self.timer.now + ttl, live[2])
        elif live is not None:
            # only an eviction may have taken it; the model forgets it too
            del self.model[key]

    @rule(tags=TAGS)
    def invalidate(self, tags):
        self.cache.invalidate_tags(*tags)
        for key, (_value, _exp, entry_tags) in list(self.model.items()):
            if entry_tags & set(tags):
                del self.model[key]

    @rule(seconds=st.sampled_from([0.5, 1, 3, 11]))
    def advance(self, seconds):
        self.timer.advance(seconds)

    @rule()
    def expire(self):
        self.cache.expire()
        now = self.timer.now
        assert all(self._live(k) is not None for k in self.cache)
        for key in [k for k, e in self.model.items() if e[1] <= now]:
            del self.model[key]

    @precondition(lambda self: len(self.model) < 3)
    @rule()
    def clear(self):
        self.cache.clear()
        self.model.clear()

    @invariant()
    def never_over_maxsize(self):
        assert len(self.cache) <= self.maxsize

    @invariant()
    def snapshot_matches_model(self):
        for key, value in self.cache.items():
            live = self._live(key)
            assert live is not None
            assert live[0] == value

    @invariant()
    def evictions_only_when_full(self):
        stats = self.cache.stats()
        if stats.evictions == 0:
            # nothing was evicted, so every live model key must be present
            for key in self.model:
                if self._live(key) is not None:
                    assert key in self.cache, f"{key} lost without an eviction"


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
