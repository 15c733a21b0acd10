"""Step 6: waiting for I/O with epoll.

A task that reads a socket must not block the kernel: one blocking ``recv``
would stop every task. So every socket is non-blocking, and an I/O trap is
served in two halves, like a driver's top and bottom halves:

1. **try first**: the service routine attempts the operation at once. If the
   data is there, the task gets it without a context switch.
2. **park second**: if the operation would block (``BlockingIOError``), the
   task is parked on its fd, and the fd is registered with ``epoll`` (the
   device that raises the "interrupt" when the fd is ready).

The loop gains a phase in front, and ``epoll_wait`` becomes the idle loop:

1. **wait for I/O**: ``epoll.poll(timeout)``, where the timeout is 0 if a task
   is ready, the time to the next deadline if a timer is pending, and for ever
   if only I/O can wake somebody. For each ready fd, retry the operation and
   wake its task with the result (or the error).
2. **expire timers** (step 5), 3. **run** the ready tasks (step 2).

A task killed while it waits for an fd leaves epoll through its undo (step 4).

Run it::

    python3 examples/tutorial/step06_epoll_io.py
"""

from __future__ import annotations

import functools
import heapq
import itertools
import select
import socket
import time
from collections import deque
from typing import Any, Callable, Generator, Optional

Coro = Generator[Any, Any, Any]


class Cancelled(BaseException):
    pass


class Task:
    _tids = itertools.count(1)

    def __init__(self, name: str, coro: Coro) -> None:
        self.tid = next(Task._tids)
        self.name = name
        self.coro = coro
        self.blocked = False
        self.next_value: Any = None
        self.next_exc: Optional[BaseException] = None
        self.trap: Any = None  # while blocked: the trap it waits in ...
        self.undo: Optional[Callable[[], None]] = None  # ... and how to leave that wait


# ── Traps: the I/O ones know how to attempt their operation ──────────────


class Recv:
    writing = False

    def __init__(self, sock: socket.socket, n: int) -> None:
        self.sock, self.fd, self.n = sock, sock.fileno(), n

    def attempt(self) -> bytes:
        return self.sock.recv(self.n)  # BlockingIOError if nothing to read yet


class Send:
    writing = True

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock, self.fd, self.data = sock, sock.fileno(), data

    def attempt(self) -> int:
        return self.sock.send(self.data)


class Sleep:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Spawn:
    def __init__(self, name: str, coro: Coro) -> None:
        self.name, self.coro = name, coro


class Kill:
    def __init__(self, task: Task) -> None:
        self.task = task


# ── The poller: which task waits on which fd ─────────────────────────────


class Poller:
    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.waiters: dict[int, Task] = {}  # fd -> the task waiting on it (one, for brevity)

    def wait(self, task: Task, fd: int, writing: bool) -> None:
        self.epoll.register(fd, select.EPOLLOUT if writing else select.EPOLLIN)
        self.waiters[fd] = task

    def unwait(self, fd: int) -> None:
        self.epoll.unregister(fd)
        del self.waiters[fd]

    def poll(self, timeout: Optional[float]) -> list[Task]:
        """Block up to ``timeout`` seconds (None: for ever); the tasks whose fd is ready."""
        ready = []
        for fd, _events in self.epoll.poll(-1 if timeout is None else timeout):
            ready.append(self.waiters[fd])
            self.unwait(fd)
        return ready


# ── The kernel ───────────────────────────────────────────────────────────


class Kernel:
    def __init__(self) -> None:
        self.ready: deque[Task] = deque()
        self.timers: list[list[Any]] = []  # step 5's heap: [deadline, seq, task or None]
        self.seq = itertools.count()
        self.poller = Poller()
        self.alive = 0
        self.ran = True  # a task ran since the last idle wait (only to print the trace)

    def spawn(self, name: str, coro: Coro) -> Task:
        task = Task(name, coro)
        self.ready.append(task)
        self.alive += 1
        return task

    def run(self) -> None:
        while self.alive:
            # Phase 1: wait for I/O, but only as long as nothing else can happen.
            if self.ready:
                timeout: Optional[float] = 0.0
            elif self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            elif self.poller.waiters:
                timeout = None
            else:
                raise RuntimeError("deadlock: every task waits, and nothing can wake one")
            if timeout != 0.0 and self.ran:
                timer = "a timer is pending" if self.timers else "no timer"
                print(f"  [idle] epoll_wait (fds watched: {len(self.poller.waiters)}, {timer})")
                self.ran = False
            for task in self.poller.poll(timeout):
                self.complete(task)
            # Phase 2: expire timers.
            while self.timers and self.timers[0][0] <= time.monotonic():
                task = heapq.heappop(self.timers)[2]
                if task is not None:  # None: cancelled
                    self.wake(task, None)
            # Phase 3: run a snapshot of the run queue.
            for _ in range(len(self.ready)):
                self.ran = True
                self.step(self.ready.popleft())

    def complete(self, task: Task) -> None:
        """The fd of ``task`` is ready: retry its operation, wake it with the outcome."""
        trap = task.trap
        print(f"  [epoll] fd {'writable' if trap.writing else 'readable'}: retry for {task.name}")
        try:
            result = trap.attempt()
        except BlockingIOError:  # not ready after all: wait again
            self.poller.wait(task, trap.fd, trap.writing)
        except OSError as exc:  # the operation failed: the task gets the error
            self.wake(task, None, exc)
        else:
            self.wake(task, result)

    def step(self, task: Task) -> None:
        value, exc = task.next_value, task.next_exc
        task.next_value = task.next_exc = None
        while True:
            try:
                trap = task.coro.send(value) if exc is None else task.coro.throw(exc)
            except BaseException:
                self.alive -= 1
                return
            value, exc = None, None
            if isinstance(trap, (Recv, Send)):  # the I/O service routine
                try:
                    value = trap.attempt()  # try first ...
                    continue
                except BlockingIOError:  # ... park second
                    self.poller.wait(task, trap.fd, trap.writing)
                    self.park(task, trap, functools.partial(self.poller.unwait, trap.fd))
                    return
                except OSError as error:
                    exc = error
            elif isinstance(trap, Sleep):
                timer = [time.monotonic() + trap.seconds, next(self.seq), task]
                heapq.heappush(self.timers, timer)
                self.park(task, trap, functools.partial(timer.__setitem__, 2, None))  # lazy cancel
                return
            elif isinstance(trap, Spawn):
                value = self.spawn(trap.name, trap.coro)
            elif isinstance(trap, Kill):
                self.kill(trap.task)
            else:
                exc = TypeError(f"{trap!r} is not a trap")

    def kill(self, task: Task) -> None:
        if task.blocked:
            assert task.undo is not None
            task.undo()  # e.g. out of epoll
            self.wake(task, None, Cancelled())
        else:
            task.next_exc = Cancelled()

    def park(self, task: Task, trap: Any, undo: Callable[[], None]) -> None:
        task.blocked, task.trap, task.undo = True, trap, undo

    def wake(self, task: Task, value: Any, exc: Optional[BaseException] = None) -> None:
        task.blocked, task.trap, task.undo = False, None, None
        task.next_value, task.next_exc = value, exc
        self.ready.append(task)


# ── User programs ────────────────────────────────────────────────────────


def reader(sock: socket.socket) -> Coro:
    while True:
        print("reader: recv ...")
        data = yield Recv(sock, 100)
        print(f"reader: got {data!r}")
        if not data:  # b"": the other side closed
            break


def writer(sock: socket.socket) -> Coro:
    for message in [b"ping", b"pong"]:
        yield Sleep(0.04)
        print(f"writer: send {message!r}")
        yield Send(sock, message)
    sock.shutdown(socket.SHUT_WR)  # the reader sees the end of the stream
    print("writer: shut down its side")


def ghost(sock: socket.socket) -> Coro:
    try:
        print("ghost: recv on a socket nobody writes to ...")
        yield Recv(sock, 100)
    except Cancelled:
        print("ghost: killed while it waited for its fd")


def main_task(k: Kernel, a: socket.socket, b: socket.socket, c: socket.socket) -> Coro:
    yield Spawn("reader", reader(a))
    yield Spawn("writer", writer(b))
    g = yield Spawn("ghost", ghost(c))
    yield Sleep(0.01)
    print("main: kill the ghost")
    yield Kill(g)
    yield Sleep(0.0)  # let it unwind, then look: its fd has left epoll
    print(f"main: fds watched now: {len(k.poller.waiters)}")


def main() -> None:
    a, b = socket.socketpair()  # a connected pair: what b sends, a receives
    c, d = socket.socketpair()
    for sock in (a, b, c, d):
        sock.setblocking(False)  # yieldos does this for you (kernel/files.py)
    k = Kernel()
    k.spawn("main", main_task(k, a, b, c))
    k.run()
    k.poller.epoll.close()
    for sock in (a, b, c, d):
        sock.close()
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  kernel/sysio.py `sys_io` is try-first-park-second for every I/O trap (each
  trap's `attempt`, e.g. kernel/traps.py `Recv.attempt`), and `complete` is the
  retry when the fd is ready. kernel/poller.py `Poller` (`Poller.wait`,
  `Poller.unwait`, `Poller.poll`) keeps each fd registered between waits, with
  several waiters per fd; `EpollBackend` talks to epoll and `SelectorBackend` is
  the fallback. kernel/files.py `FileTable` makes fds non-blocking and restores
  them. Phase 1 of kernel/kernel.py `Kernel._loop` computes the timeout and
  calls `Poller.poll`: that is the idle loop."""

if __name__ == "__main__":
    main()
