"""The door: how other threads get work into the kernel's thread, and wake it to do it.

The kernel's data structures belong to its one thread: no locks guard them.
So another thread (a worker of the thread pool, a GUI, a library's callback)
never touches them; it *posts* a function with `Kernel.call_from_thread`,
and the kernel runs it at a safe point of its loop, between two passes,
outside any task. Posting is two steps, both safe from any thread:

1. append the function to a `collections.deque` (append and popleft are
   atomic in CPython and PyPy);
2. ring the *doorbell*: write to an ``eventfd`` (or, where there is none,
   a pipe) that the poller watches, so that a loop sleeping in
   ``epoll_wait`` wakes up at once.

While a thread is expected to post something (a job in the thread pool),
the kernel counts it as an *external* wait: nothing is ready, no fd is
watched and no timer is pending, yet it is no deadlock, because the
doorbell will ring.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Callable, Optional

from .files import drain, nonblocking_pipe


class Doorbell:
    """An fd that any thread can make readable, and the kernel can empty."""

    def __init__(self) -> None:
        # ring() may run in any thread while close() runs in the kernel's: without the
        # lock, a ring could write into a closed fd number that something else reuses.
        self._lock = threading.Lock()
        self._efd: Optional[int] = None
        self._pipe: Optional[tuple[int, int]] = None
        eventfd = getattr(os, "eventfd", None)  # Linux, Python 3.10+ (looked up, for 3.9)
        if eventfd is not None:
            flags = getattr(os, "EFD_NONBLOCK") | getattr(os, "EFD_CLOEXEC")  # noqa: B009
            self._efd = eventfd(0, flags)
            self._eventfd_write = getattr(os, "eventfd_write")  # noqa: B009
            self._eventfd_read = getattr(os, "eventfd_read")  # noqa: B009
            self.fd = self._efd
        else:
            self._pipe = nonblocking_pipe()
            self.fd = self._pipe[0]

    def ring(self) -> None:
        """Make the fd readable (from any thread; a full buffer already means "rung")."""
        with self._lock:
            try:
                if self._efd is not None:
                    self._eventfd_write(self._efd, 1)
                elif self._pipe is not None:
                    os.write(self._pipe[1], b"\0")
            except OSError:
                pass  # a full buffer: it is rung already

    def drain(self) -> None:
        """Empty the fd, so the poller stops reporting it (kernel thread only)."""
        if self._efd is not None:
            try:
                self._eventfd_read(self._efd)
            except BlockingIOError:
                pass
        elif self._pipe is not None:
            drain(self._pipe[0])

    def close(self) -> None:
        with self._lock:
            if self._efd is not None:
                os.close(self._efd)
                self._efd = None
            if self._pipe is not None:
                os.close(self._pipe[0])
                os.close(self._pipe[1])
                self._pipe = None


class Door:
    """Functions posted by other threads, and the doorbell that announces them."""

    def __init__(self, attention: Callable[[], None]) -> None:
        self.bell = Doorbell()
        self.calls: collections.deque[Callable[[], None]] = collections.deque()
        self.external = 0  # posts the kernel is still expecting (see the module docstring)
        self._attention = attention  # tells the loop to look here (it may not poll at all)

    def post(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)
        self._attention()
        self.bell.ring()
