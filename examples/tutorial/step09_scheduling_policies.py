"""Step 9: scheduling policies.

The scheduler of step 2 has two parts: the *mechanism* (resume a task until
it yields: the context switch) and the *policy* (which READY task goes
next). Only the run queue knows the policy, so swapping the run queue swaps
the policy, and nothing else in the kernel changes. A run queue is anything
with ``push(task)``, ``pop_next()`` and ``len()``. Three classic ones:

* **FIFO round robin**: every task in turn (xv6, and yieldos today).
* **Priority**: always the most urgent READY task (lowest number first).
  Urgent work waits less, but a busy high-priority task *starves* the others.
* **Lottery** (Waldspurger, 1994): each task holds tickets; each pick draws
  one at random, so in the long run a task gets CPU in proportion to its
  tickets, and nobody starves. The random generator is *seeded*: the same
  seed gives the same order, which makes a run repeatable and lets tests try
  many orders on purpose.

The kernel here is step 3's (tasks, traps, a sched_yield trap) with the run
queue passed in: timers and I/O would only add more ways to become READY.

Run it::

    python3 examples/tutorial/step09_scheduling_policies.py
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, deque
from typing import Any, Generator, Optional, Protocol

Coro = Generator[Any, Any, Any]


class Task:
    def __init__(self, name: str, coro: Coro, priority: int, tickets: int) -> None:
        self.name = name
        self.coro = coro
        self.priority = priority  # for the priority policy: lower runs first
        self.tickets = tickets  # for the lottery policy: more gets more CPU


class SchedYield:
    pass


# ── Three policies, one interface ────────────────────────────────────────


class RunQueue(Protocol):
    def push(self, task: Task) -> None: ...
    def pop_next(self) -> Task: ...
    def __len__(self) -> int: ...


class FifoQueue:
    def __init__(self) -> None:
        self.queue: deque[Task] = deque()

    def push(self, task: Task) -> None:
        self.queue.append(task)

    def pop_next(self) -> Task:
        return self.queue.popleft()

    def __len__(self) -> int:
        return len(self.queue)


class PriorityQueue:
    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Task]] = []
        self.seq = itertools.count()  # FIFO among equal priorities

    def push(self, task: Task) -> None:
        heapq.heappush(self.heap, (task.priority, next(self.seq), task))

    def pop_next(self) -> Task:
        return heapq.heappop(self.heap)[2]

    def __len__(self) -> int:
        return len(self.heap)


class LotteryQueue:
    def __init__(self, seed: int) -> None:
        self.tasks: list[Task] = []
        self.rng = random.Random(seed)  # seeded: never the global, unseeded one

    def push(self, task: Task) -> None:
        self.tasks.append(task)

    def pop_next(self) -> Task:
        draw = self.rng.random() * sum(t.tickets for t in self.tasks)
        for i, task in enumerate(self.tasks):  # whose ticket was drawn?
            draw -= task.tickets
            if draw < 0:
                return self.tasks.pop(i)
        return self.tasks.pop()  # (only reached through float rounding)

    def __len__(self) -> int:
        return len(self.tasks)


# ── The kernel: the mechanism, the same for every policy ─────────────────


class Kernel:
    def __init__(self, runq: RunQueue) -> None:
        self.runq = runq
        self.trace: list[str] = []  # who ran, in order

    def spawn(self, name: str, coro: Coro, priority: int = 0, tickets: int = 1) -> None:
        self.runq.push(Task(name, coro, priority, tickets))

    def run(self, max_slices: Optional[int] = None) -> None:
        while self.runq and (max_slices is None or len(self.trace) < max_slices):
            task = self.runq.pop_next()  # the policy decides ...
            try:
                trap = task.coro.send(None)  # ... the mechanism switches
            except StopIteration:
                continue
            assert isinstance(trap, SchedYield), f"{trap!r} is not a trap"
            self.trace.append(task.name)  # it ran one time slice
            self.runq.push(task)


# ── The workload ─────────────────────────────────────────────────────────

#: name, priority (lower first), tickets (more, more often)
TASKS = [("A", 3, 1), ("B", 2, 2), ("C", 1, 4)]


def worker(slices: Optional[int]) -> Coro:
    for _ in itertools.repeat(None) if slices is None else range(slices):
        yield SchedYield()  # one time slice of work, then give the CPU back


def order(runq: RunQueue, slices: Optional[int] = 4, max_slices: Optional[int] = None) -> list[str]:
    """Run A, B and C (``slices`` turns each; None: for ever) on ``runq``: who ran when."""
    k = Kernel(runq)
    for name, priority, tickets in TASKS:
        k.spawn(name, worker(slices), priority, tickets)
    k.run(max_slices)
    return k.trace


def main() -> None:
    print("A, B, C: priorities 3, 2, 1 (lower first); tickets 1, 2, 4; 4 turns each")
    print(f"fifo:            {' '.join(order(FifoQueue()))}")
    print(f"priority:        {' '.join(order(PriorityQueue()))}")
    print(f"lottery seed 1:  {' '.join(order(LotteryQueue(seed=1)))}")
    print(f"lottery seed 2:  {' '.join(order(LotteryQueue(seed=2)))}")
    same = order(LotteryQueue(seed=1)) == order(LotteryQueue(seed=1))
    print(f"same seed, same order: {same}")
    shares = Counter(order(LotteryQueue(seed=1), slices=None, max_slices=7000))
    print(
        f"lottery, 7000 turns of endless tasks: A {shares['A']}, B {shares['B']}, C {shares['C']}"
    )
    starved = Counter(order(PriorityQueue(), slices=None, max_slices=7000))
    print(
        f"priority, the same:                  A {starved['A']}, B {starved['B']}, C {starved['C']}"
    )
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  the run queue is the policy: kernel/scheduler.py `RunQueue` (FIFO round robin,
  the default) and, in kernel/policies.py, `PriorityPolicy`, `FairSharePolicy`
  (CFS's virtual runtime), `StridePolicy`, `LotteryPolicy` and `RandomPolicy`,
  all with the interface above (push, pop_next, len). Pick one with
  `Kernel(policy=make_policy("lottery:7"))` or `python -m kernel run --policy
  lottery:7 script.py`; the mechanism, `Kernel._step`, is the same for all.
  examples/policies.py runs one workload under each and draws the timelines."""

if __name__ == "__main__":
    main()
