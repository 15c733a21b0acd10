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

The other policies (static priority, fair share as CFS, stride, lottery,
seeded random) are in policies.py, which says what each costs and how each
fails; `make_policy` makes any of them from a short name such as
``"random:7"`` (for ``python -m kernel run --policy`` and the test plugin).
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


#: The names `make_policy` knows, in the order they are usually listed.
POLICY_NAMES = ("fifo", "priority", "fair", "stride", "lottery", "random")
_SEEDED = ("lottery", "random")


def make_policy(spec: str) -> Policy:
    """A new policy from its name: ``"fifo"``, ``"priority"``, ``"fair"``, ``"stride"``,
    ``"lottery[:SEED]"`` or ``"random[:SEED]"`` (SEED an integer, default 0).

    Raises ValueError, with the names it knows, for anything else. A policy
    object serves one kernel: make one per kernel.
    """
    name, colon, seed_text = spec.partition(":")
    if name not in POLICY_NAMES:
        known = ", ".join(n + "[:SEED]" if n in _SEEDED else n for n in POLICY_NAMES)
        raise ValueError(f"unknown scheduling policy {spec!r}: expected one of {known}")
    if colon and name not in _SEEDED:
        raise ValueError(f"scheduling policy {name!r} takes no seed, in {spec!r}")
    seed = 0
    if colon:
        # Digits only (int() would also take " 7", "+7" and "1_0"): one spelling per seed.
        digits = seed_text[1:] if seed_text.startswith("-") else seed_text
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(
                f"bad seed {seed_text!r} in {spec!r}: expected an integer, as in {name}:7"
            )
        seed = int(seed_text)
    if name == "fifo":
        return RunQueue()
    # Imported here: a kernel that keeps the default FIFO never loads policies.py.
    from .policies import (
        FairSharePolicy,
        LotteryPolicy,
        PriorityPolicy,
        RandomPolicy,
        StridePolicy,
    )

    if name == "priority":
        return PriorityPolicy()
    if name == "fair":
        return FairSharePolicy()
    if name == "stride":
        return StridePolicy()
    if name == "lottery":
        return LotteryPolicy(seed)
    return RandomPolicy(seed)
