"""The poller: which fds tasks wait on, and the OS call that says when they are ready.

Facts that shape this file:

* **Try first, wait second.** An I/O trap first attempts its operation; only
  when that would block does the task come here. So a wait always begins at
  a moment the fd is *not* ready, and level-triggered readiness is exact.
* **Registration is expensive, waiting is frequent.** Telling epoll about an
  fd is a syscall (``epoll_ctl``). A server's connection waits for input once
  per request, so the poller keeps each fd registered between waits, with
  one combined mask for both directions, and changes the registration only
  when the set of directions someone waits for grows. An echo server does no
  ``epoll_ctl`` at all per message.
* **Shrink lazily.** An fd may stay registered for a direction nobody waits
  for any more. Level-triggered epoll then reports it again and again, so
  when an event arrives that no task wants, the poller drops that direction
  (or the whole fd) then, once.
* **Closing an fd removes it from epoll silently**, and its number may be
  reused by a new file. So a registration is trusted only while the poller
  can see it belongs to the same open file: each `Watch` keeps a weak
  reference to the object the user passed (a socket, a file), and a
  different object at the same number starts a fresh registration. A bare
  int fd proves nothing about its file, so its registration is dropped as
  soon as no task waits on it.
* **Errors and hang-ups wake both directions**, like CPython's selectors:
  the retried operation then raises the error, or reads the EOF.

Several tasks may wait on one fd: readers and writers at once, and several
of each, served first in, first out. The `Poller` keeps all this
bookkeeping; a small backend class only talks to the OS: `EpollBackend`
(Linux) or `SelectorBackend` (any `selectors` selector, the fallback).
"""

from __future__ import annotations

import errno
import os
import select
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

from .task import Task

if TYPE_CHECKING:
    import selectors  # imported for real only when a fallback backend is made

# selectors.EVENT_READ and EVENT_WRITE (fixed values, named here so that the
# selectors module is loaded only by a program that asks for a fallback).
_EVENT_READ, _EVENT_WRITE = 1, 2

# Our direction bits are epoll's own, so that epoll's answers need no translation
# (the selectors backend translates to them). ERROR is what epoll says for an
# error or a hang-up: both directions are woken, and their retries see it.
READ = getattr(select, "EPOLLIN", 1)
WRITE = getattr(select, "EPOLLOUT", 4)
ERROR = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
_WAKES_READERS = READ | ERROR
_WAKES_WRITERS = WRITE | ERROR

#: The longest single wait; epoll cannot take more than ~24 days, and waking
#: once a day costs nothing.
MAX_TIMEOUT = 86400.0


class Watch:
    """One fd as the poller sees it: what the OS has been told, and who waits."""

    __slots__ = ("fd", "owner", "mask", "readers", "writers", "callback")

    def __init__(self, fd: int, owner: Optional[weakref.ref[Any]]) -> None:
        self.fd = fd
        self.owner = owner  # weak reference to the user's object; None: a bare number
        self.mask = 0  # the directions the OS has been asked to report
        self.readers: list[Task] = []  # tasks waiting to read, first come first served
        self.writers: list[Task] = []
        self.callback: Optional[Callable[[], None]] = None  # set for the kernel's own fds

    def __repr__(self) -> str:
        waiters = f"readers={self.readers} writers={self.writers}"
        return f"<Watch fd={self.fd} mask={self.mask} {waiters}>"


class Backend:
    """The OS side of a poller: register, modify, unregister, wait."""

    def set(self, fd: int, old: int, new: int) -> None:
        """Change what the OS reports for ``fd`` from ``old`` to ``new`` (0: nothing)."""
        raise NotImplementedError

    def wait(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        """Block up to ``timeout`` seconds (None: for ever); return ``(fd, bits)`` pairs
        with READ, WRITE and ERROR bits."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class EpollBackend(Backend):
    """Linux epoll, level-triggered."""

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def set(self, fd: int, old: int, new: int) -> None:
        ep = self._epoll
        if new == 0:
            ep.unregister(fd)  # OSError if the number was closed: see Poller._rebuild
        elif old == 0:
            try:
                ep.register(fd, new)  # (READ and WRITE are epoll's bits)
            except FileExistsError:  # still registered from an earlier life of this open file
                ep.modify(fd, new)
        else:
            try:
                ep.modify(fd, new)
            except FileNotFoundError:  # closed and reopened under the same number
                ep.register(fd, new)

    def wait(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        return self._epoll.poll(-1 if timeout is None else timeout)

    def close(self) -> None:
        self._epoll.close()


class SelectorBackend(Backend):
    """Any `selectors.BaseSelector`: the portable fallback."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._sel = selector

    def set(self, fd: int, old: int, new: int) -> None:
        # The selector keeps its own map from fd to registration, which a closed and
        # reused fd makes stale; start from a clean slate on every change (they are rare).
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass
        if not new:
            os.fstat(fd)  # as epoll_ctl does, fail for a closed number: see Poller._rebuild
        else:
            os.fstat(fd)  # poll() and select() take a closed fd without complaint: check it
            events = (_EVENT_READ if new & READ else 0) | (_EVENT_WRITE if new & WRITE else 0)
            self._sel.register(fd, events)

    def wait(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        try:
            ready = self._sel.select(timeout)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            return self._bad_fds()
        return [
            (
                key.fd,
                (READ if ev & _EVENT_READ else 0) | (WRITE if ev & _EVENT_WRITE else 0),
            )
            for key, ev in ready
        ]

    def _bad_fds(self) -> list[tuple[int, int]]:
        """select() refused a closed fd: report each closed fd as ready, so its waiters
        retry their operation and see the EBADF themselves."""
        bad = []
        for key in list(self._sel.get_map().values()):
            try:
                os.fstat(key.fd)
            except OSError:
                self._sel.unregister(key.fd)
                bad.append((key.fd, ERROR))
        return bad

    def close(self) -> None:
        self._sel.close()


def make_backend(kind: str) -> Backend:
    """``auto``: epoll where it exists, else the best `selectors` selector."""
    if kind == "auto":
        kind = "epoll" if hasattr(select, "epoll") else "selectors"
    if kind == "epoll":
        return EpollBackend()
    import selectors

    assert (selectors.EVENT_READ, selectors.EVENT_WRITE) == (_EVENT_READ, _EVENT_WRITE)
    factories: dict[str, Callable[[], selectors.BaseSelector]] = {
        "selectors": selectors.DefaultSelector,
        "poll": selectors.PollSelector,
        "select": selectors.SelectSelector,
    }
    if kind not in factories:
        raise ValueError(f"unknown poller {kind!r}: use auto, epoll, selectors, poll or select")
    return SelectorBackend(factories[kind]())


class Poller:
    """Tasks parked on fds, and the backend that reports readiness."""

    def __init__(self, kind: str = "auto") -> None:
        self.kind = kind
        self.backend = make_backend(kind)
        self._watches: dict[int, Watch] = {}
        # Fds whose last read came back short: probably empty, so the next read
        # waits for readiness instead of failing with EAGAIN first (sysio.py).
        self.drained: set[int] = set()
        self.waiting = 0  # tasks parked on fds (the kernel's own fds are not counted)
        # The undo of every I/O wait (Kernel.park), bound once rather than at every wait.
        self.undo: Callable[[Task], None] = self.unwait_task

    def _watch_for(self, fd: int, file: Any) -> Watch:
        """The watch of ``fd``, or a fresh one if the old one may belong to another file."""
        w = self._watches.get(fd)
        if w is not None and (
            w.readers or w.writers or w.callback or (w.owner is not None and w.owner() is file)
        ):
            return w  # someone waits on it now, or it is the same open file: trust it
        try:
            owner: Optional[weakref.ref[Any]] = None if type(file) is int else weakref.ref(file)
        except TypeError:
            owner = None
        # mask 0: we cannot know what the OS still has for this number, so the
        # next wait registers afresh (the backend copes if it is still there).
        self._watches[fd] = fresh = Watch(fd, owner)
        return fresh

    def _set_mask(self, w: Watch, new: int) -> None:
        """Tell the OS the new mask. If that raises, nothing has changed here, except
        that a watch nobody needs any more is forgotten all the same."""
        if new == 0 and not (w.readers or w.writers or w.callback):
            del self._watches[w.fd]
        self.backend.set(w.fd, w.mask, new)
        w.mask = new

    def _rebuild(self) -> None:
        """Start a fresh OS poller and register every watch in it again.

        Discussion: the OS reported an fd nobody wants, and removing it failed
        because its number is closed. That happens when the program closed an fd
        while a duplicate (``dup``, a forked child) keeps the open file alive:
        epoll keeps reporting the file under the old number, and ``epoll_ctl``
        cannot name it any more. Level-triggered, it would wake us for ever. The
        only cure is a new epoll instance; it is rare, so its O(fds) cost is fine.
        """
        old, self.backend = self.backend, make_backend(self.kind)
        old.close()
        for w in list(self._watches.values()):
            if w.mask:
                mask, w.mask = w.mask, 0
                try:
                    self._set_mask(w, mask)
                except OSError:
                    pass  # closed meanwhile; its waiters learn of it when they retry

    def wait(self, task: Task, fd: int, file: Any, writing: bool) -> None:
        """Park ``task`` until ``fd`` is readable (or writable). OSError if the fd is unusable."""
        w = self._watches.get(fd)
        if w is None or not (  # (the test of _watch_for, inlined, the usual case first)
            (w.owner is not None and w.owner() is file) or w.readers or w.writers or w.callback
        ):
            w = self._watch_for(fd, file)
        bit = WRITE if writing else READ
        if not w.mask & bit:
            self._set_mask(w, w.mask | bit)  # raises for a closed or unpollable fd
        (w.writers if writing else w.readers).append(task)
        self.waiting += 1

    def unwait(self, task: Task, fd: int, writing: bool) -> None:
        """Take a parked task off its fd (it was killed or timed out)."""
        w = self._watches.get(fd)
        if w is None:
            return
        queue = w.writers if writing else w.readers
        if task in queue:
            queue.remove(task)
            self.waiting -= 1
            if w.owner is None and not (w.readers or w.writers or w.callback):
                try:
                    self._set_mask(w, 0)
                except OSError:
                    pass  # the number was closed, which unregistered it

    def unwait_task(self, task: Task) -> None:
        """`unwait` for a task parked by an I/O trap (its undo): the fd and direction
        are its trap's."""
        trap = task.trap
        self.unwait(task, trap.fd, trap.writing)

    def forget(self, fd: int) -> list[Task]:
        """The fd is about to be closed: unregister it and return the tasks that waited on
        it (taken off the fd; the caller wakes them with an error)."""
        self.drained.discard(fd)
        w = self._watches.pop(fd, None)
        if w is None:
            return []
        waiters = w.readers + w.writers
        w.readers, w.writers = [], []
        self.waiting -= len(waiters)
        if w.mask:
            try:
                self.backend.set(fd, w.mask, 0)
            except OSError:
                pass  # already closed behind our back: nothing left to unregister
        return waiters

    def add_kernel_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (the kernel's own fds, e.g. signals)."""
        w = self._watch_for(fd, fd)
        w.callback = callback
        self._set_mask(w, READ)

    def remove_kernel_reader(self, fd: int) -> None:
        w = self._watches.get(fd)
        if w is not None:
            w.callback = None
            self._set_mask(w, 0)  # before the fd is closed, so this cannot fail

    def poll(self, timeout: Optional[float], complete: Callable[[Task], bool]) -> None:
        """Wait for readiness, then serve the waiters of each ready fd in FIFO order.

        ``complete(task)`` retries the task's operation and returns True when the
        task is done waiting (woken with a result or an error); the first False
        means the fd is not really ready for more, and the rest keep waiting.
        """
        if timeout is not None and timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        watches = self._watches
        for fd, bits in self.backend.wait(timeout):
            try:
                w = watches[fd]  # (cheaper than .get() when it is there, as it nearly always is)
            except KeyError:  # forgotten here, yet the OS still reports it: silence it
                try:
                    self.backend.set(fd, READ | WRITE, 0)
                except OSError:
                    self._rebuild()
                continue
            if w.callback is not None:
                w.callback()
                continue
            unwanted = 0
            if bits & _WAKES_READERS:
                queue = w.readers
                if not queue:
                    unwanted = READ
                while queue and complete(queue[0]):
                    del queue[0]
                    self.waiting -= 1
            if bits & _WAKES_WRITERS:
                queue = w.writers
                if not queue:
                    unwanted |= WRITE
                while queue and complete(queue[0]):
                    del queue[0]
                    self.waiting -= 1
            if unwanted or (w.owner is None and not (w.readers or w.writers)):
                # Lazy shrink: stop hearing about directions nobody waits for.
                keep = (READ if w.readers else 0) | (WRITE if w.writers else 0)
                if keep != w.mask:
                    try:
                        self._set_mask(w, keep)
                    except OSError:
                        self._rebuild()

    def watched(self) -> list[Watch]:
        """Every fd some task waits on (for deadlock reports and ps)."""
        return [w for w in self._watches.values() if w.readers or w.writers]

    def close(self) -> None:
        self._watches.clear()
        self.backend.close()
