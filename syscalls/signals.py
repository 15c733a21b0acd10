"""Signal sets: tasks that wait for Unix signals, as ``sigwait`` and ``signalfd`` do.

A Python signal handler runs between two bytecodes of whatever code is
running, which may be the kernel in the middle of its bookkeeping. So a
task never gets a handler of its own: while a signal is *watched* (see
kernel/signals.py), its handler only queues the signal's number, the C
level handler writes a byte into the kernel's wakeup fd (``signal.set_wakeup_fd``)
so that the poller stops waiting, and the run loop then hands the number
to the watchers, outside any task. A `SignalSet` is such a watcher: it
keeps the signals that arrived in a queue, in order, and wakes the task
that waits on it::

    def main():
        with SignalSet(signal.SIGHUP, signal.SIGTERM) as signals:
            while True:
                signum = yield signals.wait()
                if signum == signal.SIGTERM:
                    break
                reload_config()

While a set is open, a signal it watches does nothing else: SIGTERM does
not kill the process, and SIGINT (Ctrl-C) raises no `KeyboardInterrupt`.
When the last set watching a signal closes, its previous handler is back;
when the kernel's run ends, all of them are, whatever the sets say.

Signals can only be handled in the main thread: a set can be opened only in
a kernel that runs in the main thread. A task waiting for a signal is not
deadlocked: the signal may come. Signals are not counted as a queue of
events by the OS: two deliveries of one signal close together may reach the
handler as one.
"""

from __future__ import annotations

import collections
import signal
from typing import TYPE_CHECKING, Any, Generator, Optional

from kernel.scopes import current_kernel
from syscalls import operation, wait_on

if TYPE_CHECKING:
    from kernel.kernel import Kernel

__all__ = ["SignalSet", "wait_signal"]

#: Signals no handler can be set for.
_UNCATCHABLE = frozenset(
    getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)
)


class SignalSet:
    """A set of signals a task waits for: ``yield s.wait()`` returns the next one.

    Signals that arrive while the set is open are queued, first come first
    out, so none is lost between two waits. Open and close it with a plain
    ``with`` (``async with`` works too), or the plain calls `open` and
    `close`, inside a task of a kernel running in the main thread.
    """

    def __init__(self, *signums: int) -> None:
        if not signums:
            raise ValueError("SignalSet needs at least one signal")
        valid = signal.valid_signals()
        for signum in signums:
            if signum not in valid or signum in _UNCATCHABLE:
                raise ValueError(f"cannot wait for signal {signum!r}")
        self.signums = tuple(dict.fromkeys(signal.Signals(s) for s in signums))
        self._arrived: collections.deque[signal.Signals] = collections.deque()
        self._kernel: Optional[Kernel] = None

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.signums)
        state = "open" if self._kernel is not None else "closed"
        return f"<SignalSet {names} ({state}, {len(self._arrived)} pending)>"

    @property
    def pending(self) -> int:
        """How many signals arrived and wait to be taken."""
        return len(self._arrived)

    def open(self) -> None:
        """Start watching: from now on these signals are queued here instead of
        doing what they did before. A plain call; opening an open set does nothing."""
        if self._kernel is not None:
            return
        k = current_kernel()
        done: list[signal.Signals] = []
        try:
            for signum in self.signums:
                k.watch_signal(signum, self._on_signal)
                done.append(signum)
        except BaseException:
            for signum in done:
                k.unwatch_signal(signum, self._on_signal)
            raise
        self._kernel = k

    def close(self) -> None:
        """Stop watching (the previous handlers are back once no other set watches
        the signals), and wake any task still waiting, with `RuntimeError`.
        Signals not taken yet stay in the queue for `poll`."""
        k, self._kernel = self._kernel, None
        if k is None:
            return
        for signum in self.signums:
            k.unwatch_signal(signum, self._on_signal)
        k.wakeup(self)

    def _on_signal(self, signum: int) -> None:
        """Called by the run loop (never inside a signal handler) for each arrival."""
        self._arrived.append(signal.Signals(signum))
        if self._kernel is not None:
            self._kernel.wakeup(self, 1)

    def poll(self) -> Optional[signal.Signals]:
        """The next signal that arrived, or None: a plain call that never waits."""
        return self._arrived.popleft() if self._arrived else None

    @operation
    def wait(self) -> Generator[Any, Any, signal.Signals]:
        """Wait for the next signal of the set; the result is its number (a
        `signal.Signals`). One already queued is returned at once."""
        while not self._arrived:
            if self._kernel is None:
                raise RuntimeError(f"wait on a closed {self!r}")
            yield wait_on(self)
        return self._arrived.popleft()

    def __enter__(self) -> SignalSet:
        self.open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    async def __aenter__(self) -> SignalSet:
        self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()


@operation
def wait_signal(*signums: int) -> Generator[Any, Any, signal.Signals]:
    """Wait for one of ``signums`` to arrive; the result is its number.

    The signals are watched only during the call: one that arrives between
    two calls does what it did before (SIGTERM kills the process). To wait
    for signals in a loop, keep a `SignalSet` open across the waits instead.
    """
    with SignalSet(*signums) as signals:
        return (yield from signals.wait())
