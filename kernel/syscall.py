"""The trap table: the one place where a trap is matched to the routine that services it.

Like xv6's ``syscalls[]`` array, indexed here by the trap's class. The run
loop does ``TRAP_TABLE.get(type(trap))`` for every trap a task yields; a
value that is not in the table is not a trap, and the task that yielded it
gets a `TypeError` at that very ``yield`` (see `bad_trap`).

A service routine ``(kernel, task, trap) -> result`` returns the trap's
result when it is available at once, or `SWITCH` when it has parked or
queued the task and the CPU must switch to another task (defined
in traps.py, beside the traps it answers).
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Callable

from . import sysio, sysproc
from .traps import SWITCH

__all__ = ["SWITCH", "TRAP_TABLE", "bad_trap"]
if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task


Service = Callable[["Kernel", "Task", Any], Any]

#: Trap class -> service routine.
TRAP_TABLE: dict[type, Service] = {**sysproc.SERVICES, **sysio.SERVICES}


def bad_trap(task: Task, value: Any) -> TypeError:
    """The error for a yielded value that is not a trap, with a guess at the mistake."""
    hint = "yield a trap, such as sleep(1) or recv(sock, 100)"
    if value is None:
        hint = "a bare `yield` is not a trap; use `yield sched_yield()` to give up the CPU"
    elif isinstance(value, types.GeneratorType):
        hint = "a generator is not a trap; use `yield from` to call a helper generator"
    elif isinstance(value, types.CoroutineType):
        hint = "a coroutine is not a trap; `await` it inside an async def, or spawn it"
        value.close()  # it will never run; closing it silences "never awaited"
    elif isinstance(value, type):
        hint = f"{value.__name__} is a class; call it to make a trap"
    elif type(value).__module__.startswith(("asyncio", "trio", "curio")):
        hint = "objects of other event loops cannot be awaited in yieldos"
    return TypeError(
        f"task {task.name!r} (tid {task.tid}) yielded {value!r}, which is not a trap: {hint}"
    )
