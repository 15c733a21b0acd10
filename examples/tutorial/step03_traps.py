"""Step 3: traps, the only way into the kernel.

In step 2 a task yielded nothing in particular. Now what it yields is a
*request*: a small object saying what it wants from the kernel, like the
system-call number and arguments a process puts in registers before the
``ecall``/``int 0x80`` instruction *traps* into the kernel. The kernel looks
the request's class up in its *trap table* and runs the *service routine*
found there, which either

* returns the result at once: the task is resumed right away with it, as the
  value of its ``yield``; a system call is not a context switch; or
* returns SWITCH: the answer is not there yet (or the task gave up the CPU),
  so the kernel switches to another task.

A value that is not in the table is not a trap: the task gets a TypeError
raised at the very ``yield`` that made the mistake (``coro.throw``), and the
kernel goes on. A task's error is the task's, never the kernel's.

Run it::

    python3 examples/tutorial/step03_traps.py
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Callable, Generator, Optional

Coro = Generator[Any, Any, Any]


# ── The trap ABI: what a task can ask ────────────────────────────────────


class Trap:
    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GetTid(Trap):
    """Result: the running task's id."""


class SchedYield(Trap):
    """Give up the CPU: back to the end of the run queue."""


class Switches(Trap):
    """Result: how many context switches the kernel has made so far."""


SWITCH: Any = object()  # a service routine's answer meaning "run somebody else now"


# ── The kernel ───────────────────────────────────────────────────────────


class Task:
    _tids = itertools.count(1)

    def __init__(self, name: str, coro: Coro) -> None:
        self.tid = next(Task._tids)
        self.name = name
        self.coro = coro
        self.next_value: Any = None  # delivered at the next resume ...
        self.next_exc: Optional[BaseException] = None  # ... or this, thrown in


class Kernel:
    def __init__(self) -> None:
        self.ready: deque[Task] = deque()
        self.switches = 0

    def spawn(self, name: str, coro: Coro) -> Task:
        task = Task(name, coro)
        self.ready.append(task)
        return task

    def run(self) -> None:
        while self.ready:
            self.step(self.ready.popleft())

    def step(self, task: Task) -> None:
        """The context switch: resume ``task`` and serve its traps until it must wait."""
        self.switches += 1
        value, exc = task.next_value, task.next_exc
        task.next_value = task.next_exc = None
        while True:
            try:
                trap = task.coro.send(value) if exc is None else task.coro.throw(exc)
            except StopIteration:
                print(f"  [kernel] tid {task.tid} exited")
                return
            except Exception as error:  # the task died: its problem, not the kernel's
                print(f"  [kernel] tid {task.tid} died: {error!r}")
                return
            service = TRAP_TABLE.get(type(trap))
            if service is None:  # not a trap: raise TypeError at that yield
                value, exc = None, TypeError(f"tid {task.tid} yielded {trap!r}, not a trap")
                continue
            value, exc = service(self, task, trap), None
            shown = "SWITCH" if value is SWITCH else repr(value)
            print(f"  [kernel] tid {task.tid} trap {trap!r} -> {shown}")
            if value is SWITCH:
                return


# ── Service routines and the trap table ──────────────────────────────────


def sys_gettid(k: Kernel, task: Task, trap: GetTid) -> Any:
    return task.tid


def sys_sched_yield(k: Kernel, task: Task, trap: SchedYield) -> Any:
    k.ready.append(task)  # to the back of the run queue, resumed with None
    return SWITCH


def sys_switches(k: Kernel, task: Task, trap: Switches) -> Any:
    return k.switches


TRAP_TABLE: dict[type, Callable[[Kernel, Task, Any], Any]] = {
    GetTid: sys_gettid,
    SchedYield: sys_sched_yield,
    Switches: sys_switches,
}


# ── User programs ────────────────────────────────────────────────────────


def worker(name: str) -> Coro:
    tid = yield GetTid()  # a trap answered at once: no context switch
    print(f"{name}: my tid is {tid}")
    yield SchedYield()  # a trap that switches
    n = yield Switches()
    print(f"{name}: the kernel has switched {n} times")


def confused() -> Coro:
    try:
        yield 42  # not a trap
    except TypeError as exc:
        print(f"confused: the kernel said {exc}")
    yield SchedYield()
    print("confused: still alive, and done")


def main() -> None:
    k = Kernel()
    k.spawn("alice", worker("alice"))
    k.spawn("bob", worker("bob"))
    k.spawn("confused", confused())
    k.run()
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  the trap classes (the ABI, like xv6's syscall.h) are in kernel/traps.py,
  all subclasses of `Trap`; the trap table is kernel/syscall.py `TRAP_TABLE`,
  and `bad_trap` builds the TypeError for a yield that is not a trap, with a
  guess at the mistake. Service routines live in kernel/sysproc.py (sys_gettid,
  sys_sched_yield, ...) and kernel/sysio.py; `SWITCH` is in kernel/traps.py.
  kernel/kernel.py `Kernel._step` serves traps answered at once inline, up to
  `INLINE_BUDGET` in a row."""

if __name__ == "__main__":
    main()
