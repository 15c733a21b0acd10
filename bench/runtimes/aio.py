"""The CPU workloads on asyncio, and on uvloop: the same coroutines, another event loop.

`LOOP` picks the loop: ``"asyncio"`` (the stdlib's selector loop) or ``"uvloop"``.
Tasks give up the CPU with ``asyncio.sleep(0)``, are started with
``create_task`` and joined by awaiting them; idle tasks wait on an `asyncio.Event`;
ping-pong goes through two ``asyncio.Queue(1)``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Coroutine

from . import lateness, now, report, rss

LOOP = "asyncio"


def _run(main: Callable[[], Coroutine[Any, Any, Any]]) -> float:
    if LOOP == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        start = now()
        loop.run_until_complete(main())
        return now() - start
    finally:
        loop.close()


def switch(tasks: int, yields: int) -> dict[str, Any]:
    async def worker() -> None:
        for _ in range(yields):
            await asyncio.sleep(0)

    async def main() -> None:
        children = [asyncio.create_task(worker()) for _ in range(tasks)]
        for task in children:
            await task

    return {"rate": tasks * yields / _run(main)}


def spawn_join(n: int) -> dict[str, Any]:
    async def child() -> None:
        return None

    async def main() -> None:
        children = [asyncio.create_task(child()) for _ in range(n)]
        for task in children:
            await task

    return {"rate": n / _run(main)}


def pingpong(n: int) -> dict[str, Any]:
    async def ping(q1: asyncio.Queue[int], q2: asyncio.Queue[int]) -> int:
        x = 0
        for _ in range(n):
            await q1.put(x)
            x = await q2.get()
        return x

    async def pong(q1: asyncio.Queue[int], q2: asyncio.Queue[int]) -> None:
        for _ in range(n):
            x = await q1.get()
            await q2.put(x + 1)

    async def main() -> None:
        q1: asyncio.Queue[int] = asyncio.Queue(1)
        q2: asyncio.Queue[int] = asyncio.Queue(1)
        pinger = asyncio.create_task(ping(q1, q2))
        ponger = asyncio.create_task(pong(q1, q2))
        assert await pinger == n
        await ponger

    return {"rate": n / _run(main)}


def timers(durations: list[float]) -> dict[str, Any]:
    late: list[float] = []
    clock = time.monotonic

    async def sleeper(d: float) -> None:
        deadline = clock() + d
        await asyncio.sleep(d)
        late.append(clock() - deadline)

    async def main() -> None:
        children = [asyncio.create_task(sleeper(d)) for d in durations]
        for task in children:
            await task

    return lateness(late, _run(main), durations)


def memory(n: int) -> dict[str, Any]:
    async def main() -> None:
        event = asyncio.Event()
        before = rss()
        children = [asyncio.create_task(event.wait()) for _ in range(n)]
        await asyncio.sleep(0)  # every child runs to its wait first
        await asyncio.sleep(0)
        report({"bytes": (rss() - before) / n})
        del children

    _run(main)
    raise AssertionError("not reached")
