"""Step 1: a generator is a task.

A generator function does not run when it is called: it returns a generator
object, a computation *suspended before its first line*. Each ``send`` runs it
until its next ``yield`` and then suspends it again, keeping everything it
needs to go on: where it stopped and all its local variables. That is exactly
what an OS saves for a process on a context switch (the program counter, the
registers, the stack), and Python saves it for us, inside the generator.

So a task needs nothing more than a generator and a small record the kernel
keeps about it, the *task control block* (TCB): here just an id and the
generator. Resuming the task is ``coro.send(value)``: the yield hands a value
out to whoever resumed it, and the value sent comes back in as the result of
the ``yield``. When the generator returns, ``send`` raises StopIteration,
carrying the return value: the task has exited.

Run it::

    python3 examples/tutorial/step01_generator_task.py
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Generator

Coro = Generator[Any, Any, Any]


def countdown(n: int) -> Coro:
    """A task: count down, giving the CPU back (``yield``) after each number."""
    while n > 0:
        print(f"  countdown: n = {n}")
        yield f"tick {n}"  # suspend here; resumed at this very point
        n -= 1
    return "liftoff"


class Task:
    """The task control block: an id for people, and the suspended generator."""

    _tids = itertools.count(1)

    def __init__(self, coro: Coro) -> None:
        self.tid = next(Task._tids)
        self.coro = coro  # the saved context: frame, locals, where it stopped

    def run(self) -> Any:
        """Switch to the task until its next yield; return what it yielded."""
        return self.coro.send(None)


def main() -> None:
    gen = countdown(3)
    print(f"countdown(3) ran nothing yet: it is {inspect.getgeneratorstate(gen)}")
    task = Task(gen)
    while True:
        try:
            out = task.run()
        except StopIteration as stop:  # the generator returned: the task exited
            print(f"task {task.tid} exited with {stop.value!r}")
            break
        # Between two runs the task is frozen; its locals are kept in the generator.
        saved = inspect.getgeneratorlocals(gen)
        print(f"task {task.tid} yielded {out!r}; saved context: n = {saved['n']}")
    print(f"state at the end: {inspect.getgeneratorstate(gen)}")
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  the task control block is kernel/task.py `Task`; its saved context is the
  suspended generator `Task.coro` (plus `Task.callers`, the generators below it
  while an Operation runs as a subroutine). The one place that resumes a task
  (send/throw) is kernel/kernel.py `Kernel._step`."""

if __name__ == "__main__":
    main()
