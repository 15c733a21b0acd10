"""Wait channels, Operation subroutines, timeouts, shields: the rules of docs/cancellation.md."""

from __future__ import annotations

import math
import os
import socket
import threading
import time

import pytest

import kernel
from conftest import POLLERS, run
from syscalls import (
    WOULD_BLOCK,
    accept,
    cancel,
    clock,
    current_task,
    gettid,
    join,
    kill,
    move_on_after,
    move_on_at,
    operation,
    read,
    recv,
    sched_yield,
    sendall,
    shield,
    sleep,
    spawn,
    timeout,
    timeout_at,
    wait_on,
    wait_readable,
    waiting,
    wakeup,
)

# ── wait channels ────────────────────────────────────────────────────────


def test_wakeup_is_fifo_counts_and_n():
    trace = []

    def sleeper(i):
        yield wait_on("chan")
        trace.append(i)

    def main():
        for i in range(5):
            yield spawn(sleeper, i)
        yield sched_yield()
        assert wakeup("nobody-here") == 0
        assert wakeup("chan", 2) == 2
        yield sched_yield()
        trace.append("two")
        assert wakeup("chan") == 3
        yield sched_yield()
        assert wakeup("chan", 0) == 0

    run(main)
    assert trace == [0, 1, "two", 2, 3, 4]


def test_killed_or_timed_out_task_leaves_its_channel():
    trace = []

    def sleeper(name):
        try:
            yield wait_on("chan")
            trace.append(f"{name}-woken")
        except kernel.Cancelled:
            trace.append(f"{name}-cancelled")
            raise

    def timed():
        with move_on_after(0.001):
            yield wait_on("chan")
        trace.append("timed-left")

    def main():
        a = yield spawn(sleeper, "a")
        t = yield spawn(timed)
        b = yield spawn(sleeper, "b")
        yield sched_yield()
        yield kill(a)
        yield join(t)
        assert wakeup("chan") == 1  # only b is still parked
        yield join(b)

    run(main)
    assert trace == ["a-cancelled", "timed-left", "b-woken"]


def test_wait_on_rejects_unhashable_and_wakeup_rejects_negative():
    def main():
        with pytest.raises(TypeError):
            wait_on([])
        with pytest.raises(ValueError):
            wakeup("c", -1)
        yield sched_yield()

    run(main)


def test_wakeup_hands_a_value_to_the_oldest_waiters():
    trace = []

    def sleeper(i):
        got = yield wait_on("chan")
        trace.append((i, got))

    def main():
        for i in range(4):
            yield spawn(sleeper, i)
        yield sched_yield()
        assert wakeup("chan", 1, "first") == 1
        assert wakeup("chan", 2, ["shared"]) == 2
        assert wakeup("chan", 1, "nobody") == 1
        assert wakeup("chan", 1, "nobody left") == 0
        yield sched_yield()

    run(main)
    assert trace == [(0, "first"), (1, ["shared"]), (2, ["shared"]), (3, "nobody")]


def test_wakeup_error_raises_a_new_exception_in_each_woken_task():
    caught = []

    def sleeper():
        try:
            yield wait_on("chan")
        except LookupError as exc:
            caught.append(exc)

    def main():
        for _ in range(3):
            yield spawn(sleeper)
        yield sched_yield()
        assert wakeup("chan", 2, error=KeyError) == 2
        assert wakeup("chan", error=lambda: IndexError("closed")) == 1
        yield sched_yield()

    run(main)
    assert [type(e) for e in caught] == [KeyError, KeyError, IndexError]
    assert caught[0] is not caught[1] and str(caught[2]) == "closed"


def test_wakeup_rejects_a_shared_exception_or_a_value_with_an_error():
    def main():
        with pytest.raises(TypeError, match="each woken task raises its own"):
            wakeup("c", error=KeyError("one object for all"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not both"):
            wakeup("c", 1, "value", error=KeyError)
        yield sched_yield()

    run(main)


def test_a_handed_value_is_kept_by_a_task_killed_after_the_wakeup():
    """The hand-off rule: once wakeup returned 1 the task has the value; a kill that
    follows is raised at its next trap. A task killed before it was woken gets nothing."""
    trace = []

    def sleeper(name):
        try:
            got = yield wait_on("chan")
            trace.append(f"{name} got {got}")
            yield sched_yield()
            trace.append(f"{name} not killed?")
        except kernel.Cancelled:
            trace.append(f"{name} cancelled")

    def main():
        a = yield spawn(sleeper, "a")
        b = yield spawn(sleeper, "b")
        yield sched_yield()
        yield kill(a)  # a leaves the channel while still parked: it was handed nothing
        assert wakeup("chan", 1, "x") == 1  # so b, the next, gets x
        yield kill(b)

    run(main)
    assert trace == ["a cancelled", "b got x", "b cancelled"]


def test_waiting_counts_the_tasks_parked_on_a_channel():
    def sleeper():
        yield wait_on("chan")

    def main():
        for _ in range(2):
            yield spawn(sleeper)
        yield sched_yield()
        counts = [waiting("chan"), waiting("elsewhere")]
        wakeup("chan", 1)
        counts.append(waiting("chan"))
        wakeup("chan")
        return counts

    assert run(main) == [2, 0, 1]
    assert waiting("chan") == 0  # outside a kernel nobody can be parked


def test_plain_calls_outside_a_kernel_say_so():
    with pytest.raises(RuntimeError, match="no yieldos kernel"):
        wakeup("c")
    with pytest.raises(RuntimeError, match="no yieldos kernel"):
        clock()
    with pytest.raises(RuntimeError, match="no yieldos kernel"):
        with timeout(1):
            pass


def test_deadlock_message_names_the_channel():
    class Gate:
        def __repr__(self):
            return "<Gate nobody will open>"

    gate = Gate()

    def main():
        yield wait_on(gate)

    with pytest.raises(kernel.Deadlock, match="Gate nobody will open"):
        run(main)


# ── conditional waits: wait_on(channel, attempt) ─────────────────────────


class Mailbox:
    """The docstring's example of `wait_on`: a hand-off built on one conditional wait."""

    def __init__(self):
        self.letters = []
        self.attempts = []  # the task each attempt ran for
        self._receive = wait_on(self, self._take)

    def _take(self):
        self.attempts.append(current_task().name)
        if self.letters == ["poison"]:
            raise ValueError("poisoned")
        return self.letters.pop(0) if self.letters else WOULD_BLOCK

    def receive(self):
        return self._receive

    def send(self, letter):
        if not wakeup(self, 1, letter):
            self.letters.append(letter)


def vrun(main, *args):
    """Run on a virtual clock: timeouts fire exactly, without real sleeping."""
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        return k.run(main, *args)


def test_conditional_wait_completes_at_once_or_parks_until_handed_the_result():
    trace = []

    def receiver(box):
        trace.append(("got", (yield box.receive())))  # one there: no switch
        trace.append(("got", (yield box.receive())))  # none: parks, then is handed one
        trace.append(("got", (yield box.receive())))

    def main():
        box = Mailbox()
        box.send("a")
        r = yield spawn(receiver, box, name="r")
        yield sched_yield()
        trace.append("receiver parked")
        box.send("b")  # handed over: never stored
        assert box.letters == []
        yield sched_yield()
        box.send("c")
        yield join(r)
        return box.attempts

    assert vrun(main) == ["r", "r", "r"]
    assert trace == [("got", "a"), "receiver parked", ("got", "b"), ("got", "c")]


def test_conditional_wait_raises_what_the_attempt_raises_and_runs_nothing_unyielded():
    def main():
        box = Mailbox()
        box.letters.append("poison")
        trap = box.receive()  # made, never yielded: the attempt does not run
        assert box.attempts == []
        assert repr(WOULD_BLOCK) == "WOULD_BLOCK"
        with pytest.raises(ValueError, match="poisoned"):
            yield trap
        return box.attempts

    assert vrun(main) == ["main"]


def test_conditional_wait_works_with_await_and_yield_from():
    async def async_receiver(box):
        return [await box.receive(), await box.receive()]

    def gen_receiver(box):
        first = yield from box.receive()
        second = yield from box.receive()
        return [first, second]

    def main():
        box = Mailbox()
        box.send(1)
        a = yield spawn(async_receiver, box)
        g = yield spawn(gen_receiver, box)
        yield sched_yield()
        for letter in (2, 3, 4):
            box.send(letter)
        return (yield join(a)), (yield join(g))

    assert vrun(main) == ([1, 2], [3, 4])


def test_kill_and_timeout_at_a_conditional_waits_fast_path_run_no_attempt():
    """A kill or deadline already due when the task traps is raised at the trap,
    before the attempt: no letter is taken."""
    trace = []

    def killed(box):
        yield sched_yield()  # killed while READY: Cancelled is due at the next trap
        yield box.receive()

    def timed(box):
        with move_on_after(0) as scope:
            yield sched_yield()  # the deadline passes meanwhile
            yield box.receive()
        trace.append(("expired", scope.expired))

    def main():
        box = Mailbox()
        box.send("kept")
        k = yield spawn(killed, box)
        t = yield spawn(timed, box)
        yield sched_yield()
        cancel(k)
        with pytest.raises(kernel.Cancelled):
            yield join(k)
        yield join(t)
        return box.attempts, box.letters

    assert vrun(main) == ([], ["kept"])
    assert trace == [("expired", True)]


def test_kill_and_timeout_at_a_conditional_waits_slow_path_leave_nothing_behind():
    trace = []

    def killed(box):
        try:
            yield box.receive()
        except kernel.Cancelled:
            trace.append("killed")
            raise

    def timed(box):
        with move_on_after(5) as scope:
            yield box.receive()
        trace.append(("timed out", scope.expired))

    def main():
        box = Mailbox()
        k = yield spawn(killed, box)
        t = yield spawn(timed, box)
        yield sched_yield()
        yield kill(k)
        yield join(t)  # the virtual clock jumps to the deadline
        box.send("late")  # nobody waits any more: it is stored
        return box.letters, len(box.attempts)

    assert vrun(main) == (["late"], 2)
    assert trace == ["killed", ("timed out", True)]


# ── Operation subroutines ────────────────────────────────────────────────


@operation
def add_later(a, b):
    yield sleep(0)
    if a is None:
        raise ValueError("no a")
    return a + b


@operation
def nested(x):
    y = yield add_later(x, 1)  # an operation yielding an operation
    tid = yield gettid()
    return y, tid


def test_operation_works_with_yield_await_and_yield_from():
    async def async_style():
        return await add_later(1, 2)

    def main():
        r1 = yield add_later(1, 2)
        r2 = yield from add_later(1, 2)
        t = yield spawn(async_style)
        r3 = yield join(t)
        r4, tid = yield nested(1)
        assert tid == (yield gettid())
        try:
            yield add_later(None, 1)
        except ValueError as e:
            r5 = str(e)
        return r1, r2, r3, r4, r5

    assert run(main) == (3, 3, 3, 2, "no a")


def test_kill_inside_an_operation_unwinds_every_frame():
    trace = []

    @operation
    def inner():
        try:
            yield sleep(math.inf)
        finally:
            trace.append("inner-finally")

    @operation
    def outer():
        try:
            yield inner()
        finally:
            trace.append("outer-finally")

    def victim():
        try:
            yield outer()
        finally:
            trace.append("task-finally")

    def main():
        t = yield spawn(victim)
        yield sched_yield()
        assert "Sleep" in repr(t)  # it waits in the innermost trap
        yield kill(t)

    run(main)
    assert trace == ["inner-finally", "outer-finally", "task-finally"]


def test_operation_frames_are_closed_at_shutdown():
    trace = []

    @operation
    def stuck():
        try:
            yield wait_on("never")
        finally:
            trace.append("stuck-closed")

    def child():
        yield stuck()

    def main():
        yield spawn(child)
        yield sched_yield()

    run(main)
    assert trace == ["stuck-closed"]


# ── Operations with a fast path: @operation(attempt=...) ─────────────────


class Permits:
    """A counting semaphore with a fast path (the attempt) and a slow path (the
    subroutine), recording which path each acquire took."""

    def __init__(self, n):
        self.n = n
        self.paths = []

    def _acquire_now(self, label="fast"):
        if self.n == "boom":
            raise ValueError("bad permits")
        if self.n:
            self.n -= 1
            self.paths.append(label)
            return self.n
        return WOULD_BLOCK

    @operation(attempt=_acquire_now)
    def acquire(self, label="fast"):
        self.paths.append(f"{label}: slow path")
        try:
            while not self.n:  # the subroutine is the whole operation on its own
                yield wait_on(self)
        except BaseException:
            self.paths.append(f"{label}: left the slow path")
            raise
        self.n -= 1
        return self.n

    def release(self):
        self.n += 1
        wakeup(self, 1)


def test_fast_path_completes_in_one_trap_and_the_subroutine_runs_only_when_it_blocks():
    def waiter(p):
        return (yield p.acquire("w"))

    def main():
        p = Permits(2)
        assert (yield p.acquire()) == 1
        assert (yield from p.acquire()) == 0
        w = yield spawn(waiter, p)
        yield sched_yield()
        p.release()
        assert (yield join(w)) == 0
        return p.paths

    assert vrun(main) == ["fast", "fast", "w: slow path"]


def test_fast_path_operation_unyielded_does_nothing_and_errors_come_at_the_trap():
    def main():
        p = Permits(1)
        p.acquire()  # made and dropped: nothing taken
        trap = p.acquire()
        assert p.n == 1 and p.paths == []
        yield trap
        p.n = "boom"
        with pytest.raises(ValueError, match="bad permits"):
            yield p.acquire()
        return p.paths

    assert vrun(main) == ["fast"]


def test_fast_path_operation_with_await_and_keyword_arguments():
    async def async_style(p):
        first = await p.acquire()
        second = await p.acquire()  # none left: the subroutine waits in this frame
        return first, second

    def main():
        p = Permits(1)
        t = yield spawn(async_style, p)
        yield sched_yield()
        p.release()
        result = yield join(t)
        p.release()
        yield p.acquire(label="kw")  # keyword arguments: the subroutine alone
        return result, p.paths

    assert vrun(main) == ((0, 0), ["fast", "fast: slow path", "kw: slow path"])


def test_kill_and_timeout_at_the_fast_path_and_in_the_subroutine():
    trace = []

    def killed_early(p):
        yield sched_yield()  # killed while READY: Cancelled comes at the next trap
        yield p.acquire("early")

    def killed_waiting(p):
        yield p.acquire("waiting")

    def timed(p):
        with move_on_after(5) as scope:
            yield p.acquire("timed")
        trace.append(("expired", scope.expired))

    def main():
        p = Permits(0)
        early = yield spawn(killed_early, p)
        waiting = yield spawn(killed_waiting, p)
        t = yield spawn(timed, p)
        yield sched_yield()
        cancel(early)
        yield kill(waiting)
        yield join(t)
        with pytest.raises(kernel.Cancelled):
            yield join(early)
        p.n = 1  # a permit free: a kill due at the trap still takes nothing
        early = yield spawn(killed_early, p)
        yield sched_yield()
        cancel(early)
        with pytest.raises(kernel.Cancelled):
            yield join(early)
        return p.paths, p.n

    paths, n = vrun(main)
    assert n == 1
    assert paths == [
        "waiting: slow path",
        "timed: slow path",
        "waiting: left the slow path",
        "timed: left the slow path",
    ]
    assert trace == [("expired", True)]


def test_operation_without_a_function_or_attempt_is_a_type_error():
    with pytest.raises(TypeError, match="generator function, or attempt="):
        operation()


# ── timeouts ─────────────────────────────────────────────────────────────


def test_timeout_raises_builtin_timeout_error_at_the_blocking_point():
    trace = []

    def main():
        t0 = clock()
        try:
            with timeout(0.02):
                trace.append("before")
                yield sleep(10)
                trace.append("never")
        except TimeoutError:
            trace.append("timeout")
        return clock() - t0

    elapsed = run(main)
    assert trace == ["before", "timeout"]
    assert 0.02 <= elapsed < 2


def test_timeout_not_reached_changes_nothing():
    def main():
        with timeout(5) as scope:
            yield sleep(0.001)
        with move_on_after(5) as s2:
            yield sleep(0)
        return scope.expired, s2.expired

    assert run(main) == (False, False)


def test_move_on_after_swallows_and_sets_expired():
    def main():
        with move_on_after(0.005) as scope:
            yield sleep(10)
            return "not here"
        return scope.expired

    assert run(main) is True


def test_absolute_forms_use_the_kernel_clock():
    ticks = iter(float(i) / 1000 for i in range(10**6))

    def fake_clock():
        return next(ticks)

    def main():
        with move_on_at(clock() + 0.002) as scope:
            yield sleep(10)
        try:
            with timeout_at(clock() + 0.002):
                yield sleep(10)
        except TimeoutError:
            return scope.expired

    with kernel.Kernel(clock=fake_clock) as k:
        assert k.run(main) is True


def test_nested_outer_fires_and_passes_through_inner():
    trace = []

    def main():
        try:
            with timeout(0.01):
                try:
                    with timeout(5):
                        yield sleep(1)
                except TimeoutError:
                    trace.append("inner-reported")
                trace.append("not-reached")
        except TimeoutError:
            trace.append("outer-reported")

    run(main)
    assert trace == ["outer-reported"]


def test_nested_inner_fires_and_outer_is_untouched():
    trace = []

    def main():
        with timeout(5) as outer:
            try:
                with timeout(0.01):
                    yield sleep(1)
            except TimeoutError:
                trace.append("inner-reported")
            yield sleep(0)
            trace.append("outer-goes-on")
        return outer.expired

    assert run(main) is False
    assert trace == ["inner-reported", "outer-goes-on"]


def test_timedout_is_a_cancelled_and_passes_except_exception():
    trace = []

    def main():
        with move_on_after(0.005):
            try:
                yield sleep(1)
            except Exception:
                trace.append("swallowed by except Exception")
            except kernel.Cancelled as e:
                trace.append(type(e).__name__)
                raise

    run(main)
    assert trace == ["TimedOut"]


def test_timeout_delivered_once_so_cleanup_may_block():
    trace = []

    def main():
        with move_on_after(0.005):
            try:
                yield sleep(1)
            finally:
                yield sleep(0.001)  # cleanup blocks: not interrupted again
                trace.append("cleanup-done")

    run(main)
    assert trace == ["cleanup-done"]


@pytest.mark.parametrize("poller", POLLERS)
def test_timeout_fires_while_the_kernel_waits_in_the_poller(poller):
    """The only thing that can happen is the deadline: the loop sleeps in epoll/select
    until then, and the read is interrupted."""
    r, w = os.pipe()
    try:

        def main():
            t0 = time.monotonic()
            with move_on_after(0.03) as scope:
                yield read(r, 1)
            return scope.expired, time.monotonic() - t0

        expired, elapsed = run(main, poller=poller)
        assert expired and 0.03 <= elapsed < 2
    finally:
        os.close(r)
        os.close(w)


def test_timeout_in_async_with_and_async_task():
    async def main():
        try:
            async with timeout(0.005):
                await sleep(1)
        except TimeoutError:
            pass
        async with move_on_after(0.005) as scope:
            await sleep(1)
        return scope.expired

    assert run(main) is True


def test_timeout_around_the_ready_task_applies_at_its_next_trap():
    """The deadline passes while the task is ready (it never blocks in the scope)."""

    def busy():
        with move_on_after(0.001) as scope:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.01:  # hold the CPU past the deadline
                pass
            yield sched_yield()  # the timer fires now; the task is READY
            yield sched_yield()  # so it gets TimedOut at this trap
            return "not here"
        return scope.expired

    def main():
        return (yield join((yield spawn(busy))))

    assert run(main) is True


def test_scope_misuse_is_reported():
    def main():
        scope = timeout(1)
        with scope:
            with pytest.raises(RuntimeError, match="entered once"):
                scope.__enter__()
        a, b = timeout(1), timeout(1)
        a.__enter__()
        b.__enter__()
        with pytest.raises(RuntimeError, match="out of order"):
            a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        a.__exit__(None, None, None)
        with pytest.raises(ValueError):
            timeout(float("nan"))
        yield sched_yield()

    run(main)


# ── shields ──────────────────────────────────────────────────────────────


def test_shield_holds_a_kill_until_the_first_trap_after_it():
    trace = []

    def victim():
        try:
            with shield():
                yield sleep(0.02)  # the kill arrives here and is held
                trace.append("shielded-work-done")
            trace.append("after-shield")
            yield sched_yield()  # the first trap after the shield: Cancelled here
            trace.append("not here")
        except kernel.Cancelled:
            trace.append("cancelled")

    def main():
        t = yield spawn(victim)
        yield sched_yield()
        yield kill(t)
        trace.append("kill-returned")

    run(main)
    assert trace == ["shielded-work-done", "after-shield", "cancelled", "kill-returned"]


def test_shield_holds_an_outer_timeout_but_not_an_inner_one():
    trace = []

    def main():
        with move_on_after(0.005) as outer:
            with shield():
                with move_on_after(0.01) as inner:
                    yield sleep(1)  # only the inner deadline can cut this
                trace.append(("inner", inner.expired))
                yield sleep(0.01)  # outer passed meanwhile: held
                trace.append("shield-end")
            yield sleep(1)  # delivered here
            trace.append("not here")
        trace.append(("outer", outer.expired))

    run(main)
    assert trace == [("inner", True), "shield-end", ("outer", True)]


def test_self_kill_inside_a_shield_is_delivered_after_it():
    trace = []

    def main_task():
        me = current_task()
        try:
            with shield():
                yield kill(me)
                trace.append("still-running")
            yield sched_yield()
        except kernel.Cancelled:
            trace.append("cancelled")

    def main():
        yield join((yield spawn(main_task)))

    run(main)
    assert trace == ["still-running", "cancelled"]


def test_self_kill_raises_at_once():
    def main_task():
        me = current_task()
        try:
            yield kill(me)
        except kernel.Cancelled:
            return "cancelled"

    def main():
        return (yield join((yield spawn(main_task))))

    assert run(main) == "cancelled"


def test_ctrl_c_is_not_held_by_a_shield():
    def main():
        with shield():
            threading.Timer(0.02, os.kill, (os.getpid(), 2)).start()
            yield sleep(5)

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(main)
    assert time.monotonic() - t0 < 3


# ── cancellation reaches every blocking kernel trap ──────────────────────


def _blocking_ops():
    """Each entry: (name, setup) where setup() returns (make_trap, cleanup)."""

    def pipe_read():
        r, w = os.pipe()
        return (lambda: read(r, 1)), (lambda: (os.close(r), os.close(w)))

    def sock_recv():
        a, b = socket.socketpair()
        return (lambda: recv(a, 1)), (lambda: (a.close(), b.close()))

    def sock_sendall():
        a, b = socket.socketpair()
        return (lambda: sendall(a, b"x" * (8 << 20))), (lambda: (a.close(), b.close()))

    def sock_accept():
        srv = socket.create_server(("127.0.0.1", 0))
        return (lambda: accept(srv)), srv.close

    def fd_wait():
        a, b = socket.socketpair()
        return (lambda: wait_readable(a)), (lambda: (a.close(), b.close()))

    def channel():
        return (lambda: wait_on(object())), (lambda: None)

    def sleeping():
        return (lambda: sleep(math.inf)), (lambda: None)

    return {
        "read": pipe_read,
        "recv": sock_recv,
        "sendall": sock_sendall,
        "accept": sock_accept,
        "wait_readable": fd_wait,
        "wait_on": channel,
        "sleep": sleeping,
    }


BLOCKING = _blocking_ops()


@pytest.mark.parametrize("how", ["kill", "timeout"])
@pytest.mark.parametrize("op", sorted(BLOCKING))
def test_every_blocking_trap_can_be_killed_and_timed_out(op, how):
    make_trap, cleanup = BLOCKING[op]()
    trace = []
    try:

        def victim():
            try:
                yield make_trap()
            except kernel.Cancelled as e:
                trace.append(type(e).__name__)
                raise

        def main():
            if how == "kill":
                t = yield spawn(victim)
                yield sleep(0.002)
                yield kill(t)
                return t.state
            try:
                with timeout(0.002):
                    yield from victim()
            except TimeoutError:
                return "TimeoutError"

        with kernel.Kernel() as k:
            result = k.run(main)
            assert k.poller.waiting == 0 and k.timers.live == 0
        if how == "kill":
            assert result is kernel.TaskState.EXITED and trace == ["Cancelled"]
        else:
            assert result == "TimeoutError" and trace == ["TimedOut"]
    finally:
        cleanup()


def test_join_and_kill_waits_can_be_timed_out():
    def forever():
        yield sleep(math.inf)

    def stubborn():
        try:
            yield sleep(math.inf)
        finally:
            with shield():
                yield sleep(0.05)  # slow cleanup

    def main():
        t = yield spawn(forever)
        with move_on_after(0.002) as s1:
            yield join(t)
        u = yield spawn(stubborn)
        yield sched_yield()
        with move_on_after(0.005) as s2:
            yield kill(u)  # the kill is sent; waiting for the exit times out
        state_after = u.state  # still in its shielded cleanup
        with pytest.raises(kernel.Cancelled):
            yield join(u)
        yield kill(t)
        return s1.expired, s2.expired, state_after

    assert run(main) == (True, True, kernel.TaskState.BLOCKED)


def test_expired_is_false_when_the_task_was_woken_before_the_deadline_fired():
    """The deadline passes while the task is READY with what it waited for: the region
    completes, and ``expired`` must not claim it was cut short."""
    trace = []

    def waiter():
        with move_on_after(0) as scope:  # due at the very next timer check
            yield wait_on("chan")
            trace.append("got-it")
        trace.append(("expired", scope.expired))

    def main():
        t = yield spawn(waiter)
        yield sched_yield()  # waiter parks; its deadline is due
        wakeup("chan")  # ... but it is woken first, in the same pass
        yield join(t)

    run(main)
    assert trace == ["got-it", ("expired", False)]


# ── ... and every blocking method of the toolkit ─────────────────────────


def _toolkit_ops():
    """name -> generator function run in main; it returns a function making the blocking trap."""
    import syscalls as sc

    def held_lock(cls):
        def setup():
            lock = cls()
            holder = yield spawn(_hold, lock)
            yield sched_yield()
            return lambda: lock.acquire(), holder

        return setup

    def condition():
        cond = sc.Condition()

        @operation
        def wait():
            yield cond.acquire()
            try:
                yield cond.wait()
            finally:
                cond.release()

        return wait, None
        yield

    def simple(make):
        def setup():
            return make(), None
            yield

        return setup

    def full_queue():
        q = sc.Queue(1)
        q.put_nowait(1)
        return (lambda: q.put(2)), None

    def unfinished_queue():
        q = sc.Queue()
        q.put_nowait(1)
        return q.join, None

    def group_join():
        g = sc.TaskGroup()
        yield g.spawn(sleep, math.inf)
        return g.join, None

    def joining():
        t = yield spawn(sleep, math.inf)
        return (lambda: join(t)), t

    return {
        "Event.wait": simple(lambda: sc.Event().wait),
        "Lock.acquire": held_lock(sc.Lock),
        "RLock.acquire": held_lock(sc.RLock),
        "Semaphore.acquire": simple(lambda: sc.Semaphore(0).acquire),
        "Condition.wait": lambda: (yield from _wrap(condition())),
        "Barrier.wait": simple(lambda: sc.Barrier(2).wait),
        "Queue.get": simple(lambda: sc.Queue().get),
        "Queue.put": lambda: (yield from _wrap_plain(full_queue)),
        "Queue.join": lambda: (yield from _wrap_plain(unfinished_queue)),
        "TaskGroup.join": group_join,
        "join": joining,
    }


def _hold(lock):
    yield lock.acquire()
    try:
        yield sleep(math.inf)
    finally:
        lock.release()


def _wrap(gen):
    return (yield from gen)


def _wrap_plain(fn):
    return fn()
    yield


TOOLKIT = _toolkit_ops()


@pytest.mark.parametrize("how", ["kill", "timeout"])
@pytest.mark.parametrize("op", sorted(TOOLKIT))
def test_every_blocking_toolkit_method_can_be_killed_and_timed_out(op, how):
    trace = []

    def victim(make_trap):
        try:
            yield make_trap()
        except kernel.Cancelled as e:
            trace.append(type(e).__name__)
            raise

    def main():
        make_trap, helper = yield from TOOLKIT[op]()
        if how == "kill":
            t = yield spawn(victim, make_trap)
            yield sleep(0.002)
            yield kill(t)
            result = t.state
        else:
            try:
                with timeout(0.002):
                    yield from victim(make_trap)
            except TimeoutError:
                result = "TimeoutError"
        if helper is not None:
            yield kill(helper)
        return result

    with kernel.Kernel() as k:
        result = k.run(main)
        assert k.poller.waiting == 0 and k.timers.live == 0 and not k.tasks
    if how == "kill":
        assert result is kernel.TaskState.EXITED and trace == ["Cancelled"]
    else:
        assert result == "TimeoutError" and trace == ["TimedOut"]
