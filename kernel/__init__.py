"""yieldos kernel: generator tasks, trap dispatch, epoll, timers.

A task is a generator (or ``async def`` coroutine) that yields trap objects
(built by the functions in `syscalls`); the kernel services each trap and
resumes the task with the result. Where to read, in order:

* ``task.py``      the task control block and its states
* ``traps.py``     the trap ABI: what a task can ask
* ``syscall.py``   the trap table; ``sysproc.py`` and ``sysio.py`` the service routines
* ``scheduler.py`` the run queue;  ``timers.py`` the clock and timer heap
* ``poller.py``    epoll and the selectors fallback;  ``files.py`` non-blocking fds
* ``signals.py``   Ctrl-C;  ``kernel.py`` the run loop that ties it all together
* ``instrument.py`` hooks on every kernel event, free when none is installed
"""

from __future__ import annotations

from .errors import Cancelled, Deadlock, KernelPanic
from .instrument import Instrument
from .kernel import Kernel, run
from .scheduler import Policy, RunQueue
from .task import Task, TaskState
from .timers import VirtualClock
from .traps import Trap

__all__ = [
    "Cancelled",
    "Deadlock",
    "Instrument",
    "Kernel",
    "KernelPanic",
    "Policy",
    "RunQueue",
    "Task",
    "TaskState",
    "Trap",
    "VirtualClock",
    "run",
]
