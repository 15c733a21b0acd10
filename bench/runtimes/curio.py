"""The CPU workloads on curio.

Tasks give up the CPU with ``curio.sleep(0)``, are started with ``curio.spawn``
and joined with ``Task.join``; idle tasks wait on a `curio.Event`; ping-pong
goes through two ``curio.Queue(maxsize=1)``.
"""

from __future__ import annotations

import time
from typing import Any

import curio

from . import lateness, now, report, rss


def _run(main: Any) -> float:
    start = now()
    curio.run(main)
    return now() - start


def switch(tasks: int, yields: int) -> dict[str, Any]:
    async def worker() -> None:
        for _ in range(yields):
            await curio.sleep(0)

    async def main() -> None:
        children = [await curio.spawn(worker) for _ in range(tasks)]
        for task in children:
            await task.join()

    return {"rate": tasks * yields / _run(main)}


def spawn_join(n: int) -> dict[str, Any]:
    async def child() -> None:
        return None

    async def main() -> None:
        children = [await curio.spawn(child) for _ in range(n)]
        for task in children:
            await task.join()

    return {"rate": n / _run(main)}


def pingpong(n: int) -> dict[str, Any]:
    async def ping(q1: curio.Queue, q2: curio.Queue) -> int:
        x = 0
        for _ in range(n):
            await q1.put(x)
            x = await q2.get()
        return x

    async def pong(q1: curio.Queue, q2: curio.Queue) -> None:
        for _ in range(n):
            x = await q1.get()
            await q2.put(x + 1)

    async def main() -> None:
        q1, q2 = curio.Queue(maxsize=1), curio.Queue(maxsize=1)
        pinger = await curio.spawn(ping, q1, q2)
        ponger = await curio.spawn(pong, q1, q2)
        assert await pinger.join() == n
        await ponger.join()

    return {"rate": n / _run(main)}


def timers(durations: list[float]) -> dict[str, Any]:
    late: list[float] = []
    clock = time.monotonic

    async def sleeper(d: float) -> None:
        deadline = clock() + d
        await curio.sleep(d)
        late.append(clock() - deadline)

    async def main() -> None:
        children = [await curio.spawn(sleeper, d) for d in durations]
        for task in children:
            await task.join()

    return lateness(late, _run(main), durations)


def memory(n: int) -> dict[str, Any]:
    async def main() -> None:
        event = curio.Event()
        before = rss()
        children = [await curio.spawn(event.wait) for _ in range(n)]
        await curio.sleep(0)  # every child runs to its wait first
        await curio.sleep(0)
        report({"bytes": (rss() - before) / n})
        del children

    curio.run(main)
    raise AssertionError("not reached")
