"""The kernel's exceptions: what a task can be told, and what a kernel bug looks like.

Two kinds of failure must never be confused (see STYLE.md, principle 7):

* A task's failure belongs to the task. `Cancelled` is delivered into a task
  that is killed, `TimedOut` into one whose timeout expired; `Deadlock` is
  delivered into ``main`` when nothing can ever run again. They travel like
  any other exception: they unwind the task's frames, run its ``finally``
  blocks, and end up in whoever joins it.
* `KernelPanic` means the kernel itself broke one of its invariants. It is
  never delivered to a task: it stops the kernel, loudly.
"""

from __future__ import annotations


class Cancelled(BaseException):
    """Thrown into a task at its suspension point when it is killed.

    It derives from `BaseException`, as `asyncio.CancelledError` does, so
    that a careless ``except Exception:`` in the task cannot swallow it.
    """


class TimedOut(Cancelled):
    """Thrown into a task at its blocking point when a timeout scope's deadline passes.

    It is a `Cancelled`, so it unwinds the task like a kill does; the scope
    that owns the deadline (``scope``) catches it as it leaves its ``with``
    and turns it into the builtin `TimeoutError` (or swallows it, for
    ``move_on_after``). Scopes further out let it pass untouched.
    """

    def __init__(self, scope: object) -> None:
        super().__init__(f"deadline of {scope!r} passed")
        self.scope = scope


class Deadlock(RuntimeError):
    """Nothing can ever run again, but ``main`` has not finished.

    No task is ready, no task waits on an fd, no timer is pending. The
    message lists every blocked task and what it waits on.
    """


class KernelPanic(RuntimeError):
    """The kernel broke one of its own invariants: a bug in the kernel, not in a task."""
