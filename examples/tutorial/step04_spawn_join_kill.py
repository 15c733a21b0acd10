"""Step 4: spawn, join and kill; task states and blocking.

Three new traps give tasks a life cycle, as fork/wait/kill do for processes:

* ``Spawn(name, coro)`` makes a new READY task and returns its TCB at once.
* ``Join(task)`` waits until ``task`` exits, then returns its result, or
  raises the exception it died of.
* ``Kill(task)`` throws ``Cancelled`` into ``task`` where it is suspended (its
  ``finally`` blocks run) and waits until it has exited.

Join and Kill may have to *wait*, so a task now has states, as in xv6::

    READY --picked--> RUNNING --trap that must wait--> BLOCKED --woken--> READY
                              \\--return/raise--> EXITED

A BLOCKED task is in no queue of the scheduler: it sits on whatever it waits
for (here, the exit waiters of another task), and the one who makes the wait
end (the exiting task) puts it back on the run queue: a *wakeup*. And a kill
must be able to pull a task out of any wait, so when a task blocks, the
kernel records how to undo that wait (``task.undo``).

Run it::

    python3 examples/tutorial/step04_spawn_join_kill.py
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from typing import Any, Callable, Generator, Optional

Coro = Generator[Any, Any, Any]


class Cancelled(BaseException):
    """Thrown into a killed task (a BaseException, so `except Exception` lets it pass)."""


class TaskState(enum.Enum):
    READY = "ready"
    RUNNING = "running"
    BLOCKED = "blocked"
    EXITED = "exited"


class Task:
    _tids = itertools.count(1)

    def __init__(self, name: str, coro: Coro) -> None:
        self.tid = next(Task._tids)
        self.name = name
        self.coro = coro
        self.state = TaskState.READY
        self.next_value: Any = None
        self.next_exc: Optional[BaseException] = None
        self.trap: Any = None  # while BLOCKED: the trap it waits in ...
        self.undo: Optional[Callable[[], None]] = None  # ... and how to leave that wait
        self.exit_waiters: list[Task] = []  # tasks in Join/Kill on this one
        self.result: Any = None
        self.exception: Optional[BaseException] = None


# ── Traps ────────────────────────────────────────────────────────────────


class SchedYield:
    pass


class Spawn:
    def __init__(self, name: str, coro: Coro) -> None:
        self.name, self.coro = name, coro


class Join:
    def __init__(self, task: Task) -> None:
        self.task = task


class Kill:
    def __init__(self, task: Task) -> None:
        self.task = task


SWITCH: Any = object()


# ── The kernel ───────────────────────────────────────────────────────────


class Kernel:
    def __init__(self) -> None:
        self.ready: deque[Task] = deque()

    def spawn(self, name: str, coro: Coro) -> Task:
        task = Task(name, coro)
        self.ready.append(task)
        return task

    def run(self) -> None:
        while self.ready:
            self.step(self.ready.popleft())

    def step(self, task: Task) -> None:
        task.state = TaskState.RUNNING
        value, exc = task.next_value, task.next_exc
        task.next_value = task.next_exc = None
        while True:
            try:
                trap = task.coro.send(value) if exc is None else task.coro.throw(exc)
            except StopIteration as stop:
                return self.exit(task, stop.value, None)
            except BaseException as error:
                return self.exit(task, None, error)
            try:
                value, exc = TRAP_TABLE[type(trap)](self, task, trap), None
            except BaseException as error:  # the trap failed: raise it in the task
                value, exc = None, error
            if value is SWITCH:
                return

    def exit(self, task: Task, result: Any, exception: Optional[BaseException]) -> None:
        task.state = TaskState.EXITED
        task.result, task.exception = result, exception
        how = f"returned {result!r}" if exception is None else f"raised {exception!r}"
        print(f"  [kernel] tid {task.tid} ({task.name}) exited: {how}")
        for waiter in task.exit_waiters:  # wakeup: the exit ends their wait
            if isinstance(waiter.trap, Join):  # a joiner gets the outcome
                self.wake(waiter, result, exception)
            else:  # a killer only waited for the exit
                self.wake(waiter, None)
        task.exit_waiters = []

    def park(self, task: Task, trap: Any, undo: Callable[[], None]) -> None:
        task.state = TaskState.BLOCKED
        task.trap, task.undo = trap, undo

    def wake(self, task: Task, value: Any, exc: Optional[BaseException] = None) -> None:
        assert task.state is TaskState.BLOCKED
        task.state, task.trap, task.undo = TaskState.READY, None, None
        task.next_value, task.next_exc = value, exc
        self.ready.append(task)


# ── Service routines ─────────────────────────────────────────────────────


def sys_sched_yield(k: Kernel, task: Task, trap: SchedYield) -> Any:
    task.state = TaskState.READY
    k.ready.append(task)
    return SWITCH


def sys_spawn(k: Kernel, task: Task, trap: Spawn) -> Any:
    return k.spawn(trap.name, trap.coro)


def wait_for_exit(k: Kernel, task: Task, trap: Any, target: Task) -> Any:
    target.exit_waiters.append(task)
    k.park(task, trap, lambda: target.exit_waiters.remove(task))  # the undo, recorded now
    return SWITCH


def sys_join(k: Kernel, task: Task, trap: Join) -> Any:
    target = trap.task
    if target.state is not TaskState.EXITED:
        return wait_for_exit(k, task, trap, target)  # Kernel.exit wakes it with the outcome
    if target.exception is not None:
        raise target.exception  # raised in the joining task, at its yield
    return target.result


def sys_kill(k: Kernel, task: Task, trap: Kill) -> Any:
    target = trap.task
    if target.state is TaskState.EXITED:
        return None
    if target.state is TaskState.BLOCKED:
        assert target.undo is not None
        target.undo()  # take it out of whatever it waits on
        k.wake(target, None, Cancelled())
    else:  # READY: Cancelled is thrown at its yield when it next runs. (yieldos waits for
        target.next_exc = Cancelled()  # its next trap instead, so a woken value is not lost.)
    return wait_for_exit(k, task, trap, target)


TRAP_TABLE: dict[type, Callable[[Kernel, Task, Any], Any]] = {
    SchedYield: sys_sched_yield,
    Spawn: sys_spawn,
    Join: sys_join,
    Kill: sys_kill,
}


# ── User programs ────────────────────────────────────────────────────────


def worker(n: int) -> Coro:
    for i in range(n):
        print(f"worker: step {i}")
        yield SchedYield()
    return n * 10


def looper() -> Coro:
    try:
        while True:
            print("looper: spinning")
            yield SchedYield()
    finally:
        print("looper: finally block runs (cleanup)")


def failing() -> Coro:
    yield SchedYield()
    raise ValueError("bad input")


def parent() -> Coro:
    w = yield Spawn("worker", worker(2))
    spin = yield Spawn("looper", looper())
    bad = yield Spawn("failing", failing())
    result = yield Join(w)
    print(f"parent: worker returned {result}")
    try:
        yield Join(bad)
    except ValueError as exc:
        print(f"parent: join(failing) raised {exc!r}")
    yield Kill(spin)
    print(f"parent: looper is {spin.state.value}, killed by {spin.exception!r}")


def main() -> None:
    k = Kernel()
    k.spawn("parent", parent())
    k.run()
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  kernel/sysproc.py `sys_spawn`, `sys_join`, `sys_kill` (and `_wait_for_exit`)
  are these routines; the states are kernel/task.py `TaskState`, the exit
  waiters `Task.exit_waiters`, the undo `Task.undo`. kernel/kernel.py has
  `Kernel.park` (block and record the undo), `Kernel.wake`/`Kernel.wake_exc`
  (wakeup), `Kernel.exit_task`, and `Kernel.cancel` -> `Kernel.interrupt` for a
  kill; kernel/scopes.py `next_cancellation` decides when Cancelled is raised,
  and `kernel.Cancelled` is in kernel/errors.py."""

if __name__ == "__main__":
    main()
