"""The thread pool (run_in_thread, ThreadPool, getaddrinfo) and the door into the
kernel from other threads (Kernel.call_from_thread)."""

from __future__ import annotations

import functools
import socket
import threading
import time

import pytest

import kernel
from conftest import run
from kernel.scopes import current_kernel
from syscalls import Event, join, kill, move_on_after, sleep, spawn, timeout, wait_on
from syscalls.threads import (
    ThreadPool,
    _call,
    getaddrinfo,
    run_in_thread,
    set_thread_limit,
    thread_pool,
)

# Bound for every wait on a real thread in these tests: long enough never to be hit.
LONG = 5.0


def boom(message):
    raise ValueError(message)


# ── Results and exceptions ───────────────────────────────────────────────


def test_result_generator_task(poller):
    def main():
        a = yield run_in_thread(pow, 2, 10)
        b = yield run_in_thread(sorted, [3, 1, 2], reverse=True)
        return a, b, threading.current_thread() is threading.main_thread()

    assert run(main, poller=poller) == (1024, [3, 2, 1], True)


def test_result_async_task(poller):
    async def main():
        name = await run_in_thread(lambda: threading.current_thread().name)
        return name, await run_in_thread(divmod, 7, 2)

    name, q = run(main, poller=poller)
    assert name == "yieldos-worker" and q == (3, 1)


def test_exception_is_raised_in_the_task():
    def main():
        with pytest.raises(ValueError, match="from the thread") as info:
            yield run_in_thread(boom, "from the thread")
        return [frame.name for frame in info.traceback]

    assert "boom" in run(main)  # the traceback reaches into the worker's call


async def _async_raises():
    with pytest.raises(ZeroDivisionError):
        await run_in_thread(lambda: 1 / 0)
    return "ok"


def test_exception_async_task():
    assert run(_async_raises) == "ok"


def test_waiting_only_for_a_thread_is_no_deadlock(poller):
    def main():
        yield run_in_thread(time.sleep, 0.05)  # no fd, no timer, no other task
        return "slept"

    assert run(main, poller=poller) == "slept"


def test_other_tasks_run_while_a_thread_works():
    trace = []

    def ticker():
        for i in range(3):
            trace.append(f"tick {i}")
            yield sleep(0.001)

    def main():
        release = threading.Event()
        t = yield spawn(ticker)
        job = yield spawn(run_in_thread, release.wait, LONG)
        yield join(t)
        release.set()  # only now can the thread finish
        assert (yield join(job)) is True
        trace.append("thread done")

    run(main)
    assert trace == ["tick 0", "tick 1", "tick 2", "thread done"]


# ── The bound ────────────────────────────────────────────────────────────


def test_fifty_jobs_on_four_workers_all_complete_at_most_four_at_once():
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return i * i

    def one(i):
        return (yield run_in_thread(work, i))

    def main():
        set_thread_limit(4)
        tasks = []
        for i in range(50):
            tasks.append((yield spawn(one, i)))
        results = []
        for t in tasks:
            results.append((yield join(t)))
        return results, thread_pool().workers

    results, workers = run(main)
    assert results == [i * i for i in range(50)]
    assert 2 <= peak[0] <= 4  # (4 unless the machine is very busy)
    assert workers <= 4


def test_jobs_beyond_the_bound_start_in_fifo_order():
    started = []

    def one(i):
        yield run_in_thread(started.append, i)

    def main():
        set_thread_limit(1)
        tasks = []
        for i in range(20):
            tasks.append((yield spawn(one, i)))
        for t in tasks:
            yield join(t)

    run(main)
    assert started == list(range(20))


def test_thread_pool_object_and_its_limit():
    pool = ThreadPool(2, idle_seconds=0.05)
    with pytest.raises(ValueError):
        pool.max_workers = 0
    with pytest.raises(ValueError):
        ThreadPool(True)

    async def main():
        a = await pool.run(int, "42")
        b = await pool.run(int, "ff", base=16)
        return a, b

    assert run(main) == (42, 255)
    assert "ThreadPool" in repr(pool)
    deadline = time.monotonic() + LONG
    while pool.workers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.workers == 0  # idle workers end by themselves


def test_raising_the_limit_starts_workers_for_waiting_jobs():
    pool = ThreadPool(1)
    release = threading.Event()

    def main():
        first = yield spawn(pool.run, release.wait, LONG)
        second = yield spawn(pool.run, lambda: "second")
        yield sleep(0.01)
        pool.max_workers = 2  # the second job need not wait for the first any more
        assert (yield join(second)) == "second"
        release.set()
        assert (yield join(first)) is True

    run(main)


# ── Kill and timeouts: the task leaves at once, the late result is dropped ──


def _blocked_job_kernel_run(poller, stop_waiting):
    """Run a task that waits on a thread blocked until released; ``stop_waiting(child)``
    ends the wait from main. Returns what happened, checked by the callers."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    outcome = {}

    def blocking():
        started.set()
        release.wait(LONG)
        finished.set()
        return "late"

    def child():
        try:
            outcome["result"] = yield run_in_thread(blocking)
        except BaseException as exc:
            outcome["raised"] = type(exc)
            raise

    def main():
        t = yield spawn(child)
        while not started.is_set():
            yield sleep(0.001)
        t0 = time.monotonic()
        yield from stop_waiting(t)
        outcome["left_after"] = time.monotonic() - t0

    with kernel.Kernel(poller=poller) as k:
        t0 = time.monotonic()
        try:
            k.run(main)
        finally:
            outcome["run_time"] = time.monotonic() - t0
            outcome["still_running"] = not finished.is_set()
            release.set()
        assert finished.wait(LONG)
        time.sleep(0.01)  # let the worker drop the result
        outcome["posted"] = len(k.door.calls)
        outcome["expected"] = k.door.external
    return outcome


def test_kill_resumes_the_task_at_once_and_drops_the_late_result(poller):
    def stop_waiting(child):
        yield kill(child)

    out = _blocked_job_kernel_run(poller, stop_waiting)
    assert out["raised"] is kernel.Cancelled
    assert "result" not in out
    assert out["left_after"] < 1 and out["run_time"] < 1
    assert out["still_running"]  # the run ended while the thread was still busy
    assert out["posted"] == 0  # nothing was posted to the (closed) kernel
    assert out["expected"] == 0  # expect_call was balanced


def test_timeout_resumes_the_task_at_once(poller):
    def child_with_timeout():
        with timeout(0.02):
            yield run_in_thread(time.sleep, LONG / 10)

    def main():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            yield from child_with_timeout()
        return time.monotonic() - t0

    assert run(main, poller=poller) < 0.3

    # The same through the helper, with a deadline in the waiting task itself.
    def stop_by_deadline(child):
        with move_on_after(0.02):
            yield join(child)
        yield kill(child)

    out = _blocked_job_kernel_run(poller, stop_by_deadline)
    assert out["raised"] is kernel.Cancelled
    assert out["posted"] == 0 and out["expected"] == 0


def test_abandoned_job_does_not_hide_a_deadlock():
    """Once the only task waiting on a thread has left, nothing can wake main:
    Deadlock comes at once, not when the thread finally finishes."""
    release = threading.Event()

    def main():
        with move_on_after(0.01):
            yield run_in_thread(release.wait, LONG)
        t0 = time.monotonic()
        try:
            yield Event().wait()
        except kernel.Deadlock:
            return time.monotonic() - t0

    try:
        assert run(main) < 1
    finally:
        release.set()


def test_a_queued_job_whose_task_left_never_runs():
    release = threading.Event()
    ran = []

    def main():
        set_thread_limit(1)
        first = yield spawn(run_in_thread, release.wait, LONG)
        second = yield spawn(run_in_thread, ran.append, "second")
        yield sleep(0.01)
        yield kill(second)  # still queued behind the first
        release.set()
        yield join(first)
        third = yield run_in_thread(ran.append, "third")  # the worker moved past it
        return third

    run(main)
    assert ran == ["third"]


def test_result_delivered_then_kill_keeps_the_result():
    """A task woken with its result keeps it; the kill lands at its next trap."""
    trace = []

    def child():
        try:
            trace.append((yield run_in_thread(lambda: "result")))
            yield sleep(LONG)
        except kernel.Cancelled:
            trace.append("cancelled")

    def main():
        k = current_kernel()
        t = yield spawn(child)
        yield sleep(0)  # the child waits for its job
        deadline = time.monotonic() + LONG
        while not k.door.calls and time.monotonic() < deadline:
            time.sleep(0.001)  # (blocks the kernel on purpose until the job is posted)
        yield sleep(0)  # the delivery wakes the child, queued behind this task
        assert t.state is kernel.TaskState.READY
        yield kill(t)

    run(main)
    assert trace == ["result", "cancelled"]


# ── DNS ──────────────────────────────────────────────────────────────────


def test_getaddrinfo_localhost():
    def main():
        return (yield getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))

    infos = run(main)
    assert infos
    for family, type_, _proto, _name, addr in infos:
        assert family in (socket.AF_INET, socket.AF_INET6)
        assert type_ == socket.SOCK_STREAM
        assert addr[1] == 80


def test_getaddrinfo_error_is_raised_in_the_task():
    async def main():
        with pytest.raises(socket.gaierror):
            await getaddrinfo("no-such-host.invalid", 80)

    run(main)


# ── The door: call_from_thread from many threads at once ─────────────────


def test_call_from_thread_hammer(poller):
    n_threads, n_calls = 4, 2000
    seen = []
    finished = []

    def main():
        k = current_kernel()
        chan = ("hammer", id(seen))

        def arrive(t, i):
            seen.append((t, i))
            k.wakeup(chan)

        def last(t):
            finished.append(t)
            k.call_arrived()
            k.wakeup(chan)

        def hammer(t):
            for i in range(n_calls):
                k.call_from_thread(functools.partial(arrive, t, i))
            k.call_from_thread(functools.partial(last, t))

        threads = [threading.Thread(target=hammer, args=(t,)) for t in range(n_threads)]
        for th in threads:
            k.expect_call()  # each thread's `last` call balances one
            th.start()
        while len(finished) < n_threads:
            yield wait_on(chan)
        for th in threads:
            th.join(LONG)
        return k.door.external

    assert run(main, poller=poller) == 0
    assert len(seen) == n_threads * n_calls
    assert set(seen) == {(t, i) for t in range(n_threads) for i in range(n_calls)}
    for t in range(n_threads):  # each thread's calls run in the order it posted them
        assert [i for u, i in seen if u == t] == list(range(n_calls))
    assert sorted(finished) == list(range(n_threads))


def test_lowering_the_limit_ends_the_extra_workers():
    pool = ThreadPool(3, idle_seconds=LONG)
    barrier = threading.Barrier(3, timeout=LONG)

    def main():
        tasks = []
        for _ in range(3):  # three jobs that must run at once: three workers
            tasks.append((yield spawn(pool.run, barrier.wait)))
        for t in tasks:
            yield join(t)

    run(main)
    assert pool.workers == 3
    pool.max_workers = 1
    deadline = time.monotonic() + LONG
    while pool.workers > 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert pool.workers == 1


def test_kill_after_the_thread_posted_but_before_delivery():
    """The worker has posted the outcome, but the task is killed before the kernel
    runs the delivery: the task leaves, the discarded result is released, and the
    delivery, when it runs, does nothing."""
    discarded = []

    def child():
        yield from _call(thread_pool(), lambda: "late", (), {}, discard=discarded.append)

    def main():
        k = current_kernel()
        t = yield spawn(child)
        yield sleep(0)  # the child has submitted its job and waits
        deadline = time.monotonic() + LONG
        while not k.door.calls and time.monotonic() < deadline:
            time.sleep(0.001)  # (blocks the kernel on purpose: the delivery cannot run)
        assert k.door.calls
        yield kill(t)
        assert discarded == ["late"] and k.door.external == 0
        yield sleep(0)  # the delivery runs now, and must ignore the abandoned job
        assert not k.door.calls and k.door.external == 0
        return t.exception

    assert isinstance(run(main), kernel.Cancelled)
    assert discarded == ["late"]
