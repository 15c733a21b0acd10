"""Queues: order, back-pressure, hand-off, task_done/join, close, kill and timeouts, stress."""

from __future__ import annotations

import collections
import queue as stdqueue
import random

import pytest

import kernel
from conftest import run
from kernel import Cancelled, Deadlock
from syscalls import (
    cancel,
    join,
    kill,
    move_on_after,
    sched_yield,
    sleep,
    spawn,
    timeout,
)
from syscalls.queues import (
    LifoQueue,
    PriorityQueue,
    Queue,
    QueueClosed,
    QueueEmpty,
    QueueFull,
)

STYLES = ["gen", "async"]


def settle(n=3):
    """Generator helper: let every ready task run until it blocks (n passes of the run queue)."""
    for _ in range(n):
        yield sched_yield()


# ── Order ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("style", STYLES)
def test_fifo_trace_consumer_waits_first(style):
    trace = []

    def gen_consumer(q, n):
        for _ in range(n):
            item = yield q.get()
            trace.append(("got", item))

    async def async_consumer(q, n):
        for _ in range(n):
            item = await q.get()
            trace.append(("got", item))

    def main():
        q = Queue()
        c = yield spawn(gen_consumer if style == "gen" else async_consumer, q, 3)
        yield from settle()
        trace.append(("waiting", repr(q)))
        for item in "abc":
            yield q.put(item)
            trace.append(("put", item))
        yield join(c)
        trace.append(("end", q.qsize()))

    run(main)
    assert trace == [
        ("waiting", "<Queue 0 items (unbounded), 1 getter waiting>"),
        ("put", "a"),
        ("put", "b"),
        ("put", "c"),
        ("got", "a"),
        ("got", "b"),
        ("got", "c"),
        ("end", 0),
    ]


@pytest.mark.parametrize(
    "cls, expected",
    [
        (Queue, [5, 1, 4, 2, 3]),
        (LifoQueue, [3, 2, 4, 1, 5]),
        (PriorityQueue, [1, 2, 3, 4, 5]),
    ],
)
@pytest.mark.parametrize("style", STYLES)
def test_storage_order(cls, expected, style):
    async def async_drain(q):
        return [await q.get() for _ in range(5)]

    def gen_drain(q):
        out = []
        for _ in range(5):
            out.append((yield q.get()))
        return out

    def main():
        q = cls()
        for item in [5, 1, 4, 2, 3]:
            q.put_nowait(item)
        assert q.qsize() == 5 and not q.empty() and not q.full()
        out = yield join((yield spawn(gen_drain if style == "gen" else async_drain, q)))
        return out, q.empty()

    assert run(main) == (expected, True)


def test_priority_queue_tuple_idiom_keeps_fifo_among_equals():
    import itertools

    class Job:  # not comparable
        def __init__(self, name):
            self.name = name

    def main():
        q = PriorityQueue()
        seq = itertools.count()
        for prio, name in [(2, "b1"), (1, "a1"), (2, "b2"), (1, "a2"), (0, "z")]:
            yield q.put((prio, next(seq), Job(name)))
        out = []
        while not q.empty():
            out.append((yield q.get())[2].name)
        return out

    assert run(main) == ["z", "a1", "a2", "b1", "b2"]


def test_getters_served_in_arrival_order():
    trace = []

    def getter(q, name):
        item = yield q.get()
        trace.append((name, item))

    def main():
        q = Queue()
        tasks = []
        for name in ["g1", "g2", "g3"]:
            tasks.append((yield spawn(getter, q, name)))
            yield from settle(1)  # g1 parks before g2, g2 before g3
        trace.append(repr(q))
        for item in [1, 2, 3]:
            q.put_nowait(item)
        for t in tasks:
            yield join(t)

    run(main)
    assert trace == [
        "<Queue 0 items (unbounded), 3 getters waiting>",
        ("g1", 1),
        ("g2", 2),
        ("g3", 3),
    ]


def test_handoff_item_never_sits_in_the_buffer():
    """A put with a getter waiting hands the item over: a later get cannot barge in."""
    trace = []

    def getter(q):
        trace.append(("g1 got", (yield q.get())))

    def main():
        q = Queue()
        g1 = yield spawn(getter, q)
        yield from settle()
        q.put_nowait("x")  # g1 is READY with "x", but has not run yet
        trace.append(("size", q.qsize()))
        with pytest.raises(QueueEmpty):
            q.get_nowait()
        trace.append("barging get_nowait found nothing")
        with move_on_after(0.005) as scope:
            trace.append(("late get", (yield q.get())))  # waits behind g1, gets nothing
        trace.append(("late get timed out", scope.expired))
        yield join(g1)

    run(main)
    assert trace == [
        ("size", 0),
        "barging get_nowait found nothing",
        ("g1 got", "x"),
        ("late get timed out", True),
    ]


# ── Back-pressure ───────────────────────────────────────────────────────


@pytest.mark.parametrize("style", STYLES)
def test_bounded_queue_back_pressure(style):
    trace = []

    def gen_producer(q):
        for n in range(5):
            yield q.put(n)
            trace.append(("put", n))

    async def async_producer(q):
        for n in range(5):
            await q.put(n)
            trace.append(("put", n))

    def main():
        q = Queue(2)
        p = yield spawn(gen_producer if style == "gen" else async_producer, q)
        yield from settle()
        trace.append(repr(q))
        assert q.full()
        with pytest.raises(QueueFull):
            q.put_nowait("barger")  # a putter waits: no overtaking it
        for _ in range(5):
            trace.append(("got", (yield q.get())))
            yield from settle()
        yield join(p)

    run(main)
    assert trace == [
        ("put", 0),
        ("put", 1),
        "<Queue 2/2 items, 1 putter waiting, 2 unfinished>",
        ("got", 0),  # frees a slot: the waiting put(2) is moved in, the producer wakes
        ("put", 2),
        ("got", 1),
        ("put", 3),
        ("got", 2),
        ("put", 4),
        ("got", 3),
        ("got", 4),
    ]


def test_putters_admitted_in_arrival_order():
    trace = []

    def putter(q, item):
        yield q.put(item)
        trace.append(("put returned", item))

    def main():
        q = Queue(1)
        q.put_nowait("first")
        ps = []
        for item in ["p1", "p2", "p3"]:
            ps.append((yield spawn(putter, q, item)))
            yield from settle(1)
        trace.append(repr(q))
        # A get from the full queue takes "first" and moves p1's item in at once.
        trace.append(("got", q.get_nowait(), q.qsize()))
        for _ in range(3):
            trace.append(("got", (yield q.get())))
        for p in ps:
            yield join(p)

    run(main)
    assert trace == [
        "<Queue 1/1 items, 3 putters waiting, 1 unfinished>",
        ("got", "first", 1),
        ("got", "p1"),  # a get that finds an item does not switch tasks
        ("got", "p2"),
        ("got", "p3"),
        ("put returned", "p1"),
        ("put returned", "p2"),
        ("put returned", "p3"),
    ]


def test_nowait_exceptions_are_stdlib_compatible():
    def main():
        q = Queue(1)
        with pytest.raises(stdqueue.Empty):
            q.get_nowait()
        q.put_nowait(1)
        assert q.full()
        with pytest.raises(stdqueue.Full):
            q.put_nowait(2)
        assert q.get_nowait() == 1
        yield sched_yield()

    run(main)
    assert issubclass(QueueEmpty, stdqueue.Empty)
    assert issubclass(QueueFull, stdqueue.Full)
    assert issubclass(QueueClosed, RuntimeError)


def test_negative_maxsize_is_unbounded():
    def main():
        q = Queue(-1)
        for n in range(100):
            q.put_nowait(n)
        yield sched_yield()
        return q.full(), q.qsize()

    assert run(main) == (False, 100)


# ── task_done / join ────────────────────────────────────────────────────


@pytest.mark.parametrize("style", STYLES)
def test_task_done_and_join(style):
    trace = []

    def worker(q):
        while True:
            item = yield q.get()
            yield sleep(0)
            trace.append(("done", item))
            q.task_done()

    def gen_joiner(q):
        yield q.join()
        trace.append("joined")

    async def async_joiner(q):
        await q.join()
        trace.append("joined")

    def main():
        q = Queue()
        yield q.join()  # nothing unfinished: at once
        trace.append("empty join returned")
        for n in range(3):
            q.put_nowait(n)
        j = yield spawn(gen_joiner if style == "gen" else async_joiner, q)
        yield from settle()
        trace.append(repr(q))
        w = yield spawn(worker, q)
        yield join(j)
        yield kill(w)
        with pytest.raises(ValueError):
            q.task_done()

    run(main)
    assert trace == [
        "empty join returned",
        "<Queue 3 items (unbounded), 3 unfinished>",
        ("done", 0),
        ("done", 1),
        ("done", 2),
        "joined",
    ]


def test_task_done_too_often_raises():
    def main():
        q = Queue()
        q.put_nowait(1)
        q.get_nowait()
        q.task_done()
        yield sched_yield()
        with pytest.raises(ValueError, match="task_done"):
            q.task_done()

    run(main)


def test_join_released_even_if_more_is_put_before_it_runs():
    trace = []

    def joiner(q):
        yield q.join()
        trace.append("joined")

    def main():
        q = Queue()
        q.put_nowait(1)
        j = yield spawn(joiner, q)
        yield from settle()
        q.get_nowait()
        q.task_done()  # count 0: the joiner is woken
        q.put_nowait(2)  # ... and stays woken
        yield join(j)
        trace.append(repr(q))

    run(main)
    assert trace == ["joined", "<Queue 1 item (unbounded), 1 unfinished>"]


# ── close ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize("style", STYLES)
def test_close_wakes_blocked_getters_with_queue_closed(style):
    trace = []

    def gen_getter(q, name):
        try:
            yield q.get()
        except QueueClosed:
            trace.append((name, "closed"))

    async def async_getter(q, name):
        try:
            await q.get()
        except QueueClosed:
            trace.append((name, "closed"))

    def main():
        q = Queue()
        getter = gen_getter if style == "gen" else async_getter
        ts = []
        for name in ["g1", "g2"]:
            ts.append((yield spawn(getter, q, name)))
            yield from settle(1)
        q.close()
        trace.append(repr(q))
        q.close()  # idempotent
        for t in ts:
            yield join(t)
        with pytest.raises(QueueClosed):
            q.get_nowait()
        with pytest.raises(QueueClosed):
            yield q.get()

    run(main)
    assert trace == ["<Queue 0 items (unbounded), closed>", ("g1", "closed"), ("g2", "closed")]


@pytest.mark.parametrize("style", STYLES)
def test_close_wakes_blocked_putters_and_drains(style):
    trace = []

    def gen_putter(q, item):
        try:
            yield q.put(item)
            trace.append(("put", item))
        except QueueClosed:
            trace.append(("put closed", item))

    async def async_putter(q, item):
        try:
            await q.put(item)
            trace.append(("put", item))
        except QueueClosed:
            trace.append(("put closed", item))

    def main():
        q = Queue(2)
        putter = gen_putter if style == "gen" else async_putter
        ts = []
        for item in "abcd":
            ts.append((yield spawn(putter, q, item)))
        yield from settle()
        trace.append(repr(q))
        q.close()
        for t in ts:
            yield join(t)
        with pytest.raises(QueueClosed):
            q.put_nowait("e")
        with pytest.raises(QueueClosed):
            yield q.put("f")
        trace.append(("drain", (yield q.get()), q.get_nowait()))
        with pytest.raises(QueueClosed):
            yield q.get()
        trace.append(repr(q))

    run(main)
    assert trace == [
        ("put", "a"),
        ("put", "b"),
        "<Queue 2/2 items, 2 putters waiting, 2 unfinished>",
        ("put closed", "c"),
        ("put closed", "d"),
        ("drain", "a", "b"),
        "<Queue 0/2 items, 2 unfinished, closed>",
    ]


def test_async_for_stops_at_close():
    trace = []

    async def consumer(q):
        async for item in q:
            trace.append(item)
            q.task_done()
        trace.append("end")

    def main():
        q = Queue(1)
        c = yield spawn(consumer, q)
        for n in range(3):
            yield q.put(n)
        yield q.join()
        q.close()
        yield join(c)

    run(main)
    assert trace == [0, 1, 2, "end"]


# ── kill and timeouts at every blocking method ──────────────────────────


@pytest.mark.parametrize("style", STYLES)
def test_kill_blocked_getter_takes_nothing(style):
    trace = []

    def gen_getter(q, name):
        try:
            trace.append((name, (yield q.get())))
        except Cancelled:
            trace.append((name, "cancelled"))
            raise

    async def async_getter(q, name):
        try:
            trace.append((name, await q.get()))
        except Cancelled:
            trace.append((name, "cancelled"))
            raise

    def main():
        q = Queue()
        getter = gen_getter if style == "gen" else async_getter
        g1 = yield spawn(getter, q, "g1")
        yield from settle(1)
        g2 = yield spawn(getter, q, "g2")
        yield from settle()
        yield kill(g1)
        trace.append(repr(q))
        q.put_nowait("x")  # goes to g2, the next in line
        yield join(g2)
        trace.append(repr(q))

    run(main)
    assert trace == [
        ("g1", "cancelled"),
        "<Queue 0 items (unbounded), 1 getter waiting>",
        ("g2", "x"),
        "<Queue 0 items (unbounded), 1 unfinished>",
    ]


@pytest.mark.parametrize("style", STYLES)
def test_getter_woken_then_killed_still_returns_the_item(style):
    """Hand-off: a getter handed an item is READY; a kill lands at its next trap."""
    trace = []

    def gen_getter(q):
        try:
            item = yield q.get()
            trace.append(("got", item))
            yield sleep(0)
            trace.append("not reached")
        except Cancelled:
            trace.append("cancelled after the get")
            raise

    async def async_getter(q):
        try:
            item = await q.get()
            trace.append(("got", item))
            await sleep(0)
            trace.append("not reached")
        except Cancelled:
            trace.append("cancelled after the get")
            raise

    def main():
        q = Queue()
        g = yield spawn(gen_getter if style == "gen" else async_getter, q)
        yield from settle()
        q.put_nowait("x")  # handed to g, which is now READY
        yield kill(g)  # before g runs
        trace.append(("after kill", q.qsize(), repr(q)))

    run(main)
    assert trace == [
        ("got", "x"),
        "cancelled after the get",
        ("after kill", 0, "<Queue 0 items (unbounded), 1 unfinished>"),
    ]


@pytest.mark.parametrize("style", STYLES)
def test_kill_blocked_putter_item_not_put(style):
    trace = []

    def gen_putter(q, item):
        try:
            yield q.put(item)
            trace.append(("put", item))
        except Cancelled:
            trace.append(("cancelled", item))
            raise

    async def async_putter(q, item):
        try:
            await q.put(item)
            trace.append(("put", item))
        except Cancelled:
            trace.append(("cancelled", item))
            raise

    def main():
        q = Queue(1)
        q.put_nowait("first")
        putter = gen_putter if style == "gen" else async_putter
        p1 = yield spawn(putter, q, "p1")
        yield from settle(1)
        p2 = yield spawn(putter, q, "p2")
        yield from settle()
        yield kill(p1)
        trace.append(repr(q))
        trace.append(("got", q.get_nowait()))  # admits p2, not the killed p1
        trace.append(("got", (yield q.get())))
        yield join(p2)

    run(main)
    assert trace == [
        ("cancelled", "p1"),
        "<Queue 1/1 items, 1 putter waiting, 1 unfinished>",
        ("got", "first"),
        ("got", "p2"),
        ("put", "p2"),
    ]


def test_putter_admitted_then_killed_item_stays_put():
    trace = []

    def putter(q):
        try:
            yield q.put("p")
            trace.append("put returned")
            yield sleep(0)
        except Cancelled:
            trace.append("cancelled after the put")
            raise

    def main():
        q = Queue(1)
        q.put_nowait("first")
        p = yield spawn(putter, q)
        yield from settle()
        q.get_nowait()  # moves "p" in, p is READY
        yield kill(p)
        trace.append(q.get_nowait())

    run(main)
    assert trace == ["put returned", "cancelled after the put", "p"]


@pytest.mark.parametrize("style", STYLES)
def test_timeouts_at_get_put_join(style):
    trace = []

    def gen_body(q):
        try:
            with timeout(0.002):
                yield q.get()
        except TimeoutError:
            trace.append("get timed out")
        q.put_nowait(1)
        try:
            with timeout(0.002):
                yield q.put(2)
        except TimeoutError:
            trace.append("put timed out")
        try:
            with timeout(0.002):
                yield q.join()
        except TimeoutError:
            trace.append("join timed out")
        with move_on_after(0.002) as scope:
            yield q.put(3)
        trace.append(("move_on put", scope.expired))

    async def async_body(q):
        try:
            async with timeout(0.002):
                await q.get()
        except TimeoutError:
            trace.append("get timed out")
        q.put_nowait(1)
        try:
            async with timeout(0.002):
                await q.put(2)
        except TimeoutError:
            trace.append("put timed out")
        try:
            async with timeout(0.002):
                await q.join()
        except TimeoutError:
            trace.append("join timed out")
        async with move_on_after(0.002) as scope:
            await q.put(3)
        trace.append(("move_on put", scope.expired))

    def main():
        q = Queue(1)
        yield join((yield spawn(gen_body if style == "gen" else async_body, q)))
        trace.append(repr(q))
        trace.append(q.get_nowait())

    run(main)
    assert trace == [
        "get timed out",
        "put timed out",
        "join timed out",
        ("move_on put", True),
        "<Queue 1/1 items, 1 unfinished>",
        1,
    ]


def test_kill_blocked_joiner():
    trace = []

    def joiner(q):
        try:
            yield q.join()
        except Cancelled:
            trace.append("joiner cancelled")
            raise

    def main():
        q = Queue()
        q.put_nowait(1)
        j = yield spawn(joiner, q)
        yield from settle()
        yield kill(j)
        q.get_nowait()
        q.task_done()  # wakes nobody: the joiner is gone
        yield q.join()
        trace.append("main joined")

    run(main)
    assert trace == ["joiner cancelled", "main joined"]


def test_getter_timed_out_but_not_yet_run_is_passed_over():
    """The window: a getter's deadline fired (it is READY with TimedOut, its waiter still
    queued) when a put comes: the put must not give the item to it."""
    trace = []

    def getter(q):
        try:
            with timeout(0):  # due at the next pass of the run loop
                trace.append(("got", (yield q.get())))
        except TimeoutError:
            trace.append("getter timed out")

    def main():
        q = Queue()
        g = yield spawn(getter, q)
        yield sched_yield()  # g runs, parks in get
        yield sched_yield()  # g's deadline fires at the top of this pass, g is queued after us
        trace.append(repr(q))  # the kernel has taken it off the getter channel already
        q.put_nowait("x")
        trace.append(("size after put", q.qsize()))
        yield join(g)
        trace.append(("main got", q.get_nowait()))

    run(main)
    assert trace == [
        "<Queue 0 items (unbounded)>",
        ("size after put", 1),
        "getter timed out",
        ("main got", "x"),
    ]


def test_putter_timed_out_but_not_yet_run_is_passed_over():
    trace = []

    def putter(q):
        try:
            with timeout(0):
                yield q.put("p")
                trace.append("put returned")
        except TimeoutError:
            trace.append("putter timed out")

    def main():
        q = Queue(1)
        q.put_nowait("first")
        p = yield spawn(putter, q)
        yield sched_yield()
        yield sched_yield()
        trace.append(repr(q))
        trace.append(("got", q.get_nowait(), q.qsize()))  # "p" is not moved in
        yield join(p)

    run(main)
    assert trace == [
        "<Queue 1/1 items, 1 putter waiting, 1 unfinished>",
        ("got", "first", 0),
        "putter timed out",
    ]


def test_close_passes_over_a_getter_on_its_way_out():
    trace = []

    def getter(q):
        try:
            with timeout(0):
                yield q.get()
        except TimeoutError:
            trace.append("timed out, not closed")

    def main():
        q = Queue()
        g = yield spawn(getter, q)
        yield sched_yield()
        yield sched_yield()
        q.close()
        yield join(g)

    run(main)
    assert trace == ["timed out, not closed"]


def test_close_passes_over_a_putter_on_its_way_out():
    trace = []

    def putter(q, item, limit):
        try:
            with timeout(limit):
                yield q.put(item)
        except TimeoutError:
            trace.append(f"{item} timed out, not closed")
        except QueueClosed:
            trace.append(f"{item} closed")

    def main():
        q = Queue(1)
        q.put_nowait("first")
        p1 = yield spawn(putter, q, "p1", 0)
        p2 = yield spawn(putter, q, "p2", 10)
        yield sched_yield()
        yield sched_yield()  # p1's deadline has fired: it is READY, still in the deque
        q.close()
        assert q.closed
        yield join(p1)
        yield join(p2)

    run(main)
    assert trace == ["p1 timed out, not closed", "p2 closed"]


def test_a_put_with_a_keyword_argument_runs_its_subroutine_alone():
    def main():
        q = Queue(1)
        yield q.put(item="kw")  # no fast path for keyword arguments: same outcome
        return q.get_nowait()

    assert run(main) == "kw"


def test_an_admitted_putter_interrupted_at_its_wait_leaves_its_item_put():
    """Defensive path (the kernel never does this: an admitted putter is READY and gets
    exceptions at its next trap): the item it brought stays in the queue."""
    from kernel.errors import Cancelled as KCancelled

    def getter(q):
        q.get_nowait()  # frees the slot: the waiting putter's item moves in
        yield sched_yield()

    def main():
        q = Queue(1)
        q.put_nowait("first")
        op = q.put("second")
        gen = op.fn(*op.args)  # drive the put's subroutine by hand, as the kernel would ...
        wait = next(gen)
        g = yield spawn(getter, q)
        yield wait  # ... parking this task on its putter: the getter admits "second"
        with pytest.raises(KCancelled):
            gen.throw(KCancelled())
        yield join(g)
        return repr(q), q.get_nowait()

    assert run(main) == ("<Queue 1/1 items, 2 unfinished>", "second")


def test_unyielded_get_and_put_change_nothing():
    """Making a trap does nothing: only the kernel (or await, or yield from) runs it."""

    def getter(q):
        return (yield q.get())

    def main():
        q = Queue(1)
        q.put_nowait("stored")
        q.get()  # made and dropped: the item stays
        q.put("never")  # on a full queue: no putter is queued either
        assert q.get() is q.get()  # one immutable trap serves every get
        assert repr(q) == "<Queue 1/1 items, 1 unfinished>"
        assert (yield q.get()) == "stored"
        g = yield spawn(getter, q)
        yield from settle()
        q.put("not handed")  # a getter waits, but nothing is handed over
        assert repr(q) == "<Queue 0/1 items, 1 getter waiting, 1 unfinished>"
        yield q.put("handed")
        return (yield join(g))

    assert run(main) == "handed"


def test_yield_from_get_and_put_on_both_paths():
    def consumer(q):
        return [(yield from q.get()), (yield from q.get())]  # the second one waits

    def main():
        q = Queue(1)
        yield from q.put("a")  # fast path: stored
        c = yield spawn(consumer, q)
        yield from q.put("b")  # full until c takes "a": the subroutine waits in this frame
        return (yield join(c)), q.qsize()

    assert run(main) == (["a", "b"], 0)


@pytest.mark.parametrize("style", STYLES)
def test_kill_and_timeout_due_at_the_trap_take_and_hand_nothing(style):
    """A kill or deadline that is due when the task traps is raised at the trap, before
    the fast path runs: a get takes no item, a put hands none to a waiting getter."""
    trace = []

    async def async_op(trap):
        return await trap

    def gen_op(trap):
        return (yield trap)

    def killed(op, trap, name):
        try:
            yield sched_yield()  # killed while READY: Cancelled is due at the next trap
            yield from op(trap)
            trace.append(f"{name} completed")
        except Cancelled:
            trace.append(f"{name} cancelled")
            raise

    def timed(op, trap, name):
        with move_on_after(0) as scope:
            yield sched_yield()  # the deadline passes meanwhile
            yield from op(trap)
        trace.append((name, "timed out" if scope.expired else "completed"))

    def getter(q):
        return (yield q.get())

    def main():
        op = gen_op if style == "gen" else (lambda trap: async_op(trap).__await__())
        q = Queue()
        q.put_nowait("kept")
        for name, body in [("get", killed), ("get", timed)]:
            t = yield spawn(body, op, q.get(), name)
            yield sched_yield()
            yield kill(t) if body is killed else join(t)
        assert q.qsize() == 1 and q.get_nowait() == "kept"
        g = yield spawn(getter, q)
        for name, body in [("put", killed), ("put", timed)]:
            # (A put's fast path is awaited in the task's own frame, without a trap,
            # as an Operation's subroutine is: see the next test. So: yield only.)
            t = yield spawn(body, gen_op, q.put("lost"), name)
            yield sched_yield()
            yield kill(t) if body is killed else join(t)
        assert repr(q) == "<Queue 0 items (unbounded), 1 getter waiting, 1 unfinished>"
        yield q.put("handed")
        return (yield join(g))

    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        assert k.run(main) == "handed"
    assert trace == ["get cancelled", ("get", "timed out"), "put cancelled", ("put", "timed out")]


def test_an_awaited_put_that_need_not_wait_makes_no_trap():
    """``await q.put(x)`` tries the fast path in the task's frame: when it completes,
    no trap is made, so a kill due meanwhile is raised at the task's next trap (as
    with an Operation's subroutine awaited in the frame)."""
    trace = []

    async def putter(q):
        try:
            await sched_yield()  # READY here when main kills it
            await q.put("handed")  # no trap: the kill is not raised here ...
            trace.append("put returned")
            await sched_yield()  # ... but here
        except Cancelled:
            trace.append("cancelled at the next trap")
            raise

    def getter(q):
        return (yield q.get())

    def main():
        q = Queue()
        g = yield spawn(getter, q)
        p = yield spawn(putter, q)
        yield sched_yield()  # g parks in its get, p is READY after its sched_yield
        cancel(p)
        with pytest.raises(Cancelled):
            yield join(p)
        return (yield join(g))

    assert run(main) == "handed"
    assert trace == ["put returned", "cancelled at the next trap"]


# ── Deadlock reports ────────────────────────────────────────────────────


def test_deadlock_names_the_queue():
    def consumer(q):
        yield q.get()

    def main():
        q = Queue(3)
        yield spawn(consumer, q, name="consumer")
        yield q.get()

    with pytest.raises(Deadlock) as info:
        run(main)
    message = str(info.value)
    assert "get on <Queue 0/3 items, 2 getters waiting>" in message, message
    assert "'consumer'" in message


def test_deadlock_names_the_queue_for_put_and_join():
    def main():
        q = Queue(1)
        q.put_nowait(1)
        with pytest.raises(Deadlock, match=r"put on <Queue 1/1 items, 1 putter waiting"):
            yield q.put(2)
        with pytest.raises(Deadlock, match=r"join on <Queue 1/1 items, 1 unfinished>"):
            yield q.join()

    run(main)


# ── Stress: exactly-once under random kills and timeouts ────────────────


@pytest.mark.parametrize("cls", [Queue, LifoQueue, PriorityQueue])
@pytest.mark.parametrize(
    "seed, maxsize, close_early",
    [(1, 0, False), (2, 1, True), (3, 2, False), (4, 1, False), (5, 0, True)],
)
def test_stress_exactly_once(cls, seed, maxsize, close_early):
    r = random.Random(seed)
    N_ITEMS = 300
    next_item = iter(range(N_ITEMS))
    attempted, put_ok, got = [], [], []
    stats = collections.Counter()

    def pause():
        return sleep(r.choice([0, 0, r.uniform(0, 0.001)]))

    def producer(q):
        for item in next_item:  # shared: each item is attempted by one producer, once
            attempted.append(item)
            try:
                if r.random() < 0.3:
                    with move_on_after(r.uniform(0, 0.001)):
                        yield q.put(item)
                        put_ok.append(item)
                else:
                    yield q.put(item)
                    put_ok.append(item)
            except QueueClosed:
                stats["put closed"] += 1
                return
            yield pause()

    async def async_producer(q):
        for item in next_item:
            attempted.append(item)
            try:
                if r.random() < 0.3:
                    async with move_on_after(r.uniform(0, 0.001)):
                        await q.put(item)
                        put_ok.append(item)
                else:
                    await q.put(item)
                    put_ok.append(item)
            except QueueClosed:
                stats["put closed"] += 1
                return
            await pause()

    def consumer(q):
        while True:
            try:
                if r.random() < 0.3:
                    with move_on_after(r.uniform(0, 0.001)):
                        got.append((yield q.get()))
                        q.task_done()
                else:
                    got.append((yield q.get()))
                    q.task_done()
            except QueueClosed:
                return
            yield pause()

    async def async_consumer(q):
        while True:
            try:
                if r.random() < 0.3:
                    async with move_on_after(r.uniform(0, 0.001)):
                        got.append(await q.get())
                        q.task_done()
                else:
                    got.append(await q.get())
                    q.task_done()
            except QueueClosed:
                return
            await pause()

    def main():
        q = cls(maxsize)
        producers = []
        consumers = []
        for _ in range(3):
            producers.append((yield spawn(r.choice([producer, async_producer]), q)))
            consumers.append((yield spawn(r.choice([consumer, async_consumer]), q)))
        # Chaos: kill random workers and replace them, until the items run out (or, when
        # closing early, half of them: then the producers meet QueueClosed, blocked or not).
        while len(attempted) < (N_ITEMS // 2 if close_early else N_ITEMS):
            yield pause()
            group = r.choice([producers, consumers])
            i = r.randrange(len(group))
            yield kill(group[i])
            stats["kills"] += 1
            if group is producers:
                group[i] = yield spawn(r.choice([producer, async_producer]), q)
            else:
                group[i] = yield spawn(r.choice([consumer, async_consumer]), q)
        if close_early:
            q.close()
        for t in producers:
            yield join(t)  # they finish their last put (or it times out, or meets the close)
        q.close()  # the consumers drain the rest, then stop
        for t in consumers:
            yield join(t)
        with move_on_after(1) as scope:
            yield q.join()  # every item got was task_done
        assert not scope.expired, q
        return repr(q)

    final = run(main)
    assert (
        final
        == f"<{cls.__name__} 0{'/' + str(maxsize) if maxsize else ' items (unbounded)'}"
        + (" items, closed>" if maxsize else ", closed>")
    )
    counts = collections.Counter(got)
    assert [item for item, n in counts.items() if n > 1] == []  # never received twice
    assert sorted(got) == sorted(put_ok)  # every put that returned was received, and only those
    assert len(attempted) <= N_ITEMS
    assert set(attempted) >= set(put_ok)
    assert stats["kills"] > 0
