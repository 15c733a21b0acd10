"""The built-in demo: ``python -m kernel demo``. A small program to watch the kernel work.

Four kinds of task, each spending its time its own way:

* ``crunch`` computes: it "uses the CPU" for 4 ms at a time (under the
  virtual clock, advancing the clock is how a task stands for computing),
  then yields the CPU with ``sched_yield`` so the others get a turn;
* two ``nap`` tasks sleep on timers;
* ``ping`` and ``pong`` talk over a socket pair: ping sends, then blocks in
  ``recv`` until pong, who "thinks" 2 ms per message, answers.

``main`` spawns them all and joins each one. The program is written with
the trap classes of kernel/traps.py (`Spawn`, `Sleep`, ...), because
kernel/ never imports syscalls/; a user program would call
``syscalls.spawn(...)`` and friends, which build the very same traps.

It runs under a `VirtualClock`, so the output is the same on every machine
and every run: strace durations are exact, and the timeline shows the
simulated time.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import tempfile
from typing import Any, Generator, Optional, TextIO

from .kernel import Kernel
from .strace import Strace
from .timeline import write_svg
from .timers import VirtualClock
from .trace import TraceRecorder
from .traps import SCHED_YIELD, Close, Join, Recv, Send, Sleep, Spawn

Task = Generator[Any, Any, Any]


def crunch(clock: VirtualClock, slices: int) -> Task:
    """CPU-bound: each slice computes for 4 ms, then lets the others run."""
    for _ in range(slices):
        clock.advance(0.004)  # stands for 4 ms of computing (nothing else runs meanwhile)
        yield SCHED_YIELD
    return slices


def nap(seconds: float, times: int) -> Task:
    """Sleep on a timer, ``times`` times."""
    for _ in range(times):
        yield Sleep(seconds)


def ping(sock: socket.socket, rounds: int) -> Task:
    """Send a message and block until the answer comes, ``rounds`` times; then hang up."""
    for i in range(rounds):
        yield Send(sock, b"ping %d" % i)
        yield Recv(sock, 64)
    yield Close(sock)  # pong's recv returns b"": end of the conversation


def pong(sock: socket.socket) -> Task:
    """Answer each message after 2 ms of thought, until the peer hangs up."""
    answered = 0
    while True:
        message = yield Recv(sock, 64)
        if not message:
            break
        yield Sleep(0.002)
        yield Send(sock, b"pong" + message[4:])
        answered += 1
    yield Close(sock)
    return answered


def main(clock: VirtualClock) -> Task:
    left, right = socket.socketpair()
    try:
        tasks = [
            (yield Spawn(crunch, clock, 3)),
            (yield Spawn(nap, 0.005, 2)),
            (yield Spawn(nap, 0.008, 1)),
            (yield Spawn(pong, right)),
            (yield Spawn(ping, left, 2)),
        ]
        for task in tasks:
            yield Join(task)
    finally:  # (already closed by the Close traps when all went well)
        left.close()
        right.close()


def run_demo(out_dir: Optional[str] = None, file: TextIO = sys.stdout) -> tuple[str, str]:
    """Run the demo, print its strace and ``-c`` table to ``file``, and write its
    Chrome trace and SVG timeline in ``out_dir`` (default: a new temporary
    directory). Returns the paths of the trace and the timeline."""
    clock = VirtualClock()
    lines, table = io.StringIO(), io.StringIO()
    recorder = TraceRecorder()
    with Kernel(clock=clock) as k:
        k.add_instrument(Strace(lines))
        k.add_instrument(Strace(table, summary=True))
        k.add_instrument(recorder)
        k.run(main, clock)
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="yieldos-demo-")
    os.makedirs(out_dir, exist_ok=True)
    trace_path = os.path.join(out_dir, "demo-trace.json")
    svg_path = os.path.join(out_dir, "demo-timeline.svg")
    recorder.write_chrome(trace_path)
    write_svg(recorder, svg_path, title="yieldos demo: crunch, nap, ping/pong")
    print("$ python -m kernel strace --clock virtual demo.py", file=file)
    file.write(lines.getvalue())
    print("\n$ python -m kernel strace -c --clock virtual demo.py", file=file)
    file.write(table.getvalue())
    print(f"\ntrace:    {trace_path}   (open it in https://ui.perfetto.dev)", file=file)
    print(f"timeline: {svg_path}   (open it in a browser)", file=file)
    return trace_path, svg_path
