"""Task groups: start tasks that belong to a scope, and end the scope only when they all have.

A bare `spawn` makes an orphan: the new task lives on, whatever happens to
its parent, and if it fails nobody may ever hear of it. A *task group* is
the structured alternative, as ``waitpid`` on every child is for a Unix
shell: the tasks spawned into a group are its *children*, and ``join()``
(or leaving ``async with``) waits for all of them. Three rules:

* **No child outlives the join.** Whatever way the join ends (the children
  finished, one failed, the joining task was killed or timed out), every
  child has EXITED when it does.
* **The first failure cancels the siblings**, at once, even before anybody
  joins, and ``join()`` raises it. Several failures are raised together: an
  `ExceptionGroup` on Python 3.11+; on 3.9 and 3.10 the first one, with the
  others in its ``other_errors`` attribute (a list). `kernel.Cancelled` is
  never a failure: a child killed by the group, or by anybody else, simply
  ends.
* **Cancelling the joiner cancels the children.** If the task waiting in
  ``join()`` is killed or times out, the group kills every child and waits
  for them (shielded: their cleanup cannot be cut short) before the
  `Cancelled` or `TimeoutError` goes on. The children's failures, if any,
  stay in ``group.errors``: a kill or a timeout is what the task raises.

The body of the scope (the code between the spawns and the join) is not
interrupted by a child's failure: it learns of it at ``join()``. A child
spawned into a group that already has a failure, or was cancelled,
starts killed. If the body raises, the children are killed and waited for,
and the body's error goes on; if children failed too and the body's error
is an `Exception`, they are raised together, the body's error first (as a
group on 3.11+, or with the children's in ``other_errors``). Forgetting the
join loses the children's failures: prefer ``async with`` or `task_group`,
which cannot forget it.

In an ``async def`` task::

    async def main():
        async with TaskGroup() as g:
            await g.spawn(fetch, "a")
            await g.spawn(fetch, "b")
        # both have finished here

A generator cannot ``yield`` inside ``__exit__``, so a generator task gives
the body to `task_group` instead (the body receives the group; what it
returns is the result)::

    def body(g):
        yield g.spawn(fetch, "a")
        yield g.spawn(fetch, "b")

    def main():
        yield task_group(body)           # all children have finished here

or writes the scope out with ``join``, as `task_group` does::

    g = TaskGroup()
    try:
        yield g.spawn(fetch, "a")
        yield g.spawn(fetch, "b")
        yield g.join()
    except GeneratorExit:
        raise                            # closed by the kernel: no more yields
    except BaseException as exc:         # the body failed, or a kill or deadline came
        with shield():                   # (maybe at the join's yield, before it began):
            yield g.join(exc)            # cancel the children, wait for them...
        raise                            # ... and let the error go on

(which is why `task_group` is the spelling to prefer).

`gather` and `race` are the two everyday patterns, built on a group.

How it works, from public traps only. Each child gets a small *watcher*
task that joins it (so the kernel never reports the child's failure as
"nobody joins it": the group does), records its outcome in the group, and
wakes the joiner with ``wakeup(group)``. To cancel, the group spawns one
*killer* task per child, so that every child gets `Cancelled` at once rather
than one after the other; the joiner itself waits with ``kill``, which also
works when the watchers are gone (kernel shutdown).
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Generator, Optional

from kernel import Cancelled, Task, TaskState
from kernel.task import Coro
from kernel.traps import Target, coroutine_of, not_started
from syscalls import current_task, join, kill, operation, shield, spawn, wait_on, wakeup

__all__ = ["TaskGroup", "gather", "race", "task_group"]

EXITED = TaskState.EXITED


class _Child:
    """The group's record of one child, shared by the child's wrapper and its watcher.

    It is also the wait channel on which the wrapper waits for the watcher.
    """

    __slots__ = ("coro", "task", "watched", "started", "abandoned", "kill_sent")

    def __init__(self, coro: Coro) -> None:
        self.coro = coro  # what the child runs (created by the spawner, so errors show there)
        self.task: Optional[Task] = None  # the child's Task, once spawned
        self.watched = False  # its watcher waits in join(task): the child may start
        self.started = False  # the wrapper has begun running ``coro``
        self.abandoned = False  # the spawner failed: the child is not the group's
        self.kill_sent = False  # a killer has been spawned for it

    def __repr__(self) -> str:
        who = f"tid {self.task.tid} {self.task.name!r}" if self.task is not None else "unborn"
        return f"<group child {who}{' watched' if self.watched else ''}>"


class TaskGroup:
    """A set of child tasks that are waited for, and cancelled, together.

    ``yield g.spawn(target, *args)`` starts a child (a trap: also ``await``);
    ``yield g.join()`` waits for all of them, and raises their failure, if
    any; ``g.cancel()`` asks for every child to be killed (not a failure).
    ``g.tasks`` lists the children, ``g.errors`` the failures so far.
    See the module docstring for the rules and the generator-task pattern.
    """

    def __init__(self) -> None:
        self.tasks: list[Task] = []  # every child, in spawn order
        self.errors: list[BaseException] = []  # the children's failures, in the order seen
        self._pending: dict[Task, _Child] = {}  # children not yet seen EXITED
        self._cancelled = False  # children are to be killed (a failure, cancel(), or join(exc))
        self._joiner: Optional[Task] = None
        self._closed = False  # join has ended: no more children

    def __repr__(self) -> str:
        parts = [f"{len(self._pending)} running"]
        if self.errors:
            parts.append(f"{len(self.errors)} failed")
        if self._cancelled:
            parts.append("cancelled")
        if self._closed:
            parts.append("closed")
        elif self._joiner is not None:
            parts.append(f"joined by tid {self._joiner.tid} {self._joiner.name!r}")
        return f"<TaskGroup {', '.join(parts)}>"

    # ── Children ─────────────────────────────────────────────────────────

    @operation
    def spawn(
        self, target: Target, *args: Any, name: Optional[str] = None
    ) -> Generator[Any, Any, Task]:
        """Start a child running ``target(*args)``, as `spawn` does; the result is its Task.

        Like `spawn`, it does not wait: the child starts once the caller blocks
        or yields. ``join(task)`` on the handle gives the child's own result or
        exception. Spawning into a group that is cancelled (or has a failed
        child) starts the child already killed; into a joined group, RuntimeError.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is joined: it takes no more children")
        coro = coroutine_of(target, args)
        rec = _Child(coro)
        name = name or str(getattr(coro, "__qualname__", "task"))
        child_trap = spawn(_run_child, rec, name=name)  # a bad name raises here
        # Discussion: the child must not be able to fail before its watcher waits in
        # join(child), or the kernel would log the failure as "nobody joins it". So the
        # watcher is spawned first (under FIFO it runs first, and parks in join), and the
        # child's wrapper also waits for rec.watched, for any other order: for instance
        # when the spawner uses up its inline budget between the two spawns and goes to
        # the back of the run queue, letting the watcher run before the child exists.
        try:
            yield spawn(self._watch, rec, name=f"watch:{name}")
            child: Task = yield child_trap
            if self._closed:  # joined while we were off the CPU (between the spawns)
                raise RuntimeError(f"{self!r} is joined: it takes no more children")
        except BaseException:
            rec.abandoned = True  # the watcher and the child (if any) end without running it
            coro.close()
            wakeup(rec)
            raise
        rec.task = child
        wakeup(rec)  # a watcher that ran first waits for rec.task
        self.tasks.append(child)
        self._pending[child] = rec
        if self._cancelled:
            yield from self._deliver_cancel()
        return child

    def cancel(self) -> None:
        """Ask for every child to be killed; their Cancelled is not a failure.

        A plain call (no ``yield``). The children are killed at once if a task
        is in ``join()``; otherwise when ``join()`` (or the next ``spawn``) runs.
        """
        if not self._closed:
            self._cancelled = True
            wakeup(self)

    def _watch(self, rec: _Child) -> Generator[Any, Any, None]:
        """A child's watcher: join it, record its outcome, wake the joiner."""
        while rec.task is None:
            if rec.abandoned:
                return
            yield wait_on(rec)
        rec.watched = True
        wakeup(rec)  # the child may start
        try:
            yield join(rec.task)
        except BaseException:
            pass  # its failure is read from the task by _reap; or we were killed (shutdown)
        if rec.task.state is not EXITED:
            return  # the watcher itself was killed: the joiner falls back on kill()
        self._reap()
        if self._cancelled:
            yield from self._deliver_cancel()  # the first failure cancels the siblings now
        wakeup(self)

    def _reap(self) -> None:
        """Take the children that have exited off ``_pending``, recording failures."""
        for child, rec in list(self._pending.items()):
            if child.state is not EXITED:
                continue
            del self._pending[child]
            if not rec.started:
                rec.coro.close()  # killed before it ran: close it ("never awaited")
            exc = child.exception
            if exc is not None and not isinstance(exc, (Cancelled, GeneratorExit)):
                self.errors.append(exc)
                self._cancelled = True

    def _deliver_cancel(self) -> Generator[Any, Any, None]:
        """Kill every running child at once: a killer task each (kill waits for the exit)."""
        for child, rec in list(self._pending.items()):
            if not rec.kill_sent:
                rec.kill_sent = True
                yield spawn(_killer, child, name=f"kill:{child.name}")

    # ── Joining ──────────────────────────────────────────────────────────

    @operation
    def join(self, exc: Optional[BaseException] = None) -> Generator[Any, Any, None]:
        """Wait until every child has exited; raise the failure(s), if any.

        One failure is raised as it is; several as an `ExceptionGroup` (3.11+)
        or, on 3.9/3.10, as the first one with the rest in ``other_errors``.

        ``exc``: the exception the body of the scope raised (what ``async
        with`` passes). The children are cancelled first. If ``exc`` is not an
        `Exception` (a kill, a timeout, Ctrl-C), or no child failed, ``join``
        returns and the caller re-raises ``exc``; otherwise it raises ``exc``
        together with the children's failures, ``exc`` first.

        If the joining task is killed or times out meanwhile, every child is
        killed and waited for, shielded, and then the Cancelled goes on.

        Joining a group again once a join has ended answers at once, without
        raising again (so a body may join early inside ``async with``).
        """
        if self._closed:
            return  # joined already (its failures were raised then): nothing is left
        me = current_task()
        if me in self._pending:
            raise RuntimeError(f"{me!r} cannot join its own group: it would wait for itself")
        if self._joiner is not None:
            raise RuntimeError(f"{self!r} is already being joined")
        if isinstance(exc, GeneratorExit):
            # The kernel is closing this task: it may not yield any more. Its children
            # are killed by the kernel's shutdown.
            self._closed = True
            return
        self._joiner = me
        try:
            if exc is not None:
                self._cancelled = True
                with shield():  # the body's error is on its way: nothing may cut this short
                    yield from self._wait()
            else:
                try:
                    yield from self._wait()
                except GeneratorExit:
                    raise  # the kernel is closing this task: it may not yield any more
                except BaseException:
                    # Killed, timed out, or Ctrl-C while waiting: no child may outlive us.
                    self._cancelled = True
                    with shield():
                        yield from self._wait()
                    raise
        finally:
            self._closed = True
        errors = self.errors
        if exc is not None:
            if not isinstance(exc, Exception):
                return
            errors = [exc, *errors]
        if len(errors) == 1 and errors[0] is exc:
            return
        if errors:
            raise _combine(errors)

    def _wait(self) -> Generator[Any, Any, None]:
        """Until no child is left: sleep on the group, or kill the children if cancelled."""
        while True:
            self._reap()
            if not self._pending:
                return
            if self._cancelled:
                yield from self._deliver_cancel()
                # kill() waits for the exit itself (it also only waits if the child is already
                # being killed): this does not depend on the watcher being alive.
                yield kill(next(iter(self._pending)))
            else:
                yield wait_on(self)

    async def __aenter__(self) -> TaskGroup:
        return self

    async def __aexit__(self, typ: Any, exc: Optional[BaseException], tb: Any) -> bool:
        await self.join(exc)
        return False  # the body's exception, if any, goes on

    def __enter__(self) -> None:
        raise TypeError(
            "a TaskGroup is entered with `async with` in an async def task; a generator task"
            " uses `yield task_group(body)`, or spawn/join (see the syscalls.groups docstring)"
        )

    def __exit__(self, *exc_info: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None


def _run_child(rec: _Child) -> Generator[Any, Any, Any]:
    """What a child task runs: wait until the watcher is in place, then the target."""
    while not rec.watched:
        if rec.abandoned:
            return None
        yield wait_on(rec)
    rec.started = True
    return (yield from _steps(rec.coro))


def _steps(coro: Coro) -> Generator[Any, Any, Any]:
    """``coro`` as a generator to ``yield from``: a coroutine's ``__await__()``, or itself."""
    if isinstance(coro, types.CoroutineType):
        return coro.__await__()
    assert isinstance(coro, types.GeneratorType)
    return coro


def _killer(task: Task) -> Generator[Any, Any, None]:
    yield kill(task)


def _combine(errors: list[BaseException]) -> BaseException:
    """One exception standing for all of ``errors`` (see TaskGroup.join)."""
    if len(errors) == 1:
        return errors[0]
    if sys.version_info >= (3, 11):
        # An ExceptionGroup if they are all Exceptions, else a BaseExceptionGroup.
        return BaseExceptionGroup(  # noqa: F821 - a builtin from 3.11
            f"{len(errors)} tasks of a group failed", errors
        )
    first = errors[0]
    setattr(first, "other_errors", errors[1:])  # noqa: B010 - not a declared attribute
    return first


# ── Patterns ─────────────────────────────────────────────────────────────


@operation
def task_group(body: Callable[..., Any], *args: Any) -> Generator[Any, Any, Any]:
    """Run ``body(group, *args)`` in the calling task with a fresh `TaskGroup`, then join it.

    The generator-task spelling of ``async with TaskGroup() as g:``. ``body``
    is a generator function (or ``async def``); its return value is the
    result, once every child has finished. If the body raises, the children
    are cancelled and waited for, and the body's error goes on (together
    with the children's failures, as `TaskGroup.join` says)::

        def body(g, urls):
            for url in urls:
                yield g.spawn(fetch, url)

        yield task_group(body, urls)
    """
    g = TaskGroup()
    coro = body(g, *args)
    try:
        if isinstance(coro, types.CoroutineType):
            result = yield from coro.__await__()
        elif isinstance(coro, types.GeneratorType):
            result = yield from coro
        else:
            raise TypeError(
                f"task_group: the body must be a generator or coroutine function, "
                f"not {body!r} (it returned {coro!r})"
            )
        yield g.join()
    except GeneratorExit:
        raise  # the kernel is closing this task: it may not yield (its children are killed)
    except BaseException as exc:
        # The body failed, or a kill or deadline came, maybe at the join's own trap
        # before the join began: cancel the children and wait for them, shielded. (If
        # the join did run, it closed the group, and this one answers at once.)
        with shield():
            yield g.join(exc)
        raise
    return result


@operation
def gather(*targets: Target) -> Generator[Any, Any, list[Any]]:
    """Run every target as a task at once; the result is the list of their results, in order.

    Targets are as for `spawn` (use `functools.partial` for arguments). The
    first failure kills the others and is raised (several: as `TaskGroup.join`)::

        pages = yield gather(partial(fetch, "a"), partial(fetch, "b"))
    """
    tasks: list[Task] = yield from task_group(_gather_body, targets)
    return [task.result for task in tasks]


def _gather_body(g: TaskGroup, targets: tuple[Target, ...]) -> Generator[Any, Any, list[Task]]:
    tasks = []
    for target in targets:
        tasks.append((yield g.spawn(target)))
    return tasks


@operation
def race(*targets: Target) -> Generator[Any, Any, tuple[int, Any]]:
    """Run every target as a task at once; the first to finish wins, the others are killed.

    The result is ``(index, result)`` of the winner; the losers' cleanup has
    run when it returns. If the first to finish raised, that error is raised
    instead. Targets are as for `spawn`::

        i, reply = yield race(partial(query, primary), partial(query, replica))
    """
    if not targets:
        raise ValueError("race() needs at least one target")
    winner: list[tuple[int, Any]] = []
    coros: list[Coro] = []
    try:
        yield from task_group(_race_body, targets, winner, coros)
    finally:
        for coro in coros:  # a racer killed before it began never ran its target
            if not_started(coro):
                coro.close()  # (an unawaited coroutine would warn)
    if not winner:
        raise RuntimeError("race(): no target finished; every one was killed from outside")
    return winner[0]


def _race_body(
    g: TaskGroup, targets: tuple[Target, ...], winner: list[tuple[int, Any]], coros: list[Coro]
) -> Generator[Any, Any, None]:
    for i, target in enumerate(targets):
        coro = coroutine_of(target, ())
        coros.append(coro)
        name = str(getattr(coro, "__qualname__", "task"))
        yield g.spawn(_racer(g, winner, i, coro), name=name)


def _racer(
    g: TaskGroup, winner: list[tuple[int, Any]], i: int, coro: Coro
) -> Generator[Any, Any, Any]:
    result = yield from _steps(coro)
    if not winner:
        winner.append((i, result))
        g.cancel()
        yield from g._deliver_cancel()  # kill the losers now, not when race's join wakes up
    return result
