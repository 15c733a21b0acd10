"""Step 5: sleeping, and the timer queue.

``Sleep(seconds)`` blocks a task until a deadline. The kernel keeps every
pending deadline in a *timer queue*: a binary heap, so the earliest is always
on top. Each pass of the loop now has two phases:

1. **expire timers**: every timer whose deadline has passed wakes its task.
   This is the analogue of the timer interrupt: the moment time makes tasks
   runnable again (but it never preempts a running task).
2. **run** a snapshot of the run queue (tasks woken meanwhile wait a pass).

When no task is ready, the kernel is *idle* until the next deadline. It reads
the time only through a *clock* object, so the demo runs on a virtual clock
that jumps straight to the next deadline (instant, exact and repeatable), and
then on the real one (``time.monotonic``), which gives the same order.

A killed sleeper must leave the timer queue: the undo recorded when it
blocked (step 4) cancels its timer. Cancelling is *lazy*: the entry is only
marked dead and thrown away when it reaches the top of the heap, so a cancel
costs O(1), not a search. (From step 4 we keep spawn and kill; join is left
out to keep the page short, and kill does not wait here.)

Run it::

    python3 examples/tutorial/step05_sleep_timer_queue.py
"""

from __future__ import annotations

import functools
import heapq
import itertools
import time
from collections import deque
from typing import Any, Callable, Generator, Optional

Coro = Generator[Any, Any, Any]


class Cancelled(BaseException):
    pass


class Task:
    _tids = itertools.count(1)

    def __init__(self, name: str, coro: Coro) -> None:
        self.tid = next(Task._tids)
        self.name = name
        self.coro = coro
        self.blocked = False
        self.next_value: Any = None
        self.next_exc: Optional[BaseException] = None
        self.undo: Optional[Callable[[], None]] = None  # while blocked: how to leave the wait


# ── Clocks: the kernel's only source of time ─────────────────────────────


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def idle_until(self, deadline: float) -> None:
        time.sleep(max(0.0, deadline - self.now()))


class VirtualClock:
    """Time that moves only when the kernel is idle: it jumps to the next deadline."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def idle_until(self, deadline: float) -> None:
        self.t = max(self.t, deadline)


# ── The timer queue ──────────────────────────────────────────────────────


class Timer:
    def __init__(self, task: Task) -> None:
        self.task: Optional[Task] = task  # None once fired or cancelled


class TimerQueue:
    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Timer]] = []  # seq: FIFO among equal deadlines
        self.seq = itertools.count()
        self.live = 0

    def add(self, deadline: float, task: Task) -> Timer:
        timer = Timer(task)
        heapq.heappush(self.heap, (deadline, next(self.seq), timer))
        self.live += 1
        return timer

    def cancel(self, timer: Timer) -> None:
        if timer.task is not None:
            timer.task = None  # lazy: the entry stays in the heap until it reaches the top
            self.live -= 1

    def next_deadline(self) -> float:
        while self.heap[0][2].task is None:
            heapq.heappop(self.heap)  # a cancelled timer reached the top: drop it now
        return self.heap[0][0]

    def expire(self, now: float) -> list[Task]:
        """Pop every timer due by ``now``; return the tasks to wake, earliest first."""
        due = []
        while self.heap and self.heap[0][0] <= now:
            task = heapq.heappop(self.heap)[2].task
            if task is not None:
                self.live -= 1
                due.append(task)
        return due


# ── Traps and the kernel ─────────────────────────────────────────────────


class Sleep:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Spawn:
    def __init__(self, name: str, coro: Coro) -> None:
        self.name, self.coro = name, coro


class Kill:
    def __init__(self, task: Task) -> None:
        self.task = task


class Kernel:
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.ready: deque[Task] = deque()
        self.timers = TimerQueue()
        self.alive = 0

    def spawn(self, name: str, coro: Coro) -> Task:
        task = Task(name, coro)
        self.ready.append(task)
        self.alive += 1
        return task

    def run(self) -> None:
        while self.alive:
            if not self.ready:  # idle: nothing can happen before the next deadline
                self.clock.idle_until(self.timers.next_deadline())
            for task in self.timers.expire(self.clock.now()):  # phase 1: the "interrupt"
                self.wake(task, None)
            for _ in range(len(self.ready)):  # phase 2: run a snapshot of the queue
                self.step(self.ready.popleft())

    def step(self, task: Task) -> None:
        value, exc = task.next_value, task.next_exc
        task.next_value = task.next_exc = None
        while True:
            try:
                trap = task.coro.send(value) if exc is None else task.coro.throw(exc)
            except BaseException:  # returned (StopIteration), raised, or was killed
                self.alive -= 1
                return
            value, exc = None, None  # the trap table of step 3, as an if-chain to keep it short
            if isinstance(trap, Spawn):
                value = self.spawn(trap.name, trap.coro)
            elif isinstance(trap, Kill):
                self.kill(trap.task)
            elif isinstance(trap, Sleep):  # the service routine of Sleep
                timer = self.timers.add(self.clock.now() + trap.seconds, task)
                self.park(task, functools.partial(self.timers.cancel, timer))  # the undo
                return
            else:
                exc = TypeError(f"{trap!r} is not a trap")

    def kill(self, task: Task) -> None:
        if task.blocked:
            assert task.undo is not None
            task.undo()  # out of the timer queue
            self.wake(task, None, Cancelled())
        else:  # ready: Cancelled is thrown in when it next runs
            task.next_exc = Cancelled()

    def park(self, task: Task, undo: Callable[[], None]) -> None:
        task.blocked, task.undo = True, undo

    def wake(self, task: Task, value: Any, exc: Optional[BaseException] = None) -> None:
        task.blocked, task.undo = False, None
        task.next_value, task.next_exc = value, exc
        self.ready.append(task)


# ── User programs ────────────────────────────────────────────────────────


def demo(clock: Any, scale: float, show: bool) -> list[str]:
    """Run the workload on ``clock`` with every length times ``scale``; return the events."""
    events: list[str] = []

    def log(what: str) -> None:  # reads the clock directly, as syscalls.clock() does
        events.append(what)
        if show:
            print(f"t={clock.now() / scale:.2f}  {what}")

    def sleeper(name: str, seconds: float) -> Coro:
        log(f"{name}: sleep({seconds})")
        try:
            yield Sleep(seconds * scale)
        except Cancelled:
            log(f"{name}: killed in its sleep")
            raise
        log(f"{name}: woke up")

    def main() -> Coro:
        tasks = []
        for name, seconds in [("alice", 0.3), ("bob", 0.1), ("carol", 0.2), ("dozer", 10.0)]:
            tasks.append((yield Spawn(name, sleeper(name, seconds))))
        yield Sleep(0.25 * scale)
        log("main: kill dozer")
        yield Kill(tasks[3])
        log(f"main: the timer heap holds {len(k.timers.heap)} entries, {k.timers.live} live")

    k = Kernel(clock)
    k.spawn("main", main())
    k.run()
    return events


def main() -> None:
    print("virtual clock:")
    virtual = demo(VirtualClock(), 1.0, show=True)
    real = demo(RealClock(), 0.5, show=False)  # the same, twice as fast, on real time
    print(f"real clock (time.monotonic, lengths x0.5): same order of events: {real == virtual}")
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  kernel/timers.py `TimerQueue` is the heap with lazy cancellation
  (`TimerQueue.add`, `TimerQueue.cancel`, `TimerQueue.next_deadline`), and
  `TimerQueue.expire`, called from kernel/kernel.py `Kernel._loop` phase 2, is
  the timer-interrupt analogue. kernel/sysproc.py `sys_sleep` parks the task with
  the undo that cancels its timer. The clock seam is `Kernel.clock` (default
  kernel/timers.py `DEFAULT_CLOCK`, time.monotonic); idling is phase 1 of
  `Kernel._loop`, which waits in the poller until the next deadline (step 6)."""

if __name__ == "__main__":
    main()
