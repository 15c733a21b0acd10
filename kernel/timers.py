"""Time: the kernel clock, and the timer queue of deadlines.

**The clock seam.** The kernel reads time only through one callable, its
``clock`` (by default `time.monotonic`: seconds as a float, never going
backwards). Nothing else in the kernel asks the OS for the time, so a test or
a teacher can hand the kernel another clock.

**The timer queue** holds deadlines in a binary heap, so the next one to
expire is always at the top: adding is O(log n), finding the next deadline is
O(1). Cancelling (a killed sleeper, a timeout that was not needed) must not
cost a scan of the heap, so it is *lazy*: the timer's action is cleared and
the dead entry stays in the heap until it reaches the top, where it is thrown
away. To keep memory bounded when most timers are cancelled (timeouts that
never fire are the common case), the heap is rebuilt without the dead
entries once they outnumber the live ones.

Heap entries are ``(deadline, seq, timer)`` tuples: tuples compare in C, the
unique ``seq`` breaks ties between equal deadlines in FIFO order, and the
comparison never reaches the `Timer` object.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Callable, Optional

#: The clock seam: a callable returning seconds on a monotonic clock.
Clock = Callable[[], float]
DEFAULT_CLOCK: Clock = time.monotonic

#: Rebuild the heap once cancelled entries are more than this many *and* more than the live ones.
_COMPACT_MIN = 64


class Timer:
    """One pending deadline. ``action`` runs when it expires; None once fired or cancelled."""

    __slots__ = ("deadline", "action")

    def __init__(self, deadline: float, action: Callable[[], None]) -> None:
        self.deadline = deadline
        self.action: Optional[Callable[[], None]] = action

    def __repr__(self) -> str:
        return f"<Timer deadline={self.deadline:.6f}{'' if self.action else ' (done)'}>"


class TimerQueue:
    """A min-heap of timers with lazy cancellation."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self.live = 0  # timers neither fired nor cancelled

    def __len__(self) -> int:
        return self.live

    def add(self, deadline: float, action: Callable[[], None]) -> Timer:
        """Run ``action()`` once the clock reaches ``deadline``."""
        timer = Timer(deadline, action)
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
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
            self._heap = [entry for entry in self._heap if entry[2].action is not None]
            heapq.heapify(self._heap)

    def next_deadline(self) -> Optional[float]:
        """The earliest live deadline, or None when no timer is pending."""
        heap = self._heap
        while heap and heap[0][2].action is None:
            heapq.heappop(heap)  # a cancelled timer reached the top: drop it now
        return heap[0][0] if heap else None

    def expire(self, now: float) -> int:
        """Run the action of every timer whose deadline is ``<= now``; return how many ran."""
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            action = timer.action
            if action is not None:
                timer.action = None
                self.live -= 1
                fired += 1
                action()
        return fired
