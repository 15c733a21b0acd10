"""One mixed workload under every scheduling policy: who got the CPU, who waited.

Run it::

    python3 examples/policies.py                  # every policy, virtual time
    python3 examples/policies.py --policy fair    # one (any make_policy spec: random:7)
    python3 examples/policies.py --real           # real time and real CPU burning
    python3 examples/policies.py --selftest       # check each policy's signature

The workload, the same under each policy, runs for ``--duration`` seconds of
the kernel clock:

==========  ===========  ========  =======  ======================================
task        kind         priority  tickets  what it does
==========  ===========  ========  =======  ======================================
``cpu-A``   CPU-bound           1      300  computes 1 ms at a time, then yields
``cpu-B``   CPU-bound           0      100  computes 3 ms at a time, then yields
``ping``    I/O-bound           0      100  sends 64 bytes on a socketpair, waits
``echo``    I/O-bound           0      100  ... for ``echo`` to send them back
``keys``    interactive         2      100  sleeps 10 ms, then needs 0.5 ms of CPU
==========  ===========  ========  =======  ======================================

(each I/O message costs 0.1 ms of CPU). For each policy it prints a table:
what each task got *done* (bursts of computing, round trips for ping, replies
for echo, key presses handled), how often it *ran*, its CPU time and share,
the time it spent READY waiting for the CPU, and the delay from each of its
wake-ups to the moment it ran. It writes a timeline of each run too, as an
SVG and as a Chrome trace for ui.perfetto.dev (``--out DIR``, by default a
new temporary directory, printed). The figures come from the kernel's
instruments: `kernel.accounting.Accounting` (runs, CPU, READY time),
`kernel.trace.TraceRecorder` (the timelines), and `WakeToRun` below.

What to look for:

* **fifo** gives equal *turns*: cpu-B, with 3 ms turns, gets three times
  cpu-A's CPU, and keys waits a whole round after each wake-up.
* **priority**: keys (2) runs the instant it wakes; cpu-A (1) takes all the
  rest, and cpu-B, ping and echo *starve*: no CPU at all until cpu-A is done.
* **fair** (CFS) divides *CPU* by tickets: cpu-A gets three times cpu-B's,
  and the tasks that sleep (keys, ping, echo) run soon after they wake.
* **stride** divides *turns* by tickets: cpu-A gets three turns per turn of
  cpu-B, which makes their CPU about equal (1 ms against 3 ms turns).
* **lottery** aims at the same by drawing tickets: right on average, but over
  a run this short the ratio wanders off 3 (try a few ``lottery:SEED``).
* **random** has no aim but repeatability: the same seed, the same order.

``--virtual`` (the default) runs on a `kernel.VirtualClock`: "computing"
means advancing the clock, so every figure is exact and the output is the
same on every run and machine, which suits a lesson. ``--real`` uses the
real clock and burns real CPU: the figures move a little from run to run,
and the policies that measure CPU (fair share) see the machine's noise.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Optional

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from kernel.accounting import Accounting, TaskStats  # noqa: E402
from kernel.scheduler import POLICY_NAMES, make_policy  # noqa: E402
from kernel.task import Task  # noqa: E402
from kernel.timeline import write_svg  # noqa: E402
from kernel.trace import TraceRecorder  # noqa: E402
from syscalls import clock, join, recv, sched_yield, sendall, shutdown, sleep, spawn  # noqa: E402

MS = 1e-3
MESSAGE = b"x" * 64  # what ping sends and echo returns
IO_CPU = 0.1 * MS  # the CPU each I/O task spends per message
KEYS_PERIOD = 10 * MS  # how long the interactive task sleeps ...
KEYS_BURST = 0.5 * MS  # ... and how much CPU it then needs

#: Spends ``seconds`` of CPU: advances the virtual clock, or really computes.
Burn = Callable[[float], None]
Coro = Generator[Any, Any, Any]


# ── The workload ─────────────────────────────────────────────────────────


def cpu_bound(burst: float, end: float, burn: Burn) -> Coro:
    """Compute ``burst`` seconds at a time, giving the CPU back in between; return
    how many bursts it got done."""
    bursts = 0
    while clock() < end:
        burn(burst)
        bursts += 1
        yield sched_yield()
    return bursts


def ping(sock: socket.socket, end: float, burn: Burn) -> Coro:
    """Send a message, wait for it to come back, again; at the end, send EOF.
    Return how many round trips it made."""
    trips = 0
    while clock() < end:
        burn(IO_CPU)
        yield sendall(sock, MESSAGE)
        received = 0
        while received < len(MESSAGE):
            data = yield recv(sock, len(MESSAGE) - received)
            received += len(data)
        trips += 1
    yield shutdown(sock, socket.SHUT_WR)
    return trips


def echo(sock: socket.socket, burn: Burn) -> Coro:
    """Send back whatever arrives, until EOF; return how many replies it sent."""
    replies = 0
    while True:
        data = yield recv(sock, 4096)
        if not data:
            return replies
        burn(IO_CPU)
        yield sendall(sock, data)
        replies += 1


def interactive(end: float, burn: Burn) -> Coro:
    """Sleep, wake up, need the CPU briefly (a key press, a mouse move); return how
    many times it did."""
    presses = 0
    while True:
        yield sleep(KEYS_PERIOD)
        if clock() >= end:
            return presses
        burn(KEYS_BURST)
        presses += 1


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    priority: int
    tickets: int


TASKS = [
    TaskSpec("cpu-A", "CPU-bound", 1, 300),
    TaskSpec("cpu-B", "CPU-bound", 0, 100),
    TaskSpec("ping", "I/O-bound", 0, 100),
    TaskSpec("echo", "I/O-bound", 0, 100),
    TaskSpec("keys", "interactive", 2, 100),
]


def workload(duration: float, burn: Burn, socks: tuple[socket.socket, socket.socket]) -> Coro:
    """The main task: start the five tasks and wait for them; return name -> (tid,
    what the task got done)."""
    end = clock() + duration
    args: dict[str, tuple[Any, ...]] = {
        "cpu-A": (cpu_bound, 1 * MS, end, burn),
        "cpu-B": (cpu_bound, 3 * MS, end, burn),
        "ping": (ping, socks[0], end, burn),
        "echo": (echo, socks[1], burn),
        "keys": (interactive, end, burn),
    }
    tasks: list[Task] = []
    for spec in TASKS:
        task = yield spawn(
            *args[spec.name], name=spec.name, priority=spec.priority, tickets=spec.tickets
        )
        tasks.append(task)
    done = {}
    for task in tasks:
        done[task.name] = (task.tid, (yield join(task)))
    return done


# ── Measuring ────────────────────────────────────────────────────────────


class WakeToRun(kernel.Instrument):
    """Each wake-up's delay until the task ran (what the policy adds to a response
    time), and the order in which tasks ran (what a seed decides)."""

    def __init__(self) -> None:
        self.woken: dict[int, float] = {}  # tid -> when it was woken, until it runs
        self.delays: dict[int, list[float]] = {}
        self.order: list[int] = []

    def wake(self, task: Task) -> None:
        assert self.kernel is not None
        self.woken[task.tid] = self.kernel.clock()

    def run(self, task: Task) -> None:
        assert self.kernel is not None
        self.order.append(task.tid)
        since = self.woken.pop(task.tid, None)
        if since is not None:
            self.delays.setdefault(task.tid, []).append(self.kernel.clock() - since)


@dataclass
class Report:
    """What one run under one policy did to each task."""

    spec: str
    policy: str
    stats: dict[str, TaskStats] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # bursts, round trips, replies
    delays: dict[str, list[float]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)

    def share(self, name: str) -> float:
        """``name``'s part of all the CPU the five tasks used."""
        total = sum(self.stats[spec.name].cpu for spec in TASKS)
        return self.stats[name].cpu / total if total else 0.0


def burn_real(seconds: float) -> None:
    """Really compute for ``seconds`` (of the CPU clock the kernel measures steps with)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def run_policy(
    spec: str, *, virtual: bool, duration: float, out: Optional[Path] = None
) -> tuple[Report, list[Path]]:
    """Run the workload under the policy ``spec``; write its timelines into ``out``."""
    clk = kernel.VirtualClock() if virtual else None
    burn: Burn = clk.advance if clk is not None else burn_real
    policy = make_policy(spec)
    acct, recorder, delays = Accounting(), TraceRecorder(), WakeToRun()
    a, b = socket.socketpair()
    with a, b, kernel.Kernel(clock=clk, policy=policy) as k:
        for instrument in (acct, recorder, delays):
            k.add_instrument(instrument)
        results = k.run(workload, duration, burn, (a, b))
    report = Report(spec, type(policy).__name__, order=delays.order)
    for name, (tid, done) in results.items():
        report.stats[name] = acct.stats(tid)
        report.done[name] = done
        report.delays[name] = delays.delays.get(tid, [])
    written: list[Path] = []
    if out is not None:
        stem = spec.replace(":", "-")
        title = f"{spec}: {report.policy}, {'virtual' if virtual else 'real'} clock"
        written = [out / f"{stem}.svg", out / f"{stem}.json"]
        write_svg(recorder, str(written[0]), title=title)
        recorder.write_chrome(str(written[1]))
    return report, written


# ── Showing ──────────────────────────────────────────────────────────────


def table(report: Report) -> str:
    """One row per task: what it got done and what it cost, aligned in columns."""
    rows = [["task", "kind", "prio", "tickets", "done", "runs", "cpu ms", "cpu %"]]
    rows[0] += ["ready ms", "wake->run mean ms", "max ms"]
    for spec in TASKS:
        s, delays = report.stats[spec.name], report.delays[spec.name]
        rows.append(
            [
                spec.name,
                spec.kind,
                str(spec.priority),
                str(spec.tickets),
                str(report.done[spec.name]),
                str(s.runs),
                f"{s.cpu / MS:.1f}",
                f"{100 * report.share(spec.name):.1f}",
                f"{s.ready_wait / MS:.1f}",
                f"{statistics.mean(delays) / MS:.2f}" if delays else "-",
                f"{max(delays) / MS:.2f}" if delays else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    )


# ── The self-test: each policy's signature ───────────────────────────────


def check(report: Report) -> list[str]:
    """What is wrong with ``report`` for its policy (empty: its signature holds).

    Exact for the virtual clock; ``turns`` are the bursts the CPU-bound tasks
    got done, ``cpu`` what the kernel measured."""
    s, done = report.stats, report.done
    a, b = done["cpu-A"], done["cpu-B"]  # turns: cpu-A has 300 tickets, cpu-B 100
    name = report.spec.partition(":")[0]
    problems = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{report.spec}: expected {what}")

    if name == "fifo":  # round robin: they alternate
        expect(abs(a - b) <= 1, f"equal turns, not {a}:{b}")
    elif name == "priority":
        most = max(TASKS, key=lambda spec: s[spec.name].cpu).name
        expect(most == "cpu-A", f"cpu-A (priority 1) to get the most CPU, not {most}")
        ran = [n for n in ("cpu-B", "ping", "echo") if done[n] or s[n].runs > 1]
        expect(not ran, f"cpu-B, ping and echo to starve (run once, at the end), not {ran}")
        expect(max(report.delays["keys"]) == 0, "keys (priority 2) to run as soon as it wakes")
    elif name == "fair":  # CPU (not turns) 3:1; off by at most about one 3 ms turn
        ratio = s["cpu-A"].cpu / s["cpu-B"].cpu
        expect(2.5 <= ratio <= 3.5, f"CPU 3:1 by tickets, not {ratio:.2f}:1")
    elif name == "stride":  # turns 3:1, off by at most a turn or two of cpu-A
        expect(abs(a - 3 * b) <= 3, f"turns 3:1 by tickets, not {a}:{b}")
    elif name == "lottery":
        # Each pick that goes to cpu-A or cpu-B (both always ready) goes to cpu-A with
        # p = 3/4: its count is binomial; allow 4 standard deviations.
        n, p = a + b, 0.75
        bound = 4 * (n * p * (1 - p)) ** 0.5
        expect(abs(a - n * p) <= bound, f"turns near 3:1 by tickets, not {a}:{b}")
    return problems


def selftest(duration: float) -> int:
    """Run every policy on the virtual clock and check its signature (`check`)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="yieldos-policies-") as tmp:
        for spec in POLICY_NAMES:
            report, written = run_policy(spec, virtual=True, duration=duration, out=Path(tmp))
            problems += check(report)
            if not all(path.stat().st_size > 0 for path in written):
                problems.append(f"{spec}: empty timeline")
            a, b = report.done["cpu-A"], report.done["cpu-B"]
            print(
                f"{spec:8}  cpu-A:cpu-B turns {a:3}:{b:<3} CPU "
                f"{100 * report.share('cpu-A'):2.0f}%:{100 * report.share('cpu-B'):.0f}%"
            )
    # The seeded policy: the same seed gives the same order, another seed another one.
    first, again, other = (
        run_policy(spec, virtual=True, duration=duration)[0].order
        for spec in ("random:1", "random:1", "random:2")
    )
    if first != again:
        problems.append("random:1 twice: expected the same order twice")
    if first == other:
        problems.append("random:1 and random:2: expected two different orders")
    print(
        f"random:1 twice: {'the same' if first == again else 'a different'} order of "
        f"{len(first)} runs; random:2: {'the same' if first == other else 'a different'} one"
    )
    for problem in problems:
        print("FAILED:", problem)
    if problems:
        return 1
    print("selftest passed")
    return 0


# ── Main ─────────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One workload under each scheduling policy.")
    parser.add_argument(
        "--policy", action="append", metavar="SPEC",
        help=f"a policy to run (repeatable; {', '.join(POLICY_NAMES)}, "
        "lottery:SEED, random:SEED); default: all",
    )  # fmt: skip
    clocks = parser.add_mutually_exclusive_group()
    clocks.add_argument(
        "--virtual", dest="virtual", action="store_true", default=True,
        help="virtual time: CPU use is simulated, output exactly repeatable (default)",
    )  # fmt: skip
    clocks.add_argument(
        "--real", dest="virtual", action="store_false",
        help="real time: burn real CPU; figures vary a little from run to run",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=0.2, metavar="SECONDS",
        help="how long the workload runs, on the kernel clock (default 0.2)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write the timelines")
    parser.add_argument(
        "--selftest", action="store_true",
        help="check each policy's signature on the virtual clock (exact), then exit",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for spec in args.policy or ():
        try:
            make_policy(spec)
        except ValueError as error:
            parser.error(str(error))
    if not args.duration > 0:
        parser.error("--duration must be positive")
    if args.selftest and not args.virtual:
        parser.error("--selftest runs on the virtual clock, where its checks are exact")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.selftest:
        return selftest(min(args.duration, 0.1))
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="yieldos-policies-"))
    os.makedirs(out, exist_ok=True)
    clock_name = "virtual clock" if args.virtual else "real clock"
    for spec in args.policy or POLICY_NAMES:
        report, written = run_policy(spec, virtual=args.virtual, duration=args.duration, out=out)
        print(f"== {spec}: {report.policy}, {args.duration:g} s on the {clock_name} ==")
        print(table(report))
        print(f"timeline: {written[0]} (and {written[1].name} for ui.perfetto.dev)")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
