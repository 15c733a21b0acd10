"""Step 8: wait channels, and a lock built on them.

Every blocking object (a lock, an event, a queue) needs the same two things:
put the running task to sleep until something changes, and wake the tasks
that wait for that change. xv6 has one mechanism for all of them, and so
does yieldos: the *wait channel*. A channel is any hashable value, usually
the object waited for:

* ``yield wait_on(chan)`` parks the task on ``chan`` (a trap: it blocks);
* ``wakeup(chan, n)`` makes up to ``n`` (default all) of the tasks parked
  on ``chan`` ready, oldest first, and says how many (a plain call).

A wakeup is not a message. It carries nothing and is lost if nobody waits,
so the *state* (is the lock taken?) must live in a variable, and a woken task
must look at it again: ``wait_on`` is always called in a ``while`` loop.

Part 2 builds a lock in six lines that way, and shows its flaw: a task that
releases and at once re-acquires *barges* ahead of the task it just woke,
which wakes only to find the lock taken again. ``syscalls.Lock`` avoids that
by *handing the lock over*: ``release()`` makes the oldest waiter the owner
before waking it. Same channels, different policy: first come, first served.

Run it::

    python3 examples/tutorial/step08_wait_channels_lock.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Generator, Union

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kernel  # noqa: E402
from syscalls import Lock, join, sched_yield, sleep, spawn, wait_on, wakeup  # noqa: E402

Coro = Generator[Any, Any, Any]


# ── Part 1: wait_on and wakeup ───────────────────────────────────────────


def sleeper(name: str) -> Coro:
    print(f"{name}: wait_on('door')")
    yield wait_on("door")
    print(f"{name}: woken")


def part1() -> Coro:
    for name in ["ann", "ben", "cat"]:
        yield spawn(sleeper, name)
    yield sched_yield()  # let all three park on the channel
    print(f"main: wakeup('door', 1) woke {wakeup('door', 1)}")
    yield sched_yield()
    print(f"main: wakeup('door') woke {wakeup('door')}")
    yield sched_yield()
    print(f"main: wakeup('door') woke {wakeup('door')}: nobody waits, the wakeup is lost")


# ── Part 2: a lock on a wait channel, and syscalls.Lock ──────────────────


class TinyLock:
    """A lock in the xv6 style: sleep on the lock while it is taken."""

    def __init__(self) -> None:
        self.locked = False
        self.futile_wakeups = 0  # woken, only to find the lock taken again

    def acquire(self) -> Coro:  # a helper generator: `yield from lock.acquire()`
        while self.locked:
            yield wait_on(self)  # the lock itself is the channel
            self.futile_wakeups += self.locked
        self.locked = True

    def release(self) -> None:
        self.locked = False
        wakeup(self, 1)


def worker(name: str, lock: Union[TinyLock, Lock], order: list[str]) -> Coro:
    for _ in range(3):
        yield from lock.acquire()  # works for both: an Operation runs inline under yield from
        try:
            order.append(name)
            yield sleep(0)  # some work inside the critical section: the others run
        finally:
            lock.release()  # ... and at once around the loop to acquire again


def part2(lock: Union[TinyLock, Lock]) -> Coro:
    order: list[str] = []
    a = yield spawn(worker, "A", lock, order)
    b = yield spawn(worker, "B", lock, order)
    yield join(a)
    yield join(b)
    return order


def main() -> None:
    print("Part 1: wait channels")
    kernel.run(part1)
    print("\nPart 2: who gets the lock, 3 rounds each for A and B")
    tiny = TinyLock()
    order = kernel.run(part2, tiny)
    print(f"TinyLock (wake, then compete): {' '.join(order)}")
    print(f"  B was woken {tiny.futile_wakeups} times only to find the lock taken again")
    order = kernel.run(part2, Lock())
    print(f"syscalls.Lock (hand-off, FIFO): {' '.join(order)}")
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  syscalls/__init__.py `wait_on` builds the kernel/traps.py `WaitOn` trap, served
  by kernel/sysproc.py `sys_wait_on` (park, with the undo that takes the task off
  the channel); syscalls/__init__.py `wakeup` calls kernel/kernel.py
  `Kernel.wakeup`. The channels are kernel/wait.py `WaitChannels`
  (`WaitChannels.sleep_on`, `WaitChannels.take`). syscalls/sync.py `Lock` hands
  off with `_hand_lock_on`, each waiter parked on its own `_Waiter` channel;
  Event, Semaphore and Condition park on one channel each, as the queues do."""

if __name__ == "__main__":
    main()
