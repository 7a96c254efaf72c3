"""Tests for cacheplug.context: scope lifecycle, isolation, and request_cached."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import pytest
from cachetools.keys import typedkey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cacheplug.context import (
    NoActiveScopeError,
    RequestContext,
    request_cached,
    request_context,
)
from cacheplug.errors import CachePlugError

# --- scope lifecycle ---------------------------------------------------------------


def test_outside_a_scope_nothing_is_active() -> None:
    assert not request_context.active
    assert request_context.request_id is None
    assert request_context.as_dict() == {}


def test_scope_resets_on_normal_exit() -> None:
    with request_context.scope(user="ada") as ctx:
        assert ctx is request_context
        assert request_context.active
        assert request_context.get("user") == "ada"
    assert not request_context.active
    assert request_context.get("user") is None


def test_scope_resets_on_exception() -> None:
    def handler() -> None:
        with request_context.scope():
            request_context.set("user", "ada")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        handler()
    assert not request_context.active
    assert request_context.get("user") is None


async def test_async_with_scope_resets() -> None:
    async with request_context.scope(user="ada") as ctx:
        assert ctx.get("user") == "ada"
        await asyncio.sleep(0)
        assert ctx.get("user") == "ada"
    assert not request_context.active


@pytest.mark.parametrize("use_async_with", [False, True])
async def test_scope_resets_when_the_task_is_cancelled(use_async_with: bool) -> None:
    entered = asyncio.Event()
    seen_after: list[object] = []

    async def handler() -> None:
        try:
            with request_context.scope(outer=1):
                try:
                    if use_async_with:
                        async with request_context.scope(inner=2):
                            entered.set()
                            await asyncio.Future()  # never completes
                    else:
                        with request_context.scope(inner=2):
                            entered.set()
                            await asyncio.Future()
                finally:
                    seen_after.append(request_context.as_dict())
        finally:
            seen_after.append(request_context.active)

    task = asyncio.create_task(handler())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The inner scope was reset (outer visible again), then the outer one.
    assert seen_after == [{"outer": 1}, False]


def test_nested_scope_is_fresh_and_outer_is_restored() -> None:
    with request_context.scope(request_id="outer", a=1):
        request_context.set("b", 2)
        with request_context.scope():
            assert request_context.as_dict() == {}
            assert "a" not in request_context
            assert request_context.request_id != "outer"
            request_context.set("a", "inner")
        assert request_context.as_dict() == {"a": 1, "b": 2}
        assert request_context.request_id == "outer"
    assert not request_context.active


def test_scope_object_cannot_be_entered_twice() -> None:
    scope = request_context.scope()
    with scope:
        pass
    with pytest.raises(RuntimeError, match="entered only once"), scope:
        pass  # pragma: no cover
    assert not request_context.active


def test_separate_instances_do_not_share_state() -> None:
    other = RequestContext("test.other")
    with other.scope(x=1):
        assert not request_context.active
        assert other.get("x") == 1
    assert "inactive" in repr(other)


# --- reads and writes --------------------------------------------------------------


def test_reads_outside_a_scope_return_defaults() -> None:
    assert request_context.get("user") is None
    assert request_context.get("user", "anon") == "anon"
    assert "user" not in request_context


@pytest.mark.parametrize(
    "write",
    [
        lambda: request_context.set("user", "ada"),
        lambda: request_context.pop("user"),
        lambda: request_context.pop("user", None),
    ],
    ids=["set", "pop", "pop-default"],
)
def test_writes_outside_a_scope_raise_a_helpful_error(write) -> None:
    with pytest.raises(NoActiveScopeError) as info:
        write()
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, CachePlugError)
    message = str(info.value)
    assert "'user'" in message
    assert "cacheplug.integrations.django.RequestContextMiddleware" in message
    assert "FlaskCachePlug.init_app(app)" in message
    assert "cacheplug.integrations.asgi.CachePlugMiddleware" in message
    assert "with request_context.scope():" in message


def test_set_get_contains() -> None:
    with request_context.scope():
        assert request_context.get("user") is None
        request_context.set("user", "ada")
        request_context.set("user", "grace")
        assert request_context.get("user") == "grace"
        assert "user" in request_context
        assert "other" not in request_context


def test_pop_semantics() -> None:
    with request_context.scope(a=1, b=None):
        assert request_context.pop("a") == 1
        assert "a" not in request_context
        assert request_context.pop("a", "gone") == "gone"
        assert request_context.pop("b", "default") is None
        with pytest.raises(KeyError):
            request_context.pop("a")


def test_as_dict_is_a_copy_without_private_entries() -> None:
    with request_context.scope(a=1):
        _ = request_context.request_id
        copy = request_context.as_dict()
        assert copy == {"a": 1}
        copy["a"] = 2
        copy["b"] = 3
        assert request_context.as_dict() == {"a": 1}
        assert "active, 1 values" in repr(request_context)


def test_initial_mapping_is_not_aliased() -> None:
    initial = {"a": 1}
    with request_context.scope(**initial):
        request_context.set("a", 2)
    assert initial == {"a": 1}


# --- request id --------------------------------------------------------------------


def test_request_id_given_is_used() -> None:
    with request_context.scope(request_id="req-42"):
        assert request_context.request_id == "req-42"
        assert "request_id" not in request_context
        assert request_context.as_dict() == {}


def test_request_id_generated_is_stable_and_unique_per_scope() -> None:
    with request_context.scope():
        first = request_context.request_id
        assert isinstance(first, str)
        assert len(first) == 32
        assert request_context.request_id == first
    with request_context.scope():
        assert request_context.request_id != first


def test_request_id_generated_in_a_worker_thread_is_shared() -> None:
    def read_id(ctx: contextvars.Context) -> str | None:
        return ctx.run(lambda: request_context.request_id)

    with request_context.scope():
        # The id is first read in the workers; they and the request must agree on it.
        contexts = [contextvars.copy_context() for _ in range(2)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            ids = list(pool.map(read_id, contexts))
        assert ids == [request_context.request_id] * 2


# --- isolation ---------------------------------------------------------------------


async def test_concurrent_tasks_see_only_their_own_scope() -> None:
    n = 1_000
    barrier = asyncio.Barrier(n)

    async def handler(i: int) -> tuple[int, str | None]:
        async with request_context.scope():
            assert request_context.get("i") is None
            request_context.set("i", i)
            await barrier.wait()  # every task is inside its scope at once
            await asyncio.sleep(0)
            assert request_context.as_dict() == {"i": i}
            return request_context.get("i"), request_context.request_id

    results = await asyncio.gather(*(handler(i) for i in range(n)))
    assert [i for i, _ in results] == list(range(n))
    assert len({rid for _, rid in results}) == n
    assert not request_context.active


def test_thread_pool_reusing_threads_never_sees_a_previous_request() -> None:
    seen_on_entry: list[object] = []

    def handle(i: int) -> int:
        # What a request would see before its middleware opens the scope.
        seen_on_entry.append(request_context.get("i"))
        with request_context.scope():
            if request_context.get("i") is not None:
                raise AssertionError(f"request {i} saw {request_context.get('i')!r}")
            request_context.set("i", i)
            return request_context.get("i")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(handle, range(1_000)))
    assert results == list(range(1_000))
    assert seen_on_entry == [None] * 1_000


async def test_to_thread_carries_and_shares_the_scope() -> None:
    def worker() -> tuple[object, str | None]:
        request_context.set("from_thread", threading.get_ident())
        return request_context.get("user"), request_context.request_id

    async with request_context.scope(user="ada"):
        user, request_id = await asyncio.to_thread(worker)
        assert user == "ada"
        assert request_id == request_context.request_id
        # The thread runs in a copy of the context that holds the same store.
        assert request_context.get("from_thread") not in (None, threading.get_ident())


def test_copy_context_run_carries_the_scope_into_a_thread() -> None:
    results: list[object] = []
    with request_context.scope(user="ada", request_id="r1"):
        ctx = contextvars.copy_context()
    assert not request_context.active

    def read() -> None:
        results.append((request_context.get("user"), request_context.request_id))

    thread = threading.Thread(target=ctx.run, args=(read,))
    thread.start()
    thread.join()
    ctx.run(read)
    assert results == [("ada", "r1"), ("ada", "r1")]


class NestedScopes(RuleBasedStateMachine):
    """Any interleaving of nested scopes, writes and exits matches a stack of dicts."""

    names = st.sampled_from(["a", "b", "c"])

    def __init__(self) -> None:
        super().__init__()
        self.scopes: list[AbstractContextManager[object]] = []
        self.model: list[dict[str, int]] = []

    @rule(initial=st.dictionaries(names, st.integers(), max_size=2))
    def open_scope(self, initial: dict[str, int]) -> None:
        scope = request_context.scope(**initial)
        scope.__enter__()
        self.scopes.append(scope)
        self.model.append(dict(initial))

    @precondition(lambda self: self.model)
    @rule(name=names, value=st.integers())
    def set_value(self, name: str, value: int) -> None:
        request_context.set(name, value)
        self.model[-1][name] = value

    @precondition(lambda self: self.model)
    @rule(name=names)
    def pop_value(self, name: str) -> None:
        assert request_context.pop(name, None) == self.model[-1].pop(name, None)

    @precondition(lambda self: self.model)
    @rule()
    def close_scope(self) -> None:
        self.scopes.pop().__exit__(None, None, None)
        self.model.pop()

    @invariant()
    def visible_state_matches(self) -> None:
        assert request_context.active == bool(self.model)
        assert request_context.as_dict() == (self.model[-1] if self.model else {})

    def teardown(self) -> None:
        while self.scopes:
            self.scopes.pop().__exit__(None, None, None)
        assert not request_context.active


TestNestedScopes = NestedScopes.TestCase
TestNestedScopes.settings = settings(max_examples=50, stateful_step_count=20, deadline=None)


# --- request_cached: sync ----------------------------------------------------------


def test_request_cached_sync_runs_once_per_args_per_scope() -> None:
    calls: list[int] = []

    @request_cached
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    with request_context.scope():
        assert [square(2), square(2), square(3), square(x=2)] == [4, 4, 9, 4]
        assert calls == [2, 3, 2]  # keyword and positional calls key differently
        assert request_context.as_dict() == {}  # the memo is private
    with request_context.scope():
        assert square(2) == 4
        with request_context.scope():
            assert square(2) == 4  # a nested scope starts with an empty memo
    assert calls == [2, 3, 2, 2, 2]
    assert square.__name__ == "square"


def test_request_cached_runs_uncached_outside_a_scope() -> None:
    calls: list[int] = []

    @request_cached
    def ident(x: int) -> int:
        calls.append(x)
        return x

    assert ident(1) == ident(1) == 1
    assert calls == [1, 1]
    assert not request_context.active


def test_request_cached_does_not_cache_exceptions() -> None:
    attempts: list[int] = []

    @request_cached
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise ValueError("first try fails")
        return x

    with request_context.scope():
        with pytest.raises(ValueError, match="first try"):
            flaky(1)
        assert flaky(1) == flaky(1) == 1
    assert attempts == [1, 1]


def test_request_cached_with_options_and_custom_key() -> None:
    calls: list[object] = []

    @request_cached(key=typedkey)
    def describe(x: object) -> str:
        calls.append(x)
        return repr(x)

    with request_context.scope():
        assert describe(1) == "1"
        assert describe(1.0) == "1.0"  # typedkey keeps 1 and 1.0 apart
        assert describe(1) == "1"
    assert calls == [1, 1.0]


def test_request_cached_functions_have_separate_memos() -> None:
    @request_cached
    def one(x: int) -> str:
        return "one"

    @request_cached
    def two(x: int) -> str:
        return "two"

    with request_context.scope():
        assert (one(1), two(1)) == ("one", "two")


# --- request_cached: async ---------------------------------------------------------


async def test_request_cached_async_runs_once_per_args_per_scope() -> None:
    calls: list[int] = []

    @request_cached
    async def load(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        return x * 10

    async with request_context.scope():
        assert [await load(1), await load(1), await load(2)] == [10, 10, 20]
    async with request_context.scope():
        assert await load(1) == 10
    assert await load(1) == 10  # outside a scope: uncached
    assert calls == [1, 2, 1, 1]


async def test_request_cached_async_dedupes_concurrent_calls() -> None:
    calls: list[int] = []
    release = asyncio.Event()

    @request_cached
    async def load(x: int) -> int:
        calls.append(x)
        await release.wait()
        return x * 10

    async with request_context.scope():
        pending = asyncio.gather(*(load(1) for _ in range(50)), load(2))
        await asyncio.sleep(0)
        release.set()
        assert await pending == [10] * 50 + [20]
    assert calls == [1, 2]


async def test_request_cached_async_exception_reaches_waiters_and_is_not_cached() -> None:
    calls: list[int] = []
    release = asyncio.Event()

    @request_cached
    async def load(x: int) -> int:
        calls.append(x)
        await release.wait()
        if len(calls) == 1:
            raise ValueError("backend down")
        return x

    async with request_context.scope():
        pending = asyncio.gather(*(load(1) for _ in range(3)), return_exceptions=True)
        await asyncio.sleep(0)
        release.set()
        results = await pending
        assert [type(r) for r in results] == [ValueError] * 3
        assert await load(1) == 1
    assert calls == [1, 1]


async def test_request_cached_async_waiter_takes_over_when_the_runner_is_cancelled() -> None:
    calls: list[int] = []
    gates = [asyncio.Event(), asyncio.Event()]

    @request_cached
    async def load(x: int) -> int:
        gate = gates[len(calls)]
        calls.append(x)
        await gate.wait()
        return x

    async with request_context.scope():
        runner = asyncio.create_task(load(7))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(load(7))
        await asyncio.sleep(0)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await asyncio.sleep(0)  # the waiter notices and runs it itself
        gates[1].set()
        assert await waiter == 7
        assert await load(7) == 7
    assert calls == [7, 7]


async def test_request_cached_async_cancelled_waiter_does_not_cancel_the_runner() -> None:
    release = asyncio.Event()

    @request_cached
    async def load(x: int) -> int:
        await release.wait()
        return x

    async with request_context.scope():
        runner = asyncio.create_task(load(3))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(load(3))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        assert await runner == 3
