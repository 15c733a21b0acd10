"""strace for tasks: every trap a task makes, with its arguments, outcome and duration.

On Unix, strace(1) attaches to a process with ptrace(2), which stops the
process twice per system call, at entry and at exit, so strace can print the
call's arguments and then its result. Here the two stops are instrument hooks
(instrument.py): ``trap`` when a task's trap reaches the kernel, and
``trap_result`` when the outcome reaches the task, at once or when the
blocked task is woken. The time between them, on the kernel clock, is how
long the call took (under a `VirtualClock`, exactly the simulated time).

One line per trap, as close to ``strace -f -T`` as a generator kernel gets::

    [tid 1 main] spawn(worker, 3) = <tid 2 worker> <0.000000>
    [tid 2 worker] recv(fd=5, 65536) = b"hello" <0.000010>
    [tid 2 worker] send(fd=5, b"abcdefghijklmnopqrstuvwxyz012345"...) = 4096 <0.000004>
    [tid 1 main] join(<tid 2 worker>) = -1 ValueError: boom <0.500000>
    [tid 3 sleeper] sleep(10.0) = ? <Cancelled> <0.000000>
    [tid 2 worker] +++ exited with 42 +++

* the prefix names the task: ``[tid N name]``;
* the call is spelled as the user writes it (`trap_name`: ``recv``,
  ``wait_on``, ``sched_yield``...), with short arguments: an fd as ``fd=N``,
  bytes in double quotes cut after `STRSIZE` bytes with ``...`` (strace's
  ``-s 32``), a task as ``<tid N name>``, memory addresses left out;
* ``= value`` is what the ``yield`` returned; ``= -1 Type: message`` an
  exception the trap raised in the task (as strace shows ``-1 ENOENT``); a
  cancellation (``Cancelled``, ``TimedOut``, ``KeyboardInterrupt``) shows as
  ``= ? <Cancelled>``: the call did not return at all, as strace's ``= ?``
  when a process dies inside a system call;
* ``<seconds>`` is the duration on the kernel clock, strace's ``-T``.

Blocking calls interleave, as with ``strace -f``: if other lines come
between a trap and its result, the call is printed when it is made, ending
in ``<unfinished ...>``, and its end later as ``<... recv resumed> = 5 <0.1>``.

An `Operation` (``lock.acquire()``, ``queue.join()``: a subroutine written
with other traps) is not a system call: its line, ``Lock.acquire() = <subroutine>``,
is printed when it starts, and the traps it makes follow, indented one step
per subroutine level. A `TryOperation` (``queue.put(x)``) whose fast path
completes it is one call with a result, ``Queue.put(5) = None``; if it has to
run its subroutine, it shows as an Operation. When the task exits: ``+++ exited with 42 +++``,
``+++ raised ValueError: boom +++`` or ``+++ killed by Cancelled +++``.

``Strace(summary=True)`` (``-c``) prints no lines but, when the run ends, a
table as ``strace -c -w`` does: the time spent in each kind of trap (on the
kernel clock, so time blocked counts), calls, errors. ``only`` (``-e``)
limits both to some trap names.
"""

from __future__ import annotations

import re
import socket
import sys
import types
from typing import TYPE_CHECKING, Any, Optional, TextIO

from .instrument import Instrument
from .syscall import TRAP_TABLE
from .task import DEFAULT_TICKETS, Task, TaskState
from .traps import (
    Join,
    Kill,
    Operation,
    SendAll,
    SendFile,
    Shutdown,
    Spawn,
    TryOperation,
    WaitOn,
)

if TYPE_CHECKING:
    from .kernel import Kernel

EXITED = TaskState.EXITED

#: How many bytes of a buffer a line shows before ``...`` (strace's default ``-s 32``).
STRSIZE = 32
#: How long another argument's repr may get before it is cut.
REPRSIZE = 48

# Trap names where the C library glues the words together (``gettid``, not ``get_tid``).
_UNIX_SPELLING = {
    "GetTid": "gettid",
    "RecvFrom": "recvfrom",
    "RecvFromInto": "recvfrom_into",
    "SendTo": "sendto",
    "SendAll": "sendall",
    "SendFile": "sendfile",
    "TryOperation": "operation",  # what makes it: @operation(attempt=...)
}
_names: dict[type, str] = {}


def trap_name(trap: Any) -> str:
    """The name a user writes for a trap (or trap class): ``Recv`` -> ``recv``,
    ``WaitOn`` -> ``wait_on``, ``GetTid`` -> ``gettid``."""
    cls = trap if isinstance(trap, type) else type(trap)
    name = _names.get(cls)
    if name is None:
        name = _UNIX_SPELLING.get(cls.__name__)
        if name is None:  # CamelCase -> snake_case
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        _names[cls] = name
    return name


def subroutine_name(op: Operation[Any] | TryOperation[Any]) -> str:
    """``Lock.acquire`` for the Operation a ``lock.acquire()`` made."""
    return _qualname(op.fn if isinstance(op, TryOperation) else op.gen)


# ── Short representations ────────────────────────────────────────────────

_ESCAPES = {0x5C: "\\\\", 0x22: '\\"', 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ADDRESS = re.compile(r" (object )?at 0x[0-9a-fA-F]+")


def _bytes(data: Any) -> str:
    """``b"abc"``, cut after STRSIZE bytes with ``...`` as strace does."""
    head = bytes(data[:STRSIZE])
    text = "".join(_ESCAPES.get(c) or (chr(c) if 32 <= c < 127 else f"\\x{c:02x}") for c in head)
    return f'b"{text}"' + ("..." if len(data) > STRSIZE else "")


def _qualname(obj: Any) -> str:
    """A function's or generator's name without the ``outer.<locals>.`` of nested ones."""
    name = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?"))
    return name.rpartition("<locals>.")[2]


def short_task(task: Task) -> str:
    return f"<tid {task.tid} {task.name}>"


def short(value: Any) -> str:
    """A short, stable representation of a trap argument or result."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= STRSIZE else repr(value[:STRSIZE]) + "..."
    if isinstance(value, Task):
        return short_task(value)
    if isinstance(value, socket.socket):
        return f"fd={value.fileno()}"
    if isinstance(value, tuple):
        inner = ", ".join(short(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)):
        return _qualname(value)
    if isinstance(value, (types.GeneratorType, types.CoroutineType)):
        return f"<{_qualname(value)}()>"
    text = _ADDRESS.sub("", repr(value))  # addresses change every run: the lines would not
    if len(text) <= REPRSIZE:
        return text
    return text[:REPRSIZE] + ("...>" if text.startswith("<") else "...")


def _sized(buffer: Any) -> str:
    """A buffer the call fills: its type and size, not its old contents."""
    return f"<{type(buffer).__name__}[{memoryview(buffer).nbytes}]>"


def call_args(trap: Any) -> list[str]:
    """The arguments of a trap, as the user passed them (see the module docstring)."""
    if isinstance(trap, Spawn):
        args = [short(trap.target), *(short(a) for a in trap.args)]
        if trap.name is not None:
            args.append(f"name={trap.name!r}")
        if trap.priority:
            args.append(f"priority={trap.priority}")
        if trap.tickets != DEFAULT_TICKETS:
            args.append(f"tickets={trap.tickets}")
        return args
    if isinstance(trap, SendAll):  # the bytes still to send are its progress: all, at the call
        return [f"fd={trap.fd}", _bytes(trap._rest)]
    if isinstance(trap, SendFile):
        count = trap._left
        return [f"fd={trap.fd}", f"in_fd={trap.in_fd}", str(trap.offset), short(count)]
    if isinstance(trap, WaitOn):  # the attempt of a conditional wait, by its name
        return [short(trap.channel)] + ([] if trap.attempt is None else [short(trap.attempt)])
    if isinstance(trap, Shutdown):
        how = {socket.SHUT_RD: "SHUT_RD", socket.SHUT_WR: "SHUT_WR", socket.SHUT_RDWR: "SHUT_RDWR"}
        return [f"fd={trap.fd}", how.get(trap.how, str(trap.how))]
    # Any other trap: its public slots, in declaration order (base classes first).
    args = []
    for cls in reversed(type(trap).__mro__):
        for slot in getattr(cls, "__slots__", ()):
            if slot.startswith("_") or slot in ("file", "sock", "in_file", "__weakref__"):
                continue  # private progress, or the object whose fd is shown instead
            value = getattr(trap, slot, None)
            if slot in ("fd", "in_fd"):
                args.append(f"{slot}={value}")
            elif slot == "buffer":
                args.append(_sized(value))
            else:
                args.append(short(value))
    return args


def _operation_args(op: Operation[Any] | TryOperation[Any]) -> str:
    """The arguments a subroutine was called with (but ``self``), read from its frame."""
    if isinstance(op, TryOperation):  # no frame yet: the arguments are in the trap
        code = getattr(op.fn, "__code__", None)
        names = code.co_varnames[: code.co_argcount] if code is not None else ()
        first = 1 if names[:1] in (("self",), ("cls",)) else 0
        return ", ".join(short(arg) for arg in op.args[first:])
    gen = op.gen
    frame, code = getattr(gen, "gi_frame", None), getattr(gen, "gi_code", None)
    if frame is None or code is None:
        return "..."
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    f_locals = frame.f_locals
    return ", ".join(
        short(f_locals[n]) for n in names if n not in ("self", "cls") and n in f_locals
    )


def format_call(trap: Any) -> str:
    """``recv(fd=5, 65536)``: the trap as the user wrote it, arguments shortened."""
    if isinstance(trap, (Operation, TryOperation)):
        return f"{subroutine_name(trap)}({_operation_args(trap)})"
    return f"{trap_name(trap)}({', '.join(call_args(trap))})"


def format_outcome(value: Any, error: Optional[BaseException]) -> str:
    """What follows ``=``: the value, ``-1 Type: message``, or ``? <Cancelled>``."""
    if error is None:
        return short(value)
    if not isinstance(error, Exception):  # a cancellation or an interrupt: no return at all
        return f"? <{type(error).__name__}>"
    return f"-1 {describe_error(error)}"


def describe_error(error: BaseException) -> str:
    """``ValueError: boom``, on one line and cut at REPRSIZE characters."""
    message = str(error).split("\n", 1)[0]
    message = message if len(message) <= REPRSIZE else message[:REPRSIZE] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


# ── The instrument ───────────────────────────────────────────────────────


class _Call:
    """A trap between its entry and its result."""

    __slots__ = ("name", "text", "start", "indent", "subroutine", "settled")

    def __init__(
        self,
        name: str,
        text: str,
        start: float,
        indent: str,
        subroutine: bool = False,
        settled: bool = False,
    ) -> None:
        self.name = name  # the trap name (what -e and the summary use)
        self.text = text  # "recv(fd=5, 100)"
        self.start = start  # kernel clock at entry
        self.indent = indent  # two spaces per subroutine the call is made from
        self.subroutine = subroutine  # a TryOperation: it may go on as a subroutine
        # The task whose exit may end this call (the joined or killed one; main, during
        # shutdown) had exited already when it was made: that exit has been reported.
        self.settled = settled


class Strace(Instrument):
    """Print each trap of each task: ``k.add_instrument(Strace())``. See the module docstring.

    ``file``: where lines go (default: ``sys.stderr``). ``summary``: print the
    ``strace -c`` table at the end of each run instead of lines. ``only``: trap
    names to show (``{"recv", "send"}``), or names of subroutines (``Lock.acquire``);
    None shows all.
    """

    def __init__(
        self,
        file: Optional[TextIO] = None,
        *,
        summary: bool = False,
        only: Optional[set[str]] = None,
    ) -> None:
        if only is not None:
            unknown = sorted(n for n in only if n not in known_trap_names() and "." not in n)
            if unknown:
                raise ValueError(
                    f"unknown trap name(s): {', '.join(unknown)}"
                    f" (known: {', '.join(sorted(known_trap_names()))})"
                )
        self.file = file if file is not None else sys.stderr
        self.summary = summary
        self.only = None if only is None else frozenset(only)
        self._calls: dict[Task, _Call] = {}  # trap entered, result not yet seen
        self._held: dict[Task, None] = {}  # ... and its line not printed yet
        # Exits reported early, by the join or kill they ended, before their exit hook
        # (see trap_result); and the main task whose exit has been reported.
        self._early: set[Task] = set()
        self._main_said: Optional[Task] = None
        #: trap name -> its time, calls and errors, for the summary table.
        self.stats: dict[str, Tally] = {}

    def attach(self, kernel: Kernel) -> None:
        super().attach(kernel)
        self._kernel = kernel

    # ── Hooks ────────────────────────────────────────────────────────────

    def trap(self, task: Task, trap: Any) -> None:
        call = self._calls.get(task)
        if call is not None and call.subroutine:
            self._to_subroutine(task, call)  # a TryOperation's attempt said it would block
        if isinstance(trap, Operation):
            name = subroutine_name(trap)
            if not self.summary and (self._wanted(name) or self._wanted("operation")):
                depth = len(task.callers) if task.callers else 0
                self._line(task, f"{'  ' * depth}{format_call(trap)} = <subroutine>")
            return  # its own traps are reported one by one; it has no result hook
        if isinstance(trap, TryOperation):
            name = subroutine_name(trap)
            if not (self._wanted(name) or self._wanted("operation")):
                return
        else:
            name = trap_name(trap)
            if not self._wanted(name):
                return
        tries = isinstance(trap, TryOperation)
        if self.summary:  # only counted: no text to make
            self._calls[task] = _Call(name, "", self._kernel.clock(), "", tries)
            return
        indent = "  " * len(task.callers) if task.callers else ""
        cause = self._cause(trap)
        settled = cause is not None and cause.state is EXITED
        # The text is made now: a trap may record its progress in itself (sendall).
        self._calls[task] = _Call(
            name, format_call(trap), self._kernel.clock(), indent, tries, settled
        )
        self._held[task] = None  # printed whole if no other line comes before its result

    def _to_subroutine(self, task: Task, call: _Call) -> None:
        """A TryOperation's result never came: its subroutine runs. Show it as an Operation."""
        del self._calls[task]
        if self.summary:
            self._tally(call.name, self._kernel.clock() - call.start, False)
            return
        self._held.pop(task, None)
        self._line(task, f"{call.indent}{call.text} = <subroutine>")

    def trap_result(
        self, task: Task, trap: Any, value: Any, error: Optional[BaseException]
    ) -> None:
        call = self._calls.get(task)
        if call is None:
            return  # filtered out (or made before this instrument was installed)
        seconds = self._kernel.clock() - call.start
        if self.summary:
            del self._calls[task]
            self._tally(call.name, seconds, error is not None)
            return
        # A task's exit wakes its joiners and killers (and main's exit cancels all
        # the others) before the kernel calls the exit hook; but the exit came
        # first, so its line comes first too.
        cause = self._cause(trap)
        if (
            cause is not None
            and not call.settled
            and cause.state is EXITED
            and cause not in self._early
            and cause is not self._main_said
        ):
            self._early.add(cause)
            self._exit_line(cause)  # (this call may show as unfinished before it)
        del self._calls[task]
        outcome = f"= {format_outcome(value, error)} <{seconds:.6f}>"
        if task in self._held:  # nothing printed since the call: one whole line
            del self._held[task]
            self._line(task, f"{call.indent}{call.text} {outcome}")
        else:
            self._line(task, f"{call.indent}<... {call.name} resumed> {outcome}")

    def exit(self, task: Task) -> None:
        call = self._calls.get(task)
        if call is not None and call.subroutine:  # it ran, and ended, without another trap
            self._to_subroutine(task, call)
        call = self._calls.pop(task, None)
        if call is not None and not self.summary:  # closed inside a trap: no result
            self._held.pop(task, None)
            self._line(task, f"{call.indent}{call.text} = ? <task closed>")
        if task in self._early:
            self._early.discard(task)  # its join or kill has already said it
        elif not self.summary:
            self._exit_line(task)
        k = self._kernel
        if k.stopping and not k.tasks:  # the last task of the run is gone: the run ends
            if self.summary:
                self.file.write(self.table())
                self.stats = {}
            self.file.flush()

    # ── Output ───────────────────────────────────────────────────────────

    def _cause(self, trap: Any) -> Optional[Task]:
        """The task whose exit ends a wait in ``trap``, if any: the one joined or
        killed; during shutdown, main (its exit cancelled everybody)."""
        k = self._kernel
        return trap.task if isinstance(trap, (Join, Kill)) else k.main if k.stopping else None

    def _exit_line(self, task: Task) -> None:
        if task is self._kernel.main:
            self._main_said = task
        if task.exception is None:
            end = f"exited with {short(task.result)}"
        elif isinstance(task.exception, Exception):
            end = f"raised {describe_error(task.exception)}"
        else:
            end = f"killed by {type(task.exception).__name__}"
        self._line(task, f"+++ {end} +++")

    def _wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    def _line(self, task: Task, text: str) -> None:
        if self._held:
            # Lines of other tasks come first: their calls are shown unfinished, as
            # strace -f does, and their results later as "<... name resumed>".
            for held in self._held:  # (never ``task`` itself: its own call has ended)
                call = self._calls[held]
                self.file.write(
                    f"[tid {held.tid} {held.name}] {call.indent}{call.text} <unfinished ...>\n"
                )
            self._held.clear()
        self.file.write(f"[tid {task.tid} {task.name}] {text}\n")

    def _tally(self, name: str, seconds: float, failed: bool) -> None:
        tally = self.stats.get(name)
        if tally is None:
            tally = self.stats[name] = Tally()
        tally.seconds += seconds
        tally.calls += 1
        tally.errors += failed

    def table(self) -> str:
        """The ``strace -c`` table of the traps counted so far, most time first."""
        rule = "------ ----------- ----------- --------- --------- ----------------\n"
        lines = ["% time     seconds  usecs/call     calls    errors syscall\n", rule]
        total = Tally()
        for tally in self.stats.values():
            total.seconds += tally.seconds
            total.calls += tally.calls
            total.errors += tally.errors
        rows = sorted(self.stats.items(), key=lambda i: (-i[1].seconds, -i[1].calls, i[0]))
        for name, tally in rows:
            lines.append(tally.row(name, total.seconds))
        lines.append(rule)
        lines.append(total.row("total", total.seconds))
        return "".join(lines)


class Tally:
    """One row of the summary table: time, calls and errors of one kind of trap."""

    __slots__ = ("seconds", "calls", "errors")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.errors = 0

    def row(self, name: str, total: float) -> str:
        percent = 100.0 * self.seconds / total if total > 0 else 0.0
        per_call = round(self.seconds * 1e6 / self.calls) if self.calls else 0
        errors = self.errors or ""
        return (
            f"{percent:6.2f} {self.seconds:11.6f} {per_call:11d} {self.calls:9d}"
            f" {errors:>9} {name}\n"
        )


def known_trap_names() -> set[str]:
    """Every trap name the kernel's trap table knows (what ``-e`` accepts)."""
    return {trap_name(cls) for cls in TRAP_TABLE if cls is not Task}  # (a Task is a join)
