"""The limit for CPU workloads: the smallest generator kernel that can run them.

A deque of generators, round robin, and four traps as plain tuples: ``None``
(yield the CPU), ``(SPAWN, gen)``, ``(JOIN, task)``, ``(SLEEP, seconds)``, and
``BLOCK`` (wait forever). No error handling, no cancellation, no I/O, no
checks: everything a real kernel must do and this one skips is the price of a
real kernel. yieldos should be measured against this, not against zero.

switch and pingpong do without even this: their generators are resumed in turn
by ``next`` over a deque, and ping-pong's two queues are plain deques.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Any, Callable, Generator

from . import lateness, now, report, rss

SPAWN, JOIN, SLEEP, BLOCK = "spawn", "join", "sleep", ("block",)

Gen = Generator[Any, Any, Any]


class Task:
    __slots__ = ("gen", "value", "done", "result", "joiners")

    def __init__(self, gen: Gen) -> None:
        self.gen = gen
        self.value: Any = None
        self.done = False
        self.result: Any = None
        self.joiners: list[Task] = []


def run(main: Gen) -> None:
    """Run ``main`` and everything it spawns until no task can run."""
    ready: deque[Task] = deque([Task(main)])
    timers: list[tuple[float, int, Task]] = []
    seq = 0
    clock = time.monotonic
    while ready or timers:
        if timers:
            if not ready:
                time.sleep(max(0.0, timers[0][0] - clock()))
            t = clock()
            while timers and timers[0][0] <= t:
                ready.append(heapq.heappop(timers)[2])
        for _ in range(len(ready)):
            task = ready.popleft()
            send = task.gen.send
            while True:  # resume the task; answer spawn and finished joins at once
                try:
                    trap = send(task.value)
                except StopIteration as stop:
                    task.done, task.result = True, stop.value
                    for joiner in task.joiners:
                        joiner.value = stop.value
                        ready.append(joiner)
                    break
                if trap is None:
                    task.value = None
                    ready.append(task)
                    break
                op = trap[0]
                if op is SPAWN:
                    child = Task(trap[1])
                    ready.append(child)
                    task.value = child
                elif op is JOIN:
                    target = trap[1]
                    if target.done:
                        task.value = target.result
                    else:
                        target.joiners.append(task)
                        break
                elif op is SLEEP:
                    seq += 1
                    heapq.heappush(timers, (clock() + trap[1], seq, task))
                    break
                else:  # BLOCK
                    break


def _timed(main: Callable[[], Gen]) -> float:
    start = now()
    run(main())
    return now() - start


def switch(tasks: int, yields: int) -> dict[str, Any]:
    """The bare round robin itself: no task objects, no traps, just ``next`` in turn."""

    def worker() -> Gen:
        for _ in range(yields):
            yield None

    start = now()
    queue = deque(worker() for _ in range(tasks))
    popleft, append = queue.popleft, queue.append
    while queue:
        gen = popleft()
        try:
            next(gen)
        except StopIteration:
            continue
        append(gen)
    return {"rate": tasks * yields / (now() - start)}


def spawn_join(n: int) -> dict[str, Any]:
    def child() -> Gen:
        return None
        yield

    def main() -> Gen:
        children = []
        for _ in range(n):
            children.append((yield (SPAWN, child())))
        for task in children:
            yield (JOIN, task)

    return {"rate": n / _timed(main)}


def pingpong(n: int) -> dict[str, Any]:
    """Two generators and two deques, resumed in turn by ``next``: no kernel, no traps.

    A task with nothing to take yields and is resumed after the other task's
    turn, so this is a poll; but with two tasks in strict alternation the other
    has always put by then, and no turn is wasted: two resumes per round trip.
    """
    q1: deque[int] = deque()
    q2: deque[int] = deque()

    def ping() -> Gen:
        x = 0
        for _ in range(n):
            q1.append(x)
            while not q2:
                yield None
            x = q2.popleft()
        assert x == n

    def pong() -> Gen:
        for _ in range(n):
            while not q1:
                yield None
            q2.append(q1.popleft() + 1)

    start = now()
    queue = deque([ping(), pong()])
    popleft, append = queue.popleft, queue.append
    while queue:
        gen = popleft()
        try:
            next(gen)
        except StopIteration:
            continue
        append(gen)
    return {"rate": n / (now() - start)}


def timers(durations: list[float]) -> dict[str, Any]:
    late: list[float] = []
    clock = time.monotonic

    def sleeper(d: float) -> Gen:
        deadline = clock() + d
        yield (SLEEP, d)
        late.append(clock() - deadline)

    def main() -> Gen:
        for d in durations:
            yield (SPAWN, sleeper(d))

    return lateness(late, _timed(main), durations)


def memory(n: int) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def idle() -> Gen:
        yield BLOCK

    def main() -> Gen:
        before = rss()
        tasks = []  # as a kernel's task table: a blocked task must be kept somewhere
        for _ in range(n):
            tasks.append((yield (SPAWN, idle())))
        yield None  # every child runs to its BLOCK first
        result["bytes"] = (rss() - before) / n
        report(result)

    run(main())
