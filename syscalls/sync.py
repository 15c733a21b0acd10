"""Synchronization: Event, Lock, RLock, Semaphore, BoundedSemaphore, Condition, Barrier.

These are the classic OS primitives, rebuilt from public kernel mechanisms:
wait channels (`wait_on` / `wakeup`, see kernel/wait.py), conditional waits
and operations with a fast path. They never touch kernel internals, so they
are also a worked example of building your own.

**Fast path, slow path.** As a futex-based mutex, each primitive first tries
to complete at once, in the kernel, at the trap: a free lock, a free permit,
a set event cost one trap and no generator. Only a task that must wait pays
for more. Event and Semaphore are *conditional waits*
(``wait_on(channel, attempt)``: one trap object, made once, serves every
call): the attempt takes a permit or sees the flag, or the task parks on the
primitive's channel, in the same step. Lock and RLock are operations with a
fast path (``@operation(attempt=...)``): their waiters need a name, so the
slow path is a short subroutine that queues a `_Waiter` and parks on it.

**Hand-off.** Whoever makes progress possible (``release()``, ``set()``,
``notify()``...) wakes the oldest waiter and *gives it* what it waited for
(the lock's ownership, a permit) with the wakeup: ``wakeup(chan, 1, True)``
resumes it with True as the result of its wait. The woken task does not
compete again for the thing: it already has it. That is what makes the
primitives fair (no barging: a task arriving later finds the lock owned, or
no free permit, and queues behind) and what makes cancellation safe:

* A waiter killed or timed out while BLOCKED is taken off its channel by the
  kernel at once, so a wakeup never hands it anything: it goes to the next
  waiter. (A lock's waiter left in the deque is skipped, as ``wakeup``
  answers 0 for it, and takes itself out when it unwinds.)
* A waiter that was handed something (it is READY) and is killed before it
  runs keeps what it was handed; `kernel.Cancelled` comes at its next trap.
  So a generator task must release in a ``finally`` right after acquiring.
  An emergency stop (`Kernel._abort`) does the same: the task gets what it
  was handed before it is closed at its next trap.

Invariants: an unlocked lock and a semaphore with a free permit have no
waiters (every release hands off first); a lock's owner is a task that was
given it by its fast path or by a hand-off, never one still parked.

Blocking methods are `operation`s, so they work in both task styles::

    def worker(lock):                 # generator task
        yield lock.acquire()
        try:
            ...                       # critical section
        finally:
            lock.release()

    async def worker(lock):           # async def task
        async with lock:
            ...

A plain ``with lock:`` cannot work (acquiring may have to wait, and waiting
needs a ``yield``); it raises a `TypeError` saying what to write instead.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Generator, Optional, TypeVar, Union

from kernel import Task, TaskState
from kernel.traps import Trap, WaitOn
from syscalls import WOULD_BLOCK, current_task, operation, shield, wait_on, waiting, wakeup

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
]

T = TypeVar("T")


# ── Waiters and channels: the machinery shared by the primitives ─────────


class _Channel:
    """The wait channel of a primitive whose waiters are all alike (an Event's, a
    Semaphore's, a Condition's): the kernel keeps its tasks in arrival order.
    The repr is what a deadlock report and ``ps`` show. Hashed by identity."""

    __slots__ = ("what", "primitive")

    def __init__(self, what: str, primitive: object) -> None:
        self.what = what  # for people: "waiting for", ...
        self.primitive = primitive

    def __repr__(self) -> str:
        return f"<{self.what} {self.primitive!r}>"


class _Waiter:
    """One waiting task's place in a primitive's FIFO, and its private wait channel:
    for the primitives that must know *who* waits (a lock's next owner) or give
    each waiter its own outcome (a Barrier's).

    ``handed`` turns True when a waker gives the task what it waits for;
    ``value`` carries anything more (the Barrier's outcome). Hashed by identity.
    """

    __slots__ = ("what", "primitive", "task", "queued", "handed", "value")

    def __init__(self, what: str, primitive: object, task: Task) -> None:
        self.what = what  # for people: "waiting to acquire", ...
        self.primitive = primitive
        self.task = task  # who waits (the next owner, for a lock)
        self.queued = False  # in the primitive's deque
        self.handed = False  # a waker gave it what it waits for
        self.value: Any = None

    def __repr__(self) -> str:
        # Deadlock messages print this (the channel the task waits on): it names the holder.
        return f"<{self.what} {self.primitive!r}>"


def _park(
    waiters: deque[_Waiter], w: _Waiter, abandon: Callable[[], None]
) -> Generator[Any, Any, None]:
    """Queue ``w`` and wait until a waker hands it something (use with ``yield from``).

    If the wait is interrupted (kill, timeout, GeneratorExit) before that, take
    ``w`` out of the queue and call ``abandon()``. Then re-raise.
    """
    waiters.append(w)
    w.queued = True
    try:
        while not w.handed:  # as xv6's sleep: a wakeup is only a hint to look again
            yield wait_on(w)
    except BaseException:
        if w.queued:
            w.queued = False
            waiters.remove(w)
            abandon()
        raise


def _who(task: Task) -> str:
    """A task, as a primitive's repr names its holder."""
    dead = " (exited!)" if task.state is TaskState.EXITED else ""
    return f"tid {task.tid} {task.name!r}{dead}"


def _waiting(n: int) -> str:
    return f", {n} waiting" if n else ""


class _Acquirable:
    """``async with x:`` for the primitives that are acquired and released, and a
    helpful error for a plain ``with x:``, which cannot wait."""

    __slots__ = ()
    _var = "lock"  # what the TypeError calls the object: `yield lock.acquire()`

    def acquire(self) -> Trap[bool]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __enter__(self) -> None:
        name, var = type(self).__name__, self._var
        raise TypeError(
            f"a {name} cannot be used with a plain `with`: acquiring it may have to wait, "
            f"and waiting needs a yield. In a generator task write `yield {var}.acquire()` "
            f"followed by `try: ... finally: {var}.release()`; in an async def task write "
            f"`async with {var}:`"
        )

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover (never entered)
        pass


# ── Event ────────────────────────────────────────────────────────────────


class Event:
    """A flag that tasks can wait to see set: "the config is loaded", "shutdown began".

    ``set()`` wakes every task waiting in ``wait()``; while the flag is set,
    ``wait()`` returns at once. ``clear()`` lowers it again (the tasks already
    woken still return). It is the kernel's wait channel with memory::

        def loader(ready):
            ...
            ready.set()

        def user(ready):
            yield ready.wait()

    ``wait()`` is one conditional wait: the kernel looks at the flag and parks
    the task only if it is down, in the same step, so a ``set()`` can never
    slip in between the look and the sleep.
    """

    __slots__ = ("_flag", "_channel", "_wait")

    def __init__(self) -> None:
        self._flag = False
        self._channel = _Channel("waiting for", self)
        # The wait trap: made once, as traps are immutable (a cycle the GC collects).
        self._wait: WaitOn[bool] = wait_on(self._channel, self._wait_now)

    def __repr__(self) -> str:
        state = "set" if self._flag else "unset"
        return f"<Event {state}{_waiting(waiting(self._channel))}>"

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Raise the flag and wake every waiting task (a plain call: it never blocks)."""
        self._flag = True
        wakeup(self._channel, None, True)  # each wait returns True, even if cleared meanwhile

    def clear(self) -> None:
        """Lower the flag: later ``wait()`` calls block until the next ``set()``."""
        self._flag = False

    def _wait_now(self) -> bool:
        return True if self._flag else WOULD_BLOCK

    def wait(self) -> WaitOn[bool]:
        """Block until the flag is set (at once if it is); the result is True."""
        return self._wait


# ── Locks ────────────────────────────────────────────────────────────────


class Lock(_Acquirable):
    """Mutual exclusion: at most one task at a time runs the code between
    ``acquire()`` and ``release()`` (a *critical section*).

    Tasks only switch at traps, so code without a ``yield``/``await`` is
    already atomic; a lock is for critical sections that block inside (a
    read-modify-write around a network call). The task that acquires it owns
    it, and only the owner may release it. It is not re-entrant: acquiring it
    again from the owner raises RuntimeError (use `RLock`). Waiters get the
    lock in arrival order, handed over directly by ``release()``::

        def transfer(lock, account):
            yield lock.acquire()
            try:
                balance = yield fetch(account)
                yield store(account, balance + 1)
            finally:
                lock.release()

    A free lock costs one trap and no generator (the fast path, run by the
    kernel at the trap); only a task that must wait runs the subroutine that
    queues it.
    """

    __slots__ = ("_owner", "_waiters")

    def __init__(self) -> None:
        self._owner: Optional[Task] = None  # None <=> unlocked
        self._waiters: deque[_Waiter] = deque()  # blocked acquires, oldest first

    def __repr__(self) -> str:
        if self._owner is None:
            return f"<{type(self).__name__} unlocked>"
        n = len(self._waiters)
        return f"<{type(self).__name__} locked by {_who(self._owner)}{_waiting(n)}>"

    def locked(self) -> bool:
        return self._owner is not None

    @property
    def owner(self) -> Optional[Task]:
        """The task holding the lock, or None."""
        return self._owner

    def _acquire_now(self) -> bool:
        """Acquire's fast path (the kernel runs it at the trap): take a free lock;
        WOULD_BLOCK if another task holds it."""
        me = current_task()
        owner = self._owner
        if owner is None:
            self._owner = me  # (no waiters: a release with waiters hands the lock on)
            return True
        if owner is me:
            raise RuntimeError(
                f"{self!r}: tid {me.tid} acquires a Lock it already holds "
                "(it would wait for ever); use an RLock"
            )
        return WOULD_BLOCK  # type: ignore[no-any-return]

    @operation(attempt=_acquire_now)
    def acquire(self) -> Generator[Any, Any, bool]:
        """Block until the lock is free and this task owns it; the result is True."""
        me = current_task()
        if self._owner is None or self._owner is me:  # (the fast path, when run alone)
            return self._acquire_now()
        w = _Waiter("waiting to acquire", self, me)
        self._waiters.append(w)
        try:
            yield WaitOn(w)  # wait_on(w), made directly: a release hands the lock over (True)
        except BaseException:
            _leave_line(self, w)
            raise
        assert self._owner is me, f"{self!r}: woken tid {me.tid} does not own it"
        return True

    def release(self) -> None:
        """Let go of the lock: the longest-waiting task gets it now (a plain call)."""
        if self._owner is not current_task():
            me = current_task()
            raise RuntimeError(f"{self!r}: tid {me.tid} releases a lock it does not hold")
        if self._waiters:
            self._pass_on()
        else:
            self._owner = None

    def _pass_on(self) -> None:
        self._owner = _hand_lock_on(self._waiters)

    # The protocol Condition uses to let go of the lock while it waits.
    def _is_owned(self) -> bool:
        return self._owner is current_task()

    def _release_save(self) -> int:
        self._pass_on()
        return 1

    def _acquire_restore(self, saved: int) -> Generator[Any, Any, None]:
        yield from self.acquire()


def _leave_line(lock: Union[Lock, RLock], w: _Waiter) -> None:
    """A lock's waiter ``w`` is unwinding from its wait (killed, timed out, closed):
    take it out of the line, or, had it been handed the lock after all, pass it on."""
    if lock._owner is w.task:
        # Discussion: the kernel never raises at the trap of a task it has woken (the
        # task keeps what it was handed; a kill comes at its next trap), and an
        # emergency stop lets it receive it first. Should a task still unwind here
        # holding the lock, pass the lock on rather than leak it.
        lock._pass_on()
        return
    try:
        lock._waiters.remove(w)
    except ValueError:
        pass  # a release popped it, found it leaving, and passed it over


def _hand_lock_on(waiters: deque[_Waiter]) -> Optional[Task]:
    """Give the lock to the oldest waiter still parked and wake it; return the new
    owner, or None if nobody is left. A waiter whose task was interrupted
    meanwhile (``wakeup`` finds it no longer parked) is skipped: it is unwinding."""
    while waiters:
        w = waiters.popleft()
        if wakeup(w, 1, True):
            return w.task
    return None


class RLock(_Acquirable):
    """A re-entrant lock: the owning task may acquire it again, and must release it
    as many times as it acquired it before another task gets it.

    Useful when a function that takes the lock calls another that takes it
    too. Otherwise it behaves as `Lock` (FIFO hand-off, owner-only release,
    a fast path when free)::

        def update(rlock, table):
            yield rlock.acquire()
            try:
                yield from helper_that_also_locks(rlock, table)
            finally:
                rlock.release()
    """

    __slots__ = ("_owner", "_count", "_waiters")
    _var = "rlock"

    def __init__(self) -> None:
        self._owner: Optional[Task] = None  # None <=> unlocked <=> _count == 0
        self._count = 0  # how many acquires the owner has not released yet
        self._waiters: deque[_Waiter] = deque()  # blocked acquires, oldest first

    def __repr__(self) -> str:
        if self._owner is None:
            return "<RLock unlocked>"
        n = len(self._waiters)
        return f"<RLock locked by {_who(self._owner)} (depth {self._count}){_waiting(n)}>"

    def locked(self) -> bool:
        return self._owner is not None

    @property
    def owner(self) -> Optional[Task]:
        return self._owner

    def _acquire_now(self) -> bool:
        """Acquire's fast path: one level more for the owner, or a free lock taken."""
        me = current_task()
        owner = self._owner
        if owner is me:
            self._count += 1
            return True
        if owner is None:
            self._owner, self._count = me, 1
            return True
        return WOULD_BLOCK  # type: ignore[no-any-return]

    @operation(attempt=_acquire_now)
    def acquire(self) -> Generator[Any, Any, bool]:
        """Block until this task owns the lock (at once if it already does); True."""
        me = current_task()
        if self._owner is None or self._owner is me:  # (the fast path, when run alone)
            return self._acquire_now()
        w = _Waiter("waiting to acquire", self, me)
        self._waiters.append(w)
        try:
            yield WaitOn(w)  # wait_on(w), made directly: a release hands the lock over (True)
        except BaseException:
            _leave_line(self, w)
            raise
        assert self._owner is me and self._count == 1, f"{self!r}: woken tid {me.tid}"
        return True

    def release(self) -> None:
        """Undo one ``acquire()``; the last one hands the lock to the next waiter."""
        me = current_task()
        if self._owner is not me:
            raise RuntimeError(f"{self!r}: tid {me.tid} releases an RLock it does not hold")
        self._count -= 1
        if self._count == 0:
            self._pass_on()

    def _pass_on(self) -> None:
        owner = self._owner = _hand_lock_on(self._waiters)
        self._count = 0 if owner is None else 1

    def _is_owned(self) -> bool:
        return self._owner is current_task()

    def _release_save(self) -> int:
        depth = self._count  # a Condition wait lets go of every level, and restores them
        self._pass_on()
        return depth

    def _acquire_restore(self, saved: int) -> Generator[Any, Any, None]:
        yield from self.acquire()
        self._count = saved


# ── Semaphores ───────────────────────────────────────────────────────────


class Semaphore(_Acquirable):
    """A counter of permits: ``acquire()`` takes one (waiting while there are none),
    ``release()`` gives one back. Dijkstra's P and V.

    Use it to bound concurrency: at most ``value`` tasks at a time inside.
    Permits are not owned: any task may release. A released permit goes
    straight to the longest-waiting task::

        def fetch(sem, url):
            yield sem.acquire()       # at most N fetches at once
            try:
                ...
            finally:
                sem.release()

    ``acquire()`` is one conditional wait, free permit or not: the kernel
    takes a permit at the trap, or parks the task on the semaphore's
    channel, where ``release()`` hands it one.
    """

    __slots__ = ("_value", "_channel", "_acquire")
    _var = "sem"

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError(f"{type(self).__name__} initial value must be >= 0, not {value}")
        self._value = value  # free permits; > 0 => no waiters
        self._channel = _Channel("waiting to acquire", self)
        # The acquire trap: made once, as traps are immutable (a cycle the GC collects).
        self._acquire: WaitOn[bool] = wait_on(self._channel, self._acquire_now)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} value={self._value}{_waiting(waiting(self._channel))}>"

    @property
    def value(self) -> int:
        """How many permits are free now."""
        return self._value

    def locked(self) -> bool:
        """True when ``acquire()`` would have to wait."""
        return self._value == 0

    def _acquire_now(self) -> bool:
        if self._value > 0:
            self._value -= 1
            return True
        return WOULD_BLOCK  # type: ignore[no-any-return]

    def acquire(self) -> WaitOn[bool]:
        """Take a permit, waiting for one if none is free; the result is True."""
        return self._acquire

    def release(self) -> None:
        """Give a permit back: to the longest-waiting task, else to the pool (a plain call)."""
        if not wakeup(self._channel, 1, True):
            self._value += 1


class BoundedSemaphore(Semaphore):
    """A `Semaphore` that refuses to be released more often than acquired: a release
    that would raise the count above its initial value raises ValueError. This
    catches the bug of a double release, which a plain Semaphore silently
    turns into one extra permit."""

    __slots__ = ("_bound",)

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._bound = value

    def __repr__(self) -> str:
        n = waiting(self._channel)
        return f"<BoundedSemaphore value={self._value}/{self._bound}{_waiting(n)}>"

    def release(self) -> None:
        if self._value + 1 > self._bound:
            raise ValueError(f"{self!r} released too many times")
        super().release()


# ── Condition ────────────────────────────────────────────────────────────


class Condition(_Acquirable):
    """A place to wait, holding a lock, until some state changes: a monitor.

    ``wait()`` atomically releases the lock and sleeps; when another task
    holding the lock calls ``notify()``, the oldest waiter wakes and re-acquires
    the lock before ``wait()`` returns. Always re-check the state afterwards
    (or use ``wait_for(predicate)``), since another task may have changed it
    first. ``lock`` is a `Lock` (the default) or an `RLock`::

        def consumer(cond, items):
            yield cond.acquire()
            try:
                yield cond.wait_for(lambda: items)
                item = items.pop(0)
            finally:
                cond.release()

        def producer(cond, items, item):
            yield cond.acquire()
            try:
                items.append(item)
                cond.notify()
            finally:
                cond.release()

    If ``wait()`` is killed or times out, it still re-acquires the lock (shielded)
    before the exception unwinds, so the caller's ``finally: release()`` is right.
    """

    __slots__ = ("_lock", "_channel", "_sleep")
    _var = "cond"

    def __init__(self, lock: Optional[Union[Lock, RLock]] = None) -> None:
        self._lock: Union[Lock, RLock] = Lock() if lock is None else lock
        self._channel = _Channel("waiting to be notified by", self)  # the kernel's FIFO
        self._sleep: WaitOn[Any] = wait_on(self._channel)  # made once: traps are immutable

    def __repr__(self) -> str:
        return f"<Condition on {self._lock!r}{_waiting(waiting(self._channel))}>"

    @property
    def lock(self) -> Union[Lock, RLock]:
        return self._lock

    def acquire(self) -> Trap[bool]:
        """Acquire the underlying lock (a trap: ``yield cond.acquire()``)."""
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _check_owned(self, method: str) -> None:
        if not self._lock._is_owned():
            raise RuntimeError(f"Condition.{method}() needs the lock held: {self!r}")

    @operation
    def wait(self) -> Generator[Any, Any, bool]:
        """Release the lock, wait for a ``notify()``, re-acquire the lock; True."""
        self._check_owned("wait")
        lock = self._lock
        saved = lock._release_save()
        closing = False
        try:
            yield self._sleep  # only notify() wakes this channel: no need to look again
        except GeneratorExit:
            closing = True  # the kernel is closing this task: it may not wait any more
            raise
        finally:
            # Discussion: the caller wrote `try: ... finally: cond.release()`, so the lock
            # must be held again however wait() ends, as in threading. A kill or timeout
            # that arrives during the re-acquire is held back and raised at the next trap.
            if not closing:
                with shield():
                    yield from lock._acquire_restore(saved)
        return True

    @operation
    def wait_for(self, predicate: Callable[[], T]) -> Generator[Any, Any, T]:
        """``wait()`` until ``predicate()`` is true (checked first); return its value."""
        self._check_owned("wait_for")
        result = predicate()
        while not result:
            yield from self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting tasks, oldest first (they run once they get the lock)."""
        self._check_owned("notify")
        if n > 0:
            wakeup(self._channel, n)

    def notify_all(self) -> None:
        """Wake every waiting task."""
        self._check_owned("notify_all")
        wakeup(self._channel)


# ── Barrier ──────────────────────────────────────────────────────────────


class BrokenBarrierError(RuntimeError):
    """The `Barrier` was aborted or reset, or a task waiting at it was killed or timed out."""


_PASSED, _BROKEN = "passed", "broken"


class Barrier:
    """A meeting point for ``parties`` tasks: each ``wait()`` blocks until all of them
    have arrived, then all go on together (the barrier is ready for the next round).

    ``wait()`` returns the arrival index, 0 to ``parties - 1``, e.g. to pick one
    task for a follow-up job. If the barrier breaks (``abort()``, ``reset()``,
    or a waiting task is killed or times out, as threading does on timeout),
    every waiter, and every later ``wait()`` until ``reset()``, raises
    `BrokenBarrierError`::

        def phase_worker(barrier, i):
            yield compute(i)
            if (yield barrier.wait()) == 0:
                print("all done with this phase")
    """

    __slots__ = ("_parties", "_waiters", "_broken")

    def __init__(self, parties: int) -> None:
        if parties < 1:
            raise ValueError(f"Barrier needs parties >= 1, not {parties}")
        self._parties = parties
        self._waiters: deque[_Waiter] = deque()  # this round's arrivals, in order
        self._broken = False

    def __repr__(self) -> str:
        if self._broken:
            return f"<Barrier broken{_waiting(len(self._waiters))}>"
        return f"<Barrier {len(self._waiters)}/{self._parties} waiting>"

    @property
    def parties(self) -> int:
        return self._parties

    @property
    def n_waiting(self) -> int:
        return len(self._waiters)

    @property
    def broken(self) -> bool:
        return self._broken

    @operation
    def wait(self) -> Generator[Any, Any, int]:
        """Wait until ``parties`` tasks are here; the result is this task's arrival index."""
        if self._broken:
            raise BrokenBarrierError(f"{self!r}")
        index = len(self._waiters)
        if index == self._parties - 1:
            self._release_all(_PASSED)  # the last to arrive lets everybody through
            return index
        w = _Waiter("waiting at", self, current_task())
        yield from _park(self._waiters, w, abandon=self.abort)
        if w.value is _BROKEN:
            raise BrokenBarrierError(f"{self!r} broke while tid {w.task.tid} waited")
        return index

    def abort(self) -> None:
        """Break the barrier: waiters and later ``wait()`` calls raise BrokenBarrierError."""
        self._broken = True
        self._release_all(_BROKEN)

    def reset(self) -> None:
        """Back to the initial state: current waiters get BrokenBarrierError."""
        self._release_all(_BROKEN)
        self._broken = False

    def _release_all(self, outcome: str) -> None:
        # Every arrival of this round gets the outcome, even one whose task is
        # being interrupted (it did arrive; it raises its own exception anyway).
        waiters = self._waiters
        self._waiters = deque()
        for w in waiters:
            w.queued = False
            w.handed = True
            w.value = outcome
            wakeup(w, 1)
