"""Tracing: what state each task was in, when, for a timeline of the whole run.

Linux's ftrace and perf record scheduler events (``sched_switch``,
``sched_wakeup``) with timestamps; a viewer turns them into one lane per
thread showing when it ran, waited for the CPU, or slept. `TraceRecorder` does
the same from the instrument hooks (instrument.py), on the kernel clock:

=========  ==============================================  =====================
state      from                                            until
=========  ==============================================  =====================
running    ``run``: the loop switches to the task          ``stop``
ready      ``spawn``, ``wake``, or ``stop`` still READY    ``run``
io         ``block`` in an I/O trap (recv, accept...)      ``wake``
sleeping   ``block`` in ``sleep``                          ``wake``
waiting    ``block`` in anything else: join, kill,         ``wake``
           wait_on (so every lock, queue and event)
=========  ==============================================  =====================

Each finished stretch is an `Interval` ``(tid, name, state, start, end,
detail)``, ``detail`` being the call a blocked task waits in
(``recv(fd=5, 100)``); ``spawn`` and ``exit`` are instant events.
`TraceRecorder.chrome_trace` writes them in the Chrome trace event format,
which Perfetto (ui.perfetto.dev) and chrome://tracing open; timeline.py draws
them as an SVG.

Under a `VirtualClock` time does not pass while a task runs, so a running
stretch has zero length unless the task advances the clock: the order of
events is exact, and the widths show where the simulated time went.

A recorder keeps everything it sees, a few records per context switch: it is
meant for runs of bounded length (a test, a benchmark, a demo), not for a
server left running for days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Sequence, Union

from .instrument import Instrument
from .strace import describe_error, format_call, short, trap_name
from .task import Task, TaskState
from .traps import IOTrap, Sleep

if TYPE_CHECKING:
    from .kernel import Kernel

RUNNING, READY, IO, SLEEPING, WAITING = "running", "ready", "io", "sleeping", "waiting"
#: Every state an interval can have, in the order a legend lists them.
STATES = (RUNNING, READY, IO, SLEEPING, WAITING)

# Chrome's trace viewer has reserved colour names for thread states (Perfetto ignores them).
_CNAMES = {
    RUNNING: "thread_state_running",
    READY: "thread_state_runnable",
    IO: "thread_state_iowait",
    SLEEPING: "thread_state_sleeping",
    WAITING: "grey",
}


class Interval(NamedTuple):
    """One stretch of one task in one state, in kernel-clock seconds."""

    tid: int
    name: str
    state: str  # one of STATES
    start: float
    end: float
    detail: str = ""  # for a blocked state, the call it waits in


class Event(NamedTuple):
    """Something that happened at an instant: a task's ``spawn`` or ``exit`` (kind
    "task"), or a trap it made (kind "trap", named as strace names it)."""

    tid: int
    name: str
    time: float
    args: dict[str, str]
    kind: str = "task"


def blocked_state(trap: Any) -> str:
    """Which kind of blocked a task parked in ``trap`` is."""
    if isinstance(trap, IOTrap):
        return IO
    if isinstance(trap, Sleep):
        return SLEEPING
    return WAITING


class TraceRecorder(Instrument):
    """Record every task's state intervals: ``k.add_instrument(TraceRecorder())``.

    ``traps=True`` also records each trap as an instant event (named as strace
    names it), which shows every call in the viewer at the cost of a bigger file.
    """

    def __init__(self, *, traps: bool = False) -> None:
        self.traps = traps
        self.origin = 0.0  # kernel clock when installed: time 0 of the trace
        self.virtual = False  # was the kernel clock a VirtualClock (noted in the trace)
        self.names: dict[int, str] = {}  # tid -> name, for every task seen
        # Intervals and events in the order they began (so in time order): an
        # interval still going is None here, and its place is kept in _open.
        # (Intervals are stored as plain tuples: building a named tuple costs more, and
        # this runs at every context switch.)
        self._log: list[Union[tuple[Any, ...], Event, None]] = []
        # tid -> (state, since when, detail, its place in _log), for each task alive.
        self._open: dict[int, tuple[str, float, str, int]] = {}

    def attach(self, kernel: Kernel) -> None:
        super().attach(kernel)
        self._kernel = kernel
        self.origin = kernel.clock()
        self.virtual = bool(getattr(kernel.clock, "virtual", False))

    # ── Hooks: each one ends the task's current stretch and starts the next ──

    def _enter(self, task: Task, state: Optional[str], detail: str = "") -> None:
        now = self._kernel.clock()
        tid = task.tid
        self.names[tid] = task.name  # (also tasks made before the recorder was installed)
        current = self._open.pop(tid, None)
        if current is not None:
            was, since, what, place = current
            self._log[place] = (tid, task.name, was, since, now, what)
        if state is not None:
            self._open[tid] = (state, now, detail, len(self._log))
            self._log.append(None)

    def _event(self, task: Task, name: str, args: dict[str, str], kind: str = "task") -> None:
        self._log.append(Event(task.tid, name, self._kernel.clock(), args, kind))

    def spawn(self, task: Task) -> None:
        parent = {} if task.parent is None else {"parent": str(task.parent)}
        self._event(task, "spawn", parent)
        self._enter(task, READY)

    def run(self, task: Task) -> None:
        self._enter(task, RUNNING)

    def trap(self, task: Task, trap: Any) -> None:
        if self.traps:
            self._event(task, trap_name(trap), {"call": format_call(trap)}, "trap")

    def block(self, task: Task, trap: Any) -> None:
        self._enter(task, blocked_state(trap), format_call(trap))

    def wake(self, task: Task) -> None:
        self._enter(task, READY)

    def stop(self, task: Task, seconds: float) -> None:
        if task.state is TaskState.READY:  # it yielded, or used up its inline budget
            self._enter(task, READY)
        # BLOCKED: `block` has already started that stretch; EXITED: `exit` has ended it.

    def exit(self, task: Task) -> None:
        self._enter(task, None)
        if task.exception is None:
            self._event(task, "exit", {"result": short(task.result)})
        else:
            self._event(task, "exit", {"exception": describe_error(task.exception)})

    # ── Results ──────────────────────────────────────────────────────────

    def _records(self) -> list[Union[Interval, Event]]:
        """The log, with the stretches still going (tasks alive now) ending now."""
        log = self._log
        if self._open:
            log = list(log)
            now = self._kernel.clock()
            for tid, (state, start, detail, place) in self._open.items():
                log[place] = (tid, self.names[tid], state, start, now, detail)
        records: list[Union[Interval, Event]] = []
        for record in log:
            if isinstance(record, Event):
                records.append(record)
            elif record is not None:
                records.append(Interval._make(record))
        return records

    @property
    def intervals(self) -> list[Interval]:
        """Every stretch recorded, in the order they began."""
        return [r for r in self._records() if isinstance(r, Interval)]

    @property
    def events(self) -> list[Event]:
        """The instant events (spawn, exit, and traps if asked for), in time order."""
        return [r for r in self._log if isinstance(r, Event)]

    def clock_kind(self) -> str:
        return "virtual" if self.virtual else "real"

    def chrome_trace(self) -> dict[str, Any]:
        """The trace as a Chrome trace event document (see `chrome_events`)."""
        return chrome_traces([self])

    def chrome_events(self, pid: int = 1, process: str = "yieldos kernel") -> list[dict[str, Any]]:
        """Metadata events naming the process and each task's lane ("name (tid)"),
        then, in time order, the states as complete ("X") events and the instants
        ("i"). ts and dur are microseconds since the recorder was installed."""

        def us(seconds: float) -> float:
            return round(seconds * 1e6, 3)

        origin = self.origin
        events = [_meta("process_name", pid, 0, {"name": process})]
        for tid in sorted(self.names):
            events.append(_meta("thread_name", pid, tid, {"name": f"{self.names[tid]} ({tid})"}))
            events.append(_meta("thread_sort_index", pid, tid, {"sort_index": tid}))
        for record in self._records():
            if isinstance(record, Interval):
                event = {
                    "name": record.state,
                    "cat": "state",
                    "ph": "X",
                    "ts": us(record.start - origin),
                    "dur": us(record.end - record.start),
                    "pid": pid,
                    "tid": record.tid,
                    "cname": _CNAMES[record.state],
                }
                if record.detail:
                    event["args"] = {"call": record.detail}
            else:
                event = {
                    "name": record.name,
                    "cat": record.kind,
                    "ph": "i",
                    "s": "t",  # the instant belongs to the task's lane
                    "ts": us(record.time - origin),
                    "pid": pid,
                    "tid": record.tid,
                    "args": record.args,
                }
            events.append(event)
        return events

    def write_chrome(self, path: str) -> None:
        """Write `chrome_trace` as JSON to ``path``: open it in ui.perfetto.dev."""
        write_chrome_traces([self], path)


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": args}


def chrome_traces(recorders: Sequence[TraceRecorder]) -> dict[str, Any]:
    """One document for the recorders of several kernels: each kernel is a process
    (pid 1, 2, ...), each task a thread of it."""
    events: list[dict[str, Any]] = []
    for pid, recorder in enumerate(recorders, 1):
        name = "yieldos kernel" if len(recorders) == 1 else f"yieldos kernel {pid}"
        events.extend(recorder.chrome_events(pid, name))
    clocks = sorted({r.clock_kind() for r in recorders})
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"generator": "yieldos", "clock": "/".join(clocks)},
    }


def write_chrome_traces(recorders: Sequence[TraceRecorder], path: str) -> None:
    """Write `chrome_traces` of ``recorders`` as JSON to ``path``."""
    import json  # here: a program that never writes a trace does not pay for the import

    doc = chrome_traces(recorders)
    events = doc.pop("traceEvents")
    with open(path, "w", encoding="utf-8") as f:  # one event a line: readable, and diffable
        f.write('{"traceEvents": [\n')
        f.write(",\n".join(json.dumps(event) for event in events))
        f.write("\n],\n")
        f.write(json.dumps(doc)[1:])
