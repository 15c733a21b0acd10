"""The task control block (TCB): everything the kernel knows about one task.

A task is a generator (or an ``async def`` coroutine). Its *saved context*
is the suspended generator frame itself: the instruction pointer, the local
variables and the whole chain of ``yield from`` / ``await`` frames are kept
by Python inside the generator object. So a context switch is just
``coro.send(value)``, and the TCB only has to remember what to send next.

A task moves through four states, as a process does in xv6::

          spawn             picked by the run loop
    ──────────────► READY ─────────────────────────► RUNNING
                      ▲                                 │ │
                      │  wakeup: I/O ready, timer,      │ │ trap that must wait
                      │  joined task exits, kill        │ │
                      └────────────── BLOCKED ◄─────────┘ │
                                                          │ return / raise
                                                 EXITED ◄─┘

Invariants (checked where the state changes):

* READY   <=> the task is in the run queue exactly once.
* BLOCKED <=> ``undo`` is set: the one way to take it out of whatever it
  waits on (poller, timer queue, another task's exit waiters). Recording the
  undo at the moment of blocking is what makes kill and timeouts correct.
* RUNNING  => it is the kernel's ``current`` task.
* EXITED   => ``coro`` is gone and ``result``/``exception`` are final.
* ``pending_exc`` is set only on a READY or RUNNING task: a BLOCKED one is
  interrupted at once instead.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Generator, Optional, Union

if TYPE_CHECKING:
    from .scopes import CancelScope

#: The tickets a task gets unless spawned with others (stride and lottery scheduling).
DEFAULT_TICKETS = 100

#: What a task runs: a generator or a coroutine object (both have send/throw/close).
Coro = Union[Generator[Any, Any, Any], Coroutine[Any, Any, Any]]


class TaskState(enum.Enum):
    """Where a task is in its life; the names are the OS ones."""

    READY = "ready"  # in the run queue, waiting for the CPU
    RUNNING = "running"  # the one task whose frame is executing now
    BLOCKED = "blocked"  # parked until an event (fd, timer, exit, ...) wakes it
    EXITED = "exited"  # finished: returned, raised, or was killed

    def __str__(self) -> str:
        return self.value


class Task:
    """The task control block. The kernel owns every field; user code only reads."""

    __slots__ = (
        "tid",
        "name",
        "coro",
        "state",
        "next_value",
        "next_exc",
        "pending_exc",
        "trap",
        "undo",
        "exit_waiters",
        "callers",
        "scopes",
        "cancel_requested",
        "cancel_delivered",
        "result",
        "exception",
        "joined",
        "parent",
        "priority",
        "tickets",
        "sched",
        "__weakref__",
    )

    def __init__(
        self,
        tid: int,
        name: str,
        coro: Coro,
        parent: Optional[int] = None,
        priority: int = 0,
        tickets: int = DEFAULT_TICKETS,
    ) -> None:
        self.tid = tid  # unique id, never reused within a kernel
        self.name = name  # for people: ps listings, logs, repr
        self.parent = parent  # tid of the task that spawned it (None: main)
        # Scheduling parameters, read only by the policies that use them (scheduler.py):
        self.priority = priority  # static priority: higher runs first
        self.tickets = tickets  # share of the CPU for stride and lottery scheduling
        self.sched: Any = None  # the policy's own bookkeeping (virtual runtime, pass, ...)
        self.coro: Optional[Coro] = coro  # the saved context; None once EXITED
        self.state = TaskState.READY
        # What the run loop delivers at the next resume: a value, or an exception to throw.
        self.next_value: Any = None
        self.next_exc: Optional[BaseException] = None
        # An exception to throw at the task's *next* trap (kill or Ctrl-C of a READY task).
        self.pending_exc: Optional[BaseException] = None
        # While BLOCKED: the trap it waits in, and how to take it out of that wait.
        self.trap: Any = None
        self.undo: Optional[Callable[[Task], None]] = None  # called as undo(task)
        # Tasks blocked in join() or kill() on this task, woken when it exits.
        self.exit_waiters: Optional[list[Task]] = None  # made on the first join or kill
        # The rest of the saved context while an Operation trap runs as a subroutine:
        # the generators below ``coro``, innermost last (None: no subroutine running).
        self.callers: Optional[list[Coro]] = None
        # Cancel scopes (timeouts, shields) the task is inside, outermost first.
        self.scopes: Optional[list[CancelScope]] = None
        self.cancel_requested = False  # kill() has been asked for
        self.cancel_delivered = False  # ... and Cancelled has been raised in it (once only)
        # Final outcome, once EXITED.
        self.result: Any = None
        self.exception: Optional[BaseException] = None
        self.joined = False  # someone has collected the outcome (so a failure is not reported)

    def __repr__(self) -> str:
        state = str(self.state)
        if self.state is TaskState.BLOCKED and self.trap is not None:
            state += f" in {self.trap!r}"
        elif self.state is TaskState.EXITED:
            if self.exception is not None:
                state += f" with {type(self.exception).__name__}"
        return f"<Task tid={self.tid} name={self.name!r} {state}>"
