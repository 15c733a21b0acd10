"""Accounting: what each task has cost, as Unix's ``getrusage`` and ``acct`` report it.

A Unix kernel keeps a few counters in every process (``struct rusage``: CPU
time, context switches, blocks read and written) and can write a record of
them when the process exits (process accounting, ``acct``). `Accounting` is
the same ledger for tasks, kept by an instrument (instrument.py), so a kernel
without one pays nothing. Per task, including the ones that have exited:

=================  =======================================================
``runs``           how often the run loop switched to it (its time slices)
``traps``          the traps it made, by kind: ``{"Recv": 12, "Sleep": 3}``
``cpu``            seconds spent in its steps (``kernel.cpu_clock``)
``ready_wait``     seconds READY but not running: waiting for the CPU
``blocked``        seconds BLOCKED: waiting for I/O, a timer, a channel...
``bytes_read``     bytes its read traps returned
``bytes_written``  bytes its write traps sent
=================  =======================================================

A task's life is a sequence of intervals, each charged to one column: READY
from its spawn, its wake-up, or a step that ended with it still READY (it
yielded), until its next run; RUNNING (``cpu``) for the length of the step;
BLOCKED from the trap that parks it until it is woken. The READY and BLOCKED
intervals are measured on the kernel clock (``kernel.clock()``), the steps on
``kernel.cpu_clock``; under a `VirtualClock` both are the virtual clock, and
every figure is exact and repeatable.

``Accounting(summary_at_exit=True)`` prints `Accounting.table`, a ``top``-like
summary, when the run ends (the last task, ``main``'s cleanup included, has
exited).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

from .instrument import Instrument
from .task import Task, TaskState
from .traps import IOTrap, RecvFrom, RecvFromInto, SendAll

if TYPE_CHECKING:
    from .kernel import Kernel


@dataclass(frozen=True)
class TaskStats:
    """One task's ledger, as of the moment it was asked for (times in seconds).

    ``ready_wait`` and ``blocked`` include the wait in progress, if any.
    ``state`` is the task's state then (EXITED for a task that is gone).
    """

    tid: int
    name: str
    state: TaskState
    runs: int = 0  # times scheduled: steps the run loop gave it
    traps: dict[str, int] = field(default_factory=dict)  # trap class name -> count
    cpu: float = 0.0  # time in its steps, on kernel.cpu_clock
    ready_wait: float = 0.0  # READY, waiting for the CPU
    blocked: float = 0.0  # BLOCKED in a trap
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def trap_count(self) -> int:
        """All the traps it made."""
        return sum(self.traps.values())


class _Ledger:
    """The running counters of one task (what `TaskStats` is a snapshot of)."""

    __slots__ = (
        "tid",
        "name",
        "state",
        "runs",
        "traps",
        "cpu",
        "ready_wait",
        "blocked",
        "bytes_read",
        "bytes_written",
        "ready_since",
        "blocked_since",
        "sendall_size",
    )

    def __init__(self, task: Task) -> None:
        self.tid = task.tid
        self.name = task.name
        self.state = task.state
        self.runs = 0
        self.traps: dict[str, int] = {}
        self.cpu = self.ready_wait = self.blocked = 0.0
        self.bytes_read = self.bytes_written = 0
        # The start of the interval in progress (None: not in one, or not seen start).
        self.ready_since: Optional[float] = None
        self.blocked_since: Optional[float] = None
        # What a SendAll in progress had to send when it was made (it keeps only the rest).
        self.sendall_size: Optional[int] = None

    def close_intervals(self, now: float) -> None:
        """Charge the READY or BLOCKED interval in progress up to ``now``, and end it."""
        if self.ready_since is not None:
            self.ready_wait += now - self.ready_since
            self.ready_since = None
        if self.blocked_since is not None:
            self.blocked += now - self.blocked_since
            self.blocked_since = None

    def snapshot(self, now: Optional[float]) -> TaskStats:
        ready_wait, blocked = self.ready_wait, self.blocked
        if now is not None and self.ready_since is not None:
            ready_wait += now - self.ready_since
        if now is not None and self.blocked_since is not None:
            blocked += now - self.blocked_since
        return TaskStats(
            self.tid,
            self.name,
            self.state,
            self.runs,
            dict(self.traps),
            self.cpu,
            ready_wait,
            blocked,
            self.bytes_read,
            self.bytes_written,
        )


#: `Accounting.table`'s sort keys: the column to sort by, biggest first (``tid``: in order).
SORT_KEYS: dict[str, Callable[[TaskStats], Any]] = {
    "tid": lambda s: s.tid,
    "runs": lambda s: -s.runs,
    "cpu": lambda s: -s.cpu,
    "ready": lambda s: -s.ready_wait,
    "blocked": lambda s: -s.blocked,
    "traps": lambda s: -s.trap_count,
    "read": lambda s: -s.bytes_read,
    "written": lambda s: -s.bytes_written,
}


class Accounting(Instrument):
    """Keep every task's `TaskStats`: ``k.add_instrument(acct := Accounting())``.

    ``summary_at_exit``: print `table` to ``file`` (default: standard error at
    that moment) when the run ends. The ledgers of exited tasks are kept until
    `drain_exited` takes them (as ``acct`` writes its records out), or as long
    as this object lives: a server that spawns a task per request should drain
    them now and then.
    """

    def __init__(self, *, summary_at_exit: bool = False, file: Optional[TextIO] = None) -> None:
        self.summary_at_exit = summary_at_exit
        self.file = file
        self._ledgers: dict[int, _Ledger] = {}  # by tid, in spawn order
        self._stepping: Optional[Task] = None  # the task between its run and stop hooks
        self._summary_due = False  # the run is over: print the summary after this step

    # ── Asking ───────────────────────────────────────────────────────────

    def stats(self, tid: int) -> TaskStats:
        """The ledger of task ``tid``, live or exited (and not drained); KeyError if unknown."""
        ledger = self._ledgers.get(tid)
        if ledger is None:
            task = self.kernel.tasks.get(tid) if self.kernel is not None else None
            if task is None:
                raise KeyError(tid)
            ledger = _Ledger(task)  # alive, but nothing happened to it since we were installed
        return ledger.snapshot(self._now())

    def all(self) -> list[TaskStats]:
        """Every ledger, live tasks and exited ones, in tid order."""
        now = self._now()
        return [self._ledgers[tid].snapshot(now) for tid in sorted(self._ledgers)]

    def drain_exited(self) -> list[TaskStats]:
        """Take the ledgers of the tasks that have exited (tid order): they are forgotten."""
        gone = [tid for tid, ledger in self._ledgers.items() if ledger.state is TaskState.EXITED]
        return [self._ledgers.pop(tid).snapshot(None) for tid in sorted(gone)]

    def table(self, sort: str = "cpu", limit: Optional[int] = None) -> str:
        """A ``top``-like table: one row per task, biggest ``sort`` first (a key of
        `SORT_KEYS`), at most ``limit`` rows, then a line of totals over all tasks."""
        key = SORT_KEYS.get(sort)
        if key is None:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
        everything = self.all()
        shown = sorted(everything, key=lambda s: (key(s), s.tid))[:limit]
        rows = [["TID", "NAME", "STATE", "RUNS", "CPU", "READY", "BLOCKED", "TRAPS", "READ"]]
        rows[0].append("WRITTEN")
        for s in shown:
            rows.append([str(s.tid), s.name, str(s.state), *_figures([s])])
        rows.append(["", f"total ({len(everything)} tasks)", "", *_figures(everything)])
        return _columns(rows, left={1, 2})

    def _now(self) -> Optional[float]:
        return self.kernel.clock() if self.kernel is not None else None

    def _ledger(self, task: Task) -> _Ledger:
        ledger = self._ledgers.get(task.tid)
        if ledger is None:  # a task spawned before we were installed
            ledger = self._ledgers[task.tid] = _Ledger(task)
        return ledger

    # ── The hooks ────────────────────────────────────────────────────────

    def detach(self, kernel: Kernel) -> None:
        now = kernel.clock()  # what is in progress is charged up to now; no time after
        for ledger in self._ledgers.values():
            ledger.close_intervals(now)

    def spawn(self, task: Task) -> None:
        assert self.kernel is not None
        self._ledger(task).ready_since = self.kernel.clock()

    def run(self, task: Task) -> None:
        assert self.kernel is not None
        self._stepping = task
        ledger = self._ledger(task)
        ledger.runs += 1
        ledger.state = TaskState.RUNNING
        ledger.close_intervals(self.kernel.clock())

    def trap(self, task: Task, trap: Any) -> None:
        traps = self._ledger(task).traps
        name = type(trap).__name__
        traps[name] = traps.get(name, 0) + 1
        if type(trap) is SendAll:
            self._ledger(task).sendall_size = trap.remaining

    def trap_result(
        self, task: Task, trap: Any, value: Any, error: Optional[BaseException]
    ) -> None:
        if not isinstance(trap, IOTrap):
            return
        ledger = self._ledger(task)
        if type(trap) is SendAll:
            # It returns None, and sends in several attempts: what it sent is what it
            # no longer holds (all of it, or part if it failed or was interrupted).
            if ledger.sendall_size is not None:
                ledger.bytes_written += ledger.sendall_size - trap.remaining
                ledger.sendall_size = None
        elif error is not None:
            pass
        elif trap.writing:  # Write, Send, SendTo, SendFile: the count sent
            if type(value) is int:
                ledger.bytes_written += value
        elif trap.reads or type(trap) in (RecvFrom, RecvFromInto):
            if type(value) is tuple:  # recvfrom: (data or count, address)
                value = value[0]
            ledger.bytes_read += value if type(value) is int else len(value)

    def block(self, task: Task, trap: Any) -> None:
        assert self.kernel is not None
        ledger = self._ledger(task)
        ledger.state = TaskState.BLOCKED
        ledger.blocked_since = self.kernel.clock()

    def wake(self, task: Task) -> None:
        assert self.kernel is not None
        ledger = self._ledger(task)
        now = self.kernel.clock()
        ledger.close_intervals(now)
        ledger.state = TaskState.READY
        ledger.ready_since = now

    def stop(self, task: Task, seconds: float) -> None:
        assert self.kernel is not None
        ledger = self._ledger(task)
        ledger.cpu += seconds
        ledger.state = task.state
        if task.state is TaskState.READY:  # it yielded: back in the queue from now
            ledger.ready_since = self.kernel.clock()
        self._stepping = None
        if self._summary_due:
            self._print_summary()

    def exit(self, task: Task) -> None:
        assert self.kernel is not None
        ledger = self._ledger(task)
        ledger.close_intervals(self.kernel.clock())  # killed while READY or BLOCKED
        ledger.state = TaskState.EXITED
        if self.summary_at_exit and not self.kernel.tasks:  # the last one: the run is over
            self._summary_due = True
            if self._stepping is not task:  # (else at `stop`, once its last step is charged)
                self._print_summary()

    def _print_summary(self) -> None:
        self._summary_due = False
        print(self.table(), file=self.file or sys.stderr)


def _figures(stats: list[TaskStats]) -> list[str]:
    """The table's figures for one task, or the sums over several."""
    return [
        str(sum(s.runs for s in stats)),
        f"{sum(s.cpu for s in stats):.6f}",
        f"{sum(s.ready_wait for s in stats):.6f}",
        f"{sum(s.blocked for s in stats):.6f}",
        str(sum(s.trap_count for s in stats)),
        str(sum(s.bytes_read for s in stats)),
        str(sum(s.bytes_written for s in stats)),
    ]


def _columns(rows: list[list[str]], left: set[int]) -> str:
    """Align ``rows`` in columns: those in ``left`` to the left, the others (figures) right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
