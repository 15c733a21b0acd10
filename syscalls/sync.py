"""Synchronization: Event, Lock, RLock, Semaphore, BoundedSemaphore, Condition, Barrier.

These are the classic OS primitives, rebuilt from one kernel mechanism:
wait channels (`wait_on` / `wakeup`, see kernel/wait.py). They never touch
kernel internals, so they are also a worked example of building your own.

**Hand-off.** Every task that must wait gets a small `_Waiter` of its own,
kept in a FIFO deque on the primitive, and parks on it (the waiter *is* its
wait channel). Whoever makes progress possible (``release()``, ``set()``,
``notify()``...) pops the oldest waiter, *gives it* what it waited for (the
lock's ownership, a permit, a notification) and wakes it. The woken task does
not compete again for the thing: it already has it. That is what makes the
primitives fair (no barging: a task arriving later cannot overtake one that
waits) and what makes cancellation safe:

* A waiter killed or timed out while BLOCKED is taken off its channel by the
  kernel at once, so a later ``wakeup(waiter)`` finds nobody and answers 0:
  the waker then skips it and serves the next one. When the interrupted task
  runs, it takes its waiter out of the deque (if still there) and unwinds. So
  a killed waiter never holds a lock, a permit is never lost.
* A waiter that was handed something (it is READY) and is killed before it
  runs keeps what it was handed; `kernel.Cancelled` comes at its next trap.
  So a generator task must release in a ``finally`` right after acquiring.

Invariants, checked with asserts: an unlocked lock and a semaphore with a
free permit have no waiters (every release hands off first); a waiter is in
its primitive's deque exactly while ``waiter.queued``.

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
from kernel.traps import Operation
from syscalls import current_task, operation, shield, wait_on, wakeup

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


# ── Waiters and hand-off: the machinery shared by every primitive ────────


class _Waiter:
    """One waiting task's place in a primitive's FIFO, and its private wait channel.

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
    waiters: deque[_Waiter],
    w: _Waiter,
    give_back: Optional[Callable[[_Waiter], None]] = None,
    abandon: Optional[Callable[[], None]] = None,
) -> Generator[Any, Any, None]:
    """Queue ``w`` and wait until a waker hands it something (use with ``yield from``).

    If the wait is interrupted (kill, timeout, GeneratorExit), take ``w`` out of
    the queue and call ``abandon()``; if it had been handed something after all,
    pass that on with ``give_back(w)``. Then re-raise.
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
            if abandon is not None:
                abandon()
        elif w.handed and give_back is not None:
            # Discussion: the kernel never raises at a trap in a task that was woken
            # (it keeps what it was handed), so this only runs when the kernel closes
            # a READY task in an emergency stop. Pass the thing on rather than leak it.
            give_back(w)
        raise


def _hand_off(waiters: deque[_Waiter]) -> Optional[_Waiter]:
    """Give the oldest waiter that is still parked what it waits for, and wake it.

    Return that waiter, or None if no waiter is left. A waiter whose task was
    interrupted meanwhile (wakeup finds it no longer parked) is skipped: it is
    unwinding and will not take anything.
    """
    while waiters:
        w = waiters.popleft()
        w.queued = False
        if wakeup(w, 1):
            w.handed = True
            return w
    return None


def _who(task: Task) -> str:
    """A task, as a primitive's repr names its holder."""
    dead = " (exited!)" if task.state is TaskState.EXITED else ""
    return f"tid {task.tid} {task.name!r}{dead}"


def _waiting(waiters: deque[_Waiter]) -> str:
    return f", {len(waiters)} waiting" if waiters else ""


class _Acquirable:
    """``async with x:`` for the primitives that are acquired and released, and a
    helpful error for a plain ``with x:``, which cannot wait."""

    __slots__ = ()
    _var = "lock"  # what the TypeError calls the object: `yield lock.acquire()`

    def acquire(self) -> Operation[bool]:
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
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return f"<Event {'set' if self._flag else 'unset'}{_waiting(self._waiters)}>"

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Raise the flag and wake every waiting task (a plain call: it never blocks)."""
        self._flag = True
        while _hand_off(self._waiters) is not None:
            pass

    def clear(self) -> None:
        """Lower the flag: later ``wait()`` calls block until the next ``set()``."""
        self._flag = False

    @operation
    def wait(self) -> Generator[Any, Any, bool]:
        """Block until the flag is set (at once if it is); the result is True."""
        if not self._flag:
            yield from _park(self._waiters, _Waiter("waiting for", self, current_task()))
        return True


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
    """

    __slots__ = ("_owner", "_waiters")

    def __init__(self) -> None:
        self._owner: Optional[Task] = None  # None <=> unlocked
        self._waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        if self._owner is None:
            return f"<{type(self).__name__} unlocked>"
        return f"<{type(self).__name__} locked by {_who(self._owner)}{_waiting(self._waiters)}>"

    def locked(self) -> bool:
        return self._owner is not None

    @property
    def owner(self) -> Optional[Task]:
        """The task holding the lock, or None."""
        return self._owner

    @operation
    def acquire(self) -> Generator[Any, Any, bool]:
        """Block until the lock is free and this task owns it; the result is True."""
        me = current_task()
        if self._owner is None:
            assert not self._waiters, f"{self!r}: unlocked with waiters"
            self._owner = me
            return True
        if self._owner is me:
            raise RuntimeError(
                f"{self!r}: tid {me.tid} acquires a Lock it already holds "
                "(it would wait for ever); use an RLock"
            )
        yield from _park(
            self._waiters, _Waiter("waiting to acquire", self, me), give_back=self._give_back
        )
        assert self._owner is me
        return True

    def release(self) -> None:
        """Let go of the lock: the longest-waiting task gets it now (a plain call)."""
        me = current_task()
        if self._owner is not me:
            raise RuntimeError(f"{self!r}: tid {me.tid} releases a lock it does not hold")
        self._pass_on()

    def _pass_on(self) -> None:
        w = _hand_off(self._waiters)
        self._owner = None if w is None else w.task

    def _give_back(self, w: _Waiter) -> None:
        if self._owner is w.task:
            self._pass_on()

    # The protocol Condition uses to let go of the lock while it waits.
    def _is_owned(self) -> bool:
        return self._owner is current_task()

    def _release_save(self) -> int:
        self._pass_on()
        return 1

    def _acquire_restore(self, saved: int) -> Generator[Any, Any, None]:
        yield from self.acquire()


class RLock(_Acquirable):
    """A re-entrant lock: the owning task may acquire it again, and must release it
    as many times as it acquired it before another task gets it.

    Useful when a function that takes the lock calls another that takes it
    too. Otherwise it behaves as `Lock` (FIFO hand-off, owner-only release)::

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
        self._waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        if self._owner is None:
            return "<RLock unlocked>"
        return (
            f"<RLock locked by {_who(self._owner)} (depth {self._count}){_waiting(self._waiters)}>"
        )

    def locked(self) -> bool:
        return self._owner is not None

    @property
    def owner(self) -> Optional[Task]:
        return self._owner

    @operation
    def acquire(self) -> Generator[Any, Any, bool]:
        """Block until this task owns the lock (at once if it already does); True."""
        me = current_task()
        if self._owner is me:
            self._count += 1
            return True
        if self._owner is None:
            assert not self._waiters, f"{self!r}: unlocked with waiters"
            self._owner, self._count = me, 1
            return True
        yield from _park(
            self._waiters, _Waiter("waiting to acquire", self, me), give_back=self._give_back
        )
        assert self._owner is me and self._count == 1
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
        w = _hand_off(self._waiters)
        self._owner, self._count = (None, 0) if w is None else (w.task, 1)

    def _give_back(self, w: _Waiter) -> None:
        if self._owner is w.task:
            self._pass_on()

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
    """

    __slots__ = ("_value", "_waiters")
    _var = "sem"

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError(f"{type(self).__name__} initial value must be >= 0, not {value}")
        self._value = value  # free permits; > 0 => no waiters
        self._waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} value={self._value}{_waiting(self._waiters)}>"

    @property
    def value(self) -> int:
        """How many permits are free now."""
        return self._value

    def locked(self) -> bool:
        """True when ``acquire()`` would have to wait."""
        return self._value == 0

    @operation
    def acquire(self) -> Generator[Any, Any, bool]:
        """Take a permit, waiting for one if none is free; the result is True."""
        if self._value > 0:
            assert not self._waiters, f"{self!r}: free permits with waiters"
            self._value -= 1
            return True
        w = _Waiter("waiting to acquire", self, current_task())
        yield from _park(self._waiters, w, give_back=self._give_back)
        return True

    def release(self) -> None:
        """Give a permit back: to the longest-waiting task, else to the pool (a plain call)."""
        if _hand_off(self._waiters) is None:
            self._value += 1

    def _give_back(self, w: _Waiter) -> None:
        Semaphore.release(self)


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
        return f"<BoundedSemaphore value={self._value}/{self._bound}{_waiting(self._waiters)}>"

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

    __slots__ = ("_lock", "_waiters")
    _var = "cond"

    def __init__(self, lock: Optional[Union[Lock, RLock]] = None) -> None:
        self._lock: Union[Lock, RLock] = Lock() if lock is None else lock
        self._waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return f"<Condition on {self._lock!r}{_waiting(self._waiters)}>"

    @property
    def lock(self) -> Union[Lock, RLock]:
        return self._lock

    def acquire(self) -> Operation[bool]:
        """Acquire the underlying lock (an operation: ``yield cond.acquire()``)."""
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
        w = _Waiter("waiting to be notified by", self, current_task())
        saved = lock._release_save()
        closing = False
        try:
            yield from _park(self._waiters, w, give_back=self._give_back)
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
        for _ in range(n):
            if _hand_off(self._waiters) is None:
                break

    def notify_all(self) -> None:
        """Wake every waiting task."""
        self._check_owned("notify_all")
        while _hand_off(self._waiters) is not None:
            pass

    def _give_back(self, w: _Waiter) -> None:
        _hand_off(self._waiters)  # pass the notification on


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
            return f"<Barrier broken{_waiting(self._waiters)}>"
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
