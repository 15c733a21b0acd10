"""The kernel's file table: which fds it has made non-blocking, and how to put them back.

The kernel must never block in a read or a write: one blocked call would
stop every task. So before an I/O trap tries its operation, the fd must be
in non-blocking mode. Users hand the kernel fresh ``os.pipe()`` fds and
sockets they never set non-blocking, and the mode belongs to the *open file*,
which a terminal or a parent shell may share with us. So the kernel switches
such fds to non-blocking itself, remembers what it changed, and puts the mode
back when it closes, so a terminal still behaves after the program exits.

The kernel can only trust what it can see. An fd *number* may be closed and
reused by a new file at any moment without the kernel knowing, so:

* a socket reports its mode without a syscall (``gettimeout() ==
  0.0`` means non-blocking; any timeout means Python would wait inside the
  call), so it is checked on every operation for free;
* another object with ``fileno()`` (a file object, say) is checked once and
  then recognised by its identity, through a weak reference;
* a bare int fd is checked with ``os.get_blocking`` on every operation (one
  cheap ``fcntl``), since only that is safe against the number's reuse.

When restoring, the kernel makes sure the fd still refers to the same file
(the same object still open, or the same device and inode) before it touches it.

Sockets are recognised by ``_socket.socket``, the C type that every
`socket.socket` (and `ssl.SSLSocket`) is made from: the `socket` module
itself costs several milliseconds to import, and a program that never
opens a socket should not pay them.
"""

from __future__ import annotations

import _socket
import os
import weakref
from typing import Any, Optional


class FileTable:
    """Remembers every fd whose blocking mode the kernel changed, to restore it on close."""

    def __init__(self) -> None:
        # Sockets switched to non-blocking, with the timeout they had before
        # (weak keys: a socket the program has dropped needs nothing put back).
        self._sockets: weakref.WeakKeyDictionary[_socket.socket, Optional[float]] = (
            weakref.WeakKeyDictionary()
        )
        # Other fds switched to non-blocking: fd -> (device, inode) of the file it was.
        self._fds: dict[int, tuple[int, int]] = {}
        # Objects with fileno() already made non-blocking: fd -> weak reference to the object.
        self._checked: dict[int, weakref.ref[Any]] = {}

    def make_nonblocking(self, file: Any, fd: int) -> None:
        """Make sure an operation on ``fd`` (``file`` is what the user passed) cannot block."""
        if type(file) is int:
            if os.get_blocking(fd):
                self._switch_fd(fd)
        elif isinstance(file, _socket.socket):
            timeout = file.gettimeout()
            if timeout != 0.0:
                self._sockets.setdefault(file, timeout)
                file.setblocking(False)
        else:
            ref = self._checked.get(fd)
            if ref is None or ref() is not file:
                if os.get_blocking(fd):
                    self._switch_fd(fd)
                try:
                    self._checked[fd] = weakref.ref(file)
                except TypeError:  # no weak references: check it every time, like an int
                    self._checked.pop(fd, None)

    def _switch_fd(self, fd: int) -> None:
        st = os.fstat(fd)
        self._fds.setdefault(fd, (st.st_dev, st.st_ino))
        os.set_blocking(fd, False)

    def restore(self) -> None:
        """Put back the blocking mode of every fd the kernel changed that is still the same file."""
        for sock, timeout in list(self._sockets.items()):
            if sock.fileno() >= 0:
                sock.settimeout(timeout)
        for fd, identity in self._fds.items():
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == identity:
                    os.set_blocking(fd, True)
            except OSError:
                pass  # closed since: nothing to put back
        self._sockets.clear()
        self._fds.clear()
        self._checked.clear()


def nonblocking_pipe() -> tuple[int, int]:
    """A pipe, both ends non-blocking and close-on-exec: ``(read_fd, write_fd)``.

    What the kernel uses to wake its own loop (the doorbell without eventfd,
    the signal wakeup fd): a byte written at one end makes the other readable.
    """
    rfd, wfd = os.pipe()  # (os.pipe fds are close-on-exec already: PEP 446)
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    return rfd, wfd


def drain(fd: int) -> None:
    """Read a non-blocking fd until it is empty (its bytes only served to end a wait)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
