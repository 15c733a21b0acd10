"""The CPU workloads on trio.

Tasks give up the CPU with ``trio.sleep(0)`` (a checkpoint), are started in a
nursery and joined when it closes (trio's only way to spawn and wait); idle
tasks wait on a `trio.Event`; ping-pong goes through two memory channels with a
buffer of 1 (``open_memory_channel(1)``: 0 would be a rendezvous, unlike the
other runtimes' queues).
"""

from __future__ import annotations

import time
from typing import Any

import trio
import trio.testing

from . import lateness, now, report, rss


def _run(main: Any) -> float:
    start = now()
    trio.run(main)
    return now() - start


def switch(tasks: int, yields: int) -> dict[str, Any]:
    async def worker() -> None:
        for _ in range(yields):
            await trio.sleep(0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)

    return {"rate": tasks * yields / _run(main)}


def spawn_join(n: int) -> dict[str, Any]:
    async def child() -> None:
        return None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(child)

    return {"rate": n / _run(main)}


def pingpong(n: int) -> dict[str, Any]:
    async def ping(
        to_pong: trio.MemorySendChannel[int], from_pong: trio.MemoryReceiveChannel[int]
    ) -> None:
        x = 0
        for _ in range(n):
            await to_pong.send(x)
            x = await from_pong.receive()
        assert x == n  # raised out of the nursery, and out of trio.run

    async def pong(
        from_ping: trio.MemoryReceiveChannel[int], to_ping: trio.MemorySendChannel[int]
    ) -> None:
        for _ in range(n):
            x = await from_ping.receive()
            await to_ping.send(x + 1)

    async def main() -> None:
        send1, receive1 = trio.open_memory_channel[int](1)
        send2, receive2 = trio.open_memory_channel[int](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping, send1, receive2)
            nursery.start_soon(pong, receive1, send2)

    return {"rate": n / _run(main)}


def timers(durations: list[float]) -> dict[str, Any]:
    late: list[float] = []
    clock = time.monotonic

    async def sleeper(d: float) -> None:
        deadline = clock() + d
        await trio.sleep(d)
        late.append(clock() - deadline)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for d in durations:
                nursery.start_soon(sleeper, d)

    return lateness(late, _run(main), durations)


def memory(n: int) -> dict[str, Any]:
    async def main() -> None:
        event = trio.Event()
        before = rss()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(event.wait)
            await trio.testing.wait_all_tasks_blocked()
            report({"bytes": (rss() - before) / n})

    trio.run(main)
    raise AssertionError("not reached")
