"""Random programs for the schedule fuzzer (tests/test_fuzz.py): a tiny language, its
interpreter, the instrument that watches a run, and the checks made after it.

**The language.** A program is a tuple of *steps* run by ``main``; some steps
hold a body (a tuple of steps) of their own, so programs nest. Every step is a
small named tuple, so Hypothesis's "Falsifying example" is a program one can
read and paste back into ``check(run_program(program, seed))``:

========================  ==================================================
``Sleep(t)``              ``yield sleep(t)`` (``t`` may be 0: a sched_yield)
``Yield()``               ``yield sched_yield()``
``Spawn(body)``           start a task running ``body``; it joins the registry
``Kill(i, within)``       ``yield kill(task i)``: 0 is main, 1.. the spawned
                          tasks, round robin (none spawned yet: nothing)
``Cancel(i)``             ``cancel(task i)``: a kill that does not wait
``Join(i, within)``       ``yield join(task i)`` (itself: nothing); the joined
                          task's failure is caught, any other exception is not
``JoinAll(within)``       join every spawned task, in order
``WaitOn(c, within)``     ``yield wait_on(channel c)``
``Wakeup(c, n)``          ``wakeup(channel c, n)``
``Put(within)``           ``yield queue.put(a new unique item)`` (bounded queue)
``Get(within)``           ``yield queue.get()``
``CloseQueue()``          ``queue.close()`` (puts and gets catch QueueClosed)
``SetEvent()``            ``event.set()``; ``ClearEvent()``, ``event.clear()``
``WaitEvent(within)``     ``yield event.wait()``
``Raise()``               ``raise Boom``
``Try(body)``             ``try: body except Boom: pass``
``Timeout(t, body)``      ``try: with timeout(t): body except TimeoutError: pass``
``MoveOn(t, body)``       ``with move_on_after(t): body``
``Shield(body)``          ``with shield(): body``
``Locked(l, within,       acquire lock ``l``, run ``body``, release the lock in
body)``                   a ``finally`` (if this task holds it: just ``body``)
``CondWait(within)``      ``yield cond.wait()``, cond being the Condition of
                          lock 0 (taken first if this task does not hold it)
``Notify(within, all)``   ``cond.notify()`` or ``notify_all()`` (ditto)
``Permit(within, body)``  ``body`` holding one of the 2 permits of a
                          BoundedSemaphore, released in a ``finally``
========================  ==================================================

``within`` is None (wait as long as it takes) or a number: that one wait, and
only it, runs inside its own ``move_on_after(within)``. A program where every
``within`` is a number cannot deadlock (every wait ends by itself, and a
deadline inside a shield still fires), so the fuzzer can tell a wrong
`Deadlock` from a right one.

Durations are multiples of 1/4 s, exact in binary, so deadlines that are meant
to tie really do tie on the virtual clock.

**What the interpreter checks as it goes** (into ``World.violations``; `check`
looks at them and at the end state): one holder per lock, at most 2 permits out;
``kill`` returns only once its target exited; ``sleep(t)`` returns exactly ``t``
later; a block cut short by its deadline ends exactly at it, one that was not
ends no later (unless a shield inside it held the deadline back); a cancellation
lands at a trap only if the kernel answered that trap with it (never once the trap
had a value: docs/cancellation.md, rule 1) and never goes through a shield;
``event.wait()`` returns only if the event was set; ``cond.wait()`` holds the lock
again however it ends (except when Deadlock, which no shield holds back, lands
while it takes the lock back: then it cannot).
"""

from __future__ import annotations

import builtins
import itertools
import logging
from collections import Counter
from typing import Any, Generator, NamedTuple, Optional

from hypothesis import strategies as st

from kernel import Cancelled, Deadlock, Instrument, Kernel, Task, TaskState, VirtualClock, scheduler
from kernel.scheduler import RunQueue
from kernel.traps import Join as JoinTrap
from syscalls import (
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    Queue,
    QueueClosed,
    TaskGroup,
    cancel,
    clock,
    current_task,
    join,
    kill,
    move_on_after,
    sched_yield,
    shield,
    sleep,
    spawn,
    task_group,
    timeout,
    wait_on,
    wakeup,
)

READY, RUNNING, BLOCKED, EXITED = (
    TaskState.READY,
    TaskState.RUNNING,
    TaskState.BLOCKED,
    TaskState.EXITED,
)

QUEUE_SIZE = 2  # small, so puts block often
PERMITS = 2  # of the semaphore
N_LOCKS = 2
N_CHANNELS = 2
CHANNELS = tuple(f"chan{c}" for c in range(N_CHANNELS))


class Boom(Exception):
    """What a ``Raise()`` step raises."""


#: What a group raises when several children failed (3.11+; before, the first failure).
_EXCEPTION_GROUPS: tuple[type, ...] = tuple(
    t for t in (getattr(builtins, "BaseExceptionGroup", None),) if t is not None
)


def leaves(exc: Optional[BaseException]) -> list[BaseException]:
    """The exceptions in ``exc``, exception groups flattened (None: none)."""
    if exc is None:
        return []
    if isinstance(exc, _EXCEPTION_GROUPS):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]


# ── The language ─────────────────────────────────────────────────────────


class Sleep(NamedTuple):
    t: float


class Yield(NamedTuple):
    pass


class Spawn(NamedTuple):
    body: tuple[Any, ...]


class Kill(NamedTuple):
    i: int
    within: Optional[float] = None


class Cancel(NamedTuple):
    i: int


class Join(NamedTuple):
    i: int
    within: Optional[float] = None


class JoinAll(NamedTuple):
    within: Optional[float] = None


class WaitOn(NamedTuple):
    c: int
    within: Optional[float] = None


class Wakeup(NamedTuple):
    c: int
    n: Optional[int] = None


class Put(NamedTuple):
    within: Optional[float] = None


class Get(NamedTuple):
    within: Optional[float] = None


class CloseQueue(NamedTuple):
    pass


class SetEvent(NamedTuple):
    pass


class ClearEvent(NamedTuple):
    pass


class WaitEvent(NamedTuple):
    within: Optional[float] = None


class Raise(NamedTuple):
    pass


class Try(NamedTuple):
    body: tuple[Any, ...]


class Timeout(NamedTuple):
    t: float
    body: tuple[Any, ...]


class MoveOn(NamedTuple):
    t: float
    body: tuple[Any, ...]


class Shield(NamedTuple):
    body: tuple[Any, ...]


class Locked(NamedTuple):
    lock: int
    within: Optional[float]
    body: tuple[Any, ...]


class Group(NamedTuple):
    within: Optional[float]
    members: tuple[tuple[Any, ...], ...]  # the children's bodies
    body: tuple[Any, ...]  # what the joining task does before the join


class CondWait(NamedTuple):
    within: Optional[float] = None


class Notify(NamedTuple):
    within: Optional[float] = None
    all: bool = False


class Permit(NamedTuple):
    within: Optional[float]
    body: tuple[Any, ...]


#: The steps that wait (and carry a ``within``).
WAITING_STEPS = (
    Kill,
    Join,
    JoinAll,
    WaitOn,
    Put,
    Get,
    WaitEvent,
    Locked,
    CondWait,
    Notify,
    Permit,
    Group,
)


def walk(steps: tuple[Any, ...]) -> Generator[Any, None, None]:
    """Every step of a program, nested ones included."""
    for step in steps:
        yield step
        for body in (getattr(step, "body", ()), *getattr(step, "members", ())):
            yield from walk(body)


def may_deadlock(steps: tuple[Any, ...]) -> bool:
    """True if some wait of the program has no deadline of its own."""
    return any(isinstance(s, WAITING_STEPS) and s.within is None for s in walk(steps))


# ── The interpreter ──────────────────────────────────────────────────────


class World:
    """The objects a program's tasks share, and what they did with them."""

    def __init__(self, inline: bool = False) -> None:
        self.inline = inline  # how library operations run: see _op
        self.registry: list[Task] = []  # main, then every spawned task, in spawn order
        self.locks = [Lock() for _ in range(N_LOCKS)]
        self.holders: list[Optional[int]] = [None] * N_LOCKS  # tid inside each critical section
        self.cond = Condition(self.locks[0])
        self.sem = BoundedSemaphore(PERMITS)
        self.permits_out = 0  # tasks between sem.acquire() and sem.release()
        self.queue: Queue[int] = Queue(QUEUE_SIZE)
        self.event = Event()
        self.item_ids = itertools.count(1)
        self.started: list[int] = []  # tids whose body began (first line of the try)
        self.finished: list[int] = []  # tids whose body's finally ran
        self.put_done: list[int] = []  # items whose put returned
        self.got: list[int] = []  # items a get returned
        self.log: list[tuple[Any, ...]] = []  # what the program did, for the trace
        self.event_sets = 0  # how many times event.set() was called
        #: The last trap outcome of each task, by tid, as the probe saw it: (trap, error).
        self.results: dict[int, tuple[Any, Optional[BaseException]]] = {}
        self.violations: list[str] = []

    def note(self, *what: Any) -> None:
        self.log.append(what)


class Ctx:
    """One task's interpreter state: who it is, which locks it holds."""

    __slots__ = ("task", "held", "lost")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.held: set[int] = set()
        self.lost: set[int] = set()  # held, until cond.wait() could not take it back


def _op(w: World, op: Any) -> Generator[Any, Any, Any]:
    """A library operation (``lock.acquire()``, ``queue.get()``...): yielded to the
    kernel, which runs it as a subroutine of the task, or, ``inline``, run in the
    task's own frame with ``yield from`` (as ``await`` does)."""
    if w.inline:
        return (yield from op)
    return (yield op)


def _call(w: World, ctx: Ctx, trap: Any) -> Generator[Any, Any, Any]:
    """Make one trap (not an Operation), and check rule 1 of docs/cancellation.md: a
    cancellation is raised at a trap only if that is the trap's outcome, never once the
    trap was answered with a value (then it comes at the next trap)."""
    before = w.results.get(ctx.task.tid)
    try:
        return (yield trap)
    except Cancelled as exc:
        last = w.results.get(ctx.task.tid)
        if last is not before and last is not None and last[1] is not exc:
            w.violations.append(
                f"{ctx.task!r} got {exc!r} at {trap!r}, answered with {last[1]!r} (rule 1)"
            )
        raise


def _check_deadline(
    w: World, ctx: Ctx, what: str, deadline: float, expired: bool, shielded: bool
) -> None:
    """When a block with a deadline ended. Time stands still while tasks run and jumps to
    the next deadline, so: a block cut short by its deadline ends exactly then; one that
    was not, no later. A shield inside the block may hold the deadline back."""
    now = clock()
    if expired and (now < deadline or (now > deadline and not shielded)):
        w.violations.append(f"{ctx.task!r}: {what} expired at {now}, deadline {deadline}")
    if not expired and now > deadline and not shielded:
        w.violations.append(f"{ctx.task!r}: {what} ended at {now}, after its deadline {deadline}")


def _within(
    w: World,
    ctx: Ctx,
    seconds: Optional[float],
    body: Generator[Any, Any, None],
    shielded: bool = False,
) -> Generator[Any, Any, None]:
    """Run the one wait ``body`` inside ``move_on_after(seconds)`` (None: without one).
    ``shielded``: it enters a shield of its own."""
    if seconds is None:
        yield from body
        return
    deadline = clock() + seconds
    with move_on_after(seconds) as scope:
        yield from body
    _check_deadline(w, ctx, "a wait", deadline, scope.expired, shielded)


def _shielded(steps: tuple[Any, ...]) -> bool:
    """True if ``steps`` may enter a shield (in this task: spawned bodies do not count).
    ``cond.wait()`` takes its lock back in a shield; a group's join waits for its
    children in one."""
    for step in steps:
        if isinstance(step, (Shield, CondWait, Group)):
            return True
        if not isinstance(step, Spawn) and _shielded(getattr(step, "body", ())):
            return True
    return False


def run_steps(w: World, steps: tuple[Any, ...], ctx: Ctx) -> Generator[Any, Any, None]:
    for step in steps:
        yield from _EXEC[type(step)](w, step, ctx)


def task_body(w: World, steps: tuple[Any, ...]) -> Generator[Any, Any, None]:
    """What every task runs, main included: its steps inside a try/finally that records it."""
    me = current_task()
    try:
        w.started.append(me.tid)
        if not w.registry:
            w.registry.append(me)  # main is entry 0
        yield from run_steps(w, steps, Ctx(me))
    finally:
        w.finished.append(me.tid)


def _target(w: World, i: int) -> Optional[Task]:
    """Entry 0 is main; the others name the spawned tasks, round robin (None: there are none)."""
    if i == 0:
        return w.registry[0]
    if len(w.registry) == 1:
        return None
    return w.registry[1 + (i - 1) % (len(w.registry) - 1)]


def _sleep(w: World, s: Sleep, ctx: Ctx) -> Generator[Any, Any, None]:
    start = clock()
    yield from _call(w, ctx, sleep(s.t))
    if clock() != start + s.t:
        w.violations.append(f"{ctx.task!r}: sleep({s.t}) from {start} returned at {clock()}")


def _yield(w: World, s: Yield, ctx: Ctx) -> Generator[Any, Any, None]:
    yield from _call(w, ctx, sched_yield())


def _spawn(w: World, s: Spawn, ctx: Ctx) -> Generator[Any, Any, None]:
    task = yield from _call(w, ctx, spawn(task_body, w, s.body))
    w.registry.append(task)
    w.note("spawn", ctx.task.tid, task.tid)


def _kill(w: World, s: Kill, ctx: Ctx) -> Generator[Any, Any, None]:
    target = _target(w, s.i)
    if target is None:
        return
    yield from _within(w, ctx, s.within, _kill_now(w, target, ctx))


def _kill_now(w: World, target: Task, ctx: Ctx) -> Generator[Any, Any, None]:
    yield from _call(w, ctx, kill(target))
    if target is not ctx.task and target.state is not EXITED:
        w.violations.append(f"kill({target!r}) returned before it exited")
    w.note("kill", ctx.task.tid, target.tid)


def _cancel(w: World, s: Cancel, ctx: Ctx) -> Generator[Any, Any, None]:
    target = _target(w, s.i)
    if target is not None:
        cancel(target)
    return
    yield


def _join(w: World, s: Join, ctx: Ctx) -> Generator[Any, Any, None]:
    target = _target(w, s.i)
    if target is None or target is ctx.task:
        return
    yield from _within(w, ctx, s.within, _join_now(w, target, ctx))


def _join_now(w: World, target: Task, ctx: Ctx) -> Generator[Any, Any, None]:
    try:
        value = yield from _call(w, ctx, join(target))
    except BaseException as exc:
        if exc is not target.exception:
            raise  # ours (killed, timed out, Deadlock), not the joined task's outcome
        w.note("joined", ctx.task.tid, target.tid, type(exc).__name__)
    else:
        w.note("joined", ctx.task.tid, target.tid, value)


def _join_all(w: World, s: JoinAll, ctx: Ctx) -> Generator[Any, Any, None]:
    for i in range(1, len(w.registry)):  # (those spawned meanwhile too)
        yield from _join(w, Join(i, s.within), ctx)


def _wait_on(w: World, s: WaitOn, ctx: Ctx) -> Generator[Any, Any, None]:
    yield from _within(w, ctx, s.within, _call(w, ctx, wait_on(CHANNELS[s.c])))


def _wakeup(w: World, s: Wakeup, ctx: Ctx) -> Generator[Any, Any, None]:
    n = wakeup(CHANNELS[s.c], s.n)
    w.note("wakeup", ctx.task.tid, s.c, n)
    return
    yield


def _put(w: World, s: Put, ctx: Ctx) -> Generator[Any, Any, None]:
    yield from _within(w, ctx, s.within, _put_now(w, next(w.item_ids), ctx))


def _put_now(w: World, item: int, ctx: Ctx) -> Generator[Any, Any, None]:
    try:
        yield from _op(w, w.queue.put(item))
    except QueueClosed:
        return
    w.put_done.append(item)  # no trap since the put returned: nothing can come between
    w.note("put", ctx.task.tid, item)


def _get(w: World, s: Get, ctx: Ctx) -> Generator[Any, Any, None]:
    yield from _within(w, ctx, s.within, _get_now(w, ctx))


def _get_now(w: World, ctx: Ctx) -> Generator[Any, Any, None]:
    try:
        item = yield from _op(w, w.queue.get())
    except QueueClosed:
        return
    w.got.append(item)
    w.note("got", ctx.task.tid, item)


def _close_queue(w: World, s: CloseQueue, ctx: Ctx) -> Generator[Any, Any, None]:
    w.queue.close()
    return
    yield


def _set_event(w: World, s: SetEvent, ctx: Ctx) -> Generator[Any, Any, None]:
    w.event_sets += 1
    w.event.set()
    return
    yield


def _clear_event(w: World, s: ClearEvent, ctx: Ctx) -> Generator[Any, Any, None]:
    w.event.clear()
    return
    yield


def _wait_event(w: World, s: WaitEvent, ctx: Ctx) -> Generator[Any, Any, None]:
    yield from _within(w, ctx, s.within, _wait_event_now(w, ctx))


def _wait_event_now(w: World, ctx: Ctx) -> Generator[Any, Any, None]:
    was_set, sets = w.event.is_set(), w.event_sets
    yield from _op(w, w.event.wait())
    if not was_set and w.event_sets == sets:
        w.violations.append(f"{ctx.task!r}: event.wait() returned, but nobody set the event")
    w.note("event", ctx.task.tid)


def _raise(w: World, s: Raise, ctx: Ctx) -> Generator[Any, Any, None]:
    raise Boom(ctx.task.tid)
    yield


def _try(w: World, s: Try, ctx: Ctx) -> Generator[Any, Any, None]:
    try:
        yield from run_steps(w, s.body, ctx)
    except Boom:
        w.note("caught", ctx.task.tid)


def _timeout(w: World, s: Timeout, ctx: Ctx) -> Generator[Any, Any, None]:
    deadline = clock() + s.t
    scope = timeout(s.t)
    try:
        with scope:
            yield from run_steps(w, s.body, ctx)
    except TimeoutError:
        w.note("timeout", ctx.task.tid)
        if not scope.expired:
            w.violations.append(f"{ctx.task!r}: TimeoutError from a timeout that did not expire")
    _check_deadline(w, ctx, "a timeout block", deadline, scope.expired, _shielded(s.body))


def _move_on(w: World, s: MoveOn, ctx: Ctx) -> Generator[Any, Any, None]:
    deadline = clock() + s.t
    with move_on_after(s.t) as scope:
        yield from run_steps(w, s.body, ctx)
    w.note("moved on", ctx.task.tid, scope.expired)
    _check_deadline(w, ctx, "a move_on_after block", deadline, scope.expired, _shielded(s.body))


def _shield(w: World, s: Shield, ctx: Ctx) -> Generator[Any, Any, None]:
    try:
        with shield():
            yield from run_steps(w, s.body, ctx)
    except Cancelled as exc:
        # A kill or an outer deadline is held back; a deadline inside the shield is
        # turned into TimeoutError (or swallowed) by its own block, inside.
        w.violations.append(f"{ctx.task!r}: {exc!r} went through a shield")
        raise


def _locked(w: World, s: Locked, ctx: Ctx) -> Generator[Any, Any, None]:
    me = ctx.task.tid
    if s.lock in ctx.held:  # a Lock is not re-entrant: the outer section covers this one
        yield from run_steps(w, s.body, ctx)
        return
    lock = w.locks[s.lock]
    acquired: list[bool] = []
    yield from _within(w, ctx, s.within, _acquire_now(w, lock, acquired))
    if not acquired:
        return
    # No trap since acquire() returned: nothing can have run in between.
    if w.holders[s.lock] is not None or lock.owner is not ctx.task:
        w.violations.append(
            f"tid {me} acquired lock {s.lock}: holder {w.holders[s.lock]}, owner {lock.owner!r}"
        )
    w.holders[s.lock] = me
    ctx.held.add(s.lock)
    try:
        yield from run_steps(w, s.body, ctx)
    finally:
        ctx.held.discard(s.lock)
        w.holders[s.lock] = None
        if s.lock in ctx.lost:
            ctx.lost.discard(s.lock)
        else:
            lock.release()


def _acquire_now(w: World, lock: Any, acquired: list[bool]) -> Generator[Any, Any, None]:
    acquired.append((yield from _op(w, lock.acquire())))


def _cond_wait(w: World, s: CondWait, ctx: Ctx) -> Generator[Any, Any, None]:
    """``cond.wait()`` on the condition of lock 0 (taking the lock first if not held)."""
    if 0 not in ctx.held:
        yield from _locked(w, Locked(0, s.within, (s,)), ctx)
        return
    me = ctx.task.tid
    w.holders[0] = None  # wait() lets go of the lock meanwhile
    try:
        # (wait() takes the lock back in a shield: the deadline may pass meanwhile)
        yield from _within(w, ctx, s.within, _cond_wait_now(w), shielded=True)
    except (Deadlock, GeneratorExit):
        # Thrown in whatever the shields, so also while wait() takes the lock back:
        # then it cannot (nobody can release it, since nothing can run any more).
        if w.locks[0].owner is not ctx.task:
            ctx.lost.add(0)
        raise
    finally:
        # However else wait() ends, it holds the lock again (docstring of Condition).
        if 0 in ctx.lost:
            pass
        elif w.locks[0].owner is not ctx.task:
            w.violations.append(f"{ctx.task!r} left cond.wait() without the lock")
        elif w.holders[0] is not None:
            w.violations.append(f"tid {me} took lock 0 back in cond.wait(): {w.holders[0]} has it")
        else:
            w.holders[0] = me


def _cond_wait_now(w: World) -> Generator[Any, Any, None]:
    yield from _op(w, w.cond.wait())


def _notify(w: World, s: Notify, ctx: Ctx) -> Generator[Any, Any, None]:
    if 0 not in ctx.held:
        yield from _locked(w, Locked(0, s.within, (s,)), ctx)
        return
    if s.all:
        w.cond.notify_all()
    else:
        w.cond.notify()


def _permit(w: World, s: Permit, ctx: Ctx) -> Generator[Any, Any, None]:
    acquired: list[bool] = []
    yield from _within(w, ctx, s.within, _acquire_now(w, w.sem, acquired))
    if not acquired:
        return
    w.permits_out += 1
    if w.permits_out > PERMITS:
        w.violations.append(f"{w.permits_out} tasks hold one of {PERMITS} permits")
    try:
        yield from run_steps(w, s.body, ctx)
    finally:
        w.permits_out -= 1
        w.sem.release()


def _group(w: World, s: Group, ctx: Ctx) -> Generator[Any, Any, None]:
    """``yield task_group(body)``: the body spawns the members, runs ``s.body``, returns."""
    groups: list[TaskGroup] = []

    def body(g: TaskGroup) -> Generator[Any, Any, None]:
        groups.append(g)
        for steps in s.members:
            task = yield g.spawn(task_body, w, steps, name="member")
            w.registry.append(task)
            w.note("member", ctx.task.tid, task.tid)
        yield from run_steps(w, s.body, ctx)

    yield from _within(w, ctx, s.within, _group_now(w, ctx, body, groups), shielded=True)


def _group_now(w: World, ctx: Ctx, body: Any, groups: list[TaskGroup]) -> Generator[Any, Any, None]:
    try:
        yield from _op(w, task_group(body))
    except BaseException as exc:
        if not any(isinstance(e, (Deadlock, GeneratorExit)) for e in leaves(exc)):
            _check_group(w, ctx, groups)
        if isinstance(exc, Boom) or (
            isinstance(exc, _EXCEPTION_GROUPS) and all(isinstance(e, Boom) for e in exc.exceptions)
        ):
            w.note("group failed", ctx.task.tid)
            return
        raise
    _check_group(w, ctx, groups)


def _check_group(w: World, ctx: Ctx, groups: list[TaskGroup]) -> None:
    """No child outlives the join (Deadlock, which no shield holds back, may cut it short)."""
    for task in groups[0].tasks if groups else ():
        if task.state is not EXITED:
            w.violations.append(f"{ctx.task!r}: {task!r} outlived the join of its group")


_EXEC: dict[type, Any] = {
    Sleep: _sleep,
    Yield: _yield,
    Spawn: _spawn,
    Kill: _kill,
    Cancel: _cancel,
    Join: _join,
    JoinAll: _join_all,
    WaitOn: _wait_on,
    Wakeup: _wakeup,
    Put: _put,
    Get: _get,
    CloseQueue: _close_queue,
    SetEvent: _set_event,
    ClearEvent: _clear_event,
    WaitEvent: _wait_event,
    Raise: _raise,
    Try: _try,
    Timeout: _timeout,
    MoveOn: _move_on,
    Shield: _shield,
    Locked: _locked,
    CondWait: _cond_wait,
    Notify: _notify,
    Permit: _permit,
    Group: _group,
}


# ── Scheduling ───────────────────────────────────────────────────────────


def make_policy(seed: Optional[int]) -> Any:
    """The kernel's seeded random policy; None: its default FIFO run queue."""
    return RunQueue() if seed is None else scheduler.make_policy(f"random:{seed}")


class CheckedPolicy:
    """Wraps a policy and checks the run queue invariant of task.py: a task is in
    the queue exactly while it is READY, and at most once."""

    def __init__(self, inner: Any, violations: list[str]) -> None:
        self.inner = inner
        self.queued: set[int] = set()
        self.violations = violations

    def push(self, task: Task) -> None:
        if task.tid in self.queued:
            self.violations.append(f"{task!r} pushed on the run queue twice")
        if task.state is not READY:
            self.violations.append(f"{task!r} pushed on the run queue while {task.state}")
        self.queued.add(task.tid)
        self.inner.push(task)

    def pop_next(self) -> Task:
        task: Task = self.inner.pop_next()
        if task.tid not in self.queued:
            self.violations.append(f"{task!r} popped but never pushed")
        self.queued.discard(task.tid)
        if task.state is not READY:
            self.violations.append(f"{task!r} popped from the run queue while {task.state}")
        return task

    def __len__(self) -> int:
        return len(self.inner)

    def clear(self) -> None:
        self.queued.clear()
        self.inner.clear()


# ── Watching the kernel ──────────────────────────────────────────────────


def _summary(value: Any) -> Any:
    """A value as the trace records it: the same in two runs of one program."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Task):
        return ("task", value.tid)
    return type(value).__name__


class Probe(Instrument):
    """Records every kernel event as a trace, and checks the task life cycle as it goes:
    a task runs only when READY and not exited, never while another runs, every run
    ends with a stop, and it exits exactly once; a Deadlock is thrown only when no
    other task can run and no timer is pending."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        self.trace: list[tuple[Any, ...]] = []
        self.results: dict[int, tuple[Any, Optional[BaseException]]] = {}  # see _call
        self.spawned: dict[int, Task] = {}
        self.exits: Counter[int] = Counter()
        self.blocked: set[int] = set()
        self.running: Optional[Task] = None
        self.runs = self.stops = 0
        self.deadlocks: list[str] = []  # what was wrong when a Deadlock was thrown ("" = right)
        self.closed: list[str] = []  # tasks the kernel closed (cleanup that could never finish)

    def _bad(self, what: str) -> None:
        self.violations.append(what)

    def _now(self) -> float:
        assert self.kernel is not None
        return self.kernel.clock()

    def spawn(self, task: Task) -> None:
        if task.tid in self.spawned:
            self._bad(f"tid {task.tid} spawned twice")
        self.spawned[task.tid] = task
        self.trace.append(("spawn", task.tid, task.parent))

    def run(self, task: Task) -> None:
        self.runs += 1
        if self.exits[task.tid]:
            self._bad(f"{task!r} resumed after its exit")
        if self.running is not None:
            self._bad(f"{task!r} resumed while {self.running!r} runs")
        if task.state is not READY:
            self._bad(f"{task!r} resumed while {task.state}")
        if task.tid in self.blocked:
            self._bad(f"{task!r} resumed while blocked")
        self.running = task
        self.trace.append(("run", task.tid, self._now()))

    def stop(self, task: Task, seconds: float) -> None:
        self.stops += 1
        if self.running is not task:
            self._bad(f"{task!r} stopped, but {self.running!r} was running")
        self.running = None
        if task.state is EXITED and not self.exits[task.tid]:
            self._bad(f"{task!r} stopped EXITED without an exit event")
        self.trace.append(("stop", task.tid, str(task.state)))

    def trap(self, task: Task, trap: Any) -> None:
        if self.running is not task:
            self._bad(f"{task!r} trapped while {self.running!r} runs")
        self.trace.append(("trap", task.tid, type(trap).__name__))

    def trap_result(
        self, task: Task, trap: Any, value: Any, error: Optional[BaseException]
    ) -> None:
        if isinstance(error, Deadlock) and not (
            type(trap) is JoinTrap and error is trap.task.exception
        ):
            # (main's own Deadlock also reaches whoever joins main)
            self.deadlocks.append(self._deadlock_wrong(task))
        self.results[task.tid] = (trap, error)
        outcome = type(error).__name__ if error is not None else _summary(value)
        self.trace.append(("result", task.tid, type(trap).__name__, outcome))

    def _deadlock_wrong(self, task: Task) -> str:
        """Checked the moment Deadlock is thrown into ``task`` (which it just made READY)."""
        k = self.kernel
        assert k is not None
        wrong = []
        if task is not k.main:
            wrong.append(f"thrown into {task!r}, not main")
        if len(k.runq) != 1:
            wrong.append(f"{len(k.runq)} tasks in the run queue (only main should be)")
        for other in k.tasks.values():
            if other is not task and other.state is not BLOCKED:
                wrong.append(f"{other!r} is not blocked")
        if k.timers.live:
            wrong.append(f"{k.timers.live} timers pending")
        if k.poller.waiting:
            wrong.append(f"{k.poller.waiting} tasks wait on fds")
        return "; ".join(wrong)

    def block(self, task: Task, trap: Any) -> None:
        if self.running is not task:
            self._bad(f"{task!r} blocked while {self.running!r} runs")
        self.blocked.add(task.tid)
        self.trace.append(("block", task.tid, type(trap).__name__))

    def wake(self, task: Task) -> None:
        if task.tid not in self.blocked:
            self._bad(f"{task!r} woken but not blocked")
        if self.exits[task.tid]:
            self._bad(f"{task!r} woken after its exit")
        self.blocked.discard(task.tid)
        self.trace.append(("wake", task.tid))

    def exit(self, task: Task) -> None:
        self.exits[task.tid] += 1
        self.blocked.discard(task.tid)
        if self.running is not task:
            # Not in a step: the kernel closed a task whose cleanup could never finish.
            # Only right when nothing at all can happen any more, during shutdown.
            k = self.kernel
            assert k is not None
            wrong = []
            if not k.stopping:
                wrong.append("main has not exited")
            if k.timers.live:
                wrong.append(f"{k.timers.live} timers pending")
            if k.poller.waiting:
                wrong.append(f"{k.poller.waiting} tasks wait on fds")
            self.closed.append(f"{task!r}: " + ("; ".join(wrong) or "ok"))
        exc = task.exception
        self.trace.append(("exit", task.tid, None if exc is None else type(exc).__name__))


# ── Running a program ────────────────────────────────────────────────────


class LogRecorder(logging.Handler):
    """Keeps what the kernel logs during a run (unformatted: formatting costs), and
    keeps it from reaching other handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger("yieldos")
        self._saved = (self._logger.propagate, self._logger.level)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogRecorder:
        self._logger.addHandler(self)
        self._logger.propagate = False
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate, level = self._saved
        self._logger.setLevel(level)


class Run(NamedTuple):
    world: World
    probe: Probe
    error: Optional[BaseException]  # what run() raised (None: main returned)
    leftovers: dict[str, Any]  # kernel state after run() (all should be empty)
    violations: list[str]
    logged: list[logging.LogRecord]

    @property
    def outcome(self) -> str:
        """How main ended: "returned", or the exceptions run() raised, by name."""
        if self.error is None:
            return "returned"
        return "+".join(type(e).__name__ for e in leaves(self.error))

    @property
    def trace(self) -> list[tuple[Any, ...]]:
        return self.probe.trace + [("log", *entry) for entry in self.world.log]


def run_program(
    steps: tuple[Any, ...],
    seed: Optional[int],
    inline: bool = False,
    *,
    clock: Optional[VirtualClock] = None,
) -> Run:
    """Run ``steps`` as main on a virtual clock, scheduled by the random policy seeded
    ``seed`` (None: by the default FIFO run queue). ``inline``: library operations
    run in the task's frame (``yield from``) instead of as kernel subroutines.
    ``clock``: another virtual clock (to show that the checks see a wrong one)."""
    world = World(inline)
    violations = world.violations
    probe = Probe(violations)
    world.results = probe.results
    inner = make_policy(seed)
    clock = VirtualClock() if clock is None else clock
    k = Kernel(clock=clock, policy=CheckedPolicy(inner, violations))
    try:
        if isinstance(inner, Instrument):  # hidden from the kernel by the wrapper
            k.add_instrument(inner)
        k.add_instrument(probe)
        with LogRecorder() as log:
            error: Optional[BaseException] = None
            try:
                k.run(task_body, world, steps)
            except (Boom, Cancelled, Deadlock, *_EXCEPTION_GROUPS) as exc:
                error = exc
        leftovers = {
            "tasks": dict(k.tasks),
            "run queue": len(k.runq),
            "timers": k.timers.live,
            "fd waiters": k.poller.waiting,
            "channels": dict(k.channels.waiters),
            "current": k.current,
        }
    finally:
        k.close()
    return Run(world, probe, error, leftovers, violations, log.records)


# ── The checks ───────────────────────────────────────────────────────────


def check(run: Run, *, deadlock_free: bool = False) -> None:
    """Every invariant of a finished run (see test_fuzz.py's docstring)."""
    w, probe = run.world, run.probe
    assert not run.violations, "\n".join(run.violations)

    # Every task exits exactly once, and the kernel forgot it.
    spawned = set(probe.spawned)
    assert spawned == set(probe.exits), (spawned, dict(probe.exits))
    twice = {tid: n for tid, n in probe.exits.items() if n != 1}
    assert not twice, f"tasks that exited more than once: {twice}"
    assert all(t.state is EXITED for t in probe.spawned.values())
    assert probe.running is None and probe.runs == probe.stops

    # Every body that began ran its finally, once; a task that never began was killed first.
    assert sorted(w.started) == sorted(set(w.started)), w.started
    assert sorted(w.finished) == sorted(w.started), (w.started, w.finished)
    for task in probe.spawned.values():
        # (A group raises its body's error and its children's together: as an exception
        # group on 3.11+, so a Deadlock in a group's body may come out of main in one.)
        for exc in leaves(task.exception):
            if type(exc) not in (Boom, Cancelled, Deadlock):
                raise AssertionError(f"{task!r} ended with {task.exception!r}") from exc
            assert not isinstance(exc, Deadlock) or task.tid == 1, f"{task!r}: Deadlock"
    for tid in spawned - set(w.started):
        task = probe.spawned[tid]
        if task.name == "task_body":  # (not a group's member, nor its watchers or killers)
            assert isinstance(task.exception, Cancelled), f"{task!r} never ran its body"

    # Nothing of a task survives it.
    empty = {"tasks": {}, "run queue": 0, "timers": 0, "fd waiters": 0, "channels": {}}
    empty["current"] = None
    assert run.leftovers == empty, run.leftovers
    for i, lock in enumerate(w.locks):
        assert not lock.locked() and not lock._waiters, f"lock {i}: {lock!r}"
        assert w.holders[i] is None
    assert not w.queue._putters, repr(w.queue)  # (its getters park on a kernel channel)
    # (the event's, the condition's and the semaphore's waiters park on kernel channels,
    # checked empty above)
    assert w.sem.value == PERMITS and not w.permits_out, repr(w.sem)

    # Every item is delivered exactly once: each put that returned is got once or still
    # queued; an item whose put raised (killed, timed out, closed) is nowhere.
    remaining = list(w.queue._items)
    delivered = Counter(w.got + remaining)
    assert not [i for i, n in delivered.items() if n > 1], (w.got, remaining)
    assert set(delivered) == set(w.put_done), (w.put_done, w.got, remaining)

    # Deadlock only when nothing could run; never in a program whose waits all end.
    assert probe.deadlocks == [""] * len(probe.deadlocks), probe.deadlocks
    deadlocked = any(isinstance(e, Deadlock) for e in leaves(run.error))
    assert deadlocked == bool(probe.deadlocks), (run.outcome, probe.deadlocks)
    bad_closes = [c for c in probe.closed if not c.endswith(": ok")]
    assert not bad_closes, bad_closes
    if deadlock_free:
        assert not deadlocked
        assert not probe.closed, probe.closed

    # The kernel logs only a task that died of an error nobody joined, and a closed one.
    died = [r.args[1] for r in run.logged if r.msg == "task %r (tid %d) died and nobody joins it"]
    closed = [r for r in run.logged if r.msg == "%r cannot finish its cleanup; closing it"]
    assert len(died) + len(closed) == len(run.logged), [r.getMessage() for r in run.logged]
    for tid in died:
        assert isinstance(probe.spawned[tid].exception, Boom), probe.spawned[tid]
    assert len(closed) == len(probe.closed), (closed, probe.closed)


# ── Generating programs ──────────────────────────────────────────────────

DURATIONS = (0.0, 0.25, 0.5, 1.0, 2.0)


#: How often each kind of step is drawn, relative to the others (see `programs`).
WEIGHTS = {
    "Sleep": 2,
    "Yield": 1,
    "Kill": 1,
    "Cancel": 1,
    "Join": 1,
    "WaitOn": 1,
    "Wakeup": 1,
    "Put": 1,
    "Get": 1,
    "CloseQueue": 1,
    "SetEvent": 1,
    "ClearEvent": 1,
    "WaitEvent": 1,
    "Raise": 1,
    "Spawn": 2,
    "Try": 1,
    "Timeout": 1,
    "MoveOn": 1,
    "Shield": 1,
    "Locked": 1,
    "CondWait": 1,
    "Notify": 1,
    "Permit": 1,
    "Group": 1,
}


def programs(
    *, deadlock_free: bool = False, depth: int = 3, weights: Optional[dict[str, int]] = None
) -> st.SearchStrategy[Any]:
    """Programs (main's steps): main spawns 1 to 4 tasks, goes on with steps of its
    own, and often ends by joining every task. ``deadlock_free``: every wait has a
    ``within``. ``depth``: how deep bodies nest. ``weights``: changes to `WEIGHTS`."""
    weight = dict(WEIGHTS, **(weights or {}))
    durations = st.sampled_from(DURATIONS)
    within = durations if deadlock_free else st.one_of(st.none(), durations)
    index = st.integers(0, 6)
    channel = st.integers(0, N_CHANNELS - 1)
    leaves = {
        "Sleep": st.builds(Sleep, durations),
        "Yield": st.just(Yield()),
        "Kill": st.builds(Kill, index, within),
        "Cancel": st.builds(Cancel, index),
        "Join": st.builds(Join, index, within),
        "WaitOn": st.builds(WaitOn, channel, within),
        "Wakeup": st.builds(Wakeup, channel, st.sampled_from([None, 1])),
        "Put": st.builds(Put, within),
        "Get": st.builds(Get, within),
        "CloseQueue": st.just(CloseQueue()),
        "SetEvent": st.just(SetEvent()),
        "ClearEvent": st.just(ClearEvent()),
        "WaitEvent": st.builds(WaitEvent, within),
        "Raise": st.just(Raise()),
        "CondWait": st.builds(CondWait, within),
        "Notify": st.builds(Notify, within, st.booleans()),
    }

    def weighted(options: dict[str, st.SearchStrategy[Any]]) -> list[st.SearchStrategy[Any]]:
        return [s for name, s in options.items() for _ in range(weight[name])]

    leaf = st.one_of(weighted(leaves))
    step = leaf
    for _ in range(depth):
        body = st.lists(step, max_size=4).map(tuple)
        compounds = {
            "Spawn": st.builds(Spawn, body),
            "Try": st.builds(Try, body),
            "Timeout": st.builds(Timeout, durations, body),
            "MoveOn": st.builds(MoveOn, durations, body),
            "Shield": st.builds(Shield, body),
            "Locked": st.builds(Locked, st.integers(0, N_LOCKS - 1), within, body),
            "Permit": st.builds(Permit, within, body),
            "Group": st.builds(
                Group,
                within,
                st.lists(body, min_size=1, max_size=3).map(tuple),
                st.lists(step, max_size=2).map(tuple),
            ),
        }
        step = st.one_of(weighted(leaves) + weighted(compounds))
    spawns = st.lists(
        st.builds(Spawn, st.lists(step, max_size=5).map(tuple)), min_size=1, max_size=4
    )
    rest = st.lists(step, max_size=5)
    end = st.one_of(st.builds(JoinAll, within).map(lambda s: [s]), st.just([]))
    return st.tuples(spawns, rest, end).map(lambda parts: tuple(itertools.chain(*parts)))


def policy_seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**32 - 1)
