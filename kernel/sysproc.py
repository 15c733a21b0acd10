"""Service routines for process, time and wait-channel traps: spawn, join, kill, sleep, wait_on...

Each routine receives the kernel, the task that trapped, and the trap. It
either returns the trap's result at once (the task resumes without a
context switch) or arranges for the task's future (parks it, with the undo
that takes it out of the wait again, or queues it) and returns `SWITCH`.
Whatever a routine raises is raised in the task, at the trap: it acted on
that task's behalf and with that task's arguments.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable

from .scopes import next_cancellation
from .task import CANCEL_REQUESTED, JOINED, Task, TaskState
from .traps import (
    CALL,
    SWITCH,
    WOULD_BLOCK,
    GetTid,
    Join,
    Kill,
    Operation,
    SchedYield,
    Sleep,
    Spawn,
    TryOperation,
    WaitOn,
)

if TYPE_CHECKING:
    from .kernel import Kernel


# Module constants: looking an enum member up on its class is slow on the hot path.
READY, BLOCKED, EXITED = TaskState.READY, TaskState.BLOCKED, TaskState.EXITED


def sys_spawn(k: Kernel, task: Task, trap: Spawn) -> Any:
    return k.new_task(trap.target, trap.args, trap.name, trap.priority, trap.tickets)


def sys_gettid(k: Kernel, task: Task, trap: GetTid) -> Any:
    return task.tid


def sys_sched_yield(k: Kernel, task: Task, trap: Any) -> Any:
    # make_ready(task, None), spelled out: this is the switch benchmark's whole path.
    # (next_value is already None: _step cleared it when it resumed the task.)
    task.state = READY
    k.runq.push(task)  # to the back of the run queue
    return SWITCH


def sys_sleep(k: Kernel, task: Task, trap: Sleep) -> Any:
    seconds = trap.seconds  # a float >= 0: Sleep checked it
    if 0.0 < seconds < _INF:  # the common case first: one test
        if k._probes is not None:  # (k.wake: the instruments' wrapper)
            timer = k.timers.add(k.clock() + seconds, k.wake, task)  # wake(task): resumes with None
            k.park(task, trap, timer)  # the undo: calling the timer cancels it
            return SWITCH
        timer = k.timers.add(k.clock() + seconds, k._wake_sleeper, task)
        # Kernel.park, written out while no instrument listens (as sysio.sys_recv does).
        task.state = BLOCKED
        task.trap = trap
        task.undo = timer
        return SWITCH
    if seconds == 0.0:
        return sys_sched_yield(k, task, trap)
    # Only kill (or deadlock) ends this wait. Parked in a shared trap, not its own:
    # a task blocked for ever holds no per-task memory beyond its TCB and frame.
    k.park(task, SLEEP_FOREVER, _nothing_to_undo)
    return SWITCH


_INF = math.inf


SLEEP_FOREVER = Sleep(math.inf)


def _nothing_to_undo(task: Task) -> None:
    pass


def sys_join(k: Kernel, task: Task, trap: Join) -> Any:
    target = trap.task
    if target.state is EXITED:
        target.flags |= JOINED
        if target.exception is not None:
            raise target.exception
        return target.result
    if target is task:
        raise RuntimeError(f"{task!r} cannot join itself: it would wait for ever")
    _wait_for_exit(k, task, trap, target)
    return SWITCH


def sys_join_task(k: Kernel, task: Task, target: Task) -> Any:
    """``yield child``: `sys_join` for a task that yields the Task itself (as asyncio's
    ``await child``), with no Join to build unless it must wait."""
    if target.state is not EXITED:
        return sys_join(k, task, Join(target))
    target.flags |= JOINED  # (sys_join's answer for an exited task, written out)
    if target.exception is not None:
        raise target.exception
    return target.result


def sys_kill(k: Kernel, task: Task, trap: Kill) -> Any:
    target = trap.task
    if target.state is EXITED:
        return None  # killing a dead task is a no-op
    if target is task:
        task.flags |= CANCEL_REQUESTED
        exc = next_cancellation(task)
        if exc is not None:
            raise exc
        return None  # inside a shield: Cancelled comes at the first trap after it
    k.cancel(target)  # delivers Cancelled once, however often it is killed
    _wait_for_exit(k, task, trap, target)
    return SWITCH


def _wait_for_exit(k: Kernel, task: Task, trap: Any, target: Task) -> None:
    """Park ``task`` until ``target`` exits (`Kernel.exit_task` wakes the exit waiters)."""
    waiters = k.exit_waiters.get(target)
    if waiters is None:
        waiters = k.exit_waiters[target] = []
    waiters.append(task)
    k.park(task, trap, functools.partial(_stop_waiting_for_exit, k.exit_waiters, target))


def _stop_waiting_for_exit(exit_waiters: dict[Task, list[Task]], target: Task, task: Task) -> None:
    """The undo of a join or kill: ``task`` no longer waits for ``target``'s exit."""
    waiters = exit_waiters[target]
    waiters.remove(task)
    if not waiters:
        del exit_waiters[target]


def sys_wait_on(k: Kernel, task: Task, trap: WaitOn[Any]) -> Any:
    attempt = trap.attempt
    if attempt is not None:  # a conditional wait: park only if the attempt says so
        result = attempt()
        if result is not WOULD_BLOCK:
            return result
    channels = k.channels
    waiters = channels.waiters
    channel = trap.channel
    if channel not in waiters:
        waiters[channel] = task
    else:
        channels.sleep_on(channel, task)
    if k._probes is not None:
        k.park(task, trap, channels.undo)
        return SWITCH
    # Kernel.park, written out while no instrument listens (as sys_recv does it): every
    # get on an empty queue parks here.
    task.state = BLOCKED
    task.trap = trap
    task.undo = channels.undo
    return SWITCH


def sys_operation(k: Kernel, task: Task, trap: Operation[Any]) -> Any:
    """Run the Operation's generator as a subroutine: push the task's current generator
    on its call stack; the run loop starts the subroutine and pops it when it ends."""
    assert task.coro is not None
    if task.callers is None:
        task.callers = []
    task.callers.append(task.coro)
    task.coro = trap.gen
    return CALL


def sys_try_operation(k: Kernel, task: Task, trap: TryOperation[Any]) -> Any:
    """The fast path (the attempt) first; the subroutine only if that would block."""
    result = trap.attempt(*trap.args)
    if result is not WOULD_BLOCK:
        return result
    # It would block: from here on it is the plain Operation of the generator made now.
    return sys_operation(k, task, Operation(trap.fn(*trap.args)))


SERVICES: dict[type, Callable[..., Any]] = {
    Spawn: sys_spawn,
    Join: sys_join,
    Task: sys_join_task,  # ``yield child`` joins it
    Kill: sys_kill,
    GetTid: sys_gettid,
    SchedYield: sys_sched_yield,
    Sleep: sys_sleep,
    WaitOn: sys_wait_on,
    Operation: sys_operation,
    TryOperation: sys_try_operation,
}
