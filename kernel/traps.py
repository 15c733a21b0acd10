"""The trap ABI: the objects a task yields to ask the kernel for something.

A trap is the only way into the kernel, as the ``ecall`` instruction is in
xv6. A task builds a small request object and yields it; the run loop looks
up the trap's class in the trap table (`kernel.syscall`) and runs the service
routine, which either returns the result at once or parks the task until the
result exists. These classes are the kernel's ``syscall.h``: they say *what*
is asked, with the arguments already checked, so a bad argument raises in
the task at the very line that made the call.

Every trap is awaitable and iterable, and both simply yield the trap itself
and return what the kernel sends back. So the same trap works three ways::

    data = yield recv(sock, 100)             # generator task
    data = await recv(sock, 100)             # async def task
    data = yield from recv(sock, 100)        # inside a helper generator

I/O traps (`IOTrap`) also carry the one non-blocking operation they stand
for, `IOTrap.attempt`. The kernel calls it first; only if it would block
(``BlockingIOError``) does the task wait for the fd, and when the poller says
the fd is ready the kernel calls `attempt` again (for `Recv` and `SendAll`,
the traps of every message, sysio.py spells the operation out instead of
calling it, to save a Python call per message). Traps are immutable
requests, except that `SendAll` and `Connect` record their progress in
themselves, since they may need several attempts to complete.
"""

from __future__ import annotations

import _socket
import errno
import operator
import os
import types
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable, Generator, Generic, Optional, TypeVar, Union

from .task import DEFAULT_TICKETS, Coro, Task

if TYPE_CHECKING:
    import socket

# Sockets are recognised by ``_socket.socket``, the C type every `socket.socket` (and
# `ssl.SSLSocket`) is made from: importing the socket module itself costs milliseconds,
# which a program that never opens one should not pay (see files.py).

T = TypeVar("T")

#: An fd: a plain int, or anything with a ``fileno()`` method (sockets, files, pipes' file objects).
FileLike = Any
#: Bytes to send or write: anything with the buffer protocol, as os.write and send accept.
Buffer = Union[bytes, bytearray, memoryview]
#: What can become a task: a generator/coroutine object, or a function returning one.
Target = Union["Coro", "Trap[Any]", Callable[..., Union["Coro", "Trap[Any]"]]]


class Trap(Generic[T]):
    """Base of every trap. ``T`` is the type of the result the kernel sends back."""

    __slots__ = ()

    def __await__(self) -> Generator[Trap[T], Any, T]:
        result: T = yield self
        return result

    __iter__ = __await__

    def __repr__(self) -> str:
        fields = []
        for cls in reversed(type(self).__mro__):
            for name in getattr(cls, "__slots__", ()):
                if not name.startswith("_"):
                    fields.append(f"{name}={getattr(self, name, None)!r}")
        return f"{type(self).__name__}({', '.join(fields)})"


# ── Process and time traps (serviced in sysproc.py) ──────────────────────────


class Spawn(Trap[Task]):
    """Start a new task running ``target(*args)``; the result is its `Task`.

    ``target`` is a generator function or ``async def`` function (called with
    ``args``), or a generator or coroutine object. The new task is READY and
    runs once the current task blocks or yields; it lives until it returns,
    raises, or is killed, independently of its parent.

    ``priority`` (higher runs first) and ``tickets`` (a share of the CPU) matter
    only under a scheduling policy that reads them (`PriorityPolicy`,
    `StridePolicy`, `LotteryPolicy`); the default FIFO ignores them.

    (This class is also the system call: ``syscalls.spawn`` *is* `Spawn`, so a
    spawn pays no stub function.)
    """

    __slots__ = ("target", "args", "name", "priority", "tickets")

    def __init__(
        self,
        target: Target,
        *args: Any,
        name: Optional[str] = None,
        priority: int = 0,
        tickets: int = DEFAULT_TICKETS,
    ) -> None:
        # (The defaults are small ints, cached objects: a spawn that gives none skips the checks.)
        if name is not None or priority is not _NO_PRIORITY or tickets is not DEFAULT_TICKETS:
            _check_spawn_options(name, priority, tickets)
        self.target = target
        self.args = args
        self.name = name
        self.priority = priority
        self.tickets = tickets


_NO_PRIORITY = 0


def _check_spawn_options(name: Optional[str], priority: int, tickets: int) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"spawn: name must be a str, not {type(name).__name__}")
    if type(priority) is not int or type(tickets) is not int:
        raise TypeError("spawn: priority and tickets must be ints")
    if tickets < 1:
        raise ValueError(f"spawn: tickets must be at least 1, not {tickets}")


class Join(Trap[Any]):
    """Wait for ``task`` to exit; the result is its return value.

    If the task raised, ``join`` raises that very exception (`Cancelled` if it
    was killed). Joining a task that already exited answers at once. (Also the
    system call ``syscalls.join``.)

    Yielding the `Task` itself is the same join (``result = yield child``, as
    asyncio's ``await child``): the kernel builds this trap only if it must
    wait, and instruments see ``join(child)`` either way.
    """

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task if type(task) is Task else _check_task("join", task)

    def __repr__(self) -> str:  # short: a full Task repr could recurse through join cycles
        return f"Join(task={_short(self.task)})"


class Kill(Trap[None]):
    """Throw `Cancelled` into a task and wait until it has exited."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = _check_task("kill", task)

    def __repr__(self) -> str:
        return f"Kill(task={_short(self.task)})"


class GetTid(Trap[int]):
    """Return the running task's id."""

    __slots__ = ()


class SchedYield(Trap[None]):
    """Give up the CPU; resume after every other task that is ready now."""

    __slots__ = ()


class Sleep(Trap[None]):
    """Block for at least ``seconds`` on the kernel clock (also the system call
    ``syscalls.sleep``).

    ``sleep(0)`` is `sched_yield`; ``sleep(math.inf)`` blocks until killed.
    A negative or NaN length raises ValueError, anything but a real number
    TypeError.
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        ok = type(seconds) is float and seconds >= 0.0  # (NaN is not >= 0.0)
        self.seconds = seconds if ok else sleep_length(seconds)


def sleep_length(seconds: object) -> float:
    """``seconds`` as a sleep length (a float >= 0), else a TypeError or ValueError saying why."""
    if type(seconds) is float:
        length = seconds
    else:
        import numbers  # here: most sleeps are given a float, and numbers costs ~0.4 ms

        if not isinstance(seconds, numbers.Real):
            raise TypeError(f"sleep length must be a number, not {type(seconds).__name__}")
        length = float(seconds)
    if not length >= 0.0:  # also catches NaN
        raise ValueError(f"sleep length must be a non-negative number, not {length!r}")
    return length


class _WouldBlock:
    def __repr__(self) -> str:
        return "WOULD_BLOCK"


#: What an *attempt* returns when its operation cannot complete without waiting
#: (`WaitOn`, `TryOperation`): the ``EWOULDBLOCK`` of the operations built in
#: syscalls. A sentinel, not an exception as `IOTrap.attempt` raises, because
#: for a queue's getter waiting is the common case, and raising is slow.
WOULD_BLOCK: Any = _WouldBlock()


class WaitOn(Trap[T]):
    """Park on a wait channel until a `wakeup` names it (see wait.py); the result is
    the value the wakeup hands over (None for a plain wakeup).

    With an ``attempt``, the wait is *conditional*, as Linux's
    ``futex(FUTEX_WAIT)`` is: the kernel first calls ``attempt()``, and only if
    it returns `WOULD_BLOCK` does the task park, in the same step, so that no
    wakeup can come between the look and the sleep. Any other result (or
    exception) of the attempt is the trap's at once. The attempt runs in the
    kernel on the task's behalf: it must not block, and when it answers
    WOULD_BLOCK it must have changed nothing. With a wakeup that hands over
    the result, a whole blocking operation is then one trap, without a
    subroutine (see `syscalls.wait_on`).
    """

    __slots__ = ("channel", "attempt")

    def __init__(self, channel: Hashable, attempt: Optional[Callable[[], T]] = None) -> None:
        hash(channel)  # TypeError here, in the caller, for an unhashable channel
        self.channel = channel
        self.attempt = attempt


class Operation(Trap[T]):
    """A blocking operation written as a generator of other traps: ``lock.acquire()``,
    ``queue.join()``... It runs as a *subroutine* of the task that yields it.

    ``await op`` and ``yield from op`` simply run the generator in the task's
    own frame. A plain ``yield op`` hands it to the kernel, which pushes the
    generator on the task's call stack (`Task.callers`), runs it until it
    returns, and resumes the task with its return value, or raises its
    exception there. Either way, the task sees a single trap.
    """

    __slots__ = ("gen",)

    def __init__(self, gen: Generator[Any, Any, T]) -> None:
        self.gen = gen

    def __await__(self) -> Generator[Any, Any, T]:
        return (yield from self.gen)

    __iter__ = __await__


class TryOperation(Trap[T]):
    """An `Operation` with a fast path: ``attempt(*args)``, a plain function that
    completes the operation without blocking, or answers `WOULD_BLOCK`. Only then
    is the subroutine ``fn(*args)`` (a generator function) made and run, as an
    Operation's generator is.

    This is the split of a mutex into a fast path (one atomic instruction when
    the lock is free) and a slow path (the kernel, only under contention): a
    put into a queue that has room, or a getter to hand the item to, costs one
    trap and no generator at all. The kernel calls the attempt in the trap's
    service routine; ``await`` and ``yield from`` call it in the task's own
    frame. Either way nothing runs before the trap is used, and the attempt
    must change nothing when it answers WOULD_BLOCK. The subroutine must be
    the whole operation on its own (it looks again, and may find it need not
    wait after all): called with keyword arguments, ``@operation(attempt=...)``
    makes a plain Operation of it.
    """

    __slots__ = ("attempt", "fn", "args")

    def __init__(
        self,
        attempt: Callable[..., Any],
        fn: Callable[..., Generator[Any, Any, T]],
        args: tuple[Any, ...],
    ) -> None:
        self.attempt = attempt
        self.fn = fn
        self.args = args

    def __await__(self) -> Generator[Any, Any, T]:
        result: T = self.attempt(*self.args)
        if result is WOULD_BLOCK:
            result = yield from self.fn(*self.args)
        return result

    __iter__ = __await__


# ── What a task runs (the targets Spawn accepts) ─────────────────────────


def not_started(coro: Optional[Coro]) -> bool:
    """True for a generator or coroutine that has not run its first line yet."""
    # What inspect.getgeneratorstate does, without importing inspect (~4 ms at start-up).
    if isinstance(coro, types.GeneratorType):
        frame, running = coro.gi_frame, coro.gi_running
        suspended = getattr(coro, "gi_suspended", None)  # Python 3.11+
    elif isinstance(coro, types.CoroutineType):
        frame, running = coro.cr_frame, coro.cr_running
        suspended = getattr(coro, "cr_suspended", None)
    else:
        return False
    if frame is None or running:
        return False  # finished, or running right now
    if suspended is not None:
        return not suspended
    return frame.f_lasti == -1  # Python 3.9 and 3.10: no instruction run yet


def _one_trap(trap: Trap[Any]) -> Coro:
    return (yield trap)


def coroutine_from_result(target: Any, coro: Any) -> Coro:
    """What a task runs, from what calling ``target`` returned (see `coroutine_of`)."""
    if isinstance(coro, (types.GeneratorType, types.CoroutineType)):
        return coro
    if isinstance(coro, Trap):  # spawn(sleep, 5), spawn(lock.acquire)...
        return _one_trap(coro)
    raise TypeError(
        f"a task must be a generator or a coroutine: {target!r} returned {coro!r}"
        " (is it a plain function, without yield or async def?)"
    )


def coroutine_of(target: Target, args: tuple[Any, ...]) -> Coro:
    """The generator or coroutine a task will run, from what spawn/run was given:
    a generator or coroutine object, a trap, or a function returning one of these."""
    if type(target) is types.FunctionType:  # the common case first: it costs a spawn less
        coro = target(*args)
        if type(coro) is types.GeneratorType or type(coro) is types.CoroutineType:
            return coro
        return coroutine_from_result(target, coro)
    if isinstance(target, (types.GeneratorType, types.CoroutineType)):
        if args:
            raise TypeError(f"arguments given with an already created generator {target!r}")
        if not not_started(target):
            raise ValueError(f"{target!r} has already started or finished")
        return target
    if isinstance(target, Trap):  # a single trap: the task makes it and returns its result
        if args:
            raise TypeError(f"arguments given with a trap {target!r}")
        return _one_trap(target)
    if callable(target):
        return coroutine_from_result(target, target(*args))
    raise TypeError(
        "a task must be a generator or coroutine, a trap, or a function returning one,"
        f" not {target!r}"
    )


# ── I/O traps (serviced in sysio.py) ─────────────────────────────────────────


def fileno(f: FileLike) -> int:
    """The fd number of an int or of an object with ``fileno()``; OSError if it is closed."""
    if type(f) is int:
        fd: int = f
    else:
        try:
            get = f.fileno
        except AttributeError:
            raise TypeError(
                f"expected an fd (an int or an object with fileno()), not {type(f).__name__}"
            ) from None
        fd = get()
    if fd < 0:
        raise _closed(f)
    return fd


def _closed(f: Any) -> OSError:
    return OSError(errno.EBADF, f"{os.strerror(errno.EBADF)}: {f!r} is closed or invalid")


class IOTrap(Trap[T]):
    """A trap that may wait for an fd to become readable (or writable).

    ``file`` is what the user passed (kept so the kernel can tell the same
    open file from a new one that reuses its number), ``fd`` its number.
    """

    __slots__ = ("file", "fd")
    writing = False  # which readiness it waits for when the operation would block
    try_first = True  # attempt the operation before waiting at all
    reads = False  # a read of up to ``n`` bytes (a short one hints the fd is drained)
    n = 0

    def __init__(self, file: FileLike) -> None:
        self.file = file
        self.fd = fileno(file)

    def attempt(self) -> T:
        """Do the operation without blocking; raise BlockingIOError if it would block."""
        raise NotImplementedError


class WaitReadable(IOTrap[None]):
    """Block until ``fd`` is readable (or at EOF, or in error)."""

    __slots__ = ()
    try_first = False

    def attempt(self) -> None:
        return None


class WaitWritable(IOTrap[None]):
    """Block until ``fd`` is writable (or in error)."""

    __slots__ = ()
    writing = True
    try_first = False

    def attempt(self) -> None:
        return None


def _check_size(n: int) -> int:
    n = operator.index(n)  # TypeError for a float or a str, as os.read gives
    if n < 0:
        raise ValueError(f"size must be non-negative, not {n!r}")
    return n


class Read(IOTrap[bytes]):
    """``os.read(fd, n)``: up to ``n`` bytes; ``b''`` at end of file."""

    __slots__ = ("n",)
    reads = True

    def __init__(self, file: FileLike, n: int) -> None:
        super().__init__(file)
        self.n = _check_size(n)

    def attempt(self) -> bytes:
        return os.read(self.fd, self.n)


class Write(IOTrap[int]):
    """``os.write(fd, data)``: returns how many bytes were written (maybe fewer than all)."""

    __slots__ = ("data",)
    writing = True

    def __init__(self, file: FileLike, data: Buffer) -> None:
        super().__init__(file)
        self.data = data

    def attempt(self) -> int:
        return os.write(self.fd, self.data)


class SocketTrap(IOTrap[T]):
    """An I/O trap on a socket object: the operation is one of the socket's methods."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        # (IOTrap.__init__ and fileno() spelled out: a server makes two socket traps
        # per message, and each Python call saved here shows in its CPU per message.)
        if not isinstance(sock, _socket.socket):
            raise TypeError(f"expected a socket.socket, not {type(sock).__name__}")
        fd = sock.fileno()
        if fd < 0:
            raise _closed(sock)
        self.file = self.sock = sock
        self.fd = fd


class Recv(SocketTrap[bytes]):
    """Receive up to ``n`` bytes, as ``sock.recv(n)``; ``b''`` means the peer closed its side.

    (This class is also the system call: ``syscalls.recv`` *is* `Recv`, so a
    server pays no stub function per message.)
    """

    __slots__ = ("n",)
    reads = True

    def __init__(self, sock: socket.socket, n: int) -> None:
        # SocketTrap.__init__ inlined (see there): this is every server's hot path.
        if not isinstance(sock, _socket.socket):
            raise TypeError(f"expected a socket.socket, not {type(sock).__name__}")
        fd = sock.fileno()
        if fd < 0:
            raise _closed(sock)
        self.file = self.sock = sock
        self.fd = fd
        self.n = n if type(n) is int and n >= 0 else _check_size(n)

    def attempt(self) -> bytes:
        return self.sock.recv(self.n)


class Send(SocketTrap[int]):
    """Send what fits of ``data`` now, as ``sock.send(data)`` (waiting for room if none);
    the result is the count sent. (Also the system call ``syscalls.send``.)"""

    __slots__ = ("data",)
    writing = True

    def __init__(self, sock: socket.socket, data: Buffer) -> None:
        # SocketTrap.__init__ inlined (see there): a hot path.
        if not isinstance(sock, _socket.socket):
            raise TypeError(f"expected a socket.socket, not {type(sock).__name__}")
        fd = sock.fileno()
        if fd < 0:
            raise _closed(sock)
        self.file = self.sock = sock
        self.fd = fd
        self.data = data

    def attempt(self) -> int:
        return self.sock.send(self.data)


#: The most `SendAll` hands to one ``send`` call (more than a socket buffer takes at once).
SEND_CHUNK = 1 << 18


class SendAll(SocketTrap[None]):
    """Send all of ``data``, waiting for buffer space as often as needed.

    If it is interrupted (killed, or the connection fails), part of the data
    may have been sent; the trap's ``remaining`` says how much was not. (Also
    the system call ``syscalls.sendall``.)
    """

    __slots__ = ("_rest",)
    writing = True

    def __init__(self, sock: socket.socket, data: Buffer) -> None:
        # SocketTrap.__init__ inlined (see there): this is every server's hot path.
        if not isinstance(sock, _socket.socket):
            raise TypeError(f"expected a socket.socket, not {type(sock).__name__}")
        fd = sock.fileno()
        if fd < 0:
            raise _closed(sock)
        self.file = self.sock = sock
        self.fd = fd
        if type(data) is not bytes:  # bytes are sent as they are (usually in one go)
            view = memoryview(data)
            if view.format != "B" or view.ndim != 1:  # only then: PyPy copies cast views slowly
                view = view.cast("B")
            data = view
        self._rest: Buffer = data  # what is still to send: the trap's progress

    @property
    def remaining(self) -> int:
        """Bytes not yet sent (all of them sent once the trap completes)."""
        return len(self._rest)

    def attempt(self) -> None:
        rest = self._rest
        send = self.sock.send
        while rest:
            size = len(rest)
            if size <= SEND_CHUNK:
                sent = send(rest)
            else:
                # At most SEND_CHUNK per call: PyPy copies the whole buffer it is
                # given, which would make a large sendall quadratic. (A view, so
                # that slicing copies nothing.)
                sent = send(memoryview(rest)[:SEND_CHUNK])
            if sent == size:
                self._rest = b""
                return None
            rest = self._rest = memoryview(rest)[sent:]  # the rest, as a view: no copy
        return None


class RecvInto(SocketTrap[int]):
    """``sock.recv_into(buffer, nbytes)``: fill (part of) ``buffer``; returns the count."""

    __slots__ = ("buffer", "n")
    reads = True

    def __init__(self, sock: socket.socket, buffer: Any, nbytes: int = 0) -> None:
        super().__init__(sock)
        self.buffer = buffer
        self.n = _check_size(nbytes) or memoryview(buffer).nbytes

    def attempt(self) -> int:
        return self.sock.recv_into(self.buffer, self.n)


class RecvFrom(SocketTrap[tuple[bytes, Any]]):
    """``sock.recvfrom(n)``: one datagram (up to ``n`` bytes) and the sender's address."""

    __slots__ = ("n",)

    def __init__(self, sock: socket.socket, n: int) -> None:
        super().__init__(sock)
        self.n = _check_size(n)

    def attempt(self) -> tuple[bytes, Any]:
        return self.sock.recvfrom(self.n)


class RecvFromInto(SocketTrap[tuple[int, Any]]):
    """``sock.recvfrom_into(buffer, nbytes)``: one datagram into ``buffer``, and the sender."""

    __slots__ = ("buffer", "n")

    def __init__(self, sock: socket.socket, buffer: Any, nbytes: int = 0) -> None:
        super().__init__(sock)
        self.buffer = buffer
        self.n = _check_size(nbytes)

    def attempt(self) -> tuple[int, Any]:
        return self.sock.recvfrom_into(self.buffer, self.n)


class SendTo(SocketTrap[int]):
    """``sock.sendto(data, address)``: send one datagram; returns the count sent."""

    __slots__ = ("data", "address")
    writing = True

    def __init__(self, sock: socket.socket, data: Buffer, address: Any) -> None:
        super().__init__(sock)
        self.data = data
        self.address = address

    def attempt(self) -> int:
        return self.sock.sendto(self.data, self.address)


class Shutdown(SocketTrap[None]):
    """``sock.shutdown(how)``: stop reading, writing or both (never blocks)."""

    __slots__ = ("how",)

    def __init__(self, sock: socket.socket, how: int) -> None:
        super().__init__(sock)
        self.how = how

    def attempt(self) -> None:
        self.sock.shutdown(self.how)


class SendFile(SocketTrap[int]):
    """Send ``count`` bytes (None: to the end) of a regular file from ``offset``, with
    ``os.sendfile``: the kernel copies file to socket without passing through Python.
    Returns the bytes sent; a file object's position is left after them."""

    __slots__ = ("in_file", "in_fd", "offset", "_left", "sent")
    writing = True

    def __init__(
        self, sock: socket.socket, file: FileLike, offset: int = 0, count: Optional[int] = None
    ) -> None:
        super().__init__(sock)
        self.in_file = file
        self.in_fd = fileno(file)
        self.offset = _check_size(offset)
        self._left = None if count is None else _check_size(count)
        self.sent = 0  # progress, kept across the attempts

    def attempt(self) -> int:
        while self._left is None or self._left > 0:
            chunk = SEND_CHUNK if self._left is None else min(self._left, SEND_CHUNK)
            n = os.sendfile(self.fd, self.in_fd, self.offset + self.sent, chunk)
            if n == 0:  # end of file
                break
            self.sent += n
            if self._left is not None:
                self._left -= n
        if hasattr(self.in_file, "seek"):
            self.in_file.seek(self.offset + self.sent)
        return self.sent


class Close(Trap[None]):
    """Close an fd (or a socket or file object), first waking every task that waits on it
    with an `OSError` (EBADF), so none is left parked on an fd that no longer exists."""

    __slots__ = ("file", "fd")

    def __init__(self, file: FileLike) -> None:
        self.file = file
        self.fd = fileno(file)


class Accept(SocketTrap["tuple[socket.socket, Any]"]):
    """``sock.accept()``: a new connection ``(conn, address)``; ``conn`` is non-blocking."""

    __slots__ = ()

    def attempt(self) -> tuple[socket.socket, Any]:
        conn, address = self.sock.accept()
        conn.setblocking(False)
        return conn, address


class Connect(SocketTrap[None]):
    """``sock.connect(address)`` without blocking: start it, wait for writable, read the outcome."""

    __slots__ = ("address", "_started")
    writing = True

    def __init__(self, sock: socket.socket, address: Any) -> None:
        super().__init__(sock)
        self.address = address
        self._started = False

    def attempt(self) -> None:
        if self._started:
            # The connection attempt has finished (the socket became writable):
            # SO_ERROR says how it ended.
            err = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        else:
            err = self.sock.connect_ex(self.address)
            # EAGAIN (a Unix socket's full backlog) means "try connect again later".
            self._started = err != errno.EAGAIN
        if err in (0, errno.EISCONN):
            return None
        if err in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN, errno.EWOULDBLOCK):
            raise BlockingIOError(err, os.strerror(err))
        raise OSError(err, f"{os.strerror(err)}: connect to {self.address!r}")


def _short(task: Task) -> str:
    return f"<tid {task.tid} {task.name!r}>"


def _check_task(what: str, task: Any) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"{what}: expected a Task (as returned by spawn), not {task!r}")
    return task


class _Switch:
    def __repr__(self) -> str:
        return "SWITCH"


#: What a service routine answers for a trap whose result is not ready yet: it
#: has parked the task (or queued it again), and the CPU switches to another task.
SWITCH: Any = _Switch()


class _Call:
    def __repr__(self) -> str:
        return "CALL"


#: What the Operation service answers: it has pushed a subroutine on the task's
#: call stack, which the run loop starts at once.
CALL: Any = _Call()

# The two traps without arguments are shared: traps are immutable, so one instance serves all.
GETTID = GetTid()
SCHED_YIELD = SchedYield()
