"""Signals: getting Ctrl-C (SIGINT), and the signals tasks wait for, into the run loop safely.

A Python signal handler runs between two bytecodes of whatever code is
running, kernel code included. Raising `KeyboardInterrupt` there could tear
the kernel's own bookkeeping in half. So while the kernel runs, SIGINT's
handler only *records* the signal, and the run loop delivers it at a safe
point: into ``main``, at its suspension point, as `KeyboardInterrupt`.

Recording is not enough when the loop sleeps in ``epoll_wait``: Python
retries an interrupted wait (PEP 475) if the handler does not raise. So the
kernel also gives the C-level handler a *wakeup fd* (`signal.set_wakeup_fd`):
the signal's number is written into a pipe whose other end the poller
watches, and the wait returns at once.

If a second SIGINT arrives before the first could be delivered (a task is
stuck in a loop that never yields), the handler raises `KeyboardInterrupt`
on the spot: the escape hatch, as in a shell. The previous handler and
wakeup fd are put back when the kernel stops running. Handlers can only be
set from the main thread; a kernel running in another thread leaves signals
alone.

Tasks can also wait for signals (`Kernel.watch_signal`, used by
``syscalls.SignalSet``): the handler then only queues the signal number,
and the loop hands it to the watchers after the wait. While a task watches
SIGINT, Ctrl-C is a signal like the others and raises no KeyboardInterrupt.
"""

from __future__ import annotations

import collections
import errno
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

from .files import drain, nonblocking_pipe


class SignalWakeup:
    """Owns the wakeup fd, SIGINT, and the signals tasks wait for, during one ``Kernel.run``."""

    def __init__(self, attention: Callable[[], None]) -> None:
        self._attention = attention  # tells the loop to look here (it may not poll at all)
        self.pending = False  # a SIGINT waits to be delivered into main
        self.arrived: collections.deque[int] = collections.deque()  # watched signals, in order
        self._watchers: dict[int, list[Callable[[int], None]]] = {}
        self._saved: dict[int, Any] = {}  # signum -> the handler to put back
        self._pipe: Optional[tuple[int, int]] = None  # the wakeup fd's pipe
        self._old_wakeup_fd = -1
        self.installed = False
        self.owns_sigint = False

    def install(self) -> Optional[int]:
        """In the main thread, set the wakeup fd and take over SIGINT (if nobody else has);
        return the fd the poller must watch, or None when signals are left alone."""
        if threading.current_thread() is not threading.main_thread():
            return None
        rfd, wfd = self._pipe = nonblocking_pipe()
        self._old_wakeup_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self.installed = True
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._saved[signal.SIGINT] = signal.signal(signal.SIGINT, self._handler)
            self.owns_sigint = True
        return rfd

    def watch(self, signum: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` (from the run loop) each time ``signum`` arrives."""
        if not self.installed:
            raise RuntimeError("signals can be waited for only in a kernel run by the main thread")
        if signum in (signal.SIGKILL, signal.SIGSTOP):  # CPython refuses them; PyPy says nothing
            raise OSError(errno.EINVAL, f"signal {signum} cannot be caught")
        if signum not in self._watchers and not (signum == signal.SIGINT and self.owns_sigint):
            self._saved[signum] = signal.signal(signum, self._handler)  # may fail: SIGKILL...
        self._watchers.setdefault(signum, []).append(callback)

    def unwatch(self, signum: int, callback: Callable[[int], None]) -> None:
        watchers = self._watchers.get(signum, [])
        if callback in watchers:
            watchers.remove(callback)
        if not watchers and signum in self._watchers:
            del self._watchers[signum]
            if signum in self._saved and not (signum == signal.SIGINT and self.owns_sigint):
                signal.signal(signum, self._saved.pop(signum))

    @property
    def watched(self) -> bool:
        """Some task waits for a signal (so waiting is no deadlock: the signal may come)."""
        return bool(self._watchers)

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum in self._watchers:
            self.arrived.append(signum)  # a task waits for it (SIGINT too: no Ctrl-C then)
            self._attention()
        elif self.pending:
            raise KeyboardInterrupt  # asked twice and not yet delivered: force it
        else:
            self.pending = True
            self._attention()

    def dispatch(self) -> None:
        """Hand each arrived signal to its watchers (from the run loop)."""
        while self.arrived:
            signum = self.arrived.popleft()
            for callback in list(self._watchers.get(signum, ())):
                callback(signum)

    def drain(self) -> None:
        """Empty the wakeup pipe (its bytes only served to end the wait)."""
        assert self._pipe is not None
        drain(self._pipe[0])

    def uninstall(self) -> None:
        """Put back every handler and the wakeup fd; close the pipe."""
        if not self.installed:
            return
        self.installed = self.owns_sigint = False
        self._watchers.clear()
        self.arrived.clear()
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()
        signal.set_wakeup_fd(self._old_wakeup_fd)
        assert self._pipe is not None
        os.close(self._pipe[0])
        os.close(self._pipe[1])
        self._pipe = None
