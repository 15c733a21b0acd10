"""Looking inside a running kernel: the process table (``ps``) and task tracebacks (``where``).

Linux shows its process table through ``/proc``: one directory per process,
with its parent, its state, what it sleeps in (``wchan``) and its kernel
stack. This module is yieldos's ``/proc``. `ps` takes a snapshot of every
live task (`TaskInfo`): its tid, name, parent, state, what it waits on and
its saved context, the chain of suspended frames; `format_ps` prints the
snapshot as a ``ps`` table, and `where` prints one task's frames as a
traceback. ``Kernel.ps()`` and ``Kernel.where(tid)`` call them; this module
is imported only then, so a kernel that is never looked at pays nothing.

**The saved context is the generator.** A suspended task is a suspended
generator (or coroutine) frame, and the frames it is suspended *in* hang
off it: a generator paused in ``yield from sub()`` points at ``sub``
(``gi_yieldfrom``), a coroutine paused in ``await sub()`` at ``sub``
(``cr_await``), and so on down to the frame whose ``yield`` made the trap.
While an `Operation` runs as a subroutine (``yield lock.acquire()``), the
frames that yielded it wait in ``Task.callers`` (outermost first) and the
subroutine is ``Task.coro``. So a task's stack, outermost first, is: each
caller's chain, then the chain of ``coro``. The one-line generators of the
trap ABI (``Trap.__await__``, ``Operation.__await__``...) are left out: they
are the door into the kernel, not part of the task's own code, and the line
that matters is the one that awaited the trap.

The RUNNING task (``ps`` called from a task) is not suspended: its frames
are the ones executing on the Python stack, from its generator's frame up
to the frame that called ``ps``.

A snapshot copies what it shows (numbers, names, ``repr`` strings); only
``TaskInfo.channel`` is the live object a task waits on.
"""

from __future__ import annotations

import linecache
import math
import reprlib
import sys
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Optional

from .accounting import Accounting, TaskStats
from .scopes import current_kernel
from .task import Coro, Task, TaskState
from .timers import Timer
from .traps import IOTrap, Join, Kill, Operation, Sleep, Trap, TryOperation, WaitOn

if TYPE_CHECKING:
    from .kernel import Kernel

#: The longest ``repr`` of a local variable or a wait channel shown (longer ones are cut).
REPR_LIMIT = 80

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = REPR_LIMIT
_repr.maxlevel = 3

# The trap ABI's own generators (``yield self``): hidden from the stacks shown.
_PLUMBING = {
    Trap.__await__.__code__,
    Operation.__await__.__code__,
    TryOperation.__await__.__code__,
}


class FrameInfo(NamedTuple):
    """One frame of a task's saved context: where it is, and (on request) its locals."""

    filename: str
    lineno: int  # the line it is suspended at (or running, for the innermost RUNNING frame)
    function: str
    locals: Optional[dict[str, str]] = None  # name -> repr, cut to REPR_LIMIT; None: not asked

    def __str__(self) -> str:
        return f'File "{self.filename}", line {self.lineno}, in {self.function}'


@dataclass(frozen=True)
class TaskInfo:
    """One line of the process table: a live task, as it was when `ps` looked.

    ``wait`` says what a BLOCKED task waits on, for people; the fields after it
    say it for programs (each None when it does not apply):

    * ``trap``: the class name of the trap it is parked in (``"Recv"``, ``"Sleep"``);
    * ``fd`` and ``writing``: the fd an I/O trap waits on, and for which direction;
    * ``until``: when a ``sleep`` ends, on the kernel clock (``inf``: never);
    * ``channel``: the wait channel of a ``wait_on`` (the object itself);
    * ``target``: the tid a ``join`` or ``kill`` waits for.

    ``deadline`` is the earliest deadline of the cancel scopes (timeouts) the
    task is inside, in any state. ``frames`` is its saved context, outermost
    first: the last frame is where it is suspended (or running). ``stats`` is
    its ledger when an `Accounting` instrument is installed, else None.
    """

    tid: int
    name: str
    parent: Optional[int]  # the tid of the task that spawned it (None: main)
    state: TaskState
    wait: Optional[str]
    trap: Optional[str]
    fd: Optional[int]
    writing: Optional[bool]
    until: Optional[float]
    channel: Any
    target: Optional[int]
    deadline: Optional[float]
    frames: tuple[FrameInfo, ...]
    stats: Optional[TaskStats]


# ── Snapshots ────────────────────────────────────────────────────────────


def ps(kernel: Kernel, *, locals: bool = False) -> list[TaskInfo]:
    """A snapshot of every live task of ``kernel``, in tid order (exited ones are gone).

    ``locals``: also take the ``repr`` of every local variable of every frame."""
    accounting = next((i for i in kernel.instruments if isinstance(i, Accounting)), None)
    return [
        snapshot(kernel.tasks[tid], locals=locals, accounting=accounting)
        for tid in sorted(kernel.tasks)
    ]


def ps_current(*, locals: bool = False) -> list[TaskInfo]:
    """`ps` of the kernel running in this thread (call it from a task)."""
    return ps(current_kernel(), locals=locals)


def snapshot(
    task: Task, *, locals: bool = False, accounting: Optional[Accounting] = None
) -> TaskInfo:
    """One task's `TaskInfo`."""
    trap = task.trap if task.state is TaskState.BLOCKED else None
    wait: Optional[str] = None
    fd: Optional[int] = None
    writing: Optional[bool] = None
    until: Optional[float] = None
    channel: Any = None
    target: Optional[int] = None
    if trap is not None:
        wait = type(trap).__name__
        if isinstance(trap, IOTrap):
            fd, writing = trap.fd, trap.writing
            wait += f" fd {fd} ({'write' if writing else 'read'})"
        elif isinstance(trap, Sleep):
            until = _sleep_deadline(task, trap)
            if until is not None:
                wait += " for ever" if until == math.inf else f" until {_time(until)}"
        elif isinstance(trap, WaitOn):
            channel = trap.channel
            wait += f" {_repr.repr(channel)}"
        elif isinstance(trap, (Join, Kill)):
            target = trap.task.tid
            wait += f" tid {target} ({trap.task.name!r})"
        else:  # a trap this module does not know: its repr says what it is
            wait = _repr.repr(trap)
    deadlines = [s.deadline for s in task.scopes or () if s.deadline is not None]
    return TaskInfo(
        tid=task.tid,
        name=task.name,
        parent=task.parent,
        state=task.state,
        wait=wait,
        trap=None if trap is None else type(trap).__name__,
        fd=fd,
        writing=writing,
        until=until,
        channel=channel,
        target=target,
        deadline=min(deadlines) if deadlines else None,
        frames=tuple(_frame_info(f, locals) for f in frames_of(task)),
        stats=accounting.stats(task.tid) if accounting is not None else None,
    )


def _sleep_deadline(task: Task, trap: Sleep) -> Optional[float]:
    """When a sleeping task wakes. The kernel does not store it in the task: it is
    the deadline of the timer that is the sleep's undo (see sysproc.sys_sleep).
    A sleep for ever has no timer."""
    if math.isinf(trap.seconds):
        return math.inf
    undo = task.undo
    if isinstance(undo, Timer):
        return undo.deadline
    return None  # (a sleep this module does not know how to read)


# ── The saved context ────────────────────────────────────────────────────


def frames_of(task: Task) -> list[types.FrameType]:
    """The frames of ``task``'s saved context, outermost first (see the module docstring)."""
    frames: list[types.FrameType] = []
    for coro in [*(task.callers or ()), task.coro]:
        if coro is None:  # an EXITED task has no context left
            continue
        if _running(coro):
            frames += _running_frames(coro)
        else:
            frames += _suspended_frames(coro)
    return [f for f in frames if f.f_code not in _PLUMBING]


def suspended_at(task: Task) -> Optional[types.FrameType]:
    """The innermost frame of ``task`` (where it is suspended), or None once it has exited.

    The last of `frames_of`, found without building the list: the watchdog asks
    at every step."""
    coro: Any = task.coro
    if coro is None:
        return None
    if _running(coro):
        return frames_of(task)[-1]
    innermost = None
    for frame in _suspended_frames(coro):
        if frame.f_code not in _PLUMBING:
            innermost = frame
    return innermost


def _suspended_frames(coro: Any) -> Iterator[types.FrameType]:
    """Follow a suspended generator or coroutine down its ``yield from`` / ``await``."""
    while coro is not None:
        if isinstance(coro, types.GeneratorType):
            frame, coro = coro.gi_frame, coro.gi_yieldfrom
        elif isinstance(coro, types.CoroutineType):
            frame, coro = coro.cr_frame, coro.cr_await
        else:  # an awaitable that is not a generator (an iterator object): no frame
            return
        if frame is None:  # finished
            return
        yield frame


def _running(coro: Coro) -> bool:
    if isinstance(coro, types.GeneratorType):
        return coro.gi_running
    return bool(getattr(coro, "cr_running", False))


def _running_frames(coro: Coro) -> list[types.FrameType]:
    """The frames of the RUNNING task: the Python stack from its generator's frame to
    the frame that called into this module (the generators of a ``yield from`` chain
    that is running are linked by ``f_back`` like plain calls)."""
    if isinstance(coro, types.GeneratorType):
        base = coro.gi_frame
    else:
        assert isinstance(coro, types.CoroutineType)
        base = coro.cr_frame
    assert base is not None  # a running generator has its frame
    stack: list[types.FrameType] = []
    frame: Optional[types.FrameType] = sys._getframe(1)
    while frame is not None and frame is not base:
        stack.append(frame)
        frame = frame.f_back
    if frame is None:  # running, but not on this thread's stack: show where it is
        return [base]
    stack.append(base)
    stack.reverse()
    while _ours(stack[-1]):
        stack.pop()  # ps itself and the kernel's ps/where method are not the task's
    return stack


def _ours(frame: types.FrameType) -> bool:
    """Is ``frame`` one of ours (this module, or the Kernel method that called it)?"""
    module = frame.f_globals.get("__name__")
    return module == __name__ or (
        module == _KERNEL_MODULE and frame.f_code.co_name in ("ps", "where")
    )


_KERNEL_MODULE = __name__.rpartition(".")[0] + ".kernel"


def _frame_info(frame: types.FrameType, with_locals: bool) -> FrameInfo:
    code = frame.f_code
    shown = None
    if with_locals:
        shown = {name: _safe_repr(value) for name, value in frame.f_locals.items()}
    return FrameInfo(code.co_filename, frame.f_lineno, code.co_name, shown)


def _safe_repr(value: object) -> str:
    # reprlib cuts each string and object, and stands in for a __repr__ that raises;
    # a container of many long items can still be long: cut that too.
    text = _repr.repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


# ── Printing ─────────────────────────────────────────────────────────────


def format_ps(records: list[TaskInfo]) -> str:
    """The snapshot as a ``ps`` table: TID, PPID, STATE, (SCHED and CPU with
    accounting), TIMEOUT (the earliest scope deadline), NAME, WAIT."""
    accounting = any(r.stats is not None for r in records)
    header = ["TID", "PPID", "STATE"]
    if accounting:
        header += ["SCHED", "CPU"]
    header += ["TIMEOUT", "NAME", "WAIT"]
    rows = [header]
    for r in records:
        row = [str(r.tid), _dash(r.parent), str(r.state)]
        if accounting:
            s = r.stats
            row += ["-", "-"] if s is None else [str(s.runs), f"{s.cpu:.6f}"]
        row += [_time(r.deadline), r.name, r.wait or "-"]
        rows.append(row)
    left = {2, len(header) - 2, len(header) - 1}  # STATE, NAME, WAIT; figures to the right
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def where(kernel: Kernel, tid: int, *, locals: bool = False) -> str:
    """Task ``tid``'s saved context as a traceback, outermost first, with the source
    line of each frame; the innermost is marked. LookupError if no such task is alive."""
    task = kernel.tasks.get(tid)
    if task is None:
        raise LookupError(f"no live task with tid {tid}")
    info = snapshot(task, locals=locals)
    doing = f"{info.state}" + (f" in {info.wait}" if info.wait else "")
    lines = [f"Task {tid} {info.name!r} ({doing}), outermost frame first:"]
    here = "running here" if info.state is TaskState.RUNNING else "suspended here"
    for i, frame in enumerate(info.frames):
        lines.append(f"  {frame}")
        linecache.checkcache(frame.filename)  # as traceback does: the file may have changed
        source = linecache.getline(frame.filename, frame.lineno).strip()
        mark = f"  <-- {here}" if i == len(info.frames) - 1 else ""
        lines.append(f"    {source or '(no source)'}{mark}")
        for name, value in (frame.locals or {}).items():
            lines.append(f"      {name} = {value}")
    return "\n".join(lines)


def _time(t: Optional[float]) -> str:
    if t is None:
        return "-"
    return "never" if t == math.inf else f"{t:.3f}"


def _dash(n: Optional[int]) -> str:
    return "-" if n is None else str(n)
