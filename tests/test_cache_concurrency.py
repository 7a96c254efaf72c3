"""Several threads hammer one cache for a bounded time; invariants hold throughout."""

from __future__ import annotations

import random
import threading
import time

import pytest

from cacheplug import ShardedTTLCache

DURATION = 2.0  # seconds; the loops stop by themselves


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_mixed_operations_keep_invariants():
    maxsize = 256
    # A real clock and short TTLs, so entries really expire while others read.
    cache = ShardedTTLCache(maxsize=maxsize, ttl=0.05, shards=8)
    errors: list[BaseException] = []
    stop = time.monotonic() + DURATION
    counts = [0] * 6

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            key = f"k{rng.randrange(1000)}"
            ttl = rng.choice([0.01, 0.05, 0.2])
            # The entry's true expiry is the cache's clock inside set() plus ttl, so
            # "clock after set() returned + ttl" is an upper bound on it. The value
            # carries that bound (filled in after set) for readers to check against.
            value = [key, None]
            cache.set(key, value, ttl=ttl, tags=(f"t{rng.randrange(4)}",))
            value[1] = time.monotonic() + ttl
            counts[0] += 1

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            key = f"k{rng.randrange(1000)}"
            read_start = time.monotonic()
            value = cache.get(key)
            if value is not None:
                assert value[0] == key
                bound = value[1]
                # A correct cache returns an entry only while true_expiry > its clock
                # read >= read_start, and true_expiry <= bound.
                assert bound is None or bound > read_start, "an expired value was returned"
            counts[1] += 1

    def deleter(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            cache.delete(f"k{rng.randrange(1000)}")
            if rng.random() < 0.01:
                cache.invalidate_tags(f"t{rng.randrange(4)}")
            counts[2] += 1

    def scanner() -> None:
        while time.monotonic() < stop:
            for key, value in cache.items():  # a snapshot: safe while others write
                assert value[0] == key
                cache.delete(key) if random.random() < 0.1 else None
            assert len(cache) <= maxsize
            cache.expire()
            counts[3] += 1

    def loader(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            key = f"k{rng.randrange(50)}"
            value = cache.get_or_set(key, lambda k=key: [k, None])
            assert value[0] == key
            counts[4] += 1

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=guarded, args=(writer, 1)),
        threading.Thread(target=guarded, args=(writer, 2)),
        threading.Thread(target=guarded, args=(reader, 3)),
        threading.Thread(target=guarded, args=(reader, 4)),
        threading.Thread(target=guarded, args=(deleter, 5)),
        threading.Thread(target=guarded, args=(scanner,)),
        threading.Thread(target=guarded, args=(loader, 6)),
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert len(cache) <= maxsize
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert all(counts[:5]), counts

    # internal consistency after the storm: index, queues and sizes agree
    stored = 0
    for shard in cache._shards:
        live = [item for item in shard.queue if item is not None]
        assert len(live) == shard.size <= shard.capacity
        for slot, item in enumerate(shard.queue):
            if item is not None:
                assert item[5] == slot
                assert cache._data[item[6]] is item
        stored += shard.size
        assert not shard.flights
    assert stored == len(cache._data)
