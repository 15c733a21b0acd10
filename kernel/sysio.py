"""The service routine for every I/O trap: try the operation, wait for the fd only if it must.

This is the kernel's answer to libco's hooked ``read``/``write``: the task
writes a blocking-looking call, and the kernel turns it into
*try, park on the fd, retry when ready*::

    1. make sure the fd cannot block the kernel   (files.py)
    2. trap.attempt()  -> done: resume the task with the result, no switch
                       -> BlockingIOError: go on
    3. park the task on (fd, direction)           (poller.py)
    4. ... the poller reports the fd ready: `complete` calls trap.attempt()
       again and wakes the task with the result or the error; if the fd
       was not really ready after all, the task simply keeps waiting.
       (A `Recv` is only made READY, and reads when it runs: see `completer`.)

Errors from the operation (``ECONNRESET``, ``EPIPE``, ``EBADF``...) are the
task's: they are raised in the task at its trap.

`sys_io` serves every I/O trap this way. `Recv` and `SendAll`, the two traps
of every request/response loop, have their own copies of it, `sys_recv` and
`sys_sendall`, with the trap's operation and the flag tests written out: a
Python call costs about as much as a dozen lines of plain code, and a server
makes these two traps for every message.
"""

from __future__ import annotations

import _socket
import errno
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from .task import Task, TaskState
from .traps import (
    SEND_CHUNK,
    SWITCH,
    Accept,
    Close,
    Connect,
    IOTrap,
    Read,
    Recv,
    RecvFrom,
    RecvFromInto,
    RecvInto,
    Send,
    SendAll,
    SendFile,
    SendTo,
    Shutdown,
    WaitReadable,
    WaitWritable,
    Write,
)

if TYPE_CHECKING:
    from .kernel import Kernel

READY, BLOCKED = TaskState.READY, TaskState.BLOCKED


def sys_io(k: Kernel, task: Task, trap: IOTrap[Any]) -> Any:
    if trap.try_first:
        file = trap.file
        # A plain socket already non-blocking needs nothing: checked here, without a
        # syscall, because it is the case of every message of a server.
        if not isinstance(file, _socket.socket) or file.getblocking():
            k.files.make_nonblocking(file, trap.fd)
        # Discussion: a read that came back short has almost surely emptied the
        # buffer, and trying again now would only fail with EAGAIN: a wasted
        # syscall and exception on every message of a request/response protocol.
        # So after a short read the next read of that fd waits for the poller
        # first. It is only a hint: readiness is level-triggered, so if data is
        # there after all the poller reports it at once.
        reads = trap.reads
        if not (reads and trap.fd in k.poller.drained):
            try:
                result = trap.attempt()
            except BlockingIOError:
                pass
            else:
                if reads and (result if type(result) is int else len(result)) < trap.n:
                    k.poller.drained.add(trap.fd)  # probably emptied: see above
                return result
    return block(k, task, trap)


def block(k: Kernel, task: Task, trap: IOTrap[Any]) -> Any:
    """Park ``task`` until its trap's fd is ready (the second half of `sys_io`)."""
    try:
        k.poller.wait(task, trap.fd, trap.file, trap.writing)  # OSError for an unusable fd
    except PermissionError:
        # epoll refuses regular files and directories: they never block, and
        # poll() and select() call them ready at once, so answer at once too.
        return trap.attempt()
    k.park(task, trap, k.poller.undo)
    return SWITCH


def sys_recv(k: Kernel, task: Task, trap: Recv) -> Any:
    """`sys_io` for `Recv`, written out (see the module docstring)."""
    sock, fd = trap.sock, trap.fd
    # Recv's constructor checked that this is a socket.socket, whose getblocking()
    # says without a syscall (or a float, as gettimeout() makes) whether it may block.
    if sock.getblocking():
        k.files.make_nonblocking(sock, fd)
    poller = k.poller
    if fd not in poller.drained:  # (the drained hint: see sys_io)
        try:
            data = sock.recv(trap.n)
        except BlockingIOError:
            pass
        else:
            if len(data) < trap.n:
                poller.drained.add(fd)
            return data
    # (`block`, written out: a request/response server parks here for every message.
    # A socket cannot get epoll's PermissionError, which only regular files do.)
    poller.wait(task, fd, sock, False)
    if k._probes is not None:
        k.park(task, trap, poller.undo)
        return SWITCH
    # Kernel.park, written out while no instrument listens (see `completer`).
    task.state = BLOCKED
    task.trap = trap
    task.undo = poller.undo
    return SWITCH


def sys_sendall(k: Kernel, task: Task, trap: SendAll) -> Any:
    """`sys_io` for `SendAll`, written out (see the module docstring)."""
    sock = trap.sock
    if sock.getblocking():  # (see sys_recv)
        k.files.make_nonblocking(sock, trap.fd)
    rest = trap._rest
    size = len(rest)
    if 0 < size <= SEND_CHUNK:
        # The usual case, spelled out: one send takes it all (what SendAll.attempt
        # would do first).
        try:
            sent = sock.send(rest)
        except BlockingIOError:
            return block(k, task, trap)  # the socket's buffer is full: wait for room
        if sent == size:
            trap._rest = b""
            return None
        trap._rest = memoryview(rest)[sent:]  # the rest, as a view: no copy
    try:
        trap.attempt()
    except BlockingIOError:
        return block(k, task, trap)
    return None


def complete(k: Kernel, task: Task) -> bool:
    """The poller says ``task``'s fd is ready: retry its operation.

    Returns True if the task is done waiting (woken with a result or an error).
    """
    trap = task.trap
    try:
        result = trap.attempt()
    except BlockingIOError:
        return False  # not ready after all: keep waiting
    except BaseException as exc:  # the operation failed: the task hears of it
        k.wake_exc(task, exc)
        return True
    if trap.reads:
        # Remember whether the read emptied the fd (see the discussion in sys_io).
        if (result if type(result) is int else len(result)) < trap.n:
            k.poller.drained.add(trap.fd)
        else:
            k.poller.drained.discard(trap.fd)
    k.wake(task, result)
    return True


def completer(k: Kernel) -> Callable[[Task], bool]:
    """What the poller calls when a parked task's fd is ready: `complete` for kernel
    ``k``, as a closure (Python calls one about twice as cheaply as a partial), except
    for a `Recv` on a kernel without instruments: that task is only made READY, to
    read when it runs (`recv_when_run`).

    Discussion: why read when the task runs, not when the poller reports it. xv6's
    ``sleep``/``wakeup`` work the same way: wakeup only makes the sleeper runnable,
    and the sleeper redoes its read itself once it is scheduled. Data read at poll
    time would wait in the kernel, in the task's ``next_value``, until the task's
    turn: with a thousand readable connections, a thousand buffers of up to the
    size asked for, held by the kernel instead of flow-controlled in the sockets.
    A task killed or timed out before its turn would still have taken the data
    off the socket. And on PyPy, a buffer alive while the nursery is collected is
    promoted to the old generation, which costs a major collection later: reading
    at poll time cost a 16 KiB echo server a fifth to a third of its user CPU.

    The wake itself is `Kernel.wake` written out, which saves a Python call on every
    message; it is done only while no instrument was ever installed on ``k``
    (``k._probes is None``): an instrument hears of wakes and blocks by shadowing
    ``k.wake`` and ``k.park`` (instrument.py), so on an instrumented kernel a Recv
    completes as every other trap does. tests/test_units.py checks both ways.
    """
    push = k.runq.push

    def complete_recv_when_run(task: Task) -> bool:
        trap = task.trap
        if type(trap) is not Recv or k._probes is not None:
            return complete(k, task)
        assert task.state is BLOCKED, f"kernel bug: waking {task!r}"
        task.trap = task.undo = None
        task.state = READY
        task.next_value = trap
        task.next_exc = RECV_WHEN_RUN
        push(task)
        return True

    return complete_recv_when_run


class _RecvWhenRun(BaseException):
    """Never raised: in ``Task.next_exc`` it means "your socket is readable: make the
    `Recv` in ``next_value`` as you run" (see `completer`)."""


RECV_WHEN_RUN = _RecvWhenRun()


def recv_when_run(k: Kernel, task: Task, trap: Recv) -> tuple[Any, Optional[BaseException]]:
    """The read of a task the poller woke for its `Recv` (see `completer`), made now
    that it runs. Returns what to resume it with: ``(data, None)`` or ``(None, error)``;
    or ``(SWITCH, None)``: the data was gone after all, and it waits again."""
    if task.pending_exc is not None:  # killed or timed out meanwhile: the data stays unread
        exc = k._take_pending(task)
        if exc is not None:
            return None, exc
    try:
        try:
            data = trap.sock.recv(trap.n)
        except BlockingIOError:  # someone else took it: wait again, without trying first
            k.poller.drained.add(trap.fd)
            return sys_recv(k, task, trap), None
    except BaseException as error:  # raised in the task, at its trap (as sys_recv's are)
        return None, error
    if len(data) < trap.n:  # (the drained hint: see sys_io)
        k.poller.drained.add(trap.fd)
    else:
        k.poller.drained.discard(trap.fd)
    return data, None


def sys_close(k: Kernel, task: Task, trap: Close) -> Any:
    close_file(k, trap.file, trap.fd)
    return None


def close_file(k: Kernel, file: Any, fd: int) -> None:
    """Wake whoever waits on ``fd`` with EBADF, forget it in the poller, then close it."""
    for waiter in k.poller.forget(fd):
        k.wake_exc(waiter, OSError(errno.EBADF, f"fd {fd} was closed while waited on"))
    close = getattr(file, "close", None)
    if close is not None:
        close()
    else:
        os.close(fd)


SERVICES: dict[type, Callable[..., Any]] = {
    cls: sys_io
    for cls in (
        Read,
        Write,
        RecvInto,
        RecvFrom,
        RecvFromInto,
        Send,
        SendTo,
        SendFile,
        Shutdown,
        Accept,
        Connect,
        WaitReadable,
        WaitWritable,
    )
}
SERVICES[Recv] = sys_recv  # (sys_io written out for the two traps of every message)
SERVICES[SendAll] = sys_sendall
SERVICES[Close] = sys_close
