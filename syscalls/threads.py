"""The thread pool: running blocking code without stopping the other tasks.

The kernel's thread must never block except in the poller, where it waits
for *every* task at once. But some work blocks and has no fd to wait on:
a CPU-bound function, a C library call, a DNS lookup (``getaddrinfo`` is a
plain blocking libc call), or reading a regular file (the disk is always
"ready" to epoll, which refuses regular files outright: a read that misses
the page cache simply blocks). Such work goes to a *worker thread*, and the
task waits for it as it would wait for a socket::

    def main():
        digest = yield run_in_thread(hash_file, "big.iso")     # others run meanwhile
        addrs = yield getaddrinfo("example.com", 443)

How a job travels (every arrow is one of the kernel's public entry points):

1. The task makes a `_Job`, tells the kernel a call will come from another
   thread (``Kernel.expect_call``: while one is expected, a kernel with
   nothing else to do sleeps instead of reporting a deadlock), hands the
   job to the pool, and parks on the job as a wait channel.
2. A worker runs the function and *posts* the outcome with
   ``Kernel.call_from_thread``: the only thing another thread may do to a
   kernel, which runs the posted function in its own thread, between two
   passes of its loop (see kernel/door.py).
3. The posted function records the outcome, balances ``expect_call`` with
   ``call_arrived``, and wakes the task, which returns the result or
   raises the function's exception.

A task killed or timed out while it waits resumes *at once*: a thread
cannot be interrupted, so the task does not wait for it. It *abandons* the
job instead, and the first of two things to happen decides who settles it,
under the job's lock (the one point where the two threads meet):

* the task abandons first: it balances ``expect_call`` itself; a worker
  that later finds the job abandoned skips it if it has not started, or
  drops its late result, and never touches the kernel, which may be closed
  by then;
* the worker posts first: the abandoning task still balances
  ``expect_call`` (the delivery may now never run, if the run ends) and
  releases the result, and the posted function, finding the job
  abandoned, does nothing. (If the delivery ran first, it balanced
  ``expect_call``; the task only releases the result it will never take.)

Either way ``call_arrived`` is called exactly once per ``expect_call``,
and an abandoned job never holds the kernel back: a run whose tasks have
all exited ends even if a worker is still busy with a dropped job.

The pool is bounded: at most ``max_workers`` threads run jobs; more jobs
wait in FIFO order. Each kernel gets its own default pool when a task first
needs one (`run_in_thread`, `set_thread_limit`). The kernel has no hook to
say it is closing, so the pool does not depend on one: its workers are
*daemon* threads (they never keep the process alive at exit) that end by
themselves after ``IDLE_SECONDS`` without work, and a pool holds no
reference to its kernel, so a closed kernel and its pool can be collected.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional, TypeVar

from kernel.scopes import current_kernel
from syscalls import operation, wait_on

if TYPE_CHECKING:
    from kernel.kernel import Kernel

__all__ = [
    "ThreadPool",
    "getaddrinfo",
    "run_in_thread",
    "set_thread_limit",
    "thread_pool",
]

T = TypeVar("T")
log = logging.getLogger("yieldos")

#: Seconds an idle worker waits for a new job before its thread ends. Long
#: enough that a steady trickle of jobs reuses threads, short enough that a
#: finished program's workers are gone soon after.
IDLE_SECONDS = 5.0


def default_max_workers() -> int:
    """The default bound: as `concurrent.futures.ThreadPoolExecutor`, min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


class _JobState(enum.Enum):
    QUEUED = "queued"  # in the pool's queue, or running in a worker
    POSTED = "posted"  # finished; the delivery is posted to the kernel
    DONE = "done"  # delivered: the outcome is recorded and the task woken
    ABANDONED = "abandoned"  # the task stopped waiting (killed, timed out, closed)


class _Job:
    """One call to run in a worker, and the wait channel its task parks on.

    ``state`` moves QUEUED -> POSTED -> DONE, and to ABANDONED from any of
    these if the task stops waiting before it has taken the outcome.
    QUEUED -> POSTED is the worker's move and -> ABANDONED the task's; both
    are made under ``lock``. The rest happens in the kernel's thread only.
    """

    __slots__ = (
        "kernel",
        "fn",
        "args",
        "kwargs",
        "state",
        "lock",
        "result",
        "error",
        "discard",
        "essential",
    )

    def __init__(
        self,
        k: Kernel,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        discard: Optional[Callable[[Any], None]],
        essential: bool,
    ) -> None:
        self.kernel = k
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.state = _JobState.QUEUED
        self.lock = threading.Lock()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.discard = discard  # called (in the worker) on a result nobody will receive
        self.essential = essential  # run even if abandoned before it started

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"<thread job {name} {self.state.value}>"

    # ── In the worker ────────────────────────────────────────────────────

    def execute(self) -> None:
        """Run the function, then post the outcome to the kernel, or drop it."""
        if self.state is _JobState.ABANDONED and not self.essential:
            return  # nobody waits for it any more: do not even start
        result: Any = None
        error: Optional[BaseException] = None
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # raised in the task, whatever it is
            error = exc
        with self.lock:
            self.result, self.error = result, error
            if self.state is not _JobState.ABANDONED:
                self.state = _JobState.POSTED
                self.kernel.call_from_thread(self.deliver)
                return
        # Discussion: abandoned. The kernel may be closed by now, so it is not
        # touched; only a result that owns a resource (an open file) is released.
        self.drop()

    def drop(self) -> None:
        """Release a result nobody will receive (``discard``), and forget the outcome."""
        result, error = self.result, self.error
        self.result = self.error = None
        if error is None and self.discard is not None:
            try:
                self.discard(result)
            except Exception:  # nobody to raise it in: the task has left
                log.exception("releasing the late result of %r failed", self)

    # ── In the kernel's thread ───────────────────────────────────────────

    def deliver(self) -> None:
        """The posted function: record that the outcome is in, and wake the task."""
        if self.state is _JobState.ABANDONED:
            return  # the task left; it has already called call_arrived
        assert self.state is _JobState.POSTED, f"delivering {self!r}"
        self.state = _JobState.DONE
        self.kernel.call_arrived()
        self.kernel.wakeup(self)

    def abandon(self) -> None:
        """The task stops waiting without the outcome (an exception hit it at its
        wait): settle ``expect_call`` unless the delivery did, and release a result
        that is already in, since nobody will take it."""
        with self.lock:
            previous, self.state = self.state, _JobState.ABANDONED
        if previous is not _JobState.DONE:
            self.kernel.call_arrived()  # a delivery still to run will find it abandoned
        if previous is not _JobState.QUEUED:
            # Discussion: DONE happens too. A kill makes the task READY with the
            # exception to raise; the delivery may run before the task does.
            self.drop()

    def outcome(self) -> Any:
        """The function's result, or raise its exception (once)."""
        error, self.error = self.error, None  # no cycle through the traceback
        if error is not None:
            raise error
        return self.result


class ThreadPool:
    """A bounded set of daemon worker threads that run jobs in FIFO order.

    ``ThreadPool(4)`` runs at most 4 jobs at once; the others wait their turn.
    Threads are started only when a job finds no idle worker, and end after
    ``idle_seconds`` without work. `ThreadPool.run` is the operation that
    runs a function in it; `run_in_thread` uses the kernel's default pool.
    A pool holds no kernel: one pool may serve several kernels.
    """

    def __init__(
        self, max_workers: Optional[int] = None, *, idle_seconds: float = IDLE_SECONDS
    ) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # signalled when a job is queued
        self._jobs: collections.deque[_Job] = collections.deque()  # waiting, oldest first
        self._workers = 0  # threads alive
        self._idle = 0  # threads waiting in _work for a job
        self._max = 0
        self._idle_seconds = idle_seconds
        self.max_workers = default_max_workers() if max_workers is None else max_workers

    @property
    def max_workers(self) -> int:
        """How many jobs may run at once. Lowering it lets the busy workers finish
        their jobs; raising it starts workers for jobs already waiting."""
        return self._max

    @max_workers.setter
    def max_workers(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a thread pool needs max_workers >= 1, not {n!r}")
        with self._lock:
            self._max = n
            while self._workers < self._max and len(self._jobs) > self._idle:
                self._start_worker()
            if self._workers > self._max:
                self._work.notify_all()  # idle extras end now, busy ones after their job

    @property
    def workers(self) -> int:
        """How many worker threads are alive now (busy or idle)."""
        return self._workers

    def __repr__(self) -> str:
        return (
            f"<ThreadPool {self._workers}/{self._max} workers, {self._idle} idle, "
            f"{len(self._jobs)} jobs waiting>"
        )

    @operation
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Generator[Any, Any, T]:
        """``result = yield pool.run(fn, *args, **kwargs)``: `run_in_thread`, in this pool."""
        return (yield from _call(self, fn, args, kwargs))

    # ── Inside the pool ──────────────────────────────────────────────────

    def submit(self, job: _Job) -> None:
        """Queue ``job``; wake an idle worker for it, or start one if the bound allows."""
        with self._lock:
            self._jobs.append(job)
            if len(self._jobs) > self._idle and self._workers < self._max:
                self._start_worker()
            else:
                self._work.notify()

    def _start_worker(self) -> None:
        """Start one more worker (``_lock`` held)."""
        thread = threading.Thread(target=self._worker, name="yieldos-worker", daemon=True)
        self._workers += 1
        try:
            thread.start()
        except BaseException:
            self._workers -= 1
            raise

    def _worker(self) -> None:
        """A worker's life: take the oldest job, run it, again; end when idle too long
        or when the pool has more workers than its (lowered) bound."""
        while True:
            with self._lock:
                # The pool's own time (idle threads), not the kernel's clock: real seconds.
                deadline = time.monotonic() + self._idle_seconds
                while not self._jobs:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._workers > self._max:
                        self._workers -= 1
                        return
                    self._idle += 1
                    try:
                        self._work.wait(remaining)
                    finally:
                        self._idle -= 1
                job = self._jobs.popleft()
            try:
                job.execute()
            except BaseException:  # a bug, not the job's error (execute catches those)
                log.exception("thread pool worker failed running %r", job)
            with self._lock:
                if self._workers > self._max:
                    self._workers -= 1
                    return


def _call(
    pool: ThreadPool,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    discard: Optional[Callable[[T], None]] = None,
    essential: bool = False,
) -> Generator[Any, Any, T]:
    """Run ``fn(*args, **kwargs)`` in ``pool`` and wait for it (the body of every
    operation here). ``discard`` releases a result whose task left before it came;
    an ``essential`` job runs even if its task left before it started."""
    k = current_kernel()
    job = _Job(k, fn, args, kwargs, discard, essential)
    k.expect_call()
    try:
        pool.submit(job)
        while job.state is not _JobState.DONE:
            yield wait_on(job)
    except BaseException:  # killed, timed out, closed (GeneratorExit), or no thread
        job.abandon()
        raise
    result: T = job.outcome()
    return result


# ── The kernel's default pool ────────────────────────────────────────────

_pools: weakref.WeakKeyDictionary[Kernel, ThreadPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()  # kernels in different threads may ask at once


def thread_pool() -> ThreadPool:
    """The running kernel's default pool (made on first use). A plain call, in a task."""
    k = current_kernel()
    with _pools_lock:
        pool = _pools.get(k)
        if pool is None:
            pool = _pools[k] = ThreadPool()
    return pool


def set_thread_limit(n: int) -> None:
    """Let at most ``n`` jobs of `run_in_thread` (and files, and DNS) run at once in
    the running kernel; more wait in FIFO order. A plain call, in a task."""
    thread_pool().max_workers = n


@operation
def run_in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Generator[Any, Any, T]:
    """Run the blocking ``fn(*args, **kwargs)`` in a worker thread; the other tasks
    run meanwhile. The result is what ``fn`` returns; what it raises is raised
    here (``x = yield run_in_thread(f, 1)`` or ``x = await run_in_thread(f, 1)``).

    The kernel's default pool runs at most `set_thread_limit` jobs at once
    (default min(32, CPUs + 4)); others queue, first come first served. If the
    task is killed or times out while it waits, it resumes at once: a job not
    yet started never starts, one already running cannot be stopped, and its
    late result is dropped. Only ``fn`` runs in the thread: it must not use
    the kernel (use ``Kernel.call_from_thread`` for that).
    """
    return (yield from _call(thread_pool(), fn, args, kwargs))


@operation
def getaddrinfo(
    host: Optional[str],
    port: Any,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> Generator[Any, Any, list[tuple[Any, ...]]]:
    """`socket.getaddrinfo` in the thread pool: the result is the same list of
    ``(family, type, proto, canonname, sockaddr)`` tuples.

    Name lookup is a blocking library call (files, then DNS over the network)
    that gives no fd to wait on, so it runs in a worker thread. A lookup whose
    task is killed finishes in its thread; its answer is dropped.
    """
    result: list[tuple[Any, ...]] = yield from _call(
        thread_pool(), socket.getaddrinfo, (host, port, family, type, proto, flags), {}
    )
    return result
