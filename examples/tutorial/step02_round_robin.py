"""Step 2: a round-robin scheduler.

With a task being a generator (step 1), a scheduler is a queue of tasks and
a loop: take the task at the front of the *run queue*, resume it until it
yields (a *context switch* into the task and, at the yield, back out), and
put it at the back again. Every task gets a turn in order: round robin, as
in xv6's ``scheduler()``. A task that returns has exited and is dropped.

This is *cooperative* multitasking: a task runs until it chooses to yield.
There is no timer interrupt to take the CPU away, so a task that loops
without yielding stops everyone. The bare ``yield`` here means "I give the
CPU back"; step 3 turns what a task yields into requests to the kernel.

Run it::

    python3 examples/tutorial/step02_round_robin.py
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Generator

Coro = Generator[Any, Any, Any]


class Task:
    """The task control block: an id and the suspended generator (step 1)."""

    _tids = itertools.count(1)

    def __init__(self, name: str, coro: Coro) -> None:
        self.tid = next(Task._tids)
        self.name = name
        self.coro = coro

    def run(self) -> Any:
        return self.coro.send(None)


class Scheduler:
    """A FIFO run queue and the loop that runs it."""

    def __init__(self) -> None:
        self.ready: deque[Task] = deque()  # the run queue: READY tasks, oldest first
        self.switches = 0

    def new(self, name: str, coro: Coro) -> Task:
        task = Task(name, coro)
        self.ready.append(task)
        return task

    def mainloop(self) -> None:
        while self.ready:
            task = self.ready.popleft()  # the policy: whoever has waited longest
            self.switches += 1
            try:
                task.run()  # the context switch: runs the task until it yields
            except StopIteration:
                print(f"  [kernel] task {task.tid} ({task.name}) exited")
                continue
            self.ready.append(task)  # round robin: back of the queue


def worker(name: str, steps: int) -> Coro:
    for i in range(1, steps + 1):
        print(f"{name} step {i}")
        yield  # give the CPU back to the scheduler


def main() -> None:
    sched = Scheduler()
    sched.new("alice", worker("alice", 3))
    sched.new("bob", worker("bob", 2))
    sched.new("carol", worker("carol", 3))
    sched.mainloop()
    print(f"{sched.switches} context switches, run queue empty")
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  the run queue is kernel/scheduler.py `RunQueue` (a deque: `push` appends,
  `pop_next` pops the front). The loop is kernel/kernel.py `Kernel._loop`,
  whose phase 3 runs a snapshot of the run queue, and `Kernel._step` is the
  context switch: the only send/throw into a task's generator."""

if __name__ == "__main__":
    main()
