"""The emergency stop (`Kernel._abort`): a kernel bug or a forced Ctrl-C closes every
task without scheduling. Nothing handed to a task that has not run yet may vanish:
as with a kill, the task receives it and is closed at its next trap.

A kernel bug is simulated by a `gettid` whose service raises `KernelPanic`.
"""

from __future__ import annotations

import math
import signal

import pytest

import kernel
from conftest import run
from kernel import syscall
from kernel.traps import GetTid
from syscalls import gettid, join, sched_yield, sleep, spawn
from syscalls.queues import Queue
from syscalls.sync import Lock, Semaphore


@pytest.fixture
def kernel_bug(monkeypatch):
    """From now on, ``yield gettid()`` is a kernel bug: the run aborts with KernelPanic."""

    def broken_gettid(k, task, trap):
        raise kernel.KernelPanic("simulated kernel bug")

    monkeypatch.setitem(syscall.TRAP_TABLE, GetTid, broken_gettid)


def test_an_item_handed_to_a_getter_that_has_not_run_is_delivered_before_the_close(
    kernel_bug,
):
    trace = []
    q = Queue()

    def getter():
        try:
            item = yield q.get()
            trace.append(f"got {item}")
            yield sched_yield()  # the abort closes it here: this trap is never served
            trace.append("never")  # pragma: no cover
        finally:
            trace.append("getter closed")

    def main():
        yield spawn(getter)
        yield sched_yield()  # the getter parks on the empty queue
        q.put_nowait("x")  # handed straight to it: it is READY, holding "x"
        yield gettid()

    with pytest.raises(kernel.KernelPanic):
        run(main)
    assert trace == ["got x", "getter closed"]
    assert q.empty()


def test_a_lock_handed_to_a_waiter_that_has_not_run_is_released_by_its_finally(kernel_bug):
    trace = []
    lock = Lock()

    def waiter(name):
        yield lock.acquire()
        try:
            trace.append(f"{name} has the lock")
            yield sched_yield()
            trace.append("never")  # pragma: no cover
        finally:
            trace.append(f"{name} releases")
            lock.release()

    def main():
        yield lock.acquire()
        yield spawn(waiter, "b")
        yield spawn(waiter, "c")
        yield sched_yield()  # both park, b first
        lock.release()  # handed to b, which has not run yet
        assert lock.owner is not None and lock.owner.name.endswith("waiter")
        yield gettid()

    with pytest.raises(kernel.KernelPanic):
        run(main)
    assert trace == ["b has the lock", "b releases"]  # c was closed while it waited
    assert not lock.locked() and not lock._waiters


def test_a_permit_handed_to_a_waiter_that_has_not_run_comes_back(kernel_bug):
    sem = Semaphore(1)

    def waiter():
        yield sem.acquire()
        try:
            yield sched_yield()
        finally:
            sem.release()

    def main():
        yield sem.acquire()
        yield spawn(waiter)
        yield sched_yield()
        sem.release()  # handed to the waiter
        assert sem.value == 0
        yield gettid()

    with pytest.raises(kernel.KernelPanic):
        run(main)
    assert sem.value == 1


def test_ctrl_c_during_shutdown_closes_a_task_joining_an_older_one_in_its_cleanup():
    """A forced Ctrl-C while cleanups wait: the older task is closed first, then the
    one that joins it from its cleanup. Neither may trip up the abort."""
    trace = []

    def stubborn():
        try:
            yield sleep(math.inf)
        finally:
            yield sleep(3600)  # a cleanup that waits (a timer: no deadlock to close it)
            trace.append("never")  # pragma: no cover

    def joiner(t):
        try:
            yield sleep(math.inf)
        finally:
            try:
                yield join(t)
            finally:
                trace.append("joiner closed")

    def interrupter():
        try:
            yield sleep(math.inf)
        finally:
            signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, during shutdown
            yield sleep(3600)

    def main():
        t = yield spawn(stubborn)
        yield spawn(joiner, t)
        yield spawn(interrupter)
        yield sched_yield()

    with pytest.raises(KeyboardInterrupt):
        run(main)
    assert trace == ["joiner closed"]
