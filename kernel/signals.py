"""Signals: getting Ctrl-C (SIGINT) into the run loop safely.

A Python signal handler runs between two bytecodes of whatever code is
running, kernel code included. Raising `KeyboardInterrupt` there could tear
the kernel's own bookkeeping in half. So while the kernel runs, SIGINT's
handler only *records* the signal, and the run loop delivers it at a safe
point: into ``main``, at its suspension point, as `KeyboardInterrupt`.

Recording is not enough when the loop sleeps in ``epoll_wait``: Python
retries an interrupted wait (PEP 475) if the handler does not raise. So the
kernel also gives the C-level handler a *wakeup fd* (`signal.set_wakeup_fd`):
the signal's number is written into a socket pair whose other end the poller
watches, and the wait returns at once.

If a second SIGINT arrives before the first could be delivered (a task is
stuck in a loop that never yields), the handler raises `KeyboardInterrupt`
on the spot: the escape hatch, as in a shell. The previous handler and
wakeup fd are put back when the kernel stops running. Handlers can only be
set from the main thread; a kernel running in another thread leaves signals
alone.
"""

from __future__ import annotations

import signal
import socket
import threading
from types import FrameType
from typing import Any, Optional


class SignalWakeup:
    """Owns SIGINT and the wakeup fd for the duration of one ``Kernel.run``."""

    def __init__(self) -> None:
        self.pending = False  # a SIGINT waits to be delivered into main
        self._rsock: Optional[socket.socket] = None
        self._wsock: Optional[socket.socket] = None
        self._old_handler: Any = None
        self._old_wakeup_fd = -1
        self.installed = False

    def install(self) -> Optional[int]:
        """Take over SIGINT if we are in the main thread and nobody else has; return the
        fd the poller must watch, or None when signals are left alone."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None  # the program installed its own handler: respect it
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        self._old_handler = signal.signal(signal.SIGINT, self._handler)
        self.installed = True
        return self._rsock.fileno()

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.pending:
            raise KeyboardInterrupt  # asked twice and not yet delivered: force it
        self.pending = True

    def drain(self) -> None:
        """Empty the wakeup socket (its bytes only served to end the wait)."""
        assert self._rsock is not None
        try:
            while self._rsock.recv(4096):
                pass
        except BlockingIOError:
            pass

    def uninstall(self) -> None:
        """Put back the previous handler and wakeup fd; close the socket pair."""
        if not self.installed:
            return
        self.installed = False
        signal.signal(signal.SIGINT, self._old_handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        assert self._rsock is not None and self._wsock is not None
        self._rsock.close()
        self._wsock.close()
        self._rsock = self._wsock = None
