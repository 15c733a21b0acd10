"""The watchdog: warn when a task holds the CPU too long without yielding.

Scheduling here is cooperative: a task runs until its next trap, and nothing
can take the CPU from it before that. A task that computes for a second, or
calls a blocking function (``time.sleep``, a blocking ``socket.recv``, a
slow DNS lookup) by mistake, stops every other task for that long: servers
miss their deadlines and nothing says why. Linux has the same problem with
kernel code that never reschedules, and the same answer: the *soft lockup
detector*, a watchdog that notices a CPU stuck in one task and prints where.

`SlowStepDetector` is that watchdog, as an instrument (instrument.py): after
each step (from the switch to a task until it traps and waits, yields, or
exits) it compares the step's time, measured with ``kernel.cpu_clock``, with
a threshold, and logs a warning on the "yieldos" logger naming the task, the
line where the step began (where the task was suspended when the run loop
switched to it) and the line where it stopped::

    task 'crunch' (tid 3) ran 0.250 s without yielding, from app.py:12 to app.py:19

The slow code is between those two lines. Switch it on with
``warn_slow_steps(kernel, 0.1)``. It costs the hooks of one instrument while
installed, and nothing when not (this module is not even imported).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional

from .instrument import Instrument
from .procfs import suspended_at
from .task import Task

if TYPE_CHECKING:
    from .kernel import Kernel

#: The default threshold, in seconds: a step longer than this is reported.
DEFAULT_THRESHOLD = 0.1


class SlowStepDetector(Instrument):
    """Log a warning for every step of a task longer than ``threshold`` seconds
    (on ``logger``, by default the "yieldos" logger). ``slow_steps`` counts them."""

    def __init__(
        self, threshold: float = DEFAULT_THRESHOLD, logger: Optional[logging.Logger] = None
    ) -> None:
        if not threshold >= 0:  # also catches NaN
            raise ValueError(f"threshold must be a non-negative number, not {threshold!r}")
        self.threshold = threshold
        self.logger = logger or logging.getLogger("yieldos")
        self.slow_steps = 0
        # Where the task in its step was when the step began: (file, line).
        self._started_at: Optional[tuple[str, int]] = None

    def run(self, task: Task) -> None:
        self._started_at = _location(task)

    def stop(self, task: Task, seconds: float) -> None:
        if seconds <= self.threshold:
            return
        self.slow_steps += 1
        self.logger.warning(
            "task %r (tid %d) ran %.3f s without yielding, from %s to %s",
            task.name,
            task.tid,
            seconds,
            _format(self._started_at, "?"),
            _format(_location(task), "its exit"),  # an EXITED task is nowhere any more
        )


def _location(task: Task) -> Optional[tuple[str, int]]:
    """The file and line of the frame ``task`` is suspended in (None once it has exited)."""
    frame = suspended_at(task)
    return None if frame is None else (frame.f_code.co_filename, frame.f_lineno)


def _format(location: Optional[tuple[str, int]], missing: str) -> str:
    if location is None:
        return missing
    return f"{os.path.basename(location[0])}:{location[1]}"


def warn_slow_steps(kernel: Kernel, threshold: float = DEFAULT_THRESHOLD) -> SlowStepDetector:
    """Install a `SlowStepDetector` on ``kernel`` and return it (to stop it:
    ``kernel.remove_instrument(detector)``)."""
    detector = SlowStepDetector(threshold)
    kernel.add_instrument(detector)
    return detector
