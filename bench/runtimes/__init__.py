"""The CPU workloads, written once for each runtime.

Every module here has the same five functions, each the same program in that
runtime's own idiom, timed from inside the program (interpreter start-up and
imports are measured separately by the import workload):

``switch(tasks, yields)``
    ``tasks`` tasks each give up the CPU ``yields`` times. The cost of one
    context switch: the heart of any coroutine runtime. Returns ``{"rate": switches/s}``.
``spawn_join(n)``
    Start ``n`` tasks that return at once, then wait for all of them. The
    cost of a task's whole life: create, schedule, run, exit, reap.
``pingpong(n)``
    ``n`` round trips between two tasks, one after another, so each one is a
    switch there and a switch back with nothing to batch. Two long-lived
    tasks and two queues, each runtime's own: ping puts ``x`` on the first,
    pong gets it and puts ``x + 1`` on the second, ping gets that; ping's
    last value must be ``n``. The cost of a blocking get and of waking the
    task blocked in it. Every queue has capacity 1 (trio: a memory channel
    with a buffer of 1, not 0, which is a rendezvous). As the two strictly
    alternate, a queue never holds more than one item and a put never
    waits, so this is the same as unbounded; what is timed is the getters'
    blocking and waking.
``timers(durations)``
    One task per duration, each sleeping that long. How late the timers fire
    with many of them pending (lateness p50/p99), and how much longer than the
    longest sleep the whole run takes (the excess wall time: spawning, the
    timer queue, waking everybody).
``memory(n)``
    ``n`` tasks all blocked waiting forever: the resident memory each one
    costs (RSS growth / n). Reports and exits the process at once, without
    tearing 100,000 tasks down.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from typing import Any


def rss() -> int:
    """This process's resident set size in bytes (after a full garbage collection)."""
    gc.collect()
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def report(result: dict[str, Any]) -> None:
    """Print the result line the harness reads, and leave the process right away."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


def lateness(late: list[float], elapsed: float, durations: list[float]) -> dict[str, Any]:
    """The timers workload's figures, in milliseconds."""
    late = sorted(late)
    assert len(late) == len(durations), "not every timer fired"
    return {
        "excess_ms": (elapsed - max(durations)) * 1e3,
        "late_p50_ms": statistics.median(late) * 1e3,
        "late_p99_ms": late[int(len(late) * 0.99) - 1] * 1e3,
    }


now = time.perf_counter
