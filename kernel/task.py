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

# Task.flags: facts about a task that are true or not, one bit each.
CANCEL_REQUESTED = 1  # kill() has been asked for
CANCEL_DELIVERED = 2  # ... and Cancelled has been raised in it (it is, only once)
JOINED = 4  # someone has collected its outcome (so a failure is not reported)

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


# A member looked up on its Enum class costs a Python-level call (enum's descriptor), a
# plain global does not: the state every TCB starts in, looked up once.
_READY = TaskState.READY


class SchedInfo:
    """A task's scheduling record: its parameters, and a policy's bookkeeping.

    Most tasks never need one (default priority and tickets, FIFO policy), so
    `Task.sched` stays None until a task is spawned with other parameters or
    a policy keeps something per task: one pointer in every TCB instead of
    three.
    """

    __slots__ = ("priority", "tickets", "data")

    def __init__(self, priority: int = 0, tickets: int = DEFAULT_TICKETS) -> None:
        self.priority = priority  # static priority: higher runs first
        self.tickets = tickets  # share of the CPU for stride and lottery scheduling
        self.data: Any = None  # the policy's own (virtual runtime, pass, ...)

    def __repr__(self) -> str:
        return f"SchedInfo(priority={self.priority}, tickets={self.tickets}, data={self.data!r})"


def sched_info(task: Task) -> SchedInfo:
    """``task``'s scheduling record, made on first use (for the policies)."""
    info = task.sched
    if info is None:
        info = task.sched = SchedInfo()
    return info


class Task:
    """The task control block. The kernel owns every field; user code only reads.

    Memory. A server may hold a hundred thousand idle tasks, so the TCB is
    kept to sixteen pointers (160 bytes): a field most tasks never use lives
    somewhere else until a task needs it. Scheduling parameters are in
    `sched` (None by default), yes/no facts are bits of `flags`, the tasks
    waiting for this one to exit are listed by the kernel (``Kernel.exit_waiters``),
    and the name a task was not given is worked out when someone asks.
    """

    __slots__ = (
        "tid",
        "_name",
        "coro",
        "state",
        "next_value",
        "next_exc",
        "pending_exc",
        "trap",
        "undo",
        "callers",
        "scopes",
        "flags",
        "result",
        "exception",
        "parent",
        "sched",
    )

    def __init__(
        self,
        tid: int,
        name: str,
        coro: Coro,
        parent: Optional[int] = None,
        sched: Optional[SchedInfo] = None,
    ) -> None:
        self.tid = tid  # unique id, never reused within a kernel
        # For people (ps listings, logs, repr): given, or the function's __qualname__, shared
        # with the function (a task's own copy of the cut name would cost every task ~60 bytes).
        self._name = name
        self.parent = parent  # tid of the task that spawned it (None: main)
        # Scheduling parameters and a policy's bookkeeping (scheduler.py); None: defaults.
        self.sched = sched
        self.coro: Optional[Coro] = coro  # the saved context; None once EXITED
        self.state = _READY
        # What the run loop delivers at the next resume: a value, or an exception to throw.
        self.next_value: Any = None
        self.next_exc: Optional[BaseException] = None
        # An exception to throw at the task's *next* trap (kill or Ctrl-C of a READY task).
        self.pending_exc: Optional[BaseException] = None
        # While BLOCKED: the trap it waits in, and how to take it out of that wait.
        self.trap: Any = None
        self.undo: Optional[Callable[[Task], None]] = None  # called as undo(task)
        # The rest of the saved context while an Operation trap runs as a subroutine:
        # the generators below ``coro``, innermost last (None: no subroutine running).
        self.callers: Optional[list[Coro]] = None
        # Cancel scopes (timeouts, shields) the task is inside, outermost first.
        self.scopes: Optional[list[CancelScope]] = None
        self.flags = 0  # CANCEL_REQUESTED, CANCEL_DELIVERED, JOINED
        # Final outcome, once EXITED.
        self.result: Any = None
        self.exception: Optional[BaseException] = None

    def __await__(self) -> Generator[Task, Any, Any]:
        """``await child`` joins it in an ``async def`` task, as ``yield child`` does in a
        generator (see `Join`): the kernel takes a yielded Task for a join."""
        return (yield self)

    @property
    def name(self) -> str:
        """The name given at spawn, else the function's, without any ``outer.<locals>.``."""
        return self._name.rpartition("<locals>.")[2]

    @property
    def priority(self) -> int:
        """Static priority (`PriorityPolicy`: higher runs first); 0 unless spawned with one."""
        return 0 if self.sched is None else self.sched.priority

    @property
    def tickets(self) -> int:
        """Share of the CPU under stride and lottery scheduling (and fair share's weight)."""
        return DEFAULT_TICKETS if self.sched is None else self.sched.tickets

    @property
    def joined(self) -> bool:
        """Someone has collected the outcome (join), so a failure is not reported."""
        return bool(self.flags & JOINED)

    def __repr__(self) -> str:
        state = str(self.state)
        if self.state is TaskState.BLOCKED and self.trap is not None:
            state += f" in {self.trap!r}"
        elif self.state is TaskState.EXITED:
            if self.exception is not None:
                state += f" with {type(self.exception).__name__}"
        return f"<Task tid={self.tid} name={self.name!r} {state}>"
