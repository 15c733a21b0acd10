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

import socket
from typing import Any, Optional

from kernel.task import Task
from kernel.traps import (
    GETTID,
    SCHED_YIELD,
    Accept,
    Connect,
    FileLike,
    GetTid,
    Join,
    Kill,
    Read,
    Recv,
    SchedYield,
    Send,
    SendAll,
    Sleep,
    Spawn,
    Target,
    WaitReadable,
    WaitWritable,
    Write,
)

__all__ = [
    "accept",
    "connect",
    "gettid",
    "join",
    "kill",
    "read",
    "recv",
    "sched_yield",
    "send",
    "sendall",
    "sleep",
    "spawn",
    "wait_readable",
    "wait_writable",
    "write",
]

# ── Processes ────────────────────────────────────────────────────────────


def spawn(target: Target, *args: Any, name: Optional[str] = None) -> Spawn:
    """Start a new task running ``target(*args)``; the result is its `kernel.Task`.

    ``target`` is a generator function or ``async def`` function (called with
    ``args``), or a generator or coroutine object. The new task is READY and
    runs once the current task blocks or yields; it lives until it returns,
    raises, or is killed, independently of its parent.
    """
    return Spawn(target, args, name)


def join(task: Task) -> Join:
    """Wait for ``task`` to exit; the result is its return value.

    If the task raised, ``join`` raises that very exception (`kernel.Cancelled`
    if it was killed). Joining a task that already exited answers at once.
    """
    return Join(task)


def kill(task: Task) -> Kill:
    """Cancel ``task`` and wait until it has exited.

    `kernel.Cancelled` is raised in ``task`` where it is blocked (or at its next
    trap, if it is ready to run); its ``finally`` and ``with`` cleanup runs,
    and may itself yield. Cancelled is delivered once: killing again while it
    cleans up only waits. Killing an exited task does nothing. A task that
    kills itself gets Cancelled at once.
    """
    return Kill(task)


def gettid() -> GetTid:
    """The running task's id (an int, unique within its kernel)."""
    return GETTID


def sched_yield() -> SchedYield:
    """Give up the CPU: resume after every other task that is ready now."""
    return SCHED_YIELD


# ── Time ─────────────────────────────────────────────────────────────────


def sleep(seconds: float) -> Sleep:
    """Block for at least ``seconds`` on the kernel's clock.

    ``sleep(0)`` is `sched_yield`; ``sleep(math.inf)`` blocks until killed.
    A negative or NaN length raises ValueError.
    """
    return Sleep(seconds)


# ── I/O: fds (an int, or anything with fileno()) ─────────────────────────


def read(fd: FileLike, n: int) -> Read:
    """Read up to ``n`` bytes from ``fd``, as `os.read`; ``b''`` at end of file.

    If nothing can be read yet, the task waits until ``fd`` is readable; the
    other tasks run meanwhile. A blocking fd is made non-blocking while the
    kernel uses it, and its mode is put back when the kernel closes.
    """
    return Read(fd, n)


def write(fd: FileLike, data: bytes) -> Write:
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


def recv(sock: socket.socket, n: int) -> Recv:
    """Receive up to ``n`` bytes; ``b''`` means the peer closed its side."""
    return Recv(sock, n)


def send(sock: socket.socket, data: bytes) -> Send:
    """Send what fits of ``data`` now (waiting for room if none); the result is the count sent."""
    return Send(sock, data)


def sendall(sock: socket.socket, data: bytes) -> SendAll:
    """Send all of ``data``, waiting for buffer space as often as needed.

    If it is interrupted (killed, or the connection fails), part of the data
    may have been sent; the trap's ``remaining`` says how much was not.
    """
    return SendAll(sock, data)


