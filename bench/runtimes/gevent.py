"""The CPU workloads on gevent: greenlets, not generators.

Greenlets give up the CPU with ``gevent.sleep(0)``, are started with
``gevent.spawn`` and joined with ``join``/``get``; idle ones wait on a
`gevent.event.Event`; ping-pong goes through two ``gevent.queue.Queue(1)`` (not
a `gevent.queue.Channel`, which is a rendezvous). Each greenlet has its own C
stack slice, which is what the memory figure shows.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.event
import gevent.queue

from . import lateness, now, report, rss


def switch(tasks: int, yields: int) -> dict[str, Any]:
    def worker() -> None:
        for _ in range(yields):
            gevent.sleep(0)

    start = now()
    gevent.joinall([gevent.spawn(worker) for _ in range(tasks)])
    return {"rate": tasks * yields / (now() - start)}


def spawn_join(n: int) -> dict[str, Any]:
    def child() -> None:
        return None

    start = now()
    gevent.joinall([gevent.spawn(child) for _ in range(n)])
    return {"rate": n / (now() - start)}


def pingpong(n: int) -> dict[str, Any]:
    q1: gevent.queue.Queue = gevent.queue.Queue(1)
    q2: gevent.queue.Queue = gevent.queue.Queue(1)

    def ping() -> int:
        x = 0
        for _ in range(n):
            q1.put(x)
            x = q2.get()
        return x

    def pong() -> None:
        for _ in range(n):
            x = q1.get()
            q2.put(x + 1)

    start = now()
    pinger, ponger = gevent.spawn(ping), gevent.spawn(pong)
    assert pinger.get() == n
    ponger.get()
    return {"rate": n / (now() - start)}


def timers(durations: list[float]) -> dict[str, Any]:
    late: list[float] = []
    clock = time.monotonic

    def sleeper(d: float) -> None:
        deadline = clock() + d
        gevent.sleep(d)
        late.append(clock() - deadline)

    start = now()
    gevent.joinall([gevent.spawn(sleeper, d) for d in durations])
    return lateness(late, now() - start, durations)


def memory(n: int) -> dict[str, Any]:
    event = gevent.event.Event()
    gevent.sleep(0)  # start the hub first: it is not the tasks' cost
    before = rss()
    children = [gevent.spawn(event.wait) for _ in range(n)]
    gevent.sleep(0)  # every greenlet runs to its wait first
    gevent.sleep(0)
    report({"bytes": (rss() - before) / n})
    del children
    raise AssertionError("not reached")
