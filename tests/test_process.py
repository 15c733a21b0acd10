"""Tasks as processes: spawn, join, kill, gettid, sched_yield, sleep, and how run() ends.

Orderings are asserted as exact traces. Spawn is assumed not to switch: the parent keeps
running and the child is appended to the ready queue (READY right after spawn).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time

import pytest

import kernel
from conftest import run
from syscalls import current_task, gettid, join, kill, read, sched_yield, sleep, spawn

TaskState = kernel.TaskState


# ---------------------------------------------------------------------------
# exception types and the state enum


def test_exception_types():
    assert issubclass(kernel.Cancelled, BaseException)
    assert not issubclass(kernel.Cancelled, Exception)
    assert issubclass(kernel.Deadlock, RuntimeError)


def test_taskstate_enum_members_and_values():
    assert {m.name: m.value for m in TaskState} == {
        "READY": "ready",
        "RUNNING": "running",
        "BLOCKED": "blocked",
        "EXITED": "exited",
    }


# ---------------------------------------------------------------------------
# spawn / join


def test_spawn_join_returns_value():
    def child(a, b):
        yield sleep(0)
        return a + b

    def main():
        t = yield spawn(child, 2, 3)
        assert isinstance(t, kernel.Task)
        value = yield join(t)
        return value

    assert run(main) == 5


def test_join_task_that_already_exited():
    def child():
        return "early"
        yield  # pragma: no cover  (makes this a generator)

    def main():
        t = yield spawn(child)
        for _ in range(3):
            yield sched_yield()
        assert t.state is TaskState.EXITED
        value = yield join(t)
        return value

    assert run(main) == "early"


def test_join_reraises_the_very_same_exception_object():
    boom = ValueError("boom")

    def child():
        yield sleep(0)
        raise boom

    def main():
        t = yield spawn(child)
        try:
            yield join(t)
        except ValueError as e:
            return e
        return None

    assert run(main) is boom


def test_join_on_killed_task_raises_cancelled():
    def child():
        yield sleep(10)

    def main():
        t = yield spawn(child)
        yield sleep(0)
        yield kill(t)
        try:
            yield join(t)
        except kernel.Cancelled:
            return "cancelled"
        return "not cancelled"

    assert run(main) == "cancelled"


# ``yield task`` is ``yield join(task)`` (asyncio's ``await task``)


def test_yielding_a_task_joins_it_running_exited_or_failed():
    boom = ValueError("boom")

    def child(value):
        yield sleep(0)
        if value is boom:
            raise boom
        return value

    def quick():
        return "early"
        yield  # pragma: no cover  (makes this a generator)

    def main():
        running = yield spawn(child, 7)
        assert (yield running) == 7  # waits for it
        exited = yield spawn(quick)
        yield sched_yield()
        assert exited.state is TaskState.EXITED
        assert (yield exited) == "early"  # answered at once
        failing = yield spawn(child, boom)
        with pytest.raises(ValueError) as caught:
            yield failing
        assert caught.value is boom
        return "ok"

    assert run(main) == "ok"


def test_awaiting_a_task_joins_it_in_an_async_def_task():
    boom = ValueError("boom")

    async def child(value):
        await sleep(0)
        if value is boom:
            raise boom
        return value

    async def main():
        first = await spawn(child, 7)
        assert await first == 7
        assert await first == 7  # again: it has exited, the answer is at once
        failing = await spawn(child, boom)
        with pytest.raises(ValueError) as caught:
            await failing
        assert caught.value is boom
        return "ok"

    assert run(main) == "ok"


def test_a_task_yielding_itself_gets_the_same_error_as_join():
    def main():
        me = current_task()
        with pytest.raises(RuntimeError, match="cannot join itself"):
            yield me
        with pytest.raises(RuntimeError, match="cannot join itself"):
            yield join(me)
        return "ok"

    assert run(main) == "ok"


def test_a_task_blocked_yielding_a_task_waits_in_a_join_and_can_be_killed():
    def sleeper():
        yield sleep(math.inf)

    def joiner(target):
        yield target

    def main():
        target = yield spawn(sleeper)
        waiter = yield spawn(joiner, target)
        yield sched_yield()
        assert waiter.state is TaskState.BLOCKED
        assert type(waiter.trap) is join and waiter.trap.task is target  # (join is Join)
        yield kill(waiter)  # its undo takes it out of target's exit waiters
        yield kill(target)
        return waiter.state

    assert run(main) is TaskState.EXITED


def test_a_timeout_around_yielding_a_task_stops_the_wait_not_the_task():
    from syscalls import clock, timeout

    def child():
        yield sleep(10)
        return "done"

    def main():
        t = yield spawn(child)
        with pytest.raises(TimeoutError):
            with timeout(1):
                yield t
        assert t.state is TaskState.BLOCKED and clock() == 1  # still sleeping
        assert (yield t) == "done"  # joined again, this time to the end
        return clock()

    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        assert k.run(main) == 10
        assert not k.exit_waiters  # the timed-out wait left no trace


def test_a_task_that_returns_unwaited_leaves_the_tcb_exit_task_leaves():
    """A return nobody waits for skips `Kernel.exit_task` (written out in _step): the TCB
    must end as exit_task leaves it, as it does for a task that is being joined."""

    def child(value):
        yield sleep(0)
        return value

    def fields(task):
        return (task.state, task.coro, task.result, task.exception, task.next_value,
                task.next_exc, task.pending_exc, task.trap, task.undo, task.callers)  # fmt: skip

    k = kernel.Kernel()

    def main():
        alone = yield spawn(child, "v")
        joined = yield spawn(child, "v")
        assert (yield join(joined)) == "v"  # joined: exited through exit_task, waking main
        yield sched_yield()
        assert alone.state is TaskState.EXITED  # nobody waited: the written-out exit
        assert k.current is current_task()
        return alone, joined

    with k:
        alone, joined = k.run(main)
    assert fields(alone) == fields(joined) == (TaskState.EXITED, None, "v") + (None,) * 7
    assert alone.tid not in k.tasks and joined.tid not in k.tasks


def test_many_tasks_spawn_and_join():
    def child(i):
        yield sleep(0)
        return i * i

    def main():
        tasks = []
        for i in range(500):
            t = yield spawn(child, i)
            tasks.append(t)
        results = []
        for t in tasks:
            r = yield join(t)
            results.append(r)
        return results

    assert run(main) == [i * i for i in range(500)]


# ---------------------------------------------------------------------------
# kill


def test_kill_while_sleeping():
    trace = []

    def sleeper():
        try:
            yield sleep(10)
            trace.append("woke")  # must not happen
        except kernel.Cancelled:
            trace.append("sleeper-cancelled")
            raise

    def main():
        t = yield spawn(sleeper)
        yield sleep(0.001)
        assert t.state is TaskState.BLOCKED
        result = yield kill(t)
        trace.append(("killed", result, t.state))

    t0 = time.monotonic()
    run(main)
    assert time.monotonic() - t0 < 2
    assert trace == ["sleeper-cancelled", ("killed", None, TaskState.EXITED)]


def test_kill_while_reading_then_fd_still_usable():
    r, w = os.pipe()
    trace = []
    try:

        def reader():
            try:
                data = yield read(r, 100)
                trace.append(("reader-got", data))  # must not happen
            except kernel.Cancelled:
                trace.append("reader-cancelled")
                raise

        def second_reader():
            data = yield read(r, 100)
            trace.append(("second-got", data))
            return data

        def main():
            t = yield spawn(reader)
            yield sleep(0.001)
            assert t.state is TaskState.BLOCKED
            yield kill(t)
            trace.append("killed")
            t2 = yield spawn(second_reader)
            yield sleep(0.001)
            os.write(w, b"after-kill")
            data = yield join(t2)
            return data

        assert run(main) == b"after-kill"
        assert trace == ["reader-cancelled", "killed", ("second-got", b"after-kill")]
    finally:
        os.close(r)
        os.close(w)


def test_kill_while_joining_leaves_joined_task_alone():
    trace = []

    def target():
        yield sleep(0.02)
        trace.append("target-done")
        return 7

    def joiner(t):
        try:
            yield join(t)
            trace.append("joiner-returned")  # must not happen
        except kernel.Cancelled:
            trace.append("joiner-cancelled")
            raise

    def main():
        tt = yield spawn(target)
        jt = yield spawn(joiner, tt)
        yield sleep(0.001)
        assert jt.state is TaskState.BLOCKED
        yield kill(jt)
        trace.append("killed-joiner")
        assert tt.state is TaskState.BLOCKED
        value = yield join(tt)
        trace.append(("target-value", value))

    run(main)
    assert trace == [
        "joiner-cancelled",
        "killed-joiner",
        "target-done",
        ("target-value", 7),
    ]


def test_kill_ready_but_not_run_gets_cancelled_at_its_trap():
    trace = []

    def spinner():
        trace.append("spinner-start")
        try:
            for _ in range(10000):
                yield sched_yield()
            trace.append("spinner-finished")  # must not happen
        except kernel.Cancelled:
            trace.append("spinner-cancelled")
            raise

    def main():
        t = yield spawn(spinner)
        while not trace:
            yield sched_yield()
        # The spinner only ever sched_yields, so it sits on the ready queue now.
        assert t.state is TaskState.READY
        yield kill(t)
        trace.append("killed")
        assert t.state is TaskState.EXITED

    run(main)
    assert trace == ["spinner-start", "spinner-cancelled", "killed"]


def test_kill_before_first_run_body_never_runs():
    trace = []

    def child():
        trace.append("child-ran")
        yield sleep(0)

    def main():
        t = yield spawn(child)
        assert t.state is TaskState.READY
        yield kill(t)
        assert t.state is TaskState.EXITED
        try:
            yield join(t)
        except kernel.Cancelled:
            trace.append("join-cancelled")

    run(main)
    assert trace == ["join-cancelled"]


def test_kill_exited_task_is_a_noop():
    def child():
        yield sleep(0)
        return "value"

    def main():
        t = yield spawn(child)
        while t.state is not TaskState.EXITED:
            yield sleep(0)
        result = yield kill(t)
        assert result is None
        assert t.state is TaskState.EXITED
        value = yield join(t)  # still the return value, not Cancelled
        return value

    assert run(main) == "value"


def test_double_kill_sequential_is_safe():
    trace = []

    def child():
        try:
            yield sleep(10)
        finally:
            trace.append("cleanup")

    def main():
        t = yield spawn(child)
        yield sleep(0)
        yield kill(t)
        yield kill(t)
        trace.append("both-kills-returned")

    run(main)
    assert trace == ["cleanup", "both-kills-returned"]


def test_concurrent_kills_during_cleanup_both_return_after_exit():
    trace = []

    def victim():
        try:
            yield sleep(10)
        finally:
            trace.append("cleanup-start")
            yield sleep(0.01)
            trace.append("cleanup-done")

    def killer(name, t):
        yield kill(t)
        trace.append((name, t.state))

    def main():
        v = yield spawn(victim)
        yield sleep(0)
        k1 = yield spawn(killer, "k1", v)
        k2 = yield spawn(killer, "k2", v)
        yield join(k1)
        yield join(k2)

    run(main)
    assert trace[:2] == ["cleanup-start", "cleanup-done"]
    assert sorted(trace[2:]) == [("k1", TaskState.EXITED), ("k2", TaskState.EXITED)]


def test_kill_a_task_that_is_killing_another():
    trace = []

    def victim():
        try:
            yield sleep(10)
        finally:
            trace.append("victim-cleanup-start")
            yield sleep(0.02)
            trace.append("victim-cleanup-done")

    def killer(v):
        try:
            yield kill(v)
            trace.append("killer-returned")  # must not happen
        except kernel.Cancelled:
            trace.append("killer-cancelled")
            raise

    def main():
        v = yield spawn(victim)
        yield sleep(0)
        k = yield spawn(killer, v)
        yield sleep(0.005)  # victim is in its cleanup, killer waits for it
        assert k.state is TaskState.BLOCKED
        yield kill(k)
        trace.append(("killer-killed", v.state))
        try:
            yield join(v)
        except kernel.Cancelled:
            trace.append(("victim-joined", v.state))

    run(main)
    assert trace == [
        "victim-cleanup-start",
        "killer-cancelled",
        ("killer-killed", TaskState.BLOCKED),
        "victim-cleanup-done",
        ("victim-joined", TaskState.EXITED),
    ]


def test_kill_lets_finally_cleanup_that_yields_run():
    trace = []

    def child():
        try:
            yield sleep(10)
        finally:
            trace.append("cleanup-start")
            yield sleep(0.001)
            yield sched_yield()
            tid = yield gettid()
            trace.append(("cleanup-done", isinstance(tid, int)))

    def main():
        t = yield spawn(child)
        yield sleep(0)
        yield kill(t)
        trace.append("kill-returned")

    run(main)
    assert trace == ["cleanup-start", ("cleanup-done", True), "kill-returned"]


def test_cancelled_is_not_swallowed_by_except_exception():
    trace = []

    def child():
        try:
            yield sleep(10)
        except Exception:  # noqa: BLE001 - Cancelled must pass through this
            trace.append("swallowed")

    def main():
        t = yield spawn(child)
        yield sleep(0)
        yield kill(t)
        try:
            yield join(t)
        except kernel.Cancelled:
            trace.append("join-cancelled")

    run(main)
    assert trace == ["join-cancelled"]


# ---------------------------------------------------------------------------
# gettid, Task attributes, states


def test_gettid_unique_and_matches_task_tid():
    def child():
        yield sleep(0)
        tid = yield gettid()
        return tid

    def main():
        my = yield gettid()
        tasks = []
        for _ in range(5):
            t = yield spawn(child)
            tasks.append(t)
        tids = []
        for t in tasks:
            tid = yield join(t)
            assert tid == t.tid
            tids.append(tid)
        return my, tids

    my, tids = run(main)
    assert all(isinstance(t, int) for t in tids + [my])
    assert len(set(tids + [my])) == 6


def test_task_name_repr_and_state_transitions():
    box = {}
    states = []

    def child():
        states.append(("inside", box["task"].state))
        yield sleep(0.03)
        return "done"

    def main():
        t = yield spawn(child, name="kid")
        box["task"] = t
        states.append(("after-spawn", t.state))
        yield sleep(0.005)
        states.append(("while-sleeping", t.state))
        yield join(t)
        states.append(("after-exit", t.state))
        unnamed = yield spawn(child)
        box["task"] = unnamed
        yield kill(unnamed)
        return t, unnamed

    t, unnamed = run(main)
    assert states == [
        ("after-spawn", TaskState.READY),
        ("inside", TaskState.RUNNING),
        ("while-sleeping", TaskState.BLOCKED),
        ("after-exit", TaskState.EXITED),
    ]
    assert t.name == "kid"
    assert "kid" in repr(t)
    assert " object at 0x" not in repr(t)
    assert isinstance(t.tid, int)
    assert isinstance(unnamed.name, str) and unnamed.name
    assert unnamed.tid != t.tid


# ---------------------------------------------------------------------------
# sched_yield and sleep(0)


@pytest.mark.parametrize("how", ["sched_yield", "sleep0", "mixed"])
def test_yield_interleaves_round_robin(how):
    trace = []

    def worker(name, use_sleep):
        for i in range(3):
            trace.append((name, i))
            if use_sleep:
                yield sleep(0)
            else:
                yield sched_yield()

    def main():
        tasks = []
        for n, name in enumerate("ABC"):
            use_sleep = how == "sleep0" or (how == "mixed" and n == 1)
            t = yield spawn(worker, name, use_sleep)
            tasks.append(t)
        for t in tasks:
            yield join(t)

    run(main)
    assert trace == [
        ("A", 0),
        ("B", 0),
        ("C", 0),
        ("A", 1),
        ("B", 1),
        ("C", 1),
        ("A", 2),
        ("B", 2),
        ("C", 2),
    ]


def test_sched_yield_returns_none_and_parent_interleaves():
    trace = []

    def worker():
        for i in range(2):
            trace.append(("w", i))
            yield sched_yield()

    def main():
        yield spawn(worker)
        for i in range(3):
            trace.append(("m", i))
            r = yield sched_yield()
            assert r is None

    run(main)
    assert trace == [("m", 0), ("w", 0), ("m", 1), ("w", 1), ("m", 2)]


# ---------------------------------------------------------------------------
# sleep


@pytest.mark.parametrize("bad", [-1, -0.001, float("nan")])
def test_sleep_rejects_negative_and_nan_at_call(bad):
    with pytest.raises(ValueError):
        sleep(bad)


def test_sleep_valueerror_can_be_caught_inside_a_task():
    def main():
        try:
            yield sleep(-1)
        except ValueError:
            return "caught"
        return "no error"

    assert run(main) == "caught"


def test_sleepers_wake_in_deadline_order():
    trace = []

    def sleeper(name, seconds):
        yield sleep(seconds)
        trace.append(name)

    def main():
        tasks = []
        for name, seconds in [("slow", 0.05), ("fast", 0.01), ("mid", 0.03)]:
            t = yield spawn(sleeper, name, seconds)
            tasks.append(t)
        for t in tasks:
            yield join(t)

    run(main)
    assert trace == ["fast", "mid", "slow"]


def test_sleep_duration_loose_bounds():
    def main():
        t0 = time.monotonic()
        yield sleep(0.05)
        return time.monotonic() - t0

    elapsed = run(main)
    assert 0.05 <= elapsed < 2


def test_sleep_zero_spinner_does_not_starve_timers():
    state = {"woke": False}

    def sleeper():
        yield sleep(0.01)
        state["woke"] = True

    def main():
        yield spawn(sleeper)
        deadline = time.monotonic() + 2
        spins = 0
        while not state["woke"] and time.monotonic() < deadline:
            yield sleep(0)
            spins += 1
        return spins

    spins = run(main)
    assert state["woke"]
    assert spins > 0


def test_sleep_zero_spinner_does_not_starve_io():
    r, w = os.pipe()
    got = []
    try:

        def reader():
            data = yield read(r, 10)
            got.append(data)

        def main():
            t = yield spawn(reader)
            yield sched_yield()  # reader runs and parks on the empty pipe
            assert t.state is TaskState.BLOCKED
            os.write(w, b"ping")
            deadline = time.monotonic() + 2
            while not got and time.monotonic() < deadline:
                yield sleep(0)

        run(main)
        assert got == [b"ping"]
    finally:
        os.close(r)
        os.close(w)


def test_loop_of_immediate_traps_does_not_starve_others():
    """gettid is answered at once; a task looping on it must still let others run."""
    state = {"other_ran": False}

    def other():
        yield sched_yield()
        state["other_ran"] = True

    def main():
        yield spawn(other)
        deadline = time.monotonic() + 2
        loops = 0
        while not state["other_ran"] and time.monotonic() < deadline:
            yield gettid()
            loops += 1
        return loops

    loops = run(main)
    assert state["other_ran"]
    assert loops > 0


def test_reading_an_always_ready_fd_does_not_starve_timers():
    fd = os.open("/dev/zero", os.O_RDONLY)
    state = {"woke": False}
    try:

        def sleeper():
            yield sleep(0.01)
            state["woke"] = True

        def main():
            yield spawn(sleeper)
            deadline = time.monotonic() + 2
            reads = 0
            while not state["woke"] and time.monotonic() < deadline:
                data = yield read(fd, 16)
                assert data == bytes(16)
                reads += 1
            return reads

        reads = run(main)
        assert state["woke"]
        assert reads > 0
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# how run() starts and ends


def test_tasks_alive_when_main_returns_are_cancelled_and_cleaned_up():
    trace = []

    def lingering():
        try:
            yield sleep(10)
        except kernel.Cancelled:
            trace.append("lingering-cancelled")
            raise
        finally:
            trace.append("cleanup-start")
            yield sleep(0.001)
            trace.append("cleanup-done")

    def never_started():
        trace.append("never-started-ran")
        yield sleep(0)

    def main():
        yield spawn(lingering)
        yield sleep(0)
        yield spawn(never_started)
        trace.append("main-return")
        return "result"

    t0 = time.monotonic()
    assert run(main) == "result"
    assert time.monotonic() - t0 < 2
    assert trace == ["main-return", "lingering-cancelled", "cleanup-start", "cleanup-done"]


def test_main_exception_is_reraised_after_children_cleanup():
    trace = []
    boom = KeyError("main failed")

    def lingering():
        try:
            yield sleep(10)
        finally:
            trace.append("cleanup")

    def main():
        yield spawn(lingering)
        yield sleep(0)
        raise boom

    with pytest.raises(KeyError) as info:
        run(main)
    assert info.value is boom
    assert trace == ["cleanup"]


def test_module_run_returns_value_and_reraises_same_exception():
    def ok():
        yield sleep(0)
        return {"x": 1}

    assert kernel.run(ok) == {"x": 1}

    err = RuntimeError("from main")

    def bad():
        yield sleep(0)
        raise err

    with pytest.raises(RuntimeError) as info:
        kernel.run(bad)
    assert info.value is err


def _gen_main(a, b):
    yield sleep(0)
    tid = yield gettid()
    assert isinstance(tid, int)
    return ("gen", a, b)


async def _async_main(a, b):
    await sleep(0)
    tid = await gettid()
    assert isinstance(tid, int)
    return ("async", a, b)


@pytest.mark.parametrize(
    "form", ["generator-object", "generator-function", "async-function", "coroutine-object"]
)
def test_main_forms(form):
    if form == "generator-object":
        assert kernel.run(_gen_main(1, 2)) == ("gen", 1, 2)
    elif form == "generator-function":
        assert kernel.run(_gen_main, 1, 2) == ("gen", 1, 2)
    elif form == "async-function":
        assert kernel.run(_async_main, 1, 2) == ("async", 1, 2)
    else:
        assert kernel.run(_async_main(1, 2)) == ("async", 1, 2)


def test_spawn_accepts_every_task_form():
    def gen_child(x):
        yield sleep(0)
        return ("gen", x)

    async def async_child(x):
        await sleep(0)
        return ("async", x)

    def main():
        results = []
        for target, args in [
            (gen_child, (1,)),
            (async_child, (2,)),
            (gen_child(3), ()),
            (async_child(4), ()),
        ]:
            t = yield spawn(target, *args)
            r = yield join(t)
            results.append(r)
        return results

    assert run(main) == [("gen", 1), ("async", 2), ("gen", 3), ("async", 4)]


# ---------------------------------------------------------------------------
# async def tasks and composition


def test_async_tasks_use_every_process_syscall():
    trace = []

    async def child(x):
        await sleep(0)
        await sched_yield()
        tid = await gettid()
        return x * 2, tid

    async def sleeper():
        try:
            await sleep(10)
        except kernel.Cancelled:
            trace.append("sleeper-cancelled")
            raise

    async def failing():
        await sleep(0.001)
        raise LookupError("async failure")

    async def main():
        t = await spawn(child, 21, name="async-child")
        value, tid = await join(t)
        assert tid == t.tid
        assert t.name == "async-child"
        s = await spawn(sleeper)
        await sleep(0.001)
        await kill(s)
        try:
            await join(s)
        except kernel.Cancelled:
            trace.append("join-cancelled")
        f = await spawn(failing)
        try:
            await join(f)
        except LookupError as e:
            trace.append(str(e))
        return value

    assert run(main) == 42
    assert trace == ["sleeper-cancelled", "join-cancelled", "async failure"]


def test_generator_and_async_tasks_join_each_other():
    async def async_child():
        await sleep(0.001)
        return "from-async"

    def gen_child(t):
        v = yield join(t)
        return "gen saw " + v

    async def main():
        a = await spawn(async_child)
        g = await spawn(gen_child, a)
        return await join(g)

    assert run(main) == "gen saw from-async"


def test_yield_from_composition_of_helpers():
    def helper(n):
        total = 0
        for i in range(n):
            yield from sleep(0)  # `yield from trap` works like `yield trap`
            total += i
        tid = yield from gettid()
        return total, tid

    def outer():
        a = yield from helper(3)
        b = yield from helper(5)
        return a, b

    def child():
        r = yield from outer()
        return r

    def main():
        t = yield from spawn(child)
        (s1, tid1), (s2, tid2) = yield from join(t)
        return s1, s2, tid1 == t.tid, tid2 == t.tid

    assert run(main) == (3, 10, True, True)


def test_await_composition_of_async_helpers():
    async def helper(n):
        for _ in range(n):
            await sleep(0)
        return n * 10

    async def main():
        a = await helper(2)
        b = await helper(3)
        return a + b

    assert run(main) == 50


# ---------------------------------------------------------------------------
# bad yields


class _Bogus:
    def __repr__(self):
        return "<Bogus thing 4711>"


@pytest.mark.parametrize(
    "value, needle",
    [
        (_Bogus(), "Bogus thing 4711"),
        (None, "None"),
        (12345, "12345"),
        ("not-a-trap", "not-a-trap"),
    ],
    ids=["object", "None", "int", "str"],
)
def test_bad_yield_raises_typeerror_inside_task_and_task_continues(value, needle):
    def main():
        try:
            yield value
        except TypeError as e:
            message = str(e)
        else:
            return "no TypeError"
        yield sleep(0)
        tid = yield gettid()
        return message, isinstance(tid, int)

    message, ok = run(main)
    assert needle in message
    assert ok


def test_bad_yield_uncaught_kills_only_that_task():
    def child():
        yield _Bogus()

    def main():
        t = yield spawn(child)
        try:
            yield join(t)
        except TypeError as e:
            return str(e)
        return "no TypeError"

    assert "Bogus thing 4711" in run(main)


class _WeirdAwaitable:
    def __await__(self):
        result = yield _Bogus()
        return result


def test_bad_yield_from_async_task():
    async def main():
        try:
            await _WeirdAwaitable()
        except TypeError as e:
            message = str(e)
        else:
            return "no TypeError"
        await sleep(0)
        return message

    assert "Bogus thing 4711" in run(main)


# ---------------------------------------------------------------------------
# logging of failures nobody joins


def _yieldos_errors(caplog):
    return [
        r
        for r in caplog.records
        if (r.name == "yieldos" or r.name.startswith("yieldos.")) and r.levelno >= logging.ERROR
    ]


def test_unjoined_failure_logged_once_and_kernel_goes_on(caplog):
    caplog.set_level(logging.DEBUG, logger="yieldos")
    box = {}

    def doomed():
        yield sleep(0)
        raise ValueError("boom-unjoined")

    def survivor():
        yield sleep(0.01)
        return "alive"

    def main():
        d = yield spawn(doomed, name="doomed-task")
        box["tid"] = d.tid
        s = yield spawn(survivor)
        value = yield join(s)
        assert d.state is TaskState.EXITED
        return value

    assert run(main) == "alive"
    gc.collect()
    records = _yieldos_errors(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.ERROR
    text = caplog.text
    assert "doomed-task" in text
    assert str(box["tid"]) in text
    assert "boom-unjoined" in text
    assert "Traceback" in text


def test_joined_failure_is_not_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="yieldos")

    def child():
        yield sleep(0)
        raise ValueError("boom-joined")

    def main():
        t = yield spawn(child, name="joined-task")
        try:
            yield join(t)
        except ValueError:
            return "caught"

    assert run(main) == "caught"
    gc.collect()
    assert _yieldos_errors(caplog) == []


def test_failure_with_no_joiner_waiting_is_logged_at_death_and_join_still_raises(caplog):
    """The chosen rule: a task that dies while nobody waits in join is reported at
    that moment (a server's crashed handler must show at once, not at exit), and a
    later join still raises the very exception."""
    caplog.set_level(logging.DEBUG, logger="yieldos")
    box = {}

    def child():
        yield sleep(0)
        box["error"] = ValueError("boom-joined-late")
        raise box["error"]

    def main():
        t = yield spawn(child, name="late-joined-task")
        yield sleep(0.005)
        assert t.state is TaskState.EXITED
        assert len(_yieldos_errors(caplog)) == 1  # reported when it died
        try:
            yield join(t)
        except ValueError as e:
            return e

    assert run(main) is box["error"]
    records = _yieldos_errors(caplog)
    assert len(records) == 1  # once: the join did not report it again
    assert "late-joined-task" in records[0].getMessage()


# ---------------------------------------------------------------------------
# deadlock


def test_deadlock_two_tasks_joining_each_other():
    handles = {}

    def alpha():
        yield sched_yield()
        yield join(handles["beta"])

    def beta():
        yield sched_yield()
        yield join(handles["alpha"])

    def main():
        handles["alpha"] = yield spawn(alpha, name="alpha-task")
        handles["beta"] = yield spawn(beta, name="beta-task")
        yield join(handles["alpha"])

    t0 = time.monotonic()
    with pytest.raises(kernel.Deadlock) as info:
        run(main)
    assert time.monotonic() - t0 < 2
    message = str(info.value)
    assert "alpha-task" in message
    assert "beta-task" in message
    assert "join" in message.lower()  # what they wait on


def test_deadlock_main_joins_task_sleeping_forever():
    def sleeper():
        yield sleep(float("inf"))

    def main():
        t = yield spawn(sleeper, name="sleeper-task")
        yield join(t)

    with pytest.raises(kernel.Deadlock) as info:
        run(main)
    assert "sleeper-task" in str(info.value)
    assert "sleep" in str(info.value).lower().replace("sleeper-task", "")


def test_deadlock_main_sleeping_forever():
    def main():
        yield sleep(math.inf)

    with pytest.raises(kernel.Deadlock):
        run(main)


def test_long_but_finite_sleep_is_not_a_deadlock():
    def sleeper():
        yield sleep(0.02)
        return "woke"

    def main():
        t = yield spawn(sleeper)
        return (yield join(t))

    assert run(main) == "woke"


def test_cancel_asks_for_a_kill_without_waiting():
    from syscalls import cancel

    trace = []

    def victim():
        try:
            yield sleep(10)
        except kernel.Cancelled:
            trace.append("cancelled")
            raise

    def main():
        t = yield spawn(victim)
        yield sleep(0)
        cancel(t)  # a plain call: no yield, no waiting
        trace.append("cancel-returned")
        with pytest.raises(kernel.Cancelled):
            yield join(t)
        cancel(t)  # an exited task: nothing happens
        with pytest.raises(TypeError):
            cancel("not a task")

    run(main)
    assert trace == ["cancel-returned", "cancelled"]
