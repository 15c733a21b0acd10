"""The run queue: the tasks that are READY, and the policy that picks the next one.

The default policy is xv6's and Beazley's: first in, first out, round robin.
A task that becomes ready goes to the back; the run loop takes tasks from the
front. Each pass of the loop runs a *snapshot* of the queue (the tasks that
were ready when the pass began), so a task that yields the CPU with
``sched_yield()`` runs again only after every other ready task has had a turn,
and no task can keep the loop from polling for I/O and timers.

A policy is any class with ``push(task)``, ``pop_next() -> Task``,
``len()`` and ``clear()`` (the `Policy` protocol); ``Kernel(policy=...)``
installs one. The FIFO one is a `collections.deque` whose methods are the
deque's own C methods, so the hot path pays no Python call for them.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from .task import Task


class Policy(Protocol):
    """What the run loop needs of a run queue (see the module docstring)."""

    def push(self, task: Task) -> None:
        """``task`` became READY."""

    def pop_next(self) -> Task:
        """Take the READY task that runs next (only called when not empty)."""

    def __len__(self) -> int:
        """How many tasks are READY."""

    def clear(self) -> None:
        """Forget every task (the kernel is aborting)."""


class RunQueue(deque[Task]):
    """FIFO round-robin run queue."""

    __slots__ = ()

    #: Make a task runnable: it goes to the back of the queue.
    push = deque.append
    #: The next task to run: the one that has waited longest.
    pop_next = deque.popleft
