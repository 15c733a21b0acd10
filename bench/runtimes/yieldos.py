"""The CPU workloads on yieldos, through its public API only (`kernel.run`, `syscalls`).

Ping-pong goes through two `syscalls.Queue` of capacity 1.
"""

from __future__ import annotations

import math
import time
from typing import Any, Generator

import kernel
from syscalls import Queue, join, sched_yield, sleep, spawn

from . import lateness, now, report, rss

Gen = Generator[Any, Any, Any]


def _timed(main: Any) -> float:
    start = now()
    kernel.run(main)
    return now() - start


def switch(tasks: int, yields: int) -> dict[str, Any]:
    def worker() -> Gen:
        for _ in range(yields):
            yield sched_yield()

    def main() -> Gen:
        children = []
        for _ in range(tasks):
            children.append((yield spawn(worker)))
        for task in children:  # noqa: UP028 (not `yield from`: each join's result is sent back)
            yield task  # yielding a task joins it

    return {"rate": tasks * yields / _timed(main)}


def spawn_join(n: int) -> dict[str, Any]:
    def child() -> Gen:
        return None
        yield

    def main() -> Gen:
        children = []
        for _ in range(n):
            children.append((yield spawn(child)))
        for task in children:  # noqa: UP028 (not `yield from`: each join's result is sent back)
            yield task  # yielding a task joins it

    return {"rate": n / _timed(main)}


def pingpong(n: int) -> dict[str, Any]:
    def ping(q1: Queue[int], q2: Queue[int]) -> Gen:
        x = 0
        for _ in range(n):
            yield q1.put(x)
            x = yield q2.get()
        return x

    def pong(q1: Queue[int], q2: Queue[int]) -> Gen:
        for _ in range(n):
            x = yield q1.get()
            yield q2.put(x + 1)

    def main() -> Gen:
        q1: Queue[int] = Queue(1)
        q2: Queue[int] = Queue(1)
        pinger = yield spawn(ping, q1, q2)
        ponger = yield spawn(pong, q1, q2)
        assert (yield join(pinger)) == n
        yield join(ponger)

    return {"rate": n / _timed(main)}


def timers(durations: list[float]) -> dict[str, Any]:
    late: list[float] = []
    clock = time.monotonic

    def sleeper(d: float) -> Gen:
        deadline = clock() + d
        yield sleep(d)
        late.append(clock() - deadline)

    def main() -> Gen:
        children = []
        for d in durations:
            children.append((yield spawn(sleeper, d)))
        for task in children:  # noqa: UP028 (not `yield from`: each join's result is sent back)
            yield task  # yielding a task joins it

    return lateness(late, _timed(main), durations)


def memory(n: int) -> dict[str, Any]:
    def idle() -> Gen:
        yield sleep(math.inf)  # blocked until killed: no timer, no fd

    def main() -> Gen:
        before = rss()
        for _ in range(n):
            yield spawn(idle)
        yield sched_yield()  # every child runs to its sleep first
        yield sched_yield()
        report({"bytes": (rss() - before) / n})

    kernel.run(main)
    raise AssertionError("not reached")
