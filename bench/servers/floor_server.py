"""The limit for a kernel: the least a generator kernel with a task control block runs.

It sits between the bare server (generators, nothing else) and yieldos, and
measures how cheap yieldos could get with a different trap ABI. Each connection
is a task with a task control block (TCB). A task's traps are plain tuples,
built by stub functions (``recv``, ``sendall``). One step function serves them
inline, and after every trap it checks for a pending cancellation, as a real
kernel must. After a budget of traps the task goes to the back of the run
queue. A reader parked on its fd is resumed straight from the poll loop, with
the data read there: there is no run-queue hop between readiness and
resumption.

It leaves out what yieldos has and a message does not touch: timers,
instruments, scheduling policies, several waiters per fd, and parking a task
whose send would block (it finishes a partial send blocking, as the bare server
does).

What this costs beyond the bare server is the price of a TCB and of the checks
no kernel can drop. What yieldos costs beyond this is the price of its trap
objects, its service table, its run queue and the rest of its machinery. If
this row misses a target, no kernel can meet it.
"""

from __future__ import annotations

import select
import sys
from typing import Any, Generator, Optional

from _framing import (
    PING,
    PONG,
    RECV_SIZE,
    Framer,
    accept_ready,
    listen_epoll,
    parse_args,
    ready,
    send_rest,
)

RECV, SENDALL = 0, 1
READY, RUNNING, BLOCKED, EXITED = "ready", "running", "blocked", "exited"
BUDGET = 64  # traps served inline before the task yields the CPU (yieldos's INLINE_BUDGET)
Trap = tuple[Any, ...]
Handler = Generator[Trap, Any, None]


def recv(sock: Any, n: int) -> Trap:
    """The system call stub: the trap, as a tuple."""
    return (RECV, sock, n)


def sendall(sock: Any, data: bytes) -> Trap:
    return (SENDALL, sock, data)


def handle(conn: Any, size: int) -> Handler:
    framer = Framer(size)
    while True:
        data = yield recv(conn, RECV_SIZE)
        if not data:
            return
        reply = PONG if data == PING and not framer.buf else framer.feed(data)
        if reply:
            yield sendall(conn, reply)
        del data, reply  # not held through the wait: see yieldos_server.py


class Task:
    """The TCB: what the step function reads and writes for every message."""

    __slots__ = ("coro", "conn", "state", "trap", "pending_exc", "next_value", "callers")

    def __init__(self, coro: Handler, conn: Any) -> None:
        self.coro: Optional[Handler] = coro  # None once it has ended
        self.conn = conn
        self.state = READY
        self.trap: Optional[Trap] = None
        self.pending_exc: Optional[BaseException] = None  # set by a kill or a timeout
        self.next_value: Any = None
        self.callers: list[Handler] = []  # subroutines (none here, but checked)


def serve(port: int, size: int) -> None:
    listener, ep = listen_epoll(port)
    lfd = listener.fileno()
    readers: dict[int, Task] = {}  # fd -> the task parked reading it
    drained: set[int] = set()  # fds whose last read came back short (yieldos's hint)
    runq: list[Task] = []
    ready(listener.getsockname()[1])
    poll = ep.poll

    def exit_task(task: Task) -> None:
        task.state = EXITED
        task.coro = None
        conn = task.conn
        fd = conn.fileno()
        ep.unregister(fd)
        drained.discard(fd)
        conn.close()

    def step(task: Task, value: Any, exc: Optional[BaseException]) -> None:
        """Resume ``task`` and serve its traps until it waits (yieldos's Kernel._step)."""
        coro = task.coro
        assert coro is not None  # (as yieldos's _step checks)
        task.state = RUNNING
        budget = BUDGET
        while True:
            try:
                trap = coro.send(value) if exc is None else coro.throw(exc)
            except StopIteration:
                if task.callers:  # a subroutine returned (never here)
                    raise NotImplementedError from None
                exit_task(task)
                return
            except Exception:  # the task failed: it ends
                exit_task(task)
                return
            if task.pending_exc is not None:  # killed or timed out meanwhile
                value, exc, task.pending_exc = None, task.pending_exc, None
                continue
            exc = None
            op, sock = trap[0], trap[1]
            if sock.getblocking():  # (yieldos checks too: the user may have changed it)
                sock.setblocking(False)
            if op is RECV:
                fd = sock.fileno()
                if fd not in drained:  # try first, unless the last read emptied the fd
                    try:
                        value = sock.recv(trap[2])
                    except BlockingIOError:
                        pass
                    except OSError as error:
                        value, exc = None, error
                        continue
                    else:
                        if len(value) < trap[2]:
                            drained.add(fd)
                        continue
                readers[fd] = task  # park: the fd stays registered with epoll
                task.state = BLOCKED
                task.trap = trap
                return
            if op is SENDALL:
                data = trap[2]
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError as error:
                    value, exc = None, error
                    continue
                if sent < len(data):
                    send_rest(sock, data[sent:])
                value = None
            else:
                value, exc = None, TypeError(f"not a trap: {trap!r}")
                continue
            budget -= 1
            if not budget:  # fairness: to the back of the run queue
                task.state = READY
                task.next_value = value
                runq.append(task)
                return

    while True:
        for fd, _events in poll(0 if runq else -1):
            if fd == lfd:
                for conn in accept_ready(listener):
                    ep.register(conn.fileno(), select.EPOLLIN)
                    step(Task(handle(conn, size), conn), None, None)
                continue
            task = readers.pop(fd, None)
            if task is None:  # nobody waits (yet): level-triggered, it comes back
                continue
            trap = task.trap
            assert trap is not None
            try:  # read for the task, and resume it at once with the data
                data = trap[1].recv(trap[2])
            except BlockingIOError:
                readers[fd] = task
                continue
            except OSError as error:
                task.trap = None
                step(task, None, error)
                continue
            if len(data) < trap[2]:
                drained.add(fd)
            else:
                drained.discard(fd)
            task.trap = None
            step(task, data, None)
        if runq:
            batch = runq[:]
            del runq[:]
            for task in batch:
                value, task.next_value = task.next_value, None
                step(task, value, None)


if __name__ == "__main__":
    try:
        serve(*parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
