"""Task groups, gather and race: exact traces, failures, cancellation, both task styles."""

from __future__ import annotations

import functools
import gc
import logging
import math
import sys

import pytest

from conftest import run
from kernel import Cancelled, TaskState
from kernel.kernel import INLINE_BUDGET
from kernel.scopes import current_kernel
from syscalls import (
    current_task,
    gettid,
    join,
    kill,
    sched_yield,
    sleep,
    spawn,
    timeout,
    wait_on,
    wakeup,
)
from syscalls.groups import TaskGroup, gather, race, task_group

EXITED = TaskState.EXITED


def all_exited(tasks):
    return all(t.state is EXITED for t in tasks)


# ── Children used throughout: each records what happens to it ────────────


def worker(trace, name, steps=1, result=None, fail=None):
    """Yield the CPU ``steps`` times, then return ``result`` or raise ``fail``."""
    trace.append(f"{name} start")
    try:
        for _ in range(steps):
            yield sched_yield()
        if fail is not None:
            raise fail
        trace.append(f"{name} done")
        return result
    except Cancelled:
        trace.append(f"{name} cancelled")
        raise
    finally:
        trace.append(f"{name} finally")


async def aworker(trace, name, steps=1, result=None, fail=None):
    trace.append(f"{name} start")
    try:
        for _ in range(steps):
            await sched_yield()
        if fail is not None:
            raise fail
        trace.append(f"{name} done")
        return result
    except Cancelled:
        trace.append(f"{name} cancelled")
        raise
    finally:
        trace.append(f"{name} finally")


def sleeper(trace, name, cleanup_steps=0):
    """Block until killed; the cleanup itself blocks for ``cleanup_steps`` yields."""
    trace.append(f"{name} start")
    try:
        yield sleep(math.inf)
    except Cancelled:
        trace.append(f"{name} cancelled")
        for _ in range(cleanup_steps):
            yield sched_yield()
        trace.append(f"{name} cleaned")
        raise


# ── Joining ──────────────────────────────────────────────────────────────


def test_join_waits_for_every_child_generator_style():
    trace = []

    def main():
        g = TaskGroup()
        a = yield g.spawn(worker, trace, "a", 3, "A")
        b = yield g.spawn(worker, trace, "b", 1, "B")
        trace.append("spawned")
        yield g.join()
        trace.append("joined")
        assert all_exited(g.tasks) and g.tasks == [a, b]
        assert a.name == "worker" and (yield join(a)) == "A" and (yield join(b)) == "B"
        return g

    g = run(main)
    assert trace == [
        "spawned",
        "a start",
        "b start",
        "b done",
        "b finally",
        "a done",
        "a finally",
        "joined",
    ]
    assert g.errors == [] and "closed" in repr(g)


def test_async_with_waits_for_every_child():
    trace = []

    async def main():
        async with TaskGroup() as g:
            a = await g.spawn(aworker, trace, "a", 2, "A")
            await g.spawn(worker, trace, "b", 1, "B")  # generator children too
            trace.append("body done")
        trace.append("after")
        assert all_exited(g.tasks)
        return await join(a)

    assert run(main) == "A"
    assert trace == [
        "body done",
        "a start",
        "b start",
        "b done",
        "b finally",
        "a done",
        "a finally",
        "after",
    ]


def test_task_group_runs_a_generator_body_and_returns_its_result():
    trace = []

    def body(g, n):
        for i in range(n):
            yield g.spawn(worker, trace, f"w{i}", n - i)
        trace.append("body done")
        return "result"

    async def abody(g):
        await g.spawn(aworker, trace, "x")
        return "async result"

    def main():
        r = yield task_group(body, 2)
        trace.append(r)
        r = yield task_group(abody)
        trace.append(r)

    run(main)
    assert trace == [
        "body done",
        "w0 start",
        "w1 start",
        "w1 done",
        "w1 finally",
        "w0 done",
        "w0 finally",
        "result",
        "x start",
        "x done",
        "x finally",
        "async result",
    ]


def test_join_of_an_empty_group_returns_at_once():
    def main():
        yield TaskGroup().join()
        return (yield task_group(_empty_body))

    assert run(main) == 7


def _empty_body(g):
    return 7
    yield


# ── Failures ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize("style", ["generator", "async"])
def test_first_failure_cancels_the_siblings_and_join_raises_it(style, caplog):
    trace = []
    boom = ValueError("boom")

    def gen_main():
        g = TaskGroup()
        yield g.spawn(sleeper, trace, "s1", 1)
        yield g.spawn(worker, trace, "bad", 1, None, boom)
        yield g.spawn(sleeper, trace, "s2")
        try:
            yield g.join()
        except ValueError as exc:
            trace.append(f"join raised {exc}")
            assert exc is boom
        return g

    async def async_main():
        g = TaskGroup()
        try:
            async with g:
                await g.spawn(sleeper, trace, "s1", 1)
                await g.spawn(aworker, trace, "bad", 1, None, boom)
                await g.spawn(sleeper, trace, "s2")
        except ValueError as exc:
            trace.append(f"join raised {exc}")
            assert exc is boom
        return g

    with caplog.at_level(logging.ERROR, logger="yieldos"):
        g = run(gen_main if style == "generator" else async_main)
    assert trace == [
        "s1 start",
        "bad start",
        "s2 start",
        "bad finally",
        "s1 cancelled",  # both siblings get Cancelled at once...
        "s2 cancelled",
        "s2 cleaned",
        "s1 cleaned",  # ... and join waits for the slower cleanup
        "join raised boom",
    ]
    assert g.errors == [boom] and all_exited(g.tasks)
    assert [t.exception.__class__ for t in g.tasks] == [Cancelled, ValueError, Cancelled]
    assert caplog.records == []  # the group reported it: no "nobody joins it"


def test_a_failure_cancels_siblings_before_anybody_joins():
    trace = []

    def main():
        g = TaskGroup()
        yield g.spawn(sleeper, trace, "s")
        yield g.spawn(worker, trace, "bad", 1, None, KeyError("k"))
        for _ in range(5):  # the body is busy; the siblings are cancelled meanwhile
            yield sched_yield()
        trace.append("body joins")
        assert "cancelled" in repr(g) and "1 failed" in repr(g)
        with pytest.raises(KeyError):
            yield g.join()
        # Spawning into a joined group is refused.
        with pytest.raises(RuntimeError, match="joined"):
            yield g.spawn(worker, trace, "late")
        yield g.join()  # once joined, joining again answers at once, and raises nothing

    run(main)
    assert trace == [
        "s start",
        "bad start",
        "bad finally",
        "s cancelled",
        "s cleaned",
        "body joins",
    ]


def test_several_failures_are_raised_together():
    trace = []
    e1, e2 = ValueError("one"), KeyError("two")

    def main():
        g = TaskGroup()
        yield g.spawn(worker, trace, "a", 1, None, e1)
        yield g.spawn(worker, trace, "b", 1, None, e2)  # fails in the same pass
        yield g.spawn(sleeper, trace, "s")
        try:
            yield g.join()
        except BaseException as exc:
            return exc

    exc = run(main)
    assert trace == [
        "a start",
        "b start",
        "s start",
        "a finally",
        "b finally",
        "s cancelled",
        "s cleaned",
    ]
    if sys.version_info >= (3, 11):
        assert isinstance(exc, ExceptionGroup)  # noqa: F821
        assert list(exc.exceptions) == [e1, e2]
    else:
        assert exc is e1 and e1.other_errors == [e2]


def test_a_child_killed_from_outside_is_not_a_failure():
    trace = []

    def main():
        g = TaskGroup()
        s = yield g.spawn(sleeper, trace, "s")
        yield g.spawn(worker, trace, "w", 3, "W")
        yield sched_yield()
        yield kill(s)
        trace.append("killed s")
        yield g.join()  # no error: w finished, s was merely killed
        trace.append("joined")
        assert g.errors == []

    run(main)
    assert trace == [
        "s start",
        "w start",
        "s cancelled",
        "s cleaned",
        "killed s",
        "w done",
        "w finally",
        "joined",
    ]


def test_a_child_killed_before_it_started_is_not_a_failure_and_never_runs(recwarn):
    trace = []

    async def main():
        g = TaskGroup()
        t = await g.spawn(aworker, trace, "never")  # a coroutine: must not warn "never awaited"
        await kill(t)
        await g.join()
        assert t.state is EXITED and isinstance(t.exception, Cancelled)

    run(main)
    gc.collect()
    assert trace == []
    assert [str(w.message) for w in recwarn] == []  # its coroutine was closed, not dropped


def test_no_failure_is_reported_as_unjoined_even_with_many_fast_failures(caplog):
    # Many spawns in a row exhaust the kernel's inline budget at some point; the child
    # must still be watched (joined) before it can fail, or the kernel logs its error.
    def fail_now(i):
        raise ValueError(i)
        yield

    def main():
        g = TaskGroup()
        for i in range(100):
            yield g.spawn(fail_now, i)
        try:
            yield g.join()
        except BaseException as exc:
            return exc, g

    with caplog.at_level(logging.ERROR, logger="yieldos"):
        exc, g = run(main)
    assert caplog.records == []
    assert len(g.errors) == 100 and all_exited(g.tasks)
    first = exc.exceptions[0] if sys.version_info >= (3, 11) else exc
    assert first.args == (0,)


# The kernel answers up to INLINE_BUDGET traps in a row before sending a task to the back
# of the run queue; these two tests make that happen in the middle of a spawn.


def _fail_now(trace):
    trace.append("fail_now runs")
    raise ValueError("now")
    yield


def test_a_watcher_that_runs_before_its_child_exists(caplog):
    trace = []

    def main():
        g = TaskGroup()
        for _ in range(INLINE_BUDGET - 2):  # the budget runs out just after the watcher's spawn
            yield gettid()
        yield g.spawn(_fail_now, trace)
        with pytest.raises(ValueError):
            yield g.join()
        trace.append("join raised")

    with caplog.at_level(logging.ERROR, logger="yieldos"):
        run(main)
    assert trace == ["fail_now runs", "join raised"] and caplog.records == []


@pytest.mark.parametrize("delay", range(4))
def test_spawn_racing_with_the_end_of_join(delay, caplog):
    # Another task spawns into the group, and loses the CPU between the watcher's and the
    # child's spawn; meanwhile the join may end. Either the child joined the group in time
    # (join reports its failure) or spawn refuses it and nothing of it runs or lingers.
    trace = []

    def other(g):
        for _ in range(delay):
            yield sched_yield()
        for _ in range(INLINE_BUDGET - 3):
            yield gettid()
        try:
            yield g.spawn(_fail_now, trace)
        except RuntimeError as exc:
            trace.append(f"refused: {exc}")

    def main():
        g = TaskGroup()
        yield g.spawn(worker, [], "c")
        t = yield spawn(other, g)
        try:
            yield g.join()
            trace.append("joined")
        except ValueError:
            trace.append("join raised")
        yield join(t)
        for _ in range(3):
            yield sched_yield()
        return set(current_kernel().tasks.values())

    with caplog.at_level(logging.ERROR, logger="yieldos"):
        left = run(main)
    assert len(left) == 1 and caplog.records == []
    assert trace in (
        ["fail_now runs", "join raised"],
        ["joined", "refused: <TaskGroup 0 running, closed> is joined: it takes no more children"],
    )


# ── The body of the scope fails or is cancelled ─────────────────────────


def test_body_error_cancels_the_children_and_propagates():
    trace = []

    async def main():
        try:
            async with TaskGroup() as g:
                await g.spawn(sleeper, trace, "s", 1)
                await sched_yield()
                raise OSError("body")
        except OSError as exc:
            trace.append(f"caught {exc}")
        assert all_exited(g.tasks)

    run(main)
    assert trace == ["s start", "s cancelled", "s cleaned", "caught body"]


def test_body_error_and_child_failure_are_combined():
    trace = []
    body_err, child_err = OSError("body"), ValueError("child")

    def body(g):
        yield g.spawn(worker, trace, "bad", 1, None, child_err)
        yield sched_yield()  # bad fails now
        yield sched_yield()
        raise body_err

    def main():
        try:
            yield task_group(body)
        except BaseException as exc:
            return exc

    exc = run(main)
    if sys.version_info >= (3, 11):
        assert list(exc.exceptions) == [body_err, child_err]
    else:
        assert exc is body_err and body_err.other_errors == [child_err]


def test_manual_generator_pattern_with_join_exc():
    trace = []

    def main():
        g = TaskGroup()
        try:
            yield g.spawn(sleeper, trace, "s")
            yield sched_yield()
            raise OSError("body")
        except BaseException as exc:
            yield g.join(exc)  # no child failed: join returns, the body's error goes on
            raise

    with pytest.raises(OSError, match="body"):
        run(main)
    assert trace == ["s start", "s cancelled", "s cleaned"]


def test_killing_the_body_of_async_with_kills_the_children():
    trace = []

    async def parent():
        try:
            async with TaskGroup() as g:
                await g.spawn(sleeper, trace, "s1", 2)
                await g.spawn(sleeper, trace, "s2", 1)
                await sleep(math.inf)
        except Cancelled:
            trace.append(f"parent cancelled, children exited: {all_exited(g.tasks)}")
            raise

    def main():
        p = yield spawn(parent)
        yield sched_yield()
        yield sched_yield()
        yield kill(p)
        trace.append("killed")

    run(main)
    assert trace == [
        "s1 start",
        "s2 start",
        "s1 cancelled",
        "s2 cancelled",
        "s2 cleaned",
        "s1 cleaned",
        "parent cancelled, children exited: True",
        "killed",
    ]


# ── The joining task is killed or times out ──────────────────────────────


@pytest.mark.parametrize("style", ["generator", "async"])
def test_killing_the_joiner_kills_and_waits_for_every_child(style):
    trace = []
    groups = []

    def gen_joiner():
        g = TaskGroup()
        groups.append(g)
        yield g.spawn(sleeper, trace, "s1", 2)
        yield g.spawn(sleeper, trace, "s2")
        try:
            yield g.join()
        except Cancelled:
            trace.append(f"joiner cancelled, children exited: {all_exited(g.tasks)}")
            raise

    async def async_joiner():
        g = TaskGroup()
        groups.append(g)
        await g.spawn(sleeper, trace, "s1", 2)
        await g.spawn(sleeper, trace, "s2")
        try:
            await g.join()
        except Cancelled:
            trace.append(f"joiner cancelled, children exited: {all_exited(g.tasks)}")
            raise

    def main():
        j = yield spawn(gen_joiner if style == "generator" else async_joiner)
        yield sched_yield()
        yield sched_yield()
        yield kill(j)
        trace.append("killed joiner")
        assert isinstance(j.exception, Cancelled)

    run(main)
    assert trace == [
        "s1 start",
        "s2 start",
        "s1 cancelled",
        "s2 cancelled",
        "s2 cleaned",
        "s1 cleaned",
        "joiner cancelled, children exited: True",
        "killed joiner",
    ]
    assert all_exited(groups[0].tasks)


def test_timeout_around_join_kills_the_children():
    trace = []

    def main():
        g = TaskGroup()
        yield g.spawn(sleeper, trace, "s", 1)
        yield g.spawn(worker, trace, "w", 1, "W")
        try:
            with timeout(0.01):
                yield g.join()
        except TimeoutError:
            trace.append(f"timed out, children exited: {all_exited(g.tasks)}")
        assert g.errors == []
        assert (yield join(g.tasks[1])) == "W"

    run(main)
    assert trace == [
        "s start",
        "w start",
        "w done",
        "w finally",
        "s cancelled",
        "s cleaned",
        "timed out, children exited: True",
    ]


def test_cancel_kills_the_children_without_an_error():
    trace = []

    def child_cancels(g):
        trace.append("c start")
        yield sched_yield()
        g.cancel()
        trace.append("c cancelled the group")
        yield sleep(math.inf)

    def main():
        g = TaskGroup()
        yield g.spawn(sleeper, trace, "s")
        c = yield g.spawn(child_cancels, g)
        yield g.join()
        trace.append("joined")
        assert isinstance(c.exception, Cancelled) and g.errors == []

    run(main)
    assert trace == [
        "s start",
        "c start",
        "c cancelled the group",
        "s cancelled",
        "s cleaned",
        "joined",
    ]


def test_spawning_into_a_cancelled_group_starts_the_child_killed():
    trace = []

    def main():
        g = TaskGroup()
        g.cancel()
        t = yield g.spawn(worker, trace, "w")
        yield g.join()
        assert isinstance(t.exception, Cancelled)

    run(main)
    assert trace == []  # killed before its first line


def test_children_may_spawn_siblings_while_the_group_is_joined():
    trace = []

    def parent(g):
        trace.append("p start")
        yield sched_yield()
        yield g.spawn(worker, trace, "late", 2)
        trace.append("p done")

    def main():
        g = TaskGroup()
        yield g.spawn(parent, g)
        yield g.join()
        trace.append("joined")
        assert len(g.tasks) == 2 and all_exited(g.tasks)

    run(main)
    assert trace == [
        "p start",
        "p done",
        "late start",
        "late done",
        "late finally",
        "joined",
    ]


# ── Misuse ───────────────────────────────────────────────────────────────


def test_misuse_is_reported_clearly():
    def joins_own_group(g):
        yield g.join()

    def main():
        g = TaskGroup()
        with pytest.raises(TypeError, match="plain function"):
            yield g.spawn(lambda: 1)
        with pytest.raises(TypeError, match="name must be a str"):
            yield g.spawn(sleeper, [], "x", name=3)
        t = yield g.spawn(joins_own_group, g)
        yield g.join()  # ... the child's RuntimeError, as the group's failure
        return t

    with pytest.raises(RuntimeError, match="cannot join its own group"):
        run(main)


def test_sync_with_says_how_to_use_a_group_in_a_generator():
    def main():
        with TaskGroup():
            pass
        yield sched_yield()

    with pytest.raises(TypeError, match="task_group"):
        run(main)


def test_repr_names_the_joiner_for_deadlock_messages():
    def main():
        g = TaskGroup()
        ch = object()
        yield g.spawn(_wait_forever, ch)
        yield g.join()

    with pytest.raises(Exception, match=r"TaskGroup 1 running, joined by tid 1 '[\w.<>]*main'"):
        run(main)


def _wait_forever(ch):
    yield wait_on(ch)


# ── gather ───────────────────────────────────────────────────────────────


def test_gather_returns_results_in_order_both_styles():
    trace = []

    def main():
        return (
            yield gather(
                functools.partial(worker, trace, "a", 3, "A"),
                aworker(trace, "b", 1, "B"),  # a coroutine object
                worker(trace, "c", 2, "C"),  # a generator object
            )
        )

    async def amain():
        return await gather(functools.partial(aworker, trace, "d", 1, "D"))

    assert run(main) == ["A", "B", "C"]
    assert run(amain) == ["D"]
    assert trace == [
        "a start",
        "b start",
        "c start",
        "b done",
        "b finally",
        "c done",
        "c finally",
        "a done",
        "a finally",
        "d start",
        "d done",
        "d finally",
    ]


def test_gather_of_nothing_is_an_empty_list():
    def main():
        return (yield gather())

    assert run(main) == []


def test_gather_cancels_the_rest_on_the_first_failure():
    trace = []
    err = ValueError("bad")

    def main():
        try:
            yield gather(
                functools.partial(sleeper, trace, "s1", 1),
                functools.partial(worker, trace, "bad", 2, None, err),
                functools.partial(worker, trace, "w", 5, "W"),
            )
        except ValueError as exc:
            trace.append(f"gather raised {exc}")
            assert exc is err

    run(main)
    assert trace == [
        "s1 start",
        "bad start",
        "w start",
        "bad finally",
        "w cancelled",  # w was READY: it gets Cancelled at its next trap, before s1 runs
        "w finally",
        "s1 cancelled",
        "s1 cleaned",
        "gather raised bad",
    ]


def test_gather_with_a_bad_target_cancels_what_it_started():
    trace = []

    def main():
        with pytest.raises(TypeError):
            yield gather(functools.partial(sleeper, trace, "s"), 42)
        yield sched_yield()

    run(main)
    assert trace == []  # s was spawned, then killed before it ran


# ── race ─────────────────────────────────────────────────────────────────


def test_race_returns_the_first_to_finish_and_cleans_up_the_others():
    trace = []

    def main():
        r = yield race(
            functools.partial(sleeper, trace, "s", 2),
            functools.partial(worker, trace, "slow", 10, "SLOW"),
            functools.partial(aworker, trace, "fast", 1, "FAST"),
        )
        trace.append(r)

    run(main)
    assert trace == [
        "s start",
        "slow start",
        "fast start",
        "fast done",
        "fast finally",
        "slow cancelled",
        "slow finally",
        "s cancelled",
        "s cleaned",  # the losers' cleanup ran before race returned
        (2, "FAST"),
    ]


def test_race_in_an_async_task_and_a_failing_winner():
    trace = []

    async def main():
        with pytest.raises(KeyError):
            await race(
                functools.partial(sleeper, trace, "s"),
                functools.partial(worker, trace, "bad", 1, None, KeyError("k")),
            )
        with pytest.raises(ValueError):
            await race()
        return await race(functools.partial(worker, trace, "only", 0, "x"))

    assert run(main) == (0, "x")
    assert trace == [
        "s start",
        "bad start",
        "bad finally",
        "s cancelled",
        "s cleaned",
        "only start",
        "only done",
        "only finally",
    ]


def test_killing_a_task_in_race_kills_every_racer():
    trace = []
    tasks = []

    def racer_parent():
        tasks.append(current_task())
        yield race(
            functools.partial(sleeper, trace, "a", 1),
            functools.partial(sleeper, trace, "b"),
        )

    def main():
        p = yield spawn(racer_parent)
        yield sched_yield()
        yield sched_yield()
        yield kill(p)
        trace.append("killed")

    run(main)
    assert trace == [
        "a start",
        "b start",
        "a cancelled",
        "b cancelled",
        "b cleaned",
        "a cleaned",
        "killed",
    ]


def test_wakeup_of_the_group_channel_is_harmless():
    # Anybody may wakeup() the group's channel: join looks again and goes on waiting.
    trace = []

    def poke(g):
        yield sched_yield()
        wakeup(g)

    def main():
        g = TaskGroup()
        yield g.spawn(worker, trace, "w", 4, "W")
        yield spawn(poke, g)
        yield g.join()
        trace.append("joined")

    run(main)
    assert trace == ["w start", "w done", "w finally", "joined"]
