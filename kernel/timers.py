"""Time: the kernel clock, and the timer queue of deadlines.

**The clock seam.** The kernel reads time only through one callable, its
``clock`` (by default `time.monotonic`: seconds as a float, never going
backwards). Nothing else in the kernel asks the OS for the time, so a test or
a teacher can hand the kernel another clock.

**The virtual clock** (`VirtualClock`) is the other clock that plugs into
the seam. Time stands still while tasks run; when every task is waiting and
the next thing that can happen is a timer, the kernel *jumps* the clock to
that deadline instead of sleeping until it. A program that sleeps for an hour
finishes in milliseconds, and since nothing depends on how fast the machine
is, the same program (with the same scheduling seed) does the same thing in
the same order every run. The jump happens only when nothing else can make
progress: ready tasks run first, I/O that is already possible is done first
(the kernel polls without waiting), and a task waiting for a thread holds
time still until the thread answers.

**The timer queue** holds deadlines in a binary heap, so the next one to
expire is always at the top: adding is O(log n), finding the next deadline is
O(1). Cancelling (a killed sleeper, a timeout that was not needed) must not
cost a scan of the heap, so it is *lazy*: the timer's action is cleared and
the dead entry stays in the heap until it reaches the top, where it is thrown
away. To keep memory bounded when most timers are cancelled (timeouts that
never fire are the common case), the heap is rebuilt without the dead
entries once they outnumber the live ones.

A timer *is* its deadline: `Timer` is a float subclass, so the heap holds
the timers themselves and compares them as plain floats, in C, with no
``(deadline, seq, timer)`` tuple to build per timer (or to compare item by
item: about twice the work). A heap does not keep equal keys in the order they
came, so ties are put in FIFO order when they expire, by the ``seq`` each
timer is numbered with; a tie is always due as a whole, so it fires as one.

A timer calls ``action(arg)``: a sleeping task's timer is ``(kernel.wake,
task)``, a cancel scope's ``(CancelScope._expire, scope)``. Giving the
argument to the timer, rather than binding it into a fresh closure, saves
an object per timer; there can be a hundred thousand of them. For the same
reason a timer is its own undo: calling it with the task (``undo(task)``)
cancels it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any, Callable, Optional

#: The clock seam: a callable returning seconds on a monotonic clock.
Clock = Callable[[], float]
DEFAULT_CLOCK: Clock = time.monotonic


class VirtualClock:
    """A clock that moves only when told to: ``Kernel(clock=VirtualClock())``.

    ``now`` starts at ``start`` (0.0 by default). The kernel calls `jump_to`
    when it would otherwise sleep until a deadline; a task (or a test) may call
    `advance` to say "this much time has passed", e.g. to stand for CPU work:
    under a virtual clock the kernel times each step of a task with this clock,
    so `advance` inside a task is CPU time charged to it.

    ``autojump`` is how long, in *real* seconds, the kernel watches for I/O
    before it decides nothing else can happen and jumps. The default, 0, jumps
    as soon as no I/O is ready at that instant: right for programs whose I/O is
    between their own tasks; give a peer in another thread or process a
    little time (say 0.05) if it must answer before a timeout fires.
    """

    #: The kernel looks for this to know it may jump the clock.
    virtual = True

    def __init__(self, start: float = 0.0, *, autojump: float = 0.0) -> None:
        if autojump < 0:
            raise ValueError(f"autojump must be >= 0, not {autojump}")
        self.now = float(start)
        self.autojump = autojump

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (timers due by then fire at the next pass)."""
        if not seconds >= 0:
            raise ValueError(f"the clock cannot go back: advance({seconds!r})")
        self.now += seconds

    def jump_to(self, when: float) -> None:
        """Move the clock to ``when``, if that is later than now."""
        if when > self.now:
            self.now = when

    def __repr__(self) -> str:
        return f"<VirtualClock now={self.now:.6f}>"


#: Rebuild the heap once cancelled entries are more than this many *and* more than the live ones.
_COMPACT_MIN = 64


class Timer(float):
    """One pending deadline: ``action(arg)`` runs when it expires. ``action`` is None
    once the timer has fired or been cancelled.

    A timer *is* its deadline, a float (see the module docstring): it compares and
    hashes as one, so keep timers out of sets and dicts. ``seq`` orders timers
    with equal deadlines.
    """

    __slots__ = ("seq", "action", "arg", "queue")

    seq: int
    action: Optional[Callable[[Any], None]]
    arg: Any
    queue: TimerQueue

    @property
    def deadline(self) -> float:
        return float(self)

    def __bool__(self) -> bool:
        return True  # a timer, even one due at 0.0: not its deadline's truth

    def __call__(self, task: object = None) -> None:
        """Cancel the timer: so the timer itself is a sleeping task's undo (``undo(task)``)."""
        self.queue.cancel(self)

    def __repr__(self) -> str:
        return f"<Timer deadline={float(self):.6f}{'' if self.action else ' (done)'}>"


def _seq_of(timer: Timer) -> int:
    return timer.seq


class TimerQueue:
    """A min-heap of timers with lazy cancellation."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self.live = 0  # timers neither fired nor cancelled

    def __len__(self) -> int:
        return self.live

    def add(self, deadline: float, action: Callable[[Any], None], arg: Any = None) -> Timer:
        """Run ``action(arg)`` once the clock reaches ``deadline``."""
        timer = Timer(deadline)  # (the fields are set here, not by an __init__: a call less)
        timer.seq = next(self._seq)
        timer.action = action
        timer.arg = arg
        timer.queue = self
        heapq.heappush(self._heap, timer)
        self.live += 1
        return timer

    def cancel(self, timer: Timer) -> None:
        """Forget a timer; a no-op if it already fired or was cancelled."""
        if timer.action is None:
            return
        timer.action = None
        self.live -= 1
        dead = len(self._heap) - self.live
        if dead > _COMPACT_MIN and dead > self.live:
            # In place: `expire` may be looping over this very list (an action cancels).
            self._heap[:] = [t for t in self._heap if t.action is not None]
            heapq.heapify(self._heap)

    def next_deadline(self) -> Optional[float]:
        """The earliest live deadline, or None when no timer is pending."""
        heap = self._heap
        while heap and heap[0].action is None:
            heapq.heappop(heap)  # a cancelled timer reached the top: drop it now
        return float(heap[0]) if heap else None

    def expire(self, now: float) -> int:
        """Run the action of every timer whose deadline is ``<= now``; return how many ran."""
        heap = self._heap
        fired = 0
        while heap and heap[0] <= now:
            timer = heapq.heappop(heap)
            if heap and heap[0] == timer:
                # Discussion: a heap does not keep equal keys in order, so a tie is put
                # in FIFO order (by seq) here: all of it is due, and fires now.
                ties = [timer]
                while heap and heap[0] == timer:
                    ties.append(heapq.heappop(heap))
                ties.sort(key=_seq_of)
                for timer in ties:
                    action = timer.action
                    if action is not None:
                        timer.action = None
                        self.live -= 1
                        fired += 1
                        action(timer.arg)
                continue
            action = timer.action
            if action is not None:
                timer.action = None
                self.live -= 1
                fired += 1
                action(timer.arg)
        return fired
