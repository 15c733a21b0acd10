"""The CPU workloads on yieldos, through its public API only (`kernel.run`, `syscalls`)."""

from __future__ import annotations

import math
import time
from typing import Any, Generator

import kernel
from syscalls import join, sched_yield, sleep, spawn

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
        for task in children:
            yield join(task)

    return {"rate": tasks * yields / _timed(main)}


def spawn_join(n: int) -> dict[str, Any]:
    def child() -> Gen:
        return None
        yield

    def main() -> Gen:
        children = []
        for _ in range(n):
            children.append((yield spawn(child)))
        for task in children:
            yield join(task)

    return {"rate": n / _timed(main)}


def pingpong(n: int) -> dict[str, Any]:
    def pong(x: int) -> Gen:
        return x + 1
        yield

    def main() -> Gen:
        x = 0
        for _ in range(n):
            x = yield join((yield spawn(pong, x)))
        assert x == n

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
        for task in children:
            yield join(task)

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
