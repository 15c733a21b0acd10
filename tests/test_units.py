"""The kernel's data structures alone, with plain numbers; and the corners of the run loop."""

from __future__ import annotations

import logging
import math
import os
import socket

import pytest

import kernel
from conftest import POLLERS, run
from kernel.poller import READ, WRITE, Poller
from kernel.scheduler import RunQueue
from kernel.task import Task
from kernel.timers import TimerQueue
from kernel.wait import WaitChannels
from syscalls import join, kill, read, recv, sched_yield, sendall, sleep, spawn, wait_readable


def _noop():
    return None
    yield


def make_task(tid: int) -> Task:
    return Task(tid, f"t{tid}", _noop())


# ── timers ───────────────────────────────────────────────────────────────


def test_timer_queue_fires_in_deadline_order_with_fifo_ties():
    q = TimerQueue()
    fired = []
    for deadline, label in [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2")]:
        q.add(deadline, fired.append, label)
    assert q.next_deadline() == 1.0
    assert q.expire(0.5) == 0
    assert q.expire(2.0) == 3
    assert fired == ["a1", "a2", "b"]
    assert len(q) == 1 and q.next_deadline() == 3.0


def test_timer_queue_lazy_cancel_and_compaction():
    q = TimerQueue()
    fired = []
    timers = [q.add(float(i), fired.append, i) for i in range(1000)]
    for t in timers[:-10]:
        q.cancel(t)
    q.cancel(timers[0])  # cancelling twice is a no-op
    assert len(q) == 10
    assert len(q._heap) < 200  # dead entries were compacted away, not kept for ever
    assert q.next_deadline() == 990.0
    assert q.expire(math.inf) == 10
    assert fired == list(range(990, 1000))
    assert q.next_deadline() is None
    assert "done" in repr(timers[0])


def test_a_timer_called_as_an_undo_cancels_itself():
    q = TimerQueue()
    fired = []
    kept, undone = q.add(1.0, fired.append, "kept"), q.add(1.0, fired.append, "undone")
    undone(make_task(1))  # how the kernel calls a sleep's undo: undo(task)
    assert len(q) == 1 and undone.action is None and kept.action is not None
    assert q.expire(2.0) == 1
    assert fired == ["kept"]


def test_timer_queue_keeps_fifo_order_among_many_equal_deadlines():
    """A heap does not keep equal keys in order: expire puts every tie back in FIFO order."""
    q = TimerQueue()
    fired = []
    timers = [q.add(float(i * 7 % 3), fired.append, i) for i in range(300)]
    for t in timers[::5]:
        q.cancel(t)
    assert q.expire(0.5) == 80 and q.next_deadline() == 1.0
    assert q.expire(math.inf) == 160 and q.next_deadline() is None
    live = [i for i in range(300) if i % 5]
    assert fired == sorted(live, key=lambda i: (i * 7 % 3, i))


def test_a_timer_is_true_and_gives_its_deadline_as_a_float():
    q = TimerQueue()
    timer = q.add(0.0, print)
    assert timer and bool(timer) is True  # not the truth of its deadline 0.0
    assert type(timer.deadline) is float and timer.deadline == 0.0
    assert type(q.next_deadline()) is float
    assert repr(timer) == "<Timer deadline=0.000000>"


def test_an_action_may_cancel_timers_while_they_expire():
    """Cancelling enough timers compacts the heap in place, inside expire's loop."""
    q = TimerQueue()
    fired = []
    later = [q.add(2.0 + i / 1000, fired.append, i) for i in range(200)]

    def cancel_most(_):
        fired.append("cancel")
        for t in later[:150]:
            t()  # a timer is its undo

    q.add(1.0, cancel_most)
    assert len(q) == 201
    assert q.expire(3.0) == 51
    assert len(q._heap) == 0 and len(q) == 0
    assert fired == ["cancel", *range(150, 200)]


# ── run queue ────────────────────────────────────────────────────────────


def test_run_queue_is_fifo():
    rq = RunQueue()
    tasks = [make_task(i) for i in range(3)]
    for t in tasks:
        rq.push(t)
    assert [rq.pop_next() for _ in range(3)] == tasks
    assert not rq
    for t in tasks:
        t.coro.close()


# ── wait channels ────────────────────────────────────────────────────────


def test_wait_channels_pop_the_oldest_and_forget_empty_channels():
    chans = WaitChannels()
    a, b, c = make_task(1), make_task(2), make_task(3)
    for task in (a, b, c):
        chans.sleep_on("x", task)
    chans.remove("x", b)
    assert chans.pop("x") is a
    assert chans.waiting("x") == 1
    assert chans.pop("x") is c
    assert chans.pop("x") is None and chans.waiting("x") == 0
    assert chans.waiters == {}  # no empty queue is kept for a channel nobody waits on


def test_wait_channels_with_one_waiter_and_when_a_second_comes():
    """A lone waiter is stored as itself (no dict per wait); every operation sees the
    same FIFO whether the channel holds one task or several."""
    chans = WaitChannels()
    a, b, c = make_task(1), make_task(2), make_task(3)
    chans.sleep_on("one", a)
    assert chans.waiters["one"] is a and chans.waiting("one") == 1
    chans.remove("one", b)  # not parked there: nothing happens
    assert chans.waiting("one") == 1
    assert chans.take("one", 0) == [] and chans.waiting("one") == 1
    assert chans.take("one", 5) == [a] and chans.waiters == {}
    chans.sleep_on("one", a)
    chans.remove("one", a)
    assert chans.waiters == {}
    chans.sleep_on("two", a)
    chans.sleep_on("two", b)  # the second: now an ordered dict
    chans.sleep_on("two", c)
    assert chans.waiting("two") == 3
    assert chans.take("two", 2) == [a, b]
    assert chans.take("two", None) == [c] and chans.waiters == {}
    assert chans.take("nobody", None) == []


# ── poller ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize("kind", POLLERS)
def test_poller_keeps_registration_between_waits_and_drops_stale_owner(kind):
    p = Poller(kind)
    a, b = socket.socketpair()
    try:
        t1, t2 = make_task(1), make_task(2)
        p.wait(t1, a.fileno(), a, writing=False)
        assert p.waiting == 1
        done = []

        def complete(task):
            done.append(task.tid)
            return True

        b.send(b"x")
        p.poll(1.0, complete)
        assert done == [1] and p.waiting == 0
        watch = p._watches[a.fileno()]
        assert watch.mask == READ  # still registered: the next wait costs no syscall
        a.recv(1)
        p.wait(t2, a.fileno(), a, writing=True)
        assert watch.mask == READ | WRITE
        p.poll(1.0, complete)
        assert done == [1, 2]
        # Nobody waits any more: readiness nobody wants shrinks the registration.
        b.send(b"y")
        p.poll(0.0, complete)
        p.poll(0.0, complete)
        assert a.fileno() not in p._watches
        for t in (t1, t2):
            t.coro.close()
    finally:
        a.close()
        b.close()
        p.close()


@pytest.mark.parametrize("kind", POLLERS)
def test_reused_fd_number_is_registered_afresh(kind):
    """A socket closed while registered, and a new one given the same number, must still wake."""
    p = Poller(kind)
    t1, t2 = make_task(1), make_task(2)
    done = []

    def complete(task):
        done.append(task.tid)
        return True

    a, b = socket.socketpair()
    fd = a.fileno()
    p.wait(t1, fd, a, writing=False)
    b.send(b"x")
    p.poll(1.0, complete)
    a.close()  # epoll forgets it silently; the watch still says READ
    b.close()
    c, d = socket.socketpair()
    try:
        assert fd in (c.fileno(), d.fileno())
        sock = c if c.fileno() == fd else d
        peer = d if sock is c else c
        p.wait(t2, fd, sock, writing=False)
        peer.send(b"y")
        p.poll(1.0, complete)
        assert done == [1, 2]
    finally:
        c.close()
        d.close()
        p.close()
        for t in (t1, t2):
            t.coro.close()


def test_int_fd_registration_is_dropped_after_the_wait():
    p = Poller("epoll")
    r, w = os.pipe()
    try:
        t = make_task(1)
        p.wait(t, r, r, writing=False)
        p.unwait(t, r, writing=False)
        assert r not in p._watches  # a bare number proves nothing about its file later
        p.unwait(t, r, writing=False)  # twice is harmless
        t.coro.close()
    finally:
        os.close(r)
        os.close(w)
        p.close()


def test_unknown_poller_name():
    with pytest.raises(ValueError, match="unknown poller"):
        kernel.Kernel(poller="kqueue-on-linux")


# ── run loop corners ─────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "value, hint",
    [
        (None, "bare `yield`"),
        (42, "not a trap"),
        (sleep, "not a trap"),
        (kernel.Trap, "is a class"),
    ],
)
def test_bad_yield_hints(value, hint):
    def main():
        try:
            yield value
        except TypeError as exc:
            return str(exc)
        return "no error"

    message = run(main)
    assert hint in message and "main" in message


def test_bad_yield_of_generator_and_coroutine():
    async def coro():
        return 1

    def helper():
        yield sleep(0)

    def main():
        messages = []
        for value in (helper(), coro()):
            try:
                yield value
            except TypeError as exc:
                messages.append(str(exc))
        return messages

    gen_msg, coro_msg = run(main)
    assert "yield from" in gen_msg
    assert "await" in coro_msg


def test_cleanup_that_blocks_for_ever_is_closed_at_shutdown(caplog):
    trace = []

    def stubborn():
        try:
            yield sleep(math.inf)
        finally:
            trace.append("cleanup-start")
            try:
                yield sleep(math.inf)  # waits for something that never comes
            finally:
                trace.append("closed")

    def main():
        yield spawn(stubborn)
        yield sleep(0)

    with caplog.at_level(logging.WARNING, logger="yieldos"):
        run(main)
    assert trace == ["cleanup-start", "closed"]
    assert "cannot finish its cleanup" in caplog.text


def test_killed_task_that_raises_in_cleanup_is_reported(caplog):
    def messy():
        try:
            yield sleep(math.inf)
        finally:
            raise ValueError("broken cleanup")

    def main():
        t = yield spawn(messy)
        yield sleep(0)
        yield kill(t)
        return t

    with caplog.at_level(logging.ERROR, logger="yieldos"):
        t = run(main)
    assert isinstance(t.exception, ValueError)
    assert "broken cleanup" in caplog.text and "messy" in caplog.text


def test_system_exit_in_a_task_stops_the_program():
    trace = []

    def quitter():
        yield sleep(0)
        raise SystemExit(3)

    def main():
        try:
            yield spawn(quitter)
            yield sleep(math.inf)
        finally:
            trace.append("main-cleanup")

    with pytest.raises(SystemExit) as info:
        run(main)
    assert info.value.code == 3
    assert trace == ["main-cleanup"]


def test_a_services_own_key_error_is_the_tasks_not_a_bad_trap(monkeypatch):
    """_step finds the service with table[type(trap)] inside the service's try: a
    KeyError there means "no trap" only when the trap's type is not in the table."""
    from kernel import syscall
    from kernel.traps import Trap

    class Lookup(Trap[None]):
        __slots__ = ()

    def sys_lookup(k, task, trap):
        return {}["missing"]

    monkeypatch.setitem(syscall.TRAP_TABLE, Lookup, sys_lookup)

    def main():
        try:
            yield Lookup()
        except KeyError as exc:
            return repr(exc)

    assert run(main) == "KeyError('missing')"


def test_kernel_panic_aborts_and_closes_every_task(monkeypatch):
    trace = []

    def victim():
        try:
            yield sleep(math.inf)
        finally:
            trace.append("victim-closed")

    def main():
        yield spawn(victim)
        yield sleep(0)
        yield sleep(0.001)

    def broken_sleep(k, task, trap):
        raise kernel.KernelPanic("simulated kernel bug")

    from kernel import syscall, sysproc
    from kernel.traps import Sleep

    k = kernel.Kernel()
    with k:
        original = syscall.TRAP_TABLE[Sleep]

        def sleep_service(kern, task, trap):
            if trap.seconds == 0.001:
                return broken_sleep(kern, task, trap)
            return original(kern, task, trap)

        monkeypatch.setitem(syscall.TRAP_TABLE, Sleep, sleep_service)
        with pytest.raises(kernel.KernelPanic):
            k.run(main)
        assert trace == ["victim-closed"]
        assert not k.tasks
    assert sysproc.SERVICES[Sleep] is original


def test_run_refuses_a_closed_or_running_kernel():
    k = kernel.Kernel()
    k.close()
    k.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        k.run(_noop)

    def main():
        with pytest.raises(RuntimeError, match="already running"):
            inner.run(_noop)
        with pytest.raises(RuntimeError, match="running"):
            inner.close()
        yield sleep(0)

    with kernel.Kernel() as inner:
        inner.run(main)


@pytest.mark.parametrize(
    "target, error",
    [
        (print, TypeError),
        (42, TypeError),
    ],
)
def test_bad_spawn_targets(target, error):
    def main():
        with pytest.raises(error):
            yield spawn(target)

    run(main)


def test_spawn_of_started_generator_and_args_with_object():
    def gen():
        yield sleep(0)

    def main():
        g = gen()
        next(g)
        with pytest.raises(ValueError, match="already started"):
            yield spawn(g)
        g.close()
        fresh = gen()
        with pytest.raises(TypeError, match="arguments"):
            yield spawn(fresh, 1)
        fresh.close()

    run(main)


def test_sendall_progress_and_inline_budget_fairness():
    """A reader whose socket always has data still lets the others run."""
    trace = []

    def flood(sock):
        for _ in range(200):
            yield sendall(sock, b"x" * 100)

    def reader(sock):
        got = 0
        while got < 20000:
            got += len((yield recv(sock, 100)))
        trace.append("reader-done")

    def ticker():
        for _ in range(3):
            yield sleep(0)
            trace.append("tick")

    def main():
        a, b = socket.socketpair()
        with a, b:
            w = yield spawn(flood, a)
            yield join(w)  # 20 kB is buffered: every recv will be answered at once
            r = yield spawn(reader, b)
            t = yield spawn(ticker)
            yield join(r)
            yield join(t)

    run(main)
    assert trace.index("tick") < trace.index("reader-done")


def test_wait_on_fd_then_kill_leaves_poller_clean():
    def waiter(fd):
        yield wait_readable(fd)

    def main():
        a, b = socket.socketpair()
        with a, b:
            t = yield spawn(waiter, a)
            yield sleep(0)
            yield kill(t)
            return t

    with kernel.Kernel() as k:
        t = k.run(main)
        assert k.poller.waiting == 0
    assert t.state is kernel.TaskState.EXITED
    assert isinstance(t.exception, kernel.Cancelled)


def test_trap_repr_is_readable():
    from kernel.traps import Join, Read

    t = make_task(7)
    assert repr(Join(t)) == "Join(task=<tid 7 't7'>)"
    assert repr(Read(0, 10)) == "Read(file=0, fd=0, n=10)"
    t.coro.close()
    with pytest.raises(TypeError, match="fileno"):
        Read("not an fd", 1)
    with pytest.raises(ValueError):
        Read(0, -1)
    with pytest.raises(TypeError):
        join("not a task")


def test_an_operation_with_a_fast_path_makes_the_trap_its_class_would():
    """``@operation(attempt=f)`` writes TryOperation's __init__ out: the trap it makes
    must have every field the class's own constructor sets, with the same values."""
    from kernel.traps import TryOperation
    from syscalls import WOULD_BLOCK, operation

    def attempt(box, item):
        return WOULD_BLOCK

    def slow(box, item):
        yield sleep(0)

    made = operation(attempt=attempt)(slow)([], "x")
    direct = TryOperation(attempt, slow, made.args)
    assert type(made) is TryOperation and made.args[1] == "x"
    fields = [name for cls in TryOperation.__mro__ for name in getattr(cls, "__slots__", ())]
    assert fields and all(getattr(made, f) is getattr(direct, f) for f in fields)
    assert repr(made) == repr(direct)


def test_sleep_rejects_strings():
    with pytest.raises(TypeError, match="number"):
        sleep("1")
    assert sleep(True).seconds == 1.0  # a bool is an int, as in time.sleep


@pytest.mark.parametrize("kind", POLLERS)
def test_wait_on_a_regular_file_answers_at_once(kind, tmp_path):
    """epoll refuses regular files (EPERM); poll and select call them ready. Same answer on all."""
    path = tmp_path / "f"
    path.write_bytes(b"data")

    def main():
        with open(path, "rb") as f:
            yield wait_readable(f)
            return (yield read(f, 10))

    assert run(main, poller=kind) == b"data"


def test_short_read_makes_the_next_read_wait_instead_of_failing_with_eagain():
    """An echo loop does one recv per message, not a second one that fails with EAGAIN."""

    class CountingSocket(socket.socket):
        recv_calls = 0

        def recv(self, n, *flags):
            CountingSocket.recv_calls += 1
            return super().recv(n, *flags)

    a, b = socket.socketpair()
    server_side = CountingSocket(fileno=a.detach())

    def echo():
        while True:
            data = yield recv(server_side, 1000)
            if not data:
                return
            yield sendall(server_side, data)

    def main():
        t = yield spawn(echo)
        for i in range(50):
            yield sendall(b, b"ping %d" % i)
            assert (yield recv(b, 1000)) == b"ping %d" % i
        b.shutdown(socket.SHUT_WR)
        yield join(t)

    try:
        run(main)
    finally:
        server_side.close()
        b.close()
    assert 51 <= CountingSocket.recv_calls <= 53  # 50 messages and the EOF


def _slots(task):
    return {name: getattr(task, name) for name in Task.__slots__ if name != "__weakref__"}


def test_recv_parks_and_wakes_a_task_as_kernel_park_and_wake_do():
    """sys_recv writes Kernel.park out, and the poller's completion routine Kernel.wake
    (sysio.completer), on a kernel without instruments: each must leave the task
    exactly as the kernel's method would."""
    from kernel import sysio
    from kernel.traps import SWITCH, Recv

    def same_state(t1, t2):
        differ = {"tid", "_name", "coro", "trap"}
        assert {n: v for n, v in _slots(t1).items() if n not in differ} == {
            n: v for n, v in _slots(t2).items() if n not in differ
        }

    a, b = socket.socketpair()
    try:
        with kernel.Kernel() as k:
            assert k._probes is None  # the written-out paths
            t1, t2 = make_task(1), make_task(2)
            for t in (t1, t2):
                k.runq.push(t)  # (as new_task would have)
                k.runq.pop_next()
            trap1, trap2 = Recv(a, 10), Recv(a, 10)
            assert sysio.sys_recv(k, t1, trap1) is SWITCH  # nothing to read: parks
            k.poller.wait(t2, a.fileno(), a, False)
            k.park(t2, trap2, k.poller.undo)
            same_state(t1, t2)
            assert (t1.trap, t2.trap) == (trap1, trap2) and t1.state is kernel.TaskState.BLOCKED
            b.send(b"x")
            assert sysio.completer(k)(t1) is True  # readable: READY, to read as it runs
            k.poller.unwait(t2, a.fileno(), False)
            k.wake(t2, trap2)
            t2.next_exc = sysio.RECV_WHEN_RUN
            assert (t1.next_value, t2.next_value) == (trap1, trap2)
            t2.next_value = trap1
            same_state(t1, t2)
            assert list(k.runq) == [t1, t2] and t1.trap is None
            assert a.recv(10, socket.MSG_PEEK) == b"x"  # not read yet: still in the socket
            for t in (t1, t2):
                t.coro.close()
    finally:
        a.close()
        b.close()


def _parked_reader(a):
    """main's side of the two tests below: a reader task parked in recv(a)."""
    state = kernel.TaskState

    def reader():
        return (yield recv(a, 10))

    t = yield spawn(reader)
    while t.state is not state.BLOCKED:
        yield sched_yield()
    return t


@pytest.mark.parametrize("poller", POLLERS)
def test_a_reader_killed_after_its_socket_became_readable_leaves_the_data_unread(poller):
    """The poller only makes a reader READY; it reads when it runs. So a reader killed
    between the two has taken nothing off the socket."""
    a, b = socket.socketpair()

    def main():
        t = yield from _parked_reader(a)
        b.send(b"hello")
        yield sched_yield()  # the poller sees a readable, and queues t behind main
        assert t.state is kernel.TaskState.READY
        yield kill(t)
        assert isinstance(t.exception, kernel.Cancelled)
        return a.recv(10)

    with a, b:
        assert run(main, poller=poller) == b"hello"


@pytest.mark.parametrize("poller", POLLERS)
def test_a_reader_whose_data_is_gone_when_it_runs_waits_again(poller):
    a, b = socket.socketpair()

    def main():
        t = yield from _parked_reader(a)
        b.send(b"stolen")
        yield sched_yield()
        assert t.state is kernel.TaskState.READY
        assert a.recv(10) == b"stolen"  # taken before the reader's turn
        yield sched_yield()
        assert t.state is kernel.TaskState.BLOCKED  # it found nothing, and waits again
        b.send(b"later")
        return (yield join(t))

    with a, b:
        assert run(main, poller=poller) == b"later"


def test_sleep_parks_a_task_as_kernel_park_does():
    """sys_sleep writes Kernel.park out on a kernel without instruments: the task must be
    left exactly as k.park leaves it; with an instrument, the block is heard."""
    from kernel import sysproc
    from kernel.timers import Timer
    from kernel.traps import SWITCH, Sleep

    blocks = []

    class Blocks(kernel.Instrument):
        def block(self, task, trap):
            blocks.append((task.tid, trap))

    with kernel.Kernel(clock=kernel.VirtualClock(5.0)) as k:
        assert k._probes is None  # the written-out path
        t1, t2, t3 = make_task(1), make_task(2), make_task(3)
        trap1, trap2, trap3 = Sleep(1.5), Sleep(1.5), Sleep(1.5)
        assert sysproc.sys_sleep(k, t1, trap1) is SWITCH
        k.park(t2, trap2, k.timers.add(6.5, k.wake, t2))
        differ = {"tid", "_name", "coro", "trap", "undo"}
        assert {n: v for n, v in _slots(t1).items() if n not in differ} == {
            n: v for n, v in _slots(t2).items() if n not in differ
        }
        assert t1.state is kernel.TaskState.BLOCKED and t1.trap is trap1
        for t in (t1, t2):
            assert type(t.undo) is Timer and t.undo.deadline == 6.5 and t.undo.arg is t
            assert t.undo.action == k.wake
        k.add_instrument(Blocks())
        assert sysproc.sys_sleep(k, t3, trap3) is SWITCH
        assert blocks == [(3, trap3)] and t3.state is kernel.TaskState.BLOCKED
        assert k.timers.expire(6.5) == 3
        assert list(k.runq) == [t1, t2, t3] and t1.trap is None and t1.undo is None
        for t in (t1, t2, t3):
            t.coro.close()


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, "1", None, [1], 1j])
def test_sleep_and_the_sleep_trap_reject_the_same_lengths(bad):
    """A bad length is the caller's error, with the same message by either name."""
    from kernel.traps import Sleep

    with pytest.raises((TypeError, ValueError)) as direct:
        Sleep(bad)
    with pytest.raises(type(direct.value), match="sleep length must be a") as via_sleep:
        sleep(bad)
    assert str(via_sleep.value) == str(direct.value)


@pytest.mark.parametrize("good", [0, 3, True, 2.5, math.inf])
def test_sleep_and_the_sleep_trap_take_the_same_lengths(good):
    from fractions import Fraction

    from kernel.traps import Sleep

    for value in (good, Fraction(1, 4)):
        trap = sleep(value)
        assert type(trap) is Sleep and type(trap.seconds) is float
        assert trap.seconds == Sleep(value).seconds == float(value)


def test_instruments_hear_every_recv_block_and_wake():
    """An instrumented kernel parks and wakes a Recv through k.park and k.wake, which the
    probes shadow."""
    woken = []

    class Wakes(kernel.Instrument):
        def block(self, task, trap):
            woken.append(("block", task.name, type(trap).__name__))

        def wake(self, task):
            woken.append((task.name, type(task.trap).__name__ if task.trap else None))

        def trap_result(self, task, trap, value, error):
            if type(trap).__name__ == "Recv":
                woken.append(("result", value))

    a, b = socket.socketpair()

    def reader():
        return (yield recv(a, 10))

    def main():
        t = yield spawn(reader)
        yield sleep(0.001)  # reader parks in its recv
        b.send(b"hi")
        return (yield join(t))

    try:
        with kernel.Kernel() as k:
            k.add_instrument(Wakes())
            assert k.run(main) == b"hi"
    finally:
        a.close()
        b.close()
    assert ("block", "reader", "Recv") in woken
    assert ("result", b"hi") in woken and ("reader", None) in woken


def test_wait_on_and_hand_off_park_and_wake_a_task_as_kernel_park_and_wake_do():
    """sys_wait_on writes Kernel.park (and the channel's first waiter) out, and a
    one-task wakeup Kernel.wake (and the pop), on a kernel without instruments: each
    must leave the task, and the channels, exactly as the kernel's methods would."""
    from kernel import sysproc
    from kernel.traps import SWITCH, WaitOn

    def same_state(t1, t2):
        differ = {"tid", "_name", "coro", "trap"}
        assert {n: v for n, v in _slots(t1).items() if n not in differ} == {
            n: v for n, v in _slots(t2).items() if n not in differ
        }

    with kernel.Kernel() as k:
        assert k._probes is None  # the written-out paths
        t1, t2, t3 = make_task(1), make_task(2), make_task(3)
        trap1, trap2, trap3 = WaitOn("one"), WaitOn("two"), WaitOn("one")
        assert sysproc.sys_wait_on(k, t1, trap1) is SWITCH
        k.channels.sleep_on("two", t2)
        k.park(t2, trap2, k.channels.undo)
        same_state(t1, t2)
        assert (t1.trap, t2.trap) == (trap1, trap2) and t1.state is kernel.TaskState.BLOCKED
        assert sysproc.sys_wait_on(k, t3, trap3) is SWITCH  # a second waiter: behind t1
        assert k.channels.waiters == {"one": {t1: None, t3: None}, "two": t2}
        assert k.wakeup("one", 1, "a") == 1  # t1, the oldest, from the dict
        assert k.wakeup("one", 1, "b") == 1  # t3, now the only one
        assert k.wakeup("one", 1, "c") == 0
        k.channels.pop("two")
        k.wake(t2, "a")
        same_state(t1, t2)
        assert list(k.runq) == [t1, t3, t2] and k.channels.waiters == {}
        assert (t1.next_value, t3.next_value, t1.trap, t3.undo) == ("a", "b", None, None)
        for t in (t1, t2, t3):
            t.coro.close()


def test_instruments_hear_every_wait_on_block_and_hand_off():
    """An instrumented kernel parks a conditional wait and wakes it with a hand-off
    through k.park and k.wake, which the probes shadow."""
    from syscalls.queues import Queue

    heard = []

    class Hear(kernel.Instrument):
        def block(self, task, trap):
            heard.append(("block", task.name, type(trap).__name__))

        def wake(self, task):
            heard.append(("wake", task.name))

        def trap_result(self, task, trap, value, error):
            if type(trap).__name__ == "WaitOn":
                heard.append(("result", task.name, value))

    def getter(q):
        return (yield q.get())

    def main():
        q = Queue(1)
        t = yield spawn(getter, q)
        yield sleep(0)  # the getter parks on the empty queue
        yield q.put("x")  # handed to it
        return (yield join(t))

    with kernel.Kernel() as k:
        k.add_instrument(Hear())
        assert k.run(main) == "x"
    assert heard[:3] == [
        ("block", "getter", "WaitOn"),
        ("result", "getter", "x"),
        ("wake", "getter"),
    ]


def test_task_spawned_during_shutdown_never_runs():
    trace = []

    def late():
        trace.append("late-ran")
        yield sleep(0)

    def lingering():
        try:
            yield sleep(math.inf)
        finally:
            t = yield spawn(late)  # cleanup may spawn; the new task is cancelled at once
            trace.append(t.state.value)

    def main():
        yield spawn(lingering)
        yield sleep(0)

    run(main)
    assert trace == ["ready"]


def test_ctrl_c_reaches_a_main_that_is_ready_not_blocked():
    import signal
    import threading

    trace = []

    def main():
        threading.Timer(0.02, signal.raise_signal, (signal.SIGINT,)).start()
        try:
            while True:  # never blocks: always READY when the loop looks
                yield sleep(0)
        finally:
            trace.append("main-finally")

    with pytest.raises(KeyboardInterrupt):
        run(main)
    assert trace == ["main-finally"]


def test_system_exit_reaches_a_ready_main():
    def quitter():
        yield sleep(0)
        raise SystemExit(5)

    def main():
        yield spawn(quitter)
        while True:
            yield sleep(0)

    with pytest.raises(SystemExit) as info:
        run(main)
    assert info.value.code == 5


def test_cleanup_run_by_a_forced_close_knows_its_task():
    from syscalls import current_task, shield

    seen = []

    def stubborn():
        try:
            yield sleep(math.inf)
        finally:
            try:
                yield sleep(math.inf)  # blocks for ever: the kernel closes the task
            finally:
                me = current_task()
                with shield():
                    seen.append((me.name, me.state.value))

    def main():
        yield spawn(stubborn)
        yield sleep(0)

    run(main)
    assert seen == [("stubborn", "running")]


def test_a_trap_can_be_spawned_as_a_task():
    def main():
        t1 = yield spawn(sleep(0.001))
        t2 = yield spawn(sleep, 0.001)  # a function returning a trap
        results = [(yield join(t1)), (yield join(t2))]
        with pytest.raises(TypeError, match="arguments"):
            yield spawn(sleep(1), 2)
        return results

    assert run(main) == [None, None]


def test_a_failed_signal_watch_leaves_no_trace():
    """watch_signal(SIGKILL) fails; it must not leave the kernel thinking a signal
    may still come (that would hide the Deadlock below for ever)."""
    import signal

    from syscalls import current_kernel, wait_on

    def main():
        with pytest.raises(OSError):
            current_kernel().watch_signal(signal.SIGKILL, print)
        current_kernel().unwatch_signal(signal.SIGKILL, print)  # harmless
        yield wait_on("nothing will wake this")

    with pytest.raises(kernel.Deadlock):
        run(main)


def test_ringing_a_closed_doorbell_is_harmless():
    from kernel.door import Doorbell

    bell = Doorbell()
    bell.ring()
    bell.drain()
    bell.close()
    bell.ring()  # another thread may still ring after the kernel closed: nothing happens
