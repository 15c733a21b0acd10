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

from typing import TYPE_CHECKING, Any

from .errors import Cancelled, Deadlock, KernelPanic
from .instrument import Instrument
from .kernel import Kernel, run
from .scheduler import POLICY_NAMES, Policy, RunQueue, make_policy
from .task import Task, TaskState
from .timers import VirtualClock
from .traps import Trap

if TYPE_CHECKING:
    from .accounting import Accounting, TaskStats
    from .policies import (
        FairSharePolicy,
        LotteryPolicy,
        PriorityPolicy,
        RandomPolicy,
        StridePolicy,
    )
    from .procfs import FrameInfo, TaskInfo, format_ps
    from .procfs import ps_current as ps
    from .strace import Strace
    from .trace import TraceRecorder
    from .watchdog import SlowStepDetector, warn_slow_steps

# The tools for looking inside are imported on first use (PEP 562), so that
# `import kernel` stays cheap for programs that never look.
_LAZY = {
    "Accounting": ("accounting", "Accounting"),
    "TaskStats": ("accounting", "TaskStats"),
    "FairSharePolicy": ("policies", "FairSharePolicy"),
    "LotteryPolicy": ("policies", "LotteryPolicy"),
    "PriorityPolicy": ("policies", "PriorityPolicy"),
    "RandomPolicy": ("policies", "RandomPolicy"),
    "StridePolicy": ("policies", "StridePolicy"),
    "FrameInfo": ("procfs", "FrameInfo"),
    "TaskInfo": ("procfs", "TaskInfo"),
    "format_ps": ("procfs", "format_ps"),
    "ps": ("procfs", "ps_current"),
    "Strace": ("strace", "Strace"),
    "TraceRecorder": ("trace", "TraceRecorder"),
    "SlowStepDetector": ("watchdog", "SlowStepDetector"),
    "warn_slow_steps": ("watchdog", "warn_slow_steps"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'kernel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{where[0]}", __name__), where[1])
    globals()[name] = value
    return value


__all__ = [
    "POLICY_NAMES",
    "Accounting",
    "Cancelled",
    "Deadlock",
    "FairSharePolicy",
    "FrameInfo",
    "Instrument",
    "Kernel",
    "KernelPanic",
    "LotteryPolicy",
    "Policy",
    "PriorityPolicy",
    "RandomPolicy",
    "RunQueue",
    "SlowStepDetector",
    "Strace",
    "StridePolicy",
    "Task",
    "TaskInfo",
    "TaskState",
    "TaskStats",
    "TraceRecorder",
    "Trap",
    "VirtualClock",
    "format_ps",
    "make_policy",
    "ps",
    "run",
    "warn_slow_steps",
]
