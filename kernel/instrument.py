"""Instrumentation: hooks that watch the kernel work, free when none is installed.

An *instrument* is an object with a method per kernel event (subclass
`Instrument` and override the ones you want). Every hook is called in the
kernel's thread, synchronously, at the moment the event happens:

=========================================  ===================================
``spawn(task)``                            a task was created (it is READY)
``run(task)``                              the run loop switches to the task
``trap(task, trap)``                       the task made a trap; service follows
``trap_result(task, trap, value, error)``  the trap's outcome reaches the task:
                                           at once, or when a blocked one wakes
``block(task, trap)``                      the task parks in ``trap``
``wake(task)``                             a blocked task became READY again
``stop(task, seconds)``                    the task left the CPU after
                                           ``seconds`` of step time; its state
                                           says why (READY: it yielded,
                                           BLOCKED, or EXITED)
``exit(task)``                             the task exited (outcome is final)
=========================================  ===================================

The ps accounting, strace, the trace recorder, the long-step detector and
the fair-share policy are all instruments.

**Why it costs nothing when unused.** The hooks are not ``if tracing:``
tests scattered over the hot path. The kernel does its work in ordinary
methods (`Kernel.new_task`, ``park``, ``wake``, ``wake_exc``, ``exit_task``,
``_step``), and ``_step`` looks traps up in the table it is given (the
trap table by default). Installing the first instrument shadows those
methods, on that one kernel object, with wrappers that call the hooks around
the real method, and the ``_step`` wrapper passes a table of traced service
routines (`Probes._install`); removing the last one deletes the wrappers.
A kernel with no instrument runs exactly the code it ran before
instrumentation existed.

Timing. Step time (``stop``'s ``seconds``) is measured with
``kernel.cpu_clock``: `time.perf_counter` normally, the kernel's own clock
when it is a `VirtualClock` (then a task "uses CPU" only by advancing it,
which makes accounting and fair-share scheduling repeatable). Instruments
that timestamp other events read ``kernel.clock()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from .syscall import TRAP_TABLE
from .task import DEFAULT_TICKETS, Task, TaskState
from .traps import CALL, SWITCH, Join, Target

if TYPE_CHECKING:
    from .kernel import Kernel

READY = TaskState.READY


class Instrument:
    """Base class for instruments: every hook does nothing. See the module docstring."""

    #: The kernel this instrument is installed on (set by `Kernel.add_instrument`).
    kernel: Optional[Kernel] = None

    def attach(self, kernel: Kernel) -> None:
        """Called when installed on ``kernel`` (before any event of it)."""
        self.kernel = kernel

    def detach(self, kernel: Kernel) -> None:
        """Called when removed from ``kernel``."""

    def spawn(self, task: Task) -> None:
        pass

    def run(self, task: Task) -> None:
        pass

    def trap(self, task: Task, trap: Any) -> None:
        pass

    def trap_result(
        self, task: Task, trap: Any, value: Any, error: Optional[BaseException]
    ) -> None:
        pass

    def block(self, task: Task, trap: Any) -> None:
        pass

    def wake(self, task: Task) -> None:
        pass

    def stop(self, task: Task, seconds: float) -> None:
        pass

    def exit(self, task: Task) -> None:
        pass


#: The kernel methods an installed instrument shadows with a wrapper.
_SHADOWED = ("new_task", "park", "wake", "wake_exc", "exit_task", "_step")


class Probes:
    """The instruments installed on one kernel, and the wrappers that call them."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.instruments: list[Instrument] = []
        # Tasks whose trap returned SWITCH without blocking (sched_yield): the
        # trap's result reaches them when they next run.
        self.requeued: dict[Task, Any] = {}

    def add(self, instrument: Instrument) -> None:
        if instrument in self.instruments:
            raise ValueError(f"{instrument!r} is already installed on this kernel")
        instrument.attach(self.kernel)
        if not self.instruments:
            self._install()
        self.instruments.append(instrument)

    def remove(self, instrument: Instrument) -> None:
        self.instruments.remove(instrument)  # ValueError if it is not installed
        instrument.detach(self.kernel)
        if not self.instruments:
            self._uninstall()

    # ── The wrappers ─────────────────────────────────────────────────────

    def _install(self) -> None:
        k = self.kernel
        cls = type(k)
        instruments = self.instruments
        requeued = self.requeued

        def trap_result(task: Task, trap: Any, value: Any, error: Optional[BaseException]) -> None:
            for i in instruments:
                i.trap_result(task, trap, value, error)

        def new_task(
            target: Target,
            args: tuple[Any, ...],
            name: Optional[str],
            priority: int = 0,
            tickets: int = DEFAULT_TICKETS,
        ) -> Task:
            task = cls.new_task(k, target, args, name, priority, tickets)
            for i in instruments:
                i.spawn(task)
            return task

        def park(task: Task, trap: Any, undo: Callable[[Task], None]) -> None:
            cls.park(k, task, trap, undo)
            for i in instruments:
                i.block(task, trap)

        def wake(task: Task, value: Any = None) -> None:
            trap = task.trap
            cls.wake(k, task, value)
            trap_result(task, trap, value, None)
            for i in instruments:
                i.wake(task)

        def wake_exc(task: Task, exc: BaseException) -> None:
            trap = task.trap
            cls.wake_exc(k, task, exc)
            trap_result(task, trap, None, exc)
            for i in instruments:
                i.wake(task)

        def exit_task(task: Task, result: Any, exception: Optional[BaseException]) -> None:
            requeued.pop(task, None)
            cls.exit_task(k, task, result, exception)
            for i in instruments:
                i.exit(task)

        def step(task: Task) -> None:
            trap = requeued.pop(task, None)
            if trap is not None:  # a sched_yield (or sleep(0)) returns now
                trap_result(task, trap, task.next_value, task.next_exc)
            for i in instruments:
                i.run(task)
            cpu_clock = k.cpu_clock
            start = cpu_clock()
            cls._step(k, task, table)
            seconds = cpu_clock() - start
            for i in instruments:
                i.stop(task, seconds)

        def traced(service: Callable[..., Any]) -> Callable[..., Any]:
            def traced_service(kernel: Kernel, task: Task, trap: Any) -> Any:
                for i in instruments:
                    i.trap(task, trap)
                try:
                    value = service(kernel, task, trap)
                except BaseException as error:
                    trap_result(task, trap, None, error)
                    raise
                if value is SWITCH:
                    if task.state is READY:
                        requeued[task] = trap  # e.g. sched_yield: answered when it runs again
                    # else BLOCKED: answered by wake or wake_exc
                elif value is not CALL:  # (an Operation's subroutine reports its own traps)
                    trap_result(task, trap, value, None)
                return value

            return traced_service

        table = {trap_type: traced(service) for trap_type, service in TRAP_TABLE.items()}
        traced_join = table[Join]

        def join_task(kernel: Kernel, task: Task, target: Task) -> Any:
            # ``yield child`` is ``yield join(child)``: instruments hear of it as one.
            return traced_join(kernel, task, Join(target))

        table[Task] = join_task
        shadows: dict[str, Any] = {
            "new_task": new_task,
            "park": park,
            "wake": wake,
            "wake_exc": wake_exc,
            "exit_task": exit_task,
            "_step": step,
        }
        assert set(shadows) == set(_SHADOWED)
        k.__dict__.update(shadows)
        k.attention = True  # the run loop picks up the new _step at its next pass

    def _uninstall(self) -> None:
        k = self.kernel
        for name in _SHADOWED:
            k.__dict__.pop(name, None)
        self.requeued.clear()
        k.attention = True
