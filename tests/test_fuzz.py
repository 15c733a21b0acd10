"""Schedule fuzzing: Hypothesis writes random programs, the kernel runs each under a
virtual clock and several scheduling orders, and every run must keep the invariants.

The programs are in the small language of tests/fuzzprog.py (spawn, sleep, kill,
cancel, join, timeouts, move_on_after, shields, wait channels, Locks, a Condition,
a BoundedSemaphore, a bounded Queue, an Event, task groups, sched_yield, raise). Each
program runs on `kernel.VirtualClock` (no real time: the machine's speed never
matters) and under the kernel's seeded random policy (``make_policy("random:SEED")``),
whose seed is drawn with the program, so it is part of every example Hypothesis
prints; most tests also run it under the default FIFO order. ``inline``, also drawn,
says whether library operations (``lock.acquire()``...) are yielded to the kernel or
run with ``yield from``, as ``await`` does. The invariants (`fuzzprog.check`):

* every task exits exactly once (spawn events == exit events), and the kernel forgets it;
* every task body that began ran its ``finally``; one that never began was killed first;
* no task is resumed twice, while another runs, while blocked or after its exit; every
  run ends with a stop; a task is in the run queue exactly while READY, at most once;
* nothing survives its task: no live timer, no fd waiter, no wait channel entry, no
  task, nothing in the run queue; the locks are free, every permit is back, nobody
  waits on a lock, the condition, the semaphore, the queue or the event;
* a task ends returning, with its own error, killed, or (main only) with Deadlock, or
  with several of these at once, raised together by a task group;
* what the interpreter checks as it goes (fuzzprog's docstring): one holder per lock,
  at most 2 permits out, ``kill`` returns once its target exited, virtual time is
  exact (sleeps, deadlines), a cancellation lands only where the kernel answered a
  trap with it and never goes through a shield, a condition's lock is held again
  after ``wait()``;
* every queue item is delivered exactly once: an item whose put returned is got once or
  still in the queue at the end; an item whose put raised (killed, timed out, queue
  closed) is nowhere;
* `kernel.Deadlock` is thrown (into main) only when no other task is ready and no timer
  is pending, and a program whose every wait has a deadline never gets one; the kernel
  closes a task's cleanup only during shutdown, when nothing else can happen;
* the kernel logs nothing but "died and nobody joins it" (for a task that raised) and
  "cannot finish its cleanup" (for a task it closed);
* the same program under the same seed gives the very same trace of kernel events.

**Replaying a failure.** The falsifying example is a program (a tuple of steps) and a
seed; its notes say which scheduling order failed. Replay it without Hypothesis::

    from fuzzprog import *
    check(run_program(PROGRAM, SEED, INLINE))      # SEED None: the FIFO order

**How many.** Examples are derandomized (the same programs every run: CI does not
flake, and a failure reproduces at once) and no database is kept. ``YIELDOS_FUZZ=N``
explores instead: N fresh random programs per test (``YIELDOS_FUZZ=2000 python3 -m
pytest tests/test_fuzz.py``); a failure then prints a ``@reproduce_failure`` line.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from fuzzprog import (
    CloseQueue,
    CondWait,
    Get,
    Group,
    Join,
    JoinAll,
    Kill,
    Locked,
    MoveOn,
    Notify,
    Permit,
    Put,
    Raise,
    Shield,
    Sleep,
    Spawn,
    Timeout,
    WaitEvent,
    WaitOn,
    Wakeup,
    Yield,
    check,
    may_deadlock,
    policy_seeds,
    programs,
    run_program,
)
from kernel import Cancelled, Kernel, TaskState, VirtualClock
from syscalls import (
    Condition,
    Event,
    kill,
    move_on_after,
    sched_yield,
    shield,
    sleep,
    spawn,
    task_group,
)

_EXPLORE = int(os.environ.get("YIELDOS_FUZZ", "0"))
#: PyPy draws examples about twice as slowly as CPython (its JIT is cold for
#: Hypothesis's code): half as many keeps the file near the same 30 s.
_PYPY = platform.python_implementation() == "PyPy"


#: Health checks about speed and size: the machine is shared and noisy, and how big
#: examples come out depends on the Hypothesis version CI installs. Neither is a bug.
_NOT_BUGS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def fuzz(examples: int) -> settings:
    """Settings for a fuzz test: ``examples`` derandomized programs, or ``YIELDOS_FUZZ``
    fresh ones. No deadline (a slow example is no bug either)."""
    if _EXPLORE:
        return settings(
            max_examples=_EXPLORE,
            deadline=None,
            database=None,
            print_blob=True,
            suppress_health_check=_NOT_BUGS,
        )
    return settings(
        max_examples=examples // 2 if _PYPY else examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=_NOT_BUGS,
    )


#: A test here is long (many programs) but never waits for anything: the usual 10 s
#: limit of conftest's watchdog would cut Hypothesis short while it shrinks a failure
#: to its smallest program, which is when the report matters most.
HANG_SECONDS = 180.0 + 0.1 * _EXPLORE


def run_checked(program: tuple[Any, ...], seed: Optional[int], inline: bool, **kwargs: Any) -> Any:
    note(f"scheduling: {'fifo' if seed is None else f'random:{seed}'}")
    run = run_program(program, seed, inline)
    check(run, **kwargs)
    return run


#: How library operations run: yielded to the kernel (a subroutine), or inline with
#: ``yield from`` (as ``await`` runs them).
inlines = st.booleans()


# ── Regression examples ──────────────────────────────────────────────────
#
# Programs that once broke the fuzzer or the library, checked first, every run.

#: main joins a child that joins main: a real deadlock. The child's join then raises
#: main's own Deadlock, which is not a second Deadlock thrown by the kernel.
JOIN_CYCLE = (Spawn((Join(0),)), JoinAll())

#: main waits on the condition; the child takes the lock and kills main, so wait() must
#: take the lock back (shielded) from a task that waits for main to exit: a real deadlock,
#: and the Deadlock reaches main inside wait(), which leaves without the lock.
CONDITION_DEADLOCK = (Spawn((Locked(0, None, (Kill(0),)),)), CondWait())

#: wait() times out at 0.25 but takes the lock back (in a shield) only at 0.5.
CONDITION_LATE = (Spawn((Locked(0, None, (Sleep(0.5),)),)), CondWait(0.25))

#: The deadline passes while main is READY (sched_yield): it was raised at the trap of
#: task_group's join, and the join was skipped.
GROUP_DEADLINE = (Spawn(()), Group(0.0, ((),), (Yield(),)))

#: The kernel closes a task stuck in a group's body: task_group yielded while closed.
GROUP_CLOSED = (Spawn((Group(None, ((),), (Shield((WaitEvent(),)),)),)), JoinAll())

#: Deadlock inside a group's body, and a deadline held back by a shield: the deadline
#: was raised at the (skipped) join, move_on_after swallowed it, and main returned.
GROUP_DEADLOCK = (Spawn(()), Group(0.0, ((),), (Shield((WaitEvent(),)),)))

#: Deadlock in a group's body while a child failed: the group raises both together (an
#: ExceptionGroup on 3.11+, as TaskGroup.join says), and that is how main ends.
GROUP_DEADLOCK_AND_FAILURE = (Spawn(()), Group(None, ((Raise(),),), (WaitEvent(),)))


# ── The tests ────────────────────────────────────────────────────────────


@fuzz(600)
@given(program=programs(), seed=policy_seeds(), inline=inlines)
@example(program=JOIN_CYCLE, seed=0, inline=False)
@example(program=CONDITION_DEADLOCK, seed=0, inline=False)
@example(program=CONDITION_LATE, seed=0, inline=True)
def test_random_programs_keep_the_invariants(program, seed, inline):
    """Any program, under FIFO and under two random orders."""
    for policy_seed in (None, seed, seed + 1):
        run_checked(program, policy_seed, inline)


@fuzz(450)
@given(program=programs(deadlock_free=True), seed=policy_seeds(), inline=inlines)
def test_programs_whose_waits_all_end_never_deadlock(program, seed, inline):
    """Every wait has a deadline of its own (also inside shields): no Deadlock, and no
    cleanup the kernel must close."""
    assert not may_deadlock(program)
    for policy_seed in (None, seed):
        run_checked(program, policy_seed, inline, deadlock_free=True)


@fuzz(450)
@given(program=programs(), seed=policy_seeds(), inline=inlines)
@example(program=JOIN_CYCLE, seed=0, inline=False)
def test_same_program_and_seed_give_the_same_trace(program, seed, inline):
    first = run_checked(program, seed, inline)
    second = run_program(program, seed, inline)
    assert second.outcome == first.outcome
    assert second.trace == first.trace


#: Queue traffic, with the kills, cancels and deadlines that interrupt it.
QUEUE_HEAVY = {
    "Put": 5,
    "Get": 5,
    "CloseQueue": 1,
    "Kill": 2,
    "Cancel": 2,
    "MoveOn": 2,
    "Timeout": 2,
    "Shield": 2,
    "Spawn": 3,
    "WaitOn": 0,
    "Wakeup": 0,
    "SetEvent": 0,
    "ClearEvent": 0,
    "WaitEvent": 0,
    "Locked": 0,
    "CondWait": 0,
    "Notify": 0,
    "Permit": 0,
}


@fuzz(450)
@given(program=programs(weights=QUEUE_HEAVY), seed=policy_seeds(), inline=inlines)
@example(
    program=(
        Spawn((Put(), Put(), Put(0.5), Put())),
        Spawn((Get(), Kill(0))),
        Sleep(0.25),
        MoveOn(0.25, (Get(), Get())),
        CloseQueue(),
        JoinAll(),
    ),
    seed=1,
    inline=False,
)
def test_queue_items_are_delivered_exactly_once(program, seed, inline):
    for policy_seed in (None, seed, seed + 1):
        run_checked(program, policy_seed, inline)


#: Locks, conditions, semaphores, channels and events under kills, deadlines and shields.
SYNC_HEAVY = {
    "Locked": 3,
    "CondWait": 2,
    "Notify": 2,
    "Permit": 2,
    "WaitOn": 2,
    "Wakeup": 2,
    "SetEvent": 2,
    "WaitEvent": 2,
    "Kill": 2,
    "Cancel": 2,
    "Shield": 2,
    "MoveOn": 2,
    "Timeout": 2,
    "Spawn": 3,
    "Put": 0,
    "Get": 0,
    "CloseQueue": 0,
}


@fuzz(450)
@given(program=programs(weights=SYNC_HEAVY), seed=policy_seeds(), inline=inlines)
@example(
    program=(
        Spawn((Locked(0, None, (WaitOn(0),)),)),
        Spawn((Locked(0, 0.5, (Raise(),)),)),
        Shield((Sleep(1.0), Wakeup(0, 1))),
        Kill(1),
        Timeout(0.25, (Locked(0, None, ()),)),
        JoinAll(),
    ),
    seed=2,
    inline=False,
)
@example(
    program=(
        Spawn((CondWait(), Permit(None, (Sleep(0.25),)))),
        Spawn((Permit(0.5, (CondWait(1.0),)), Notify())),
        Spawn((Permit(None, (Notify(None, True), Sleep(1.0))),)),
        Kill(1),
        JoinAll(),
    ),
    seed=3,
    inline=True,
)
def test_synchronization_keeps_the_invariants(program, seed, inline):
    for policy_seed in (None, seed, seed + 1):
        run_checked(program, policy_seed, inline)


# ── The checks can fail ──────────────────────────────────────────────────


class LateClock(VirtualClock):
    """A virtual clock that overshoots every deadline it jumps to by 1/4 s."""

    def jump_to(self, when: float) -> None:
        super().jump_to(when + 0.25)


def test_the_checks_see_a_clock_that_wakes_sleepers_late():
    program = (Spawn((Sleep(1.0),)), JoinAll())
    check(run_program(program, None))
    with pytest.raises(AssertionError, match=r"sleep\(1.0\) from 0.0 returned at 1.25"):
        check(run_program(program, None, clock=LateClock()))


def test_the_trace_tells_schedules_apart():
    """The trace comparison is not vacuous: two seeds, two interleavings."""
    program = (Spawn((Yield(), Put())), Spawn((Yield(), Get())), Spawn((Yield(),)), JoinAll())
    traces = {str(run_program(program, seed).trace) for seed in range(4)}
    assert len(traces) > 1


# ── Task groups ──────────────────────────────────────────────────────────
#
# The fuzzer's first find: task_group() ended with `yield g.join()` (and its `except
# BaseException` with `yield g.join(exc)`), a kernel subroutine trap. A cancellation due
# at that trap (the task was READY when a deadline passed or a kill came) was raised at
# the trap, as rule 1 says, before join() had run a line: the children were neither
# cancelled nor waited for, and outlived the group. And when the kernel closed a task
# inside the body (GeneratorExit), that yield made it end with RuntimeError. Fixed in
# 2216258; the two tests after this one are the plain reproducers.

#: Task groups, with everything that interrupts them.
GROUP_HEAVY = {"Group": 4, "Spawn": 1, "Kill": 2, "Cancel": 2, "Raise": 2, "MoveOn": 2}


@fuzz(250)
@given(program=programs(weights=GROUP_HEAVY), seed=policy_seeds(), inline=inlines)
@example(program=GROUP_DEADLINE, seed=0, inline=False)
@example(program=GROUP_CLOSED, seed=0, inline=False)
@example(program=GROUP_DEADLOCK, seed=0, inline=False)
@example(program=GROUP_DEADLOCK_AND_FAILURE, seed=0, inline=False)
def test_task_groups_keep_the_invariants(program, seed, inline):
    for policy_seed in (None, seed):
        run_checked(program, policy_seed, inline)


def test_task_group_joins_its_children_when_a_deadline_passes_at_the_join():
    children = []

    def child():
        yield sleep(1)

    def body(g):
        children.append((yield g.spawn(child)))
        yield sched_yield()  # the deadline passes while this task is READY

    def main():
        with move_on_after(0):
            yield task_group(body)
        return children[0].state  # "No child outlives the join" (groups.py)

    with Kernel(clock=VirtualClock()) as k:
        assert k.run(main) is TaskState.EXITED


def test_task_group_closed_by_the_kernel_ends_cancelled():
    never = Event()

    def child():
        yield sleep(0)

    def body(g):
        yield g.spawn(child)
        with shield():
            yield never.wait()  # main's exit cannot cancel this: the kernel closes it

    def worker():
        yield task_group(body)

    def main():
        task = yield spawn(worker)
        yield sleep(1)
        return task

    with Kernel(clock=VirtualClock()) as k:
        task = k.run(main)
    assert type(task.exception) is Cancelled, repr(task.exception)  # not RuntimeError


# ── Cleanup that yields while the kernel closes a task ───────────────────
#
# When cleanup can never finish (a shielded wait nobody will end), the kernel closes
# the task: GeneratorExit, and the task's code may not yield any more (kernel.py,
# Kernel._close). TaskGroup.join() and Condition.wait() did yield then: join's `except
# BaseException:` waited for the children (shielded), wait()'s `finally:` took the lock
# back (shielded). The generator ignored GeneratorExit (RuntimeError), stayed suspended
# inside that shield, and the shield's scope was left on the task: the next `with` the
# closing unwound through raised "left out of order". The task ended with that
# RuntimeError instead of Cancelled("closed by the kernel"). Found by YIELDOS_FUZZ runs
# as the two programs below; both primitives now let GeneratorExit through.

#: A group's joiner, and its child, both shielded: the kernel closes them at shutdown.
CLOSED_JOINER = (Spawn((Shield((Group(None, ((Shield((WaitEvent(),)),),), ()),)),)), JoinAll())

#: A condition's waiter, shielded, whose lock another shielded task holds for ever.
CLOSED_CONDITION_WAITER = (
    Spawn((Shield((CondWait(),)),)),
    Spawn((Shield((Locked(0, None, (Kill(1),)),)),)),
    JoinAll(),
)


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize("program", [CLOSED_JOINER, CLOSED_CONDITION_WAITER])
def test_programs_the_kernel_closes_keep_the_invariants(program, inline):
    check(run_program(program, None, inline))


def _closed_by_the_kernel(main):
    """Run ``main`` (it returns a task) and return that task's exception."""
    with Kernel(clock=VirtualClock()) as k:
        return k.run(main).exception


def test_a_group_joiner_closed_by_the_kernel_ends_cancelled():
    never = Event()

    def child():
        with shield():  # main's exit cannot cancel it: the kernel closes it
            yield never.wait()

    def body(g):
        yield g.spawn(child)

    def worker():
        with shield():  # nor this: the kernel closes it in join(), waiting for the child
            yield task_group(body)

    def main():
        task = yield spawn(worker)
        yield sleep(1)
        return task

    exc = _closed_by_the_kernel(main)
    assert type(exc) is Cancelled, repr(exc)  # not RuntimeError


def test_a_condition_waiter_closed_by_the_kernel_ends_cancelled():
    cond = Condition()

    def waiter():
        with shield():  # main's exit cannot cancel it: the kernel closes it
            yield cond.acquire()
            yield cond.wait()  # closed here: wait() may not wait to take the lock back

    def holder(task):
        with shield():
            yield cond.acquire()
            yield kill(task)  # holds the lock for ever

    def main():
        task = yield spawn(waiter)
        yield sleep(1)
        yield spawn(holder, task)
        yield sleep(1)
        return task

    exc = _closed_by_the_kernel(main)
    assert type(exc) is Cancelled, repr(exc)  # not RuntimeError
