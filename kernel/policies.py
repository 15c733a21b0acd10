"""Scheduling policies: which READY task runs next, besides FIFO round robin.

The run loop is the *mechanism*: it pops a task from the run queue and
switches to it (`Kernel._step`). The *policy* is the run queue's order, and
nothing else in the kernel knows it: a policy is any object with
``push(task)``, ``pop_next()``, ``len()`` and ``clear()`` (the `Policy`
protocol of scheduler.py, where the default FIFO `RunQueue` lives and
`make_policy` builds one of these by name).

=================  ===================================  ============  =========
policy             next task                            push / pop    reads
=================  ===================================  ============  =========
`RunQueue`         the one that has waited longest      O(1)          nothing
`PriorityPolicy`   the highest ``task.priority``        O(log n)      priority
`FairSharePolicy`  the least CPU used (CFS's vruntime)  O(log n)      tickets
`StridePolicy`     the smallest pass (turns by tickets) O(log n)      tickets
`LotteryPolicy`    the holder of a drawn ticket         O(1) / O(n)   tickets
`RandomPolicy`     any one, uniformly at random         O(1)          nothing
=================  ===================================  ============  =========

**No preemption.** A yieldos task keeps the CPU until its next trap, so a
policy chooses *who goes next*, never *how long* it goes: a "turn" is as
long as the task makes it. Stride and lottery divide turns in proportion to
tickets; only the fair-share policy, which measures each step's CPU time
(it is an `Instrument`), divides CPU time.

**When the policy is asked.** Each pass of the run loop pops as many tasks
as were ready when the pass began. A task made ready during the pass
(woken, spawned, or put back by ``sched_yield``) is pushed at once, so under
any policy but FIFO it may be picked within the same pass; the pass is still
bounded, so I/O and timers are looked at between passes. The kernel pushes a
task exactly once each time it becomes READY; every policy here returns each
pushed task exactly once, and ``clear()`` forgets them all (an abort).

**Ties are FIFO.** The heap-based policies key their entries with a sequence
number after the priority (or pass): among equals the one pushed first runs
first, and tuples compare in C without ever comparing two `Task` objects.

**Seeds.** Lottery and random draw from their own ``random.Random(seed)``,
never the global generator, and only with ``random()``, the one method whose
sequence Python promises to keep across versions: a seed draws the same
numbers on every interpreter, so a program whose tasks interact only through
the kernel, on a `VirtualClock`, runs in the same order wherever a seed that
showed a bug is tried again.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Optional

from .instrument import Instrument
from .task import DEFAULT_TICKETS, Task, sched_info


class PriorityPolicy:
    """Static priority: the READY task with the highest ``task.priority`` runs next.

    The idea: urgent work first. A task spawned with ``priority=5`` runs
    before every READY task of priority 4 or less; among tasks of the same
    priority the order is FIFO, so equal tasks still take turns.

    Cost: O(log n) to push and to pop, a binary heap of ``(-priority, seq,
    task)``. The priority is read when the task is pushed.

    Failure mode: **starvation**. While a higher-priority task is READY, a
    lower one never runs, however long it has waited. A high-priority task
    that calls ``sched_yield()`` is pushed straight back and picked again at
    once: yielding only lets tasks of the *same* priority go first. That is
    what static priority means; Unix schedulers answer it with aging
    (priority that rises while a task waits), CFS with fair shares
    (`FairSharePolicy`).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()

    def push(self, task: Task) -> None:
        heapq.heappush(self._heap, (-task.priority, next(self._seq), task))

    def pop_next(self) -> Task:
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)

    def clear(self) -> None:
        self._heap.clear()

    def __repr__(self) -> str:
        return f"PriorityPolicy(ready={len(self)})"


class _FairState:
    """A task's bookkeeping under `FairSharePolicy` (kept in ``task.sched.data``)."""

    __slots__ = ("vruntime", "queued")

    def __init__(self, vruntime: float) -> None:
        self.vruntime = vruntime  # weighted CPU seconds used
        self.queued: Optional[int] = None  # seq of its live heap entry; None: not queued


class FairSharePolicy(Instrument):
    """Fair share, as Linux's CFS: the READY task that has had the least CPU runs next.

    The idea. Each task has a *virtual runtime*: the CPU seconds it has used,
    scaled by its weight. The run queue is ordered by vruntime, least first,
    so whoever is furthest behind its fair share catches up; ties are FIFO.
    The weight is the task's tickets: a task's vruntime grows by
    ``seconds * DEFAULT_TICKETS / tickets``, so a task with 200 tickets ages
    half as fast as one with the default 100 and gets twice the CPU (CFS does
    the same with weights derived from ``nice``).

    Charging. The policy is an `Instrument`: ``stop(task, seconds)`` follows
    every step with the CPU time the step took, measured on
    ``kernel.cpu_clock``. Under a `VirtualClock` that is what the task
    advanced the clock by, so the order is exactly repeatable; under real
    time it is `time.perf_counter`, and the order depends on the machine.

    Sleepers: ``min_vruntime``. A blocked task uses no CPU, so its vruntime
    falls behind. If it kept that lead it would, on waking, run alone until
    the others caught up: sleeping would be saving up CPU to starve the
    others with later. So the policy keeps ``min_vruntime``, the vruntime of
    the task it picked last (never decreasing), and a task pushed below it
    (new, or back from a long sleep) is raised to it. It still runs soon (it
    ties with the least-served task), which is why interactive tasks feel
    responsive under CFS, but it cannot bank credit.

    Cost: O(log n) push and pop, a heap of ``(vruntime, seq, task)``. A
    task's key changes when it is charged, after its step, and by then it
    may be back on the queue already (``sched_yield`` pushes it during the
    step). Rather than search the heap, the charge pushes a fresh entry and
    leaves the old one: ``task.sched.data.queued`` names the live entry's seq, and
    `pop_next` throws away entries that are not live. A task has at most one
    such dead entry (its old key is smaller, so it surfaces first).

    Failure modes: fairness is judged after the fact. There is no
    preemption, so a task that computes for a second without a trap gets
    that second, and is only made to wait afterwards. CPU a task did not
    use while it slept is lost, not owed. And shares are per task, not per
    program: whoever spawns ten tasks gets ten shares (CFS's group
    scheduling answers that; this policy does not).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._ready = 0  # live entries: the heap also holds dead ones
        #: The vruntime of the task picked last: where new and waking tasks start.
        self.min_vruntime = 0.0

    def push(self, task: Task) -> None:
        info = sched_info(task)
        state: Optional[_FairState] = info.data
        if state is None:
            state = info.data = _FairState(self.min_vruntime)
        elif state.vruntime < self.min_vruntime:
            state.vruntime = self.min_vruntime  # no credit for having slept
        assert state.queued is None, f"kernel bug: {task!r} pushed twice"
        self._enqueue(task, state)

    def _enqueue(self, task: Task, state: _FairState) -> None:
        seq = next(self._seq)
        state.queued = seq
        heapq.heappush(self._heap, (state.vruntime, seq, task))
        self._ready += 1

    def pop_next(self) -> Task:
        heap = self._heap
        while True:
            _, seq, task = heapq.heappop(heap)
            state: _FairState = sched_info(task).data
            if state.queued == seq:
                break
            # A dead entry: the task was charged (and re-queued) after this was pushed.
        state.queued = None
        self._ready -= 1
        if state.vruntime > self.min_vruntime:
            self.min_vruntime = state.vruntime
        return task

    def stop(self, task: Task, seconds: float) -> None:
        """The instrument hook: charge ``task`` for the step it just ran."""
        if not seconds:
            return
        state: _FairState = sched_info(task).data
        state.vruntime += seconds * DEFAULT_TICKETS / task.tickets
        if state.queued is not None:  # already READY again (sched_yield): re-key it
            self._ready -= 1
            self._enqueue(task, state)

    def __len__(self) -> int:
        return self._ready

    def clear(self) -> None:
        for _, seq, task in self._heap:
            state: _FairState = sched_info(task).data
            if state.queued == seq:
                state.queued = None
        self._heap.clear()
        self._ready = 0

    def __repr__(self) -> str:
        return f"FairSharePolicy(ready={len(self)}, min_vruntime={self.min_vruntime:.6f})"


#: The stride of a task with one ticket. An int, so passes are exact, and a
#: multiple of every ticket count from 1 to 16 and of the round ones (25, 100,
#: 300, 1000...): tasks holding 300 and 100 tickets have strides exactly 1 to 3,
#: so their passes tie exactly (and ties go FIFO) instead of drifting by rounding.
STRIDE1 = 720720 * 8000  # lcm(1..16) * 2**6 * 5**3


class StridePolicy:
    """Stride scheduling (Waldspurger and Weihl, 1995): lottery's shares, without luck.

    The idea. Each task has a *stride*, ``STRIDE1 // tickets``, and a
    *pass*, a position in virtual time. The READY task with the smallest
    pass runs next, and its pass moves on by its stride. A task with twice
    the tickets has half the stride, so it is picked twice as often. Turns
    are in proportion to tickets over any window, off by at most a few turns
    however long the run (lottery's error grows with the run). Ties are
    FIFO. No randomness: the order is the same on every run, under a real
    clock too.

    Joining. The *global pass* is the pass of the task picked last (it never
    decreases). A new task starts at the global pass, and a task that comes
    back from blocking with its pass behind is raised to it: as with
    `FairSharePolicy`'s ``min_vruntime``, time spent blocked earns no credit.

    Cost: O(log n) push and pop, a heap of ``(pass, seq, task)``. The stride
    is worked out from ``task.tickets`` each time the task is picked.

    Failure mode: it divides *turns*, not CPU. Stride scheduling assumes a
    turn is a fixed quantum; here a task keeps the CPU until its next trap,
    so a task with long steps gets more CPU than its tickets say.
    `FairSharePolicy` is the same idea with the pass advanced by the CPU
    each step used (a vruntime is a pass measured in seconds), at the price
    of measuring it.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()
        #: The pass of the task picked last: where new and waking tasks start.
        self.global_pass = 0

    def push(self, task: Task) -> None:
        info = sched_info(task)
        pass_: Optional[int] = info.data
        if pass_ is None or pass_ < self.global_pass:
            pass_ = info.data = self.global_pass
        heapq.heappush(self._heap, (pass_, next(self._seq), task))

    def pop_next(self) -> Task:
        pass_, _, task = heapq.heappop(self._heap)
        self.global_pass = pass_
        sched_info(task).data = pass_ + STRIDE1 // task.tickets  # where its next turn starts
        return task

    def __len__(self) -> int:
        return len(self._heap)

    def clear(self) -> None:
        self._heap.clear()

    def __repr__(self) -> str:
        return f"StridePolicy(ready={len(self)}, global_pass={self.global_pass})"


def _seeded(seed: int) -> Callable[[], float]:
    """The ``random()`` method of a new generator seeded with ``seed``."""
    import random  # here, not at the top: only the seeded policies pay for the import

    return random.Random(seed).random


class LotteryPolicy:
    """Lottery scheduling (Waldspurger and Weihl, 1994): draw a ticket; its holder runs.

    The idea. Each READY task holds ``task.tickets`` tickets; each pick draws
    one of all the tickets at random, so a task runs next with probability
    ``tickets / total``. In the long run turns are in proportion to tickets,
    and every task with a ticket has a chance at every pick: nobody starves
    for long, and no bookkeeping of the past is needed (a new task just
    brings its tickets). The draw uses ``random.Random(seed)``: the same
    seed gives the same order.

    Cost: O(1) push; O(n) pop, the walk along the ready list to find whose
    ticket was drawn. (A tree of partial sums would make it O(log n); the
    ready list is short in practice, blocked tasks are not on it.) A task
    leaves the list by swap-remove: the last one takes its place.

    Failure mode: it is fair only on average. Over k picks a task with
    share p gets ``k*p`` turns give or take ``sqrt(k*p*(1-p))``: over a short
    window the shares can be far off. `StridePolicy` gives the same shares
    deterministically. Like stride, it divides turns, not CPU.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._random = _seeded(seed)
        self._tasks: list[Task] = []
        self._tickets: list[int] = []  # as read at push, so the total stays exact
        self._total = 0

    def push(self, task: Task) -> None:
        self._tasks.append(task)
        self._tickets.append(task.tickets)
        self._total += task.tickets

    def pop_next(self) -> Task:
        tasks, tickets = self._tasks, self._tickets
        # random() < 1, so the winning ticket is < total and the walk ends on a task.
        winner = int(self._random() * self._total)
        i = 0
        while winner >= tickets[i]:
            winner -= tickets[i]
            i += 1
        task = tasks[i]
        self._total -= tickets[i]
        tasks[i], tickets[i] = tasks[-1], tickets[-1]  # swap-remove
        tasks.pop()
        tickets.pop()
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def clear(self) -> None:
        self._tasks.clear()
        self._tickets.clear()
        self._total = 0

    def __repr__(self) -> str:
        return f"LotteryPolicy(seed={self.seed}, ready={len(self)})"


class RandomPolicy:
    """Seeded random order: each READY task is equally likely to run next.

    The idea: a tool for testing, not for production. Code that silently
    relies on FIFO order (that the task spawned first runs first, that a
    woken task runs before the one that woke it sets a flag again...) passes
    under FIFO by luck and breaks under another interleaving. Running the
    tests under many seeds shakes such order bugs out, and the seed makes a
    failing order repeatable: run again with the same seed to get the very
    same interleaving (trio offers the same for the same reason).

    Cost: O(1) push and pop: ``pop_next`` swaps a random slot with the last
    one and pops it.

    Failure mode: no fairness in any window. Each pick is a fresh 1-in-n
    chance, so a task waits a geometric number of picks: long waits are
    improbable, not impossible. And it shakes out order bugs only as far as
    the seeds tried reach.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._random = _seeded(seed)
        self._tasks: list[Task] = []

    def push(self, task: Task) -> None:
        self._tasks.append(task)

    def pop_next(self) -> Task:
        tasks = self._tasks
        i = int(self._random() * len(tasks))  # < len: random() < 1
        task = tasks[i]
        tasks[i] = tasks[-1]
        tasks.pop()
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def clear(self) -> None:
        self._tasks.clear()

    def __repr__(self) -> str:
        return f"RandomPolicy(seed={self.seed}, ready={len(self)})"
