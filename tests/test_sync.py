"""Synchronization primitives (syscalls/sync.py): Event, Lock, RLock, Semaphore,
BoundedSemaphore, Condition, Barrier.

Orderings are exact traces. The scheduler is FIFO: a spawned task and a task that
calls sched_yield() go to the back of the run queue, so ``settle()`` (a few
sched_yields) lets every spawned task run until it blocks.

Every blocking method is checked under a kill and under a timeout (the primitive
stays consistent, the next waiter is served), in both task styles: the "async"
style runs the same generator body inside an ``async def`` task that ``await``s
each trap (`as_async`), so the Operations run through ``await``.
"""

from __future__ import annotations

import random
import types

import pytest

import kernel
from conftest import run
from syscalls import current_task, join, kill, move_on_after, sched_yield, sleep, spawn, timeout
from syscalls.sync import (
    Barrier,
    BoundedSemaphore,
    BrokenBarrierError,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
    _leave_line,
    _Waiter,
)

STYLES = ["gen", "async"]
HOWS = ["kill", "timeout"]


def settle(n=4):
    """Let every other ready task run until it blocks (FIFO run queue)."""
    for _ in range(n):
        yield sched_yield()


async def as_async(gen):
    """Run the generator task ``gen`` as an async def task: each trap it yields is awaited
    (so an Operation runs through ``await``), each exception thrown back into ``gen``."""
    value, exc = None, None
    while True:
        try:
            trap = gen.send(value) if exc is None else gen.throw(exc)
        except StopIteration as stop:
            return stop.value
        try:
            value, exc = await trap, None
        except BaseException as error:
            value, exc = None, error


def spawn_as(style, fn, *args, name=None):
    """spawn(fn, *args) as a generator task, or as an async def task running the same body."""
    if style == "gen":
        return spawn(fn, *args, name=name)
    return spawn(as_async(fn(*args)), name=name)


def _killer(task):
    yield kill(task)


def holder(task):
    return f"tid {task.tid} {task.name!r}"


# ---------------------------------------------------------------------------
# Event


def test_event_set_wakes_every_waiter_in_fifo_order():
    trace = []
    ev = Event()

    def waiter(name):
        trace.append(f"{name} waits")
        result = yield ev.wait()
        trace.append(f"{name} woke {result}")

    def main():
        for name in "abc":
            yield spawn(waiter, name)
        yield from settle()
        assert repr(ev) == "<Event unset, 3 waiting>"
        trace.append("set")
        ev.set()
        assert ev.is_set() and repr(ev) == "<Event set>"
        yield from settle()
        assert (yield ev.wait()) is True  # set: returns at once
        ev.clear()
        assert not ev.is_set() and repr(ev) == "<Event unset>"
        trace.append("done")

    run(main)
    assert trace == [
        "a waits",
        "b waits",
        "c waits",
        "set",
        "a woke True",
        "b woke True",
        "c woke True",
        "done",
    ]


def test_event_set_then_clear_at_once_still_wakes_the_waiters_async():
    trace = []
    ev = Event()

    async def waiter(name):
        await ev.wait()
        trace.append(name)

    async def main():
        tasks = [await spawn(waiter, name) for name in "ab"]
        for _ in range(3):
            await sched_yield()
        ev.set()
        ev.clear()  # hand-off: the woken waiters do not look at the flag again
        for t in tasks:
            await join(t)

    run(main)
    assert trace == ["a", "b"]


# ---------------------------------------------------------------------------
# Lock


def test_lock_fifo_handoff_and_no_barging():
    trace = []
    lock = Lock()

    def worker(name):
        trace.append(f"{name} wants")
        yield lock.acquire()
        try:
            trace.append(f"{name} got")
            assert lock.owner is current_task()
            yield sched_yield()
        finally:
            trace.append(f"{name} releases")
            lock.release()

    def main():
        yield lock.acquire()
        tasks = []
        for name in "abc":
            tasks.append((yield spawn(worker, name, name=name)))
        yield from settle()
        assert repr(lock) == f"<Lock locked by {holder(current_task())}, 3 waiting>"
        lock.release()
        trace.append("main released")
        assert lock.owner is tasks[0]  # handed over at once
        assert repr(lock) == "<Lock locked by tid 2 'a', 2 waiting>"
        yield lock.acquire()  # no barging: main queues behind b and c
        trace.append("main got again")
        lock.release()
        for t in tasks:
            yield join(t)
        assert not lock.locked() and repr(lock) == "<Lock unlocked>"

    run(main)
    assert trace == [
        "a wants",
        "b wants",
        "c wants",
        "main released",
        "a got",
        "a releases",
        "b got",
        "b releases",
        "c got",
        "c releases",
        "main got again",
    ]


def test_lock_async_with_and_both_styles_together():
    trace = []
    lock = Lock()

    async def a():
        async with lock:
            trace.append("a in")
            await sched_yield()
            trace.append("a out")

    def g():
        trace.append("g wants")
        yield lock.acquire()
        try:
            trace.append("g in")
        finally:
            lock.release()

    async def main():
        ta = await spawn(a)
        tg = await spawn(g)
        await join(ta)
        await join(tg)
        assert not lock.locked()

    run(main)
    assert trace == ["a in", "g wants", "a out", "g in"]


def test_lock_misuse_is_loud():
    lock = Lock()
    ev = Event()

    def other():
        yield lock.acquire()
        yield ev.wait()
        lock.release()

    def main():
        with pytest.raises(RuntimeError, match="does not hold"):
            lock.release()  # unlocked
        t = yield spawn(other)
        yield from settle()
        with pytest.raises(RuntimeError, match="does not hold"):
            lock.release()  # held by another task
        ev.set()
        yield join(t)
        yield lock.acquire()
        with pytest.raises(RuntimeError, match="already holds"):
            yield lock.acquire()  # not re-entrant: it would wait for ever
        assert lock.owner is current_task()
        lock.release()

    run(main)


@pytest.mark.parametrize(
    "make, var",
    [
        (Lock, "lock"),
        (RLock, "rlock"),
        (Semaphore, "sem"),
        (BoundedSemaphore, "sem"),
        (Condition, "cond"),
    ],
)
def test_plain_with_explains_what_to_write(make, var):
    obj = make()
    with pytest.raises(TypeError) as info:
        with obj:
            pass  # pragma: no cover
    message = str(info.value)
    assert f"yield {var}.acquire()" in message
    assert f"finally: {var}.release()" in message
    assert f"async with {var}:" in message


# ---------------------------------------------------------------------------
# RLock


def test_rlock_recursion_then_handoff():
    trace = []
    rl = RLock()

    def other():
        trace.append("other wants")
        yield rl.acquire()
        trace.append("other got")
        rl.release()

    def main():
        me = current_task()
        yield rl.acquire()
        yield rl.acquire()
        t = yield spawn(other, name="other")
        yield from settle()
        assert repr(rl) == f"<RLock locked by {holder(me)} (depth 2), 1 waiting>"
        rl.release()
        trace.append("main released once")
        yield from settle()
        assert rl.owner is me
        rl.release()
        trace.append("main released twice")
        assert rl.owner is t and repr(rl) == "<RLock locked by tid 2 'other' (depth 1)>"
        yield join(t)
        assert not rl.locked() and repr(rl) == "<RLock unlocked>"
        with pytest.raises(RuntimeError, match="does not hold"):
            rl.release()

    run(main)
    assert trace == ["other wants", "main released once", "main released twice", "other got"]


def test_rlock_nested_async_with():
    rl = RLock()

    async def main():
        async with rl:
            async with rl:
                assert "(depth 2)" in repr(rl)
            assert "(depth 1)" in repr(rl)
        assert not rl.locked()

    run(main)


# ---------------------------------------------------------------------------
# Semaphore, BoundedSemaphore


def test_semaphore_bounds_concurrency_and_hands_permits_in_fifo_order():
    trace = []
    sem = Semaphore(2)

    def worker(name):
        yield sem.acquire()
        try:
            trace.append(f"{name} in")
            yield sched_yield()
            yield sched_yield()
        finally:
            trace.append(f"{name} out")
            sem.release()

    def main():
        tasks = []
        for name in "abcd":
            tasks.append((yield spawn(worker, name)))
        yield sched_yield()
        yield sched_yield()
        assert sem.locked() and sem.value == 0
        assert repr(sem) == "<Semaphore value=0, 2 waiting>"
        for t in tasks:
            yield join(t)
        assert sem.value == 2 and repr(sem) == "<Semaphore value=2>"

    run(main)
    assert trace == ["a in", "b in", "a out", "b out", "c in", "d in", "c out", "d out"]


def test_semaphore_async_with():
    sem = Semaphore(1)

    async def main():
        async with sem:
            assert sem.value == 0
        assert sem.value == 1

    run(main)


def test_semaphore_value_checks():
    with pytest.raises(ValueError):
        Semaphore(-1)

    def main():
        sem = Semaphore(0)
        sem.release()  # a plain semaphore may be released beyond its start value
        sem.release()
        assert sem.value == 2
        bounded = BoundedSemaphore(2)
        yield bounded.acquire()
        bounded.release()
        assert repr(bounded) == "<BoundedSemaphore value=2/2>"
        with pytest.raises(ValueError, match="released too many times"):
            bounded.release()
        assert bounded.value == 2

    run(main)


def test_bounded_semaphore_release_with_waiters_hands_the_permit():
    bounded = BoundedSemaphore(1)

    def other():
        yield bounded.acquire()
        bounded.release()

    def main():
        yield bounded.acquire()
        t = yield spawn(other)
        yield from settle()
        bounded.release()  # handed to other: not an over-release
        yield join(t)
        assert bounded.value == 1

    run(main)


# ---------------------------------------------------------------------------
# Condition


def test_condition_notify_wakes_in_fifo_order_and_waiters_reacquire():
    trace = []
    cond = Condition()
    items = []

    def consumer(name):
        yield cond.acquire()
        try:
            trace.append(f"{name} waits")
            while not items:
                yield cond.wait()
            assert cond.lock.owner is current_task()
            trace.append(f"{name} got {items.pop(0)}")
        finally:
            cond.release()

    def main():
        tasks = []
        for name in ("c1", "c2", "c3"):
            tasks.append((yield spawn(consumer, name)))
        yield from settle()
        assert repr(cond) == "<Condition on <Lock unlocked>, 3 waiting>"
        yield cond.acquire()
        items.extend([1, 2])
        cond.notify(2)
        trace.append("notified 2")
        yield from settle()  # the notified ones now wait for the lock, which main holds
        assert cond.locked() and repr(cond.lock).endswith(", 2 waiting>")
        trace.append("main releases")
        cond.release()
        yield from settle()
        yield cond.acquire()
        items.append(3)
        cond.notify_all()
        cond.release()
        for t in tasks:
            yield join(t)
        assert not cond.locked()

    run(main)
    assert trace == [
        "c1 waits",
        "c2 waits",
        "c3 waits",
        "notified 2",
        "main releases",
        "c1 got 1",
        "c2 got 2",
        "c3 got 3",
    ]


def test_condition_wait_for_async():
    trace = []
    cond = Condition()
    items = []

    def enough():
        trace.append(f"check {len(items)}")
        return len(items) >= 2 and list(items)

    async def consumer():
        async with cond:
            result = await cond.wait_for(enough)
            trace.append(f"result {result}")

    async def main():
        t = await spawn(consumer)
        for n in (1, 2):
            await sched_yield()
            async with cond:
                items.append(n)
                cond.notify()
        await join(t)

    run(main)
    assert trace == ["check 0", "check 1", "check 2", "result [1, 2]"]


def test_condition_needs_the_lock():
    cond = Condition()

    def main():
        with pytest.raises(RuntimeError, match="needs the lock"):
            yield cond.wait()
        with pytest.raises(RuntimeError, match="needs the lock"):
            yield cond.wait_for(lambda: True)
        with pytest.raises(RuntimeError, match="needs the lock"):
            cond.notify()
        with pytest.raises(RuntimeError, match="needs the lock"):
            cond.notify_all()
        assert not cond.locked()

    run(main)


def test_condition_on_rlock_lets_go_of_every_level_and_restores_them():
    rl = RLock()
    cond = Condition(rl)

    def waiter():
        yield rl.acquire()
        yield rl.acquire()
        yield cond.wait()
        assert rl.owner is current_task() and "(depth 2)" in repr(rl)
        rl.release()
        rl.release()

    def main():
        t = yield spawn(waiter)
        yield from settle()
        assert not rl.locked()  # wait() released both levels
        yield cond.acquire()
        cond.notify()
        cond.release()
        yield join(t)
        assert not rl.locked()

    run(main)


# ---------------------------------------------------------------------------
# Barrier


def test_barrier_arrival_indices_and_rounds():
    trace = []
    barrier = Barrier(3)

    def worker(name):
        for rnd in range(2):
            trace.append(f"{name} arrives {rnd}")
            index = yield barrier.wait()
            trace.append(f"{name} passes {rnd} as {index}")

    def main():
        tasks = []
        for name in "abc":
            tasks.append((yield spawn(worker, name)))
        yield sched_yield()
        assert repr(barrier) == "<Barrier 1/3 waiting>" and barrier.n_waiting == 1  # c, round 1
        for t in tasks:
            yield join(t)
        assert barrier.n_waiting == 0 and not barrier.broken

    run(main)
    assert trace == [
        "a arrives 0",
        "b arrives 0",
        "c arrives 0",
        "c passes 0 as 2",  # the last to arrive goes on at once
        "c arrives 1",
        "a passes 0 as 0",
        "a arrives 1",
        "b passes 0 as 1",
        "b arrives 1",
        "b passes 1 as 2",
        "c passes 1 as 0",
        "a passes 1 as 1",
    ]


def test_barrier_abort_and_reset():
    trace = []
    barrier = Barrier(3)

    def waiter(name):
        try:
            yield barrier.wait()
        except BrokenBarrierError:
            trace.append(f"{name} broken")

    def main():
        tasks = []
        for name in "ab":
            tasks.append((yield spawn(waiter, name)))
        yield from settle()
        barrier.abort()
        assert barrier.broken and repr(barrier) == "<Barrier broken>"
        for t in tasks:
            yield join(t)
        with pytest.raises(BrokenBarrierError):
            yield barrier.wait()
        barrier.reset()
        assert not barrier.broken
        t = yield spawn(waiter, "c")
        yield from settle()
        barrier.reset()  # a reset breaks the current waiters, and leaves the barrier usable
        yield join(t)
        assert not barrier.broken and barrier.n_waiting == 0

    run(main)
    assert trace == ["a broken", "b broken", "c broken"]


def test_barrier_of_one_and_bad_parties():
    with pytest.raises(ValueError):
        Barrier(0)

    def main():
        barrier = Barrier(1)
        assert (yield barrier.wait()) == 0
        assert (yield barrier.wait()) == 0
        assert barrier.parties == 1

    run(main)


# ---------------------------------------------------------------------------
# Kill or timeout at every blocking method: the primitive stays consistent.


def victim_body(trace, how, block, check=lambda: None, before=None, after=lambda: None):
    """A task body that runs ``before`` (an operation), blocks in ``block()`` and is
    interrupted there by a kill or by a 10 ms timeout; ``check()`` runs in its except
    block (while the interruption unwinds), ``after()`` in its finally."""

    def victim():
        if before is not None:
            yield before()
        try:
            trace.append("victim blocks")
            try:
                if how == "timeout":
                    with timeout(0.01):
                        yield block()
                else:
                    yield block()
            except BaseException as exc:
                trace.append(f"victim {type(exc).__name__}")
                check()
                raise
            trace.append("victim returned")  # pragma: no cover
        finally:
            after()

    return victim


def interrupt(task, how):
    """Kill ``task``, or wait for its timeout to end it (operation-style helper)."""
    if how == "kill":
        yield kill(task)
    else:
        with pytest.raises(TimeoutError):
            yield join(task)
    assert task.state is kernel.TaskState.EXITED


def expected(how, *rest):
    name = "Cancelled" if how == "kill" else "TimeoutError"
    return ["victim blocks", f"victim {name}", *rest]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", HOWS)
def test_interrupted_event_wait(how, style):
    trace = []
    ev = Event()

    def bystander():
        yield ev.wait()
        trace.append("bystander woke")

    def main():
        v = yield spawn_as(style, victim_body(trace, how, ev.wait))
        b = yield spawn_as(style, bystander)
        yield from settle()
        yield from interrupt(v, how)
        assert repr(ev) == "<Event unset, 1 waiting>"
        ev.set()
        yield join(b)

    run(main)
    assert trace == expected(how, "bystander woke")


@pytest.mark.parametrize("make", [Lock, RLock], ids=["Lock", "RLock"])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", HOWS)
def test_interrupted_lock_acquire(how, style, make):
    trace = []
    lock = make()

    main_task = []

    def check():
        assert lock.owner is main_task[0]  # a killed waiter never holds the lock

    def bystander():
        yield lock.acquire()
        trace.append("bystander got")
        lock.release()

    def main():
        main_task.append(current_task())
        yield lock.acquire()
        v = yield spawn_as(style, victim_body(trace, how, lock.acquire, check))
        b = yield spawn_as(style, bystander)
        yield from settle()
        yield from interrupt(v, how)
        assert lock.owner is main_task[0] and repr(lock).endswith(", 1 waiting>")
        lock.release()
        assert lock.owner is b  # the next waiter gets it
        yield join(b)
        assert not lock.locked()

    run(main)
    assert trace == expected(how, "bystander got")


@pytest.mark.parametrize("make", [Semaphore, BoundedSemaphore])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", HOWS)
def test_interrupted_semaphore_acquire(how, style, make):
    trace = []
    sem = make(1)

    def bystander():
        yield sem.acquire()
        trace.append("bystander got")
        sem.release()

    def main():
        yield sem.acquire()
        v = yield spawn_as(style, victim_body(trace, how, sem.acquire))
        b = yield spawn_as(style, bystander)
        yield from settle()
        yield from interrupt(v, how)
        assert sem.value == 0 and repr(sem).endswith(", 1 waiting>")
        sem.release()
        assert sem.value == 0  # handed to the bystander
        yield join(b)
        assert sem.value == 1

    run(main)
    assert trace == expected(how, "bystander got")


@pytest.mark.parametrize("method", ["wait", "wait_for"])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", HOWS)
def test_interrupted_condition_wait_reacquires_before_unwinding(how, style, method):
    trace = []
    cond = Condition()

    def block():
        return cond.wait() if method == "wait" else cond.wait_for(lambda: False)

    def check():
        assert cond.locked() and cond.lock.owner is victim_task[0]

    def victim_release():
        trace.append("victim releases")
        cond.release()

    def bystander():
        yield cond.acquire()
        try:
            yield cond.wait()
            trace.append("bystander notified")
        finally:
            cond.release()

    victim_task = []

    def main():
        body = victim_body(trace, how, block, check, before=cond.acquire, after=victim_release)
        v = yield spawn_as(style, body)
        victim_task.append(v)
        b = yield spawn_as(style, bystander)
        yield from settle()
        yield from interrupt(v, how)
        assert not cond.locked() and repr(cond) == "<Condition on <Lock unlocked>, 1 waiting>"
        yield cond.acquire()
        cond.notify()  # goes to the bystander, the only waiter left
        cond.release()
        yield join(b)
        assert not cond.locked()

    run(main)
    assert trace == expected(how, "victim releases", "bystander notified")


@pytest.mark.parametrize("how", HOWS)
def test_interrupted_condition_wait_reacquires_behind_the_holder(how):
    """The lock is held by someone else when the wait is interrupted: the victim waits
    for it (shielded) and only then unwinds, holding it."""
    trace = []
    cond = Condition()
    victim_task = []

    def check():
        assert cond.lock.owner is victim_task[0]

    def killer(task):
        yield kill(task)

    def main():
        body = victim_body(trace, how, cond.wait, check, before=cond.acquire, after=cond.release)
        v = yield spawn(body)
        victim_task.append(v)
        yield from settle()
        yield cond.acquire()
        if how == "kill":
            yield spawn(killer, v)
            yield from settle()
        else:
            while not repr(cond.lock).endswith("1 waiting>"):  # the victim's timeout fired
                yield sleep(0.002)
        trace.append("main releases")
        assert v.state is kernel.TaskState.BLOCKED and cond.lock.owner is current_task()
        cond.release()
        yield from interrupt(v, how)
        assert not cond.locked()

    run(main)
    name = "Cancelled" if how == "kill" else "TimeoutError"
    assert trace == ["victim blocks", "main releases", f"victim {name}"]


def test_kill_during_the_condition_reacquire_is_held_back_until_it_holds_the_lock():
    trace = []
    cond = Condition()

    def victim():
        yield cond.acquire()
        try:
            try:
                with timeout(0.01):
                    yield cond.wait()
            except TimeoutError:
                assert cond.lock.owner is current_task()
                trace.append("victim TimeoutError, holding the lock")
                yield sched_yield()  # the kill held back by the shield comes here
        except kernel.Cancelled:
            trace.append("victim Cancelled")
            raise
        finally:
            cond.release()

    def main():
        v = yield spawn(victim)
        yield from settle()
        yield cond.acquire()
        while not repr(cond.lock).endswith("1 waiting>"):  # the timeout fired: it re-acquires
            yield sleep(0.002)
        killer = yield spawn(_killer, v)
        yield from settle()
        assert v.state is kernel.TaskState.BLOCKED and cond.lock.owner is current_task()
        trace.append("main releases")
        cond.release()
        yield join(killer)
        assert not cond.locked()

    run(main)
    assert trace == ["main releases", "victim TimeoutError, holding the lock", "victim Cancelled"]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", HOWS)
def test_interrupted_barrier_wait_breaks_the_barrier(how, style):
    trace = []
    barrier = Barrier(3)

    def check():
        assert barrier.broken

    def bystander():
        try:
            yield barrier.wait()
        except BrokenBarrierError:
            trace.append("bystander broken")

    def main():
        v = yield spawn_as(style, victim_body(trace, how, barrier.wait, check))
        b = yield spawn_as(style, bystander)
        yield from settle()
        yield from interrupt(v, how)
        yield join(b)
        assert barrier.broken and barrier.n_waiting == 0
        with pytest.raises(BrokenBarrierError):
            yield barrier.wait()

    run(main)
    assert trace == expected(how, "bystander broken")


# ---------------------------------------------------------------------------
# Woken, then killed before it runs: the waiter keeps what it was handed, and
# gets Cancelled at its next trap.


def handed_body(trace, block, after=lambda: None):
    def victim():
        try:
            result = yield block()
            trace.append(f"victim returned {result}")
            yield sched_yield()
            trace.append("never")  # pragma: no cover
        except kernel.Cancelled:
            trace.append("victim Cancelled")
            raise
        finally:
            after()

    return victim


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("make", [Lock, RLock], ids=["Lock", "RLock"])
def test_woken_then_killed_lock_waiter_holds_the_lock_until_its_finally(make, style):
    trace = []
    lock = make()

    def release():
        assert lock.owner is current_task()
        trace.append("victim releases")
        lock.release()

    def main():
        yield lock.acquire()
        v = yield spawn_as(style, handed_body(trace, lock.acquire, release))
        yield from settle()
        lock.release()
        assert lock.owner is v
        yield kill(v)
        assert not lock.locked()

    run(main)
    assert trace == ["victim returned True", "victim Cancelled", "victim releases"]


@pytest.mark.parametrize("style", STYLES)
def test_woken_then_killed_semaphore_waiter_keeps_its_permit(style):
    trace = []
    sem = BoundedSemaphore(1)

    def main():
        yield sem.acquire()
        v = yield spawn_as(style, handed_body(trace, sem.acquire, sem.release))
        yield from settle()
        sem.release()
        assert sem.value == 0
        yield kill(v)
        assert sem.value == 1

    run(main)
    assert trace == ["victim returned True", "victim Cancelled"]


@pytest.mark.parametrize("style", STYLES)
def test_woken_then_killed_event_waiter_returns_then_is_cancelled(style):
    trace = []
    ev = Event()

    def main():
        v = yield spawn_as(style, handed_body(trace, ev.wait))
        yield from settle()
        ev.set()
        yield kill(v)

    run(main)
    assert trace == ["victim returned True", "victim Cancelled"]


@pytest.mark.parametrize("style", STYLES)
def test_woken_then_killed_condition_waiter_returns_holding_the_lock(style):
    trace = []
    cond = Condition()
    victim_task = []

    def body():
        yield cond.acquire()
        yield from handed_body(trace, cond.wait, release)()

    def release():
        assert cond.lock.owner is victim_task[0]
        trace.append("victim releases")
        cond.release()

    def main():
        v = yield spawn_as(style, body)
        victim_task.append(v)
        yield from settle()
        yield cond.acquire()
        cond.notify()
        cond.release()
        yield kill(v)
        assert not cond.locked()

    run(main)
    assert trace == ["victim returned True", "victim Cancelled", "victim releases"]


@pytest.mark.parametrize("style", STYLES)
def test_woken_then_killed_barrier_waiter_passes_and_does_not_break_it(style):
    trace = []
    barrier = Barrier(3)

    def bystander():
        index = yield barrier.wait()
        trace.append(f"bystander passes as {index}")

    def main():
        v = yield spawn_as(style, handed_body(trace, barrier.wait))
        b = yield spawn(bystander)
        yield from settle()
        assert (yield barrier.wait()) == 2
        yield kill(v)
        yield join(b)
        assert not barrier.broken

    run(main)
    assert trace == ["victim returned 0", "victim Cancelled", "bystander passes as 1"]


# ---------------------------------------------------------------------------
# Killed while blocked, and the release comes before the killed task runs again:
# the waker skips it (it is unwinding) and serves the next waiter.


@pytest.mark.parametrize("kind", ["Lock", "Semaphore", "Condition"])
def test_release_skips_a_waiter_killed_but_not_yet_unwound(kind):
    trace = []
    prim = {"Lock": Lock, "Semaphore": lambda: Semaphore(1), "Condition": Condition}[kind]()
    acquire = prim.acquire

    def waiter(name):
        if kind == "Condition":
            yield prim.acquire()
            waiting = prim.wait
        else:
            waiting = acquire
        try:
            yield waiting()
            trace.append(f"{name} served")
        except kernel.Cancelled:
            trace.append(f"{name} Cancelled")
            raise
        finally:
            if kind == "Condition" or trace[-1] == f"{name} served":
                prim.release()

    def main():
        if kind != "Condition":
            yield acquire()
        v = yield spawn(waiter, "victim")
        b = yield spawn(waiter, "bystander")
        yield from settle()
        if kind == "Condition":
            yield prim.acquire()
        yield spawn(_killer, v)  # runs first: the victim is READY to unwind, behind main
        yield sched_yield()
        assert v.state is kernel.TaskState.READY
        if kind == "Condition":
            prim.notify()  # must not be lost on the dying victim
        prim.release()
        trace.append("main released")
        assert b.state is kernel.TaskState.READY  # served at once, not after the victim unwinds
        if kind == "Lock":
            assert prim.owner is b
        yield join(b)
        with pytest.raises(kernel.Cancelled):
            yield join(v)
        if kind == "Lock":
            assert not prim.locked()
        elif kind == "Semaphore":
            assert prim.value == 1
        else:
            assert not prim.locked() and repr(prim) == "<Condition on <Lock unlocked>>"

    run(main)
    assert trace == ["main released", "victim Cancelled", "bystander served"]


# ---------------------------------------------------------------------------
# Seeded random kills and timeouts: the counts are exactly right at the end.


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_kills_leave_semaphore_and_lock_consistent(seed):
    rng = random.Random(seed)
    iterations = 100
    stats = {"kills": 0, "timeouts": 0, "critical": 0}

    def worker(sem, lock, inside, yields):
        got = False
        with move_on_after(rng.choice([0.0, 1.0, 1.0])):
            yield sem.acquire()
            got = True
        # Not `scope.expired`: the deadline may pass after the permit was handed over
        # (the task READY), and then the acquire completes although the scope expired.
        if not got:
            stats["timeouts"] += 1
            return
        try:
            inside[0] += 1
            assert inside[0] <= 2
            for _ in range(yields):
                yield sched_yield()
            yield lock.acquire()
            try:
                assert lock.owner is current_task()
                stats["critical"] += 1
                yield sched_yield()
            finally:
                lock.release()
        finally:
            inside[0] -= 1
            sem.release()

    async def async_worker(sem, lock, inside, yields):
        return await as_async(worker(sem, lock, inside, yields))

    def main():
        for _ in range(iterations):
            sem, lock, inside = BoundedSemaphore(2), Lock(), [0]
            tasks = []
            for i in range(5):
                fn = worker if i % 2 else async_worker
                tasks.append((yield spawn(fn, sem, lock, inside, rng.randrange(3))))
            victims = rng.sample(tasks, rng.randrange(4))
            for victim in victims:
                for _ in range(rng.randrange(6)):
                    yield sched_yield()
                stats["kills"] += victim.state is not kernel.TaskState.EXITED
                yield kill(victim)
            for t in tasks:
                if t not in victims:
                    yield join(t)
            assert sem.value == 2 and repr(sem) == "<BoundedSemaphore value=2/2>"
            assert not lock.locked() and repr(lock) == "<Lock unlocked>"
            assert inside == [0]

    run(main)
    assert stats["kills"] > 50 and stats["critical"] > 100 and stats["timeouts"] > 10


# ---------------------------------------------------------------------------
# Deadlock: the kernel's message names both locks' holders.


def test_lock_order_deadlock_names_both_holders():
    lock1, lock2 = Lock(), Lock()
    caught = []

    def grab(first, second):
        yield first.acquire()
        try:
            yield sched_yield()
            yield second.acquire()
            second.release()  # pragma: no cover
        finally:
            first.release()

    def main():
        a = yield spawn(grab, lock1, lock2, name="a")
        b = yield spawn(grab, lock2, lock1, name="b")
        try:
            yield join(a)
        except kernel.Deadlock as exc:
            caught.append(str(exc))
        return a, b

    a, b = run(main)
    (message,) = caught
    assert f"waiting to acquire <Lock locked by {holder(b)}, 1 waiting>" in message
    assert f"waiting to acquire <Lock locked by {holder(a)}, 1 waiting>" in message
    # main's exit killed both; their finally blocks released both locks
    assert not lock1.locked() and not lock2.locked()


# ---------------------------------------------------------------------------
# The waiter helper alone.


def test_a_lock_waiter_unwinding_with_the_lock_passes_it_on():
    """The kernel never raises at the trap of a task it has woken (and an emergency stop
    lets it receive what it was handed first); should a waiter still unwind there
    holding the lock, it passes the lock on instead of leaking it."""
    lock = Lock()
    me = object()
    w = _Waiter("waiting to acquire", lock, me)
    assert repr(w) == "<waiting to acquire <Lock unlocked>>"
    lock._owner = me  # handed to it (a release popped it from the line)
    _leave_line(lock, w)
    assert lock.owner is None and not lock._waiters


def test_a_lock_waiter_unwinding_without_the_lock_leaves_the_line():
    lock = Lock()
    holder = types.SimpleNamespace(tid=7, name="holder", state=None)  # (the reprs name it)
    me = object()
    w = _Waiter("waiting to acquire", lock, me)
    lock._owner = holder
    lock._waiters.append(w)
    _leave_line(lock, w)
    assert lock.owner is holder and not lock._waiters
    _leave_line(lock, w)  # popped by a release that passed it over: nothing to do
    assert lock.owner is holder and not lock._waiters


@pytest.mark.parametrize("make", [Lock, RLock], ids=["Lock", "RLock"])
def test_lock_handed_to_a_waiter_killed_before_it_runs_passes_on_in_fifo_order(make):
    """Released with waiters b, c: b owns it at once, and no later task can take it
    from between the release and b's resumption. b is killed before it runs: it
    still receives the lock, and its finally passes it to c, not to the newcomer."""
    trace = []
    lock = make()

    def waiter(name):
        yield lock.acquire()
        try:
            trace.append(f"{name} has it")
            yield sched_yield()
        finally:
            lock.release()

    def main():
        yield lock.acquire()
        b = yield spawn(waiter, "b")
        c = yield spawn(waiter, "c")
        yield from settle()
        lock.release()
        assert lock.owner is b and lock.locked()
        d = yield spawn(waiter, "d")  # arrives after the hand-off: queues behind c
        yield kill(b)
        assert lock.owner is c
        yield join(c)
        yield join(d)
        assert not lock.locked()

    run(main)
    assert trace == ["b has it", "c has it", "d has it"]
