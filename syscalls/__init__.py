"""yieldos system calls: what a task yields to ask the kernel for something.

Each function here builds a trap object and returns it; it does not do the
work itself. The task hands the trap to the kernel by yielding it (or
awaiting it, in an ``async def`` task), and gets the result back::

    def handler(conn):
        while (data := (yield recv(conn, 65536))):
            yield sendall(conn, data)

    async def handler(conn):
        while (data := await recv(conn, 65536)):
            await sendall(conn, data)

Arguments are checked when the trap is built, so a bad one raises right at
the call. Errors of the operation itself (``ConnectionResetError``, ...) are
raised at the ``yield``. Every blocking call here can be interrupted by
`kill` (the task gets `kernel.Cancelled` at that point).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional, TypeVar, overload

from kernel.scopes import CancelScope, _running, current_kernel
from kernel.task import Task
from kernel.traps import (
    GETTID,
    SCHED_YIELD,
    WOULD_BLOCK,
    Accept,
    Buffer,
    Close,
    Connect,
    FileLike,
    GetTid,
    Join,
    Kill,
    Operation,
    Read,
    Recv,
    RecvFrom,
    RecvFromInto,
    RecvInto,
    SchedYield,
    Send,
    SendAll,
    SendFile,
    SendTo,
    Shutdown,
    Sleep,
    Spawn,
    Trap,
    TryOperation,
    WaitOn,
    WaitReadable,
    WaitWritable,
    Write,
)

if TYPE_CHECKING:
    import socket  # (annotations only: the module is imported by whoever makes a socket)

    from typing_extensions import ParamSpec

    P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "WOULD_BLOCK",
    "CancelScope",
    "accept",
    "cancel",
    "clock",
    "close",
    "connect",
    "current_kernel",
    "current_task",
    "gettid",
    "join",
    "kill",
    "move_on_after",
    "move_on_at",
    "operation",
    "read",
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "sched_yield",
    "send",
    "sendall",
    "sendfile",
    "sendto",
    "shield",
    "shutdown",
    "sleep",
    "spawn",
    "timeout",
    "timeout_at",
    "wait_on",
    "wait_readable",
    "wait_writable",
    "waiting",
    "wakeup",
    "write",
]

#: A trap object without its class's ``__init__``: where a system call fills the fields
#: itself, for traps made by the hundred thousand (CPython 3.11 does not inline the call of
#: a class's Python ``__init__``; it costs several times a Python function's).
_new_trap = object.__new__

# ── Processes ────────────────────────────────────────────────────────────


#: Start a new task running ``target(*args)``: see `kernel.Spawn` (the trap class is the call).
spawn = Spawn

#: Wait for a task to exit and get its result: see `kernel.Join` (the trap class is the call).
#: ``yield task`` does the same, without a trap to build.
join = Join


def kill(task: Task) -> Kill:
    """Cancel ``task`` and wait until it has exited.

    `kernel.Cancelled` is raised in ``task`` where it is blocked (or at its next
    trap, if it is ready to run); its ``finally`` and ``with`` cleanup runs,
    and may itself yield. Cancelled is delivered once: killing again while it
    cleans up only waits. Killing an exited task does nothing. A task that
    kills itself gets Cancelled at once.
    """
    return Kill(task)


def cancel(task: Task) -> None:
    """Ask for ``task`` to be killed, without waiting for it (a plain call, no ``yield``).

    `kernel.Cancelled` is raised in it as `kill` would; use `join` to wait for
    the end. Cancelling an exited task does nothing.
    """
    if not isinstance(task, Task):
        raise TypeError(f"cancel: expected a Task (as returned by spawn), not {task!r}")
    current_kernel().cancel(task)


def gettid() -> GetTid:
    """The running task's id (an int, unique within its kernel)."""
    return GETTID


def sched_yield() -> SchedYield:
    """Give up the CPU: resume after every other task that is ready now."""
    return SCHED_YIELD


# ── Time ─────────────────────────────────────────────────────────────────


#: Block for at least ``seconds`` on the kernel's clock: see `kernel.Sleep` (the trap class
#: is the call). ``sleep(0)`` is `sched_yield`; ``sleep(math.inf)`` blocks until killed.
sleep = Sleep


def clock() -> float:
    """The kernel clock now, in seconds (the clock deadlines are measured on).

    Like Linux's vDSO clock, this asks the running kernel directly, without a
    trap: it never blocks. Call it from inside a task.
    """
    return current_kernel().clock()


# ── Wait channels: the primitive every blocking object is built on ───────


@overload
def wait_on(channel: Hashable) -> WaitOn[Any]: ...


@overload
def wait_on(channel: Hashable, attempt: Callable[[], T]) -> WaitOn[T]: ...


def wait_on(channel: Hashable, attempt: Optional[Callable[[], T]] = None) -> WaitOn[Any]:
    """Park the running task on ``channel`` (any hashable value) until a `wakeup` names it.

    The task resumes with the value the wakeup hands over: None for a plain
    ``wakeup(channel)``, which says "something changed", not "it is yours",
    so the task must look again at what it waits for. Kill and timeouts take
    a task off its channel at once.

    With ``attempt``, a function of no arguments, the wait is conditional:
    the kernel calls ``attempt()`` first and parks the task only if it
    returns `WOULD_BLOCK`; anything else it returns (or raises)
    is the result at once. Look and sleep are one step, so no wakeup is lost
    between them (the futex rule). With a waker that hands the result over,
    a blocking operation is a single trap, and one trap object can serve
    every call, as traps are immutable::

        class Mailbox:
            def __init__(self):
                self.letters = deque()
                self._receive = wait_on(self, self._take)  # made once

            def _take(self):
                return self.letters.popleft() if self.letters else WOULD_BLOCK

            def receive(self):  # letter = yield box.receive()
                return self._receive

            def send(self, letter):  # a plain call
                if not wakeup(self, 1, letter):  # straight to the oldest receiver
                    self.letters.append(letter)

    The attempt runs in the kernel, in the task's name (`current_task` is the
    task): it must not block, and must change nothing when it says WOULD_BLOCK.
    Nothing runs until the trap is yielded or awaited.
    """
    return WaitOn(channel, attempt)


def wakeup(
    channel: Hashable,
    n: Optional[int] = None,
    value: Any = None,
    *,
    error: Optional[Callable[[], BaseException]] = None,
) -> int:
    """Make up to ``n`` (default: all) tasks parked on ``channel`` ready, longest-waiting
    first; return how many were woken.

    Each woken task's ``wait_on`` returns ``value`` (None by default). With
    ``error`` (an exception class, or a function of no arguments that makes an
    exception), each woken task raises ``error()`` there instead: one exception
    object per task, as each gets its own traceback. A value or an error is a
    *direct hand-off*: the waker has done the waiter's work (given it the item,
    or the bad news), so the waiter need not look again (see kernel/wait.py)::

        if wakeup(getters, 1, item):  # the oldest getter got it: its wait returns item
            return
        wakeup(getters, error=QueueClosed)  # every getter raises QueueClosed

    A return of 1 from ``wakeup(chan, 1, value)`` means a task *has* the value:
    a task killed or timed out while it waited has already left the channel.

    It never blocks, so it is a plain call, not a trap (no ``yield``): it can
    be used from methods such as ``Event.set()`` or ``Queue.put_nowait()``.
    Call it from inside a task.
    """
    if n is not None and n < 0:
        raise ValueError(f"wakeup: n must be None or >= 0, not {n}")
    if error is not None:
        if isinstance(error, BaseException):
            raise TypeError(
                "wakeup: error must be an exception class or a function that makes one"
                f" (each woken task raises its own), not the exception {error!r}"
            )
        if value is not None:
            raise TypeError("wakeup: give the woken tasks a value or an error, not both")
    # (current_kernel() inlined: this is every hand-off's path, and the call shows.)
    k = getattr(_running, "kernel", None) or current_kernel()
    return k.wakeup(channel, n, value, error)


def waiting(channel: Hashable) -> int:
    """How many tasks are parked on ``channel`` now (0 outside a running kernel).

    A plain call, for reprs and reports ("2 getters waiting"): the number may
    change as soon as the task traps again, so do not decide on it what a
    `wakeup` would decide (its return value says who was really woken).
    """
    try:
        k = current_kernel()
    except RuntimeError:
        return 0  # no kernel runs in this thread: nobody can be parked in it
    return k.channels.waiting(channel)


def current_task() -> Task:
    """The running task's handle (a plain call: it never blocks)."""
    task = current_kernel().current
    if task is None:
        raise RuntimeError("current_task() is called from outside any task")
    return task


@overload
def operation(fn: Callable[P, Generator[Any, Any, T]]) -> Callable[P, Operation[T]]: ...


@overload
def operation(
    *, attempt: Callable[P, Any]
) -> Callable[[Callable[P, Generator[Any, Any, T]]], Callable[P, Trap[T]]]: ...


def operation(
    fn: Optional[Callable[P, Generator[Any, Any, T]]] = None,
    *,
    attempt: Optional[Callable[P, Any]] = None,
) -> Any:
    """Decorate a generator function so that calling it makes a trap: an `Operation`.

    This is how blocking methods built from other traps (``lock.acquire()``,
    ``queue.put(x)``, ...) work the same with ``yield``, ``await`` and
    ``yield from``: the kernel runs the generator as a subroutine of the task.

    ``@operation(attempt=f)`` gives the operation a fast path, `kernel.traps.TryOperation`:
    ``f``, a plain function taking the same arguments, is called first (in the
    kernel, for a ``yield``) and either completes the operation or returns
    `WOULD_BLOCK` without changing anything; only then is the
    generator made and run. The generator stays the whole operation on its own::

        def _acquire_now(self):
            if self._free:
                self._free = False
                return True
            return WOULD_BLOCK

        @operation(attempt=_acquire_now)
        def acquire(self):
            ...  # wait in line, as without the fast path

    A call with keyword arguments skips the fast path (only positional
    arguments are kept for it).
    """
    if fn is None:
        if attempt is None:
            raise TypeError("operation() takes a generator function, or attempt=")
        return functools.partial(_with_fast_path, attempt)
    slow = fn

    @functools.wraps(slow)
    def make(*args: P.args, **kwargs: P.kwargs) -> Operation[T]:
        return Operation(slow(*args, **kwargs))

    return make


def _with_fast_path(
    attempt: Callable[P, Any], fn: Callable[P, Generator[Any, Any, T]]
) -> Callable[P, Trap[T]]:
    @functools.wraps(fn)
    def make(*args: P.args, **kwargs: P.kwargs) -> Trap[T]:
        if kwargs:
            return Operation(fn(*args, **kwargs))
        # TryOperation(attempt, fn, args), its __init__ written out: every put into a
        # queue makes one, and CPython 3.11 does not inline the call of a class's
        # Python __init__ (~500 instructions). A test checks both make the same trap.
        op: TryOperation[T] = _new_trap(TryOperation)
        op.attempt = attempt
        op.fn = fn
        op.args = args
        return op

    return make


# ── Timeouts and cancellation scopes ─────────────────────────────────────


def timeout(seconds: float) -> CancelScope:
    """``with timeout(5):`` -- if the block is still running 5 s after it began, the
    task is interrupted where it waits, the block unwinds, and `TimeoutError`
    (the builtin) leaves the ``with``. Also ``async with``. See docs/cancellation.md.
    """
    return CancelScope(timeout=seconds)


def timeout_at(deadline: float) -> CancelScope:
    """Like `timeout`, with an absolute deadline on the kernel clock (see `clock`)."""
    return CancelScope(deadline=deadline)


def move_on_after(seconds: float) -> CancelScope:
    """``with move_on_after(5) as scope:`` -- like `timeout`, but the block simply
    ends when the deadline interrupts it; ``scope.expired`` says whether it did."""
    return CancelScope(timeout=seconds, raise_timeout=False)


def move_on_at(deadline: float) -> CancelScope:
    """Like `move_on_after`, with an absolute deadline on the kernel clock."""
    return CancelScope(deadline=deadline, raise_timeout=False)


def shield() -> CancelScope:
    """``with shield():`` -- kills and outer timeouts cannot interrupt the block; one
    that arrives meanwhile is raised at the first trap after the block ends.
    Use it around cleanup that must finish (closing a session, releasing a lease)."""
    return CancelScope(shield=True)


# ── I/O: fds (an int, or anything with fileno()) ─────────────────────────


def read(fd: FileLike, n: int) -> Read:
    """Read up to ``n`` bytes from ``fd``, as `os.read`; ``b''`` at end of file.

    If nothing can be read yet, the task waits until ``fd`` is readable; the
    other tasks run meanwhile. A blocking fd is made non-blocking while the
    kernel uses it, and its mode is put back when the kernel closes.
    """
    return Read(fd, n)


def write(fd: FileLike, data: Buffer) -> Write:
    """Write ``data`` to ``fd``, as `os.write`: the result is how many bytes were
    written, which may be fewer than ``len(data)``. Waits while ``fd`` is full."""
    return Write(fd, data)


def wait_readable(fd: FileLike) -> WaitReadable:
    """Wait until ``fd`` is readable (data, end of file, or an error to read)."""
    return WaitReadable(fd)


def wait_writable(fd: FileLike) -> WaitWritable:
    """Wait until ``fd`` is writable (buffer space, or an error to report)."""
    return WaitWritable(fd)


# ── I/O: sockets ─────────────────────────────────────────────────────────
#
# The three calls of every request/response loop are the trap classes themselves,
# not functions that build one: calling the class builds the trap directly, and
# a server saves a Python call per message on each (their docstrings are the
# classes'). The others are plain stubs, which cost one call more.

recv = Recv
send = Send
sendall = SendAll


def accept(sock: socket.socket) -> Accept:
    """Wait for a connection on the listening ``sock``; the result is ``(conn, address)``.

    ``conn`` is a new non-blocking socket; close it when done (``with conn:``).
    """
    return Accept(sock)


def connect(sock: socket.socket, address: Any) -> Connect:
    """Connect ``sock`` to ``address`` without blocking the other tasks.

    Refusals and unreachable hosts raise the usual `OSError` subclasses. The
    address should be numeric: a host name would be looked up with the
    blocking resolver.
    """
    return Connect(sock, address)


def recv_into(sock: socket.socket, buffer: Any, nbytes: int = 0) -> RecvInto:
    """Receive into ``buffer`` (up to ``nbytes``, 0: its size); the result is the count."""
    return RecvInto(sock, buffer, nbytes)


def recvfrom(sock: socket.socket, n: int) -> RecvFrom:
    """Receive one datagram of up to ``n`` bytes; the result is ``(data, address)``."""
    return RecvFrom(sock, n)


def recvfrom_into(sock: socket.socket, buffer: Any, nbytes: int = 0) -> RecvFromInto:
    """Receive one datagram into ``buffer``; the result is ``(count, address)``."""
    return RecvFromInto(sock, buffer, nbytes)


def sendto(sock: socket.socket, data: Buffer, address: Any) -> SendTo:
    """Send one datagram to ``address``; the result is the count sent."""
    return SendTo(sock, data, address)


def shutdown(sock: socket.socket, how: int) -> Shutdown:
    """Shut down reading (``socket.SHUT_RD``), writing (``SHUT_WR``) or both (``SHUT_RDWR``).

    ``SHUT_WR`` sends the peer an end of file while we can still read its answer.
    """
    return Shutdown(sock, how)


def sendfile(
    sock: socket.socket, file: FileLike, offset: int = 0, count: Optional[int] = None
) -> SendFile:
    """Send a regular file's bytes (from ``offset``; ``count`` of them, or all) over ``sock``
    with ``os.sendfile``, without copying them through Python; the result is the count."""
    return SendFile(sock, file, offset, count)


def close(file: FileLike) -> Close:
    """Close an fd, a socket or a file, waking every task that waits on it with an
    `OSError` (EBADF) instead of leaving it parked on an fd that no longer exists.

    Prefer it to ``sock.close()`` whenever another task may be waiting on the fd.
    """
    return Close(file)


# ── Libraries built from the traps above ─────────────────────────────────
#
# Each lives in a module of its own and is imported on first use (PEP 562's
# module __getattr__), so `import syscalls` stays cheap: a script that only
# spawns and sleeps never pays for subprocess, threading or ssl.

_LIBRARIES = {
    "files": ["AsyncFile", "open_file"],
    "groups": ["TaskGroup", "gather", "race", "task_group"],
    "processes": ["PipeStream", "Process", "run_process", "spawn_process"],
    "queues": ["LifoQueue", "PriorityQueue", "Queue", "QueueClosed", "QueueEmpty", "QueueFull"],
    "signals": ["SignalSet", "wait_signal"],
    "streams": [
        "IncompleteReadError",
        "LimitOverrunError",
        "Listener",
        "Stream",
        "listen_tcp",
        "open_connection",
        "serve_tcp",
    ],
    "sync": [
        "Barrier",
        "BoundedSemaphore",
        "BrokenBarrierError",
        "Condition",
        "Event",
        "Lock",
        "RLock",
        "Semaphore",
    ],
    "threads": ["ThreadPool", "getaddrinfo", "run_in_thread", "set_thread_limit", "thread_pool"],
}
_HOME = {name: module for module, names in _LIBRARIES.items() for name in names}
__all__ += list(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'syscalls' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"syscalls.{module}"), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


if TYPE_CHECKING:  # the names above, for type checkers (`as` marks a re-export)
    from .files import AsyncFile as AsyncFile
    from .files import open_file as open_file
    from .groups import TaskGroup as TaskGroup
    from .groups import gather as gather
    from .groups import race as race
    from .groups import task_group as task_group
    from .processes import PipeStream as PipeStream
    from .processes import Process as Process
    from .processes import run_process as run_process
    from .processes import spawn_process as spawn_process
    from .queues import LifoQueue as LifoQueue
    from .queues import PriorityQueue as PriorityQueue
    from .queues import Queue as Queue
    from .queues import QueueClosed as QueueClosed
    from .queues import QueueEmpty as QueueEmpty
    from .queues import QueueFull as QueueFull
    from .signals import SignalSet as SignalSet
    from .signals import wait_signal as wait_signal
    from .streams import IncompleteReadError as IncompleteReadError
    from .streams import LimitOverrunError as LimitOverrunError
    from .streams import Listener as Listener
    from .streams import Stream as Stream
    from .streams import listen_tcp as listen_tcp
    from .streams import open_connection as open_connection
    from .streams import serve_tcp as serve_tcp
    from .sync import Barrier as Barrier
    from .sync import BoundedSemaphore as BoundedSemaphore
    from .sync import BrokenBarrierError as BrokenBarrierError
    from .sync import Condition as Condition
    from .sync import Event as Event
    from .sync import Lock as Lock
    from .sync import RLock as RLock
    from .sync import Semaphore as Semaphore
    from .threads import ThreadPool as ThreadPool
    from .threads import getaddrinfo as getaddrinfo
    from .threads import run_in_thread as run_in_thread
    from .threads import set_thread_limit as set_thread_limit
    from .threads import thread_pool as thread_pool
