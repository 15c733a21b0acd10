"""Cancel scopes: timeouts and shields, and the one rule for delivering a cancellation.

A *cancel scope* is a region of a task's code, entered and left with
``with``. A scope with a deadline is a timeout: when the kernel clock
reaches it, the task is interrupted wherever it blocks inside the region.
A *shield* scope is a region that outside cancellations cannot reach. A
task's scopes form a stack (``Task.scopes``, outermost first), because
``with`` blocks nest.

There are two sources of cancellation: a kill (from outside every scope)
and a scope's deadline. The rule for delivering them, in one place
(`next_cancellation`):

* A cancellation is delivered **once**, as an exception at the task's
  blocking trap (`Cancelled` for a kill, `TimedOut` for a deadline). A task
  that is READY gets it at its next trap instead, so a result it was
  already woken with is never lost. After that, cleanup code may block.
* A cancellation from a level is **held back** while the task is inside a
  shield opened within that level, and delivered at the first trap after
  the shield ends.
* When several are due, the **outermost** wins: it unwinds everything the
  inner ones would, and each scope lets a `TimedOut` that is not its own
  pass through untouched.

The scope that owns a deadline turns its own `TimedOut` into the builtin
`TimeoutError` as it leaves the ``with`` (or swallows it, for
``move_on_after``). A scope is a plain context manager, so it works across
the yields of a generator task, and also as ``async with``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional

from .errors import Cancelled, TimedOut
from .task import CANCEL_DELIVERED, CANCEL_REQUESTED
from .timers import Timer

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task

#: The flags of a kill asked for: delivered already, or not yet.
_KILL_FLAGS = CANCEL_REQUESTED | CANCEL_DELIVERED

_running = threading.local()  # .kernel: the kernel running in this thread, if any


def current_kernel() -> Kernel:
    """The kernel running in this thread (RuntimeError outside of any task)."""
    k: Optional[Kernel] = getattr(_running, "kernel", None)
    if k is None:
        raise RuntimeError("no yieldos kernel is running in this thread")
    return k


class CancelScope:
    """A region of a task with an optional deadline (``timeout`` seconds from entry, or
    an absolute ``deadline`` on the kernel clock) and an optional ``shield``.

    ``raise_timeout``: when the deadline interrupts the region, raise the
    builtin `TimeoutError` out of it (``timeout``) or not (``move_on_after``).
    After the region, ``expired`` says whether the deadline cut it short: its
    `TimedOut` reached the end of the ``with``. (A deadline that passes after
    the task was already woken with what it waited for does not count: the
    region then completes, and ``expired`` stays False.)
    """

    __slots__ = (
        "timeout",
        "deadline",
        "shield",
        "raise_timeout",
        "due",
        "expired",
        "delivered",
        "task",
        "_timer",
        "_kernel",
    )

    def __init__(
        self,
        *,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        shield: bool = False,
        raise_timeout: bool = True,
    ) -> None:
        if timeout is not None:
            timeout = float(timeout)
            if timeout != timeout:
                raise ValueError("timeout must be a number, not NaN")
        self.timeout = timeout
        self.deadline = deadline
        self.shield = shield
        self.raise_timeout = raise_timeout
        self.due = False  # the deadline has passed (its TimedOut is due)
        self.expired = False  # ... and that TimedOut ended the region
        self.delivered = False  # its TimedOut has been raised in the task
        self.task: Optional[Task] = None
        self._timer: Optional[Timer] = None
        self._kernel: Optional[Kernel] = None

    def __repr__(self) -> str:
        what = "shield" if self.shield else f"deadline={self.deadline}"
        return f"<CancelScope {what}{' due' if self.due else ''}>"

    def __enter__(self) -> CancelScope:
        k = current_kernel()
        task = k.current
        if task is None or self.task is not None:
            raise RuntimeError("a cancel scope is entered once, by a running task")
        if self.timeout is not None:
            self.deadline = k.clock() + self.timeout
        self.task, self._kernel = task, k
        if task.scopes is None:
            task.scopes = []
        task.scopes.append(self)
        if self.deadline is not None:
            self._timer = k.timers.add(self.deadline, CancelScope._expire, self)
        return self

    def __exit__(self, typ: Any, exc: Optional[BaseException], tb: Any) -> bool:
        k, task = self._kernel, self.task
        assert k is not None and task is not None
        if not task.scopes or task.scopes[-1] is not self:
            raise RuntimeError(f"{self!r} left out of order (scopes must nest)")
        task.scopes.pop()
        if self._timer is not None:
            k.timers.cancel(self._timer)
        if self.shield:
            k.deliver_cancellation(task)  # what the shield held back is due at the next trap
        if isinstance(exc, TimedOut) and exc.scope is self:
            self.expired = True
            if self.raise_timeout:
                raise TimeoutError(f"deadline {self.deadline} passed (timeout {self.timeout} s)")
            return True  # move_on_after: the region simply ends
        return False

    async def __aenter__(self) -> CancelScope:
        return self.__enter__()

    async def __aexit__(self, typ: Any, exc: Optional[BaseException], tb: Any) -> bool:
        return self.__exit__(typ, exc, tb)

    def _expire(self) -> None:
        """The deadline's timer fired (from the run loop, never inside a task)."""
        self.due = True
        assert self._kernel is not None and self.task is not None
        self._kernel.deliver_cancellation(self.task)


def next_cancellation(task: Task) -> Optional[BaseException]:
    """The cancellation to raise in ``task`` now, if any, marking it delivered (the rule above)."""
    scopes = task.scopes or ()
    innermost_shield = -1
    for i, scope in enumerate(scopes):
        if scope.shield:
            innermost_shield = i
    if task.flags & _KILL_FLAGS == CANCEL_REQUESTED and innermost_shield < 0:
        task.flags |= CANCEL_DELIVERED
        return Cancelled()
    for i, scope in enumerate(scopes):
        if scope.due and not scope.delivered and innermost_shield <= i:
            scope.delivered = True
            return TimedOut(scope)
    return None
