"""The kernel: the run loop that ties tasks, traps, the poller and the timers together.

One pass of the loop has three phases, in this order::

    1. wait for I/O   block in the poller, but only while no task is ready,
                      and only until the next timer is due
    2. expire timers  wake the tasks whose deadlines have passed
    3. run            resume every task that is ready *now* (a snapshot of
                      the run queue), each until it blocks or yields

`Kernel._step` is the context switch and the only place in the whole kernel
that resumes a task (``send``/``throw`` into its generator). Everything else
only changes a task's state and puts it on the run queue.

Between phases the loop watches for the three ways a run ends:

* ``main`` exits: every task still alive is killed, and the loop goes on
  until all of them have finished their cleanup (which may yield);
* nothing can ever run again (no task ready, no task on an fd, no timer):
  `Deadlock` is thrown into ``main``, which normally ends it as above;
* Ctrl-C: `KeyboardInterrupt` is thrown into ``main`` (see signals.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Hashable
from types import FunctionType, GeneratorType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from . import sysio
from .door import Door
from .errors import Cancelled, Deadlock, KernelPanic
from .files import FileTable
from .instrument import Instrument, Probes
from .poller import Poller
from .scheduler import Policy, RunQueue
from .scopes import _running, next_cancellation
from .signals import SignalWakeup
from .syscall import TRAP_TABLE, bad_trap
from .sysio import RECV_WHEN_RUN
from .task import (
    CANCEL_DELIVERED,
    CANCEL_REQUESTED,
    DEFAULT_TICKETS,
    JOINED,
    SchedInfo,
    Task,
    TaskState,
)
from .timers import DEFAULT_CLOCK, Clock, TimerQueue
from .traps import (
    CALL,
    SWITCH,
    Join,
    Target,
    coroutine_from_result,
    coroutine_of,
    fileno,
    not_started,
)
from .wait import WaitChannels

if TYPE_CHECKING:
    import logging

    from .procfs import TaskInfo


def _log() -> logging.Logger:
    """The "yieldos" logger. The logging package is imported only when a failure has to be
    reported (it costs several milliseconds of start-up otherwise)."""
    import logging

    return logging.getLogger("yieldos")


#: How many traps in a row a task may have answered at once (data already
#: there, a spawn, a gettid) before it goes to the back of the run queue
#: anyway. Answering at once saves a trip through the queue; the bound keeps
#: a task whose socket always has data from starving the others.
INLINE_BUDGET = 64


class _CheckCancel(BaseException):
    """Never raised: in ``Task.pending_exc`` it means "a cancellation may be due:
    ask `next_cancellation` at the next trap"."""


CHECK_CANCEL = _CheckCancel()

READY, RUNNING, BLOCKED, EXITED = (
    TaskState.READY,
    TaskState.RUNNING,
    TaskState.BLOCKED,
    TaskState.EXITED,
)


class Kernel:
    """A generator-task kernel: ``with Kernel() as k: k.run(main)``.

    ``poller`` picks the readiness backend: ``"auto"`` (epoll on Linux, else
    the best `selectors` one), ``"epoll"``, ``"selectors"``, ``"poll"`` or
    ``"select"``. ``clock`` is the time seam: a callable returning monotonic
    seconds (default `time.monotonic`; `VirtualClock` for time that jumps).
    ``policy`` is the run queue and its scheduling policy (default: FIFO round
    robin, `RunQueue`; the others are in policies.py, `make_policy` names them).
    """

    #: Functions called with every new kernel at the end of its construction: how
    #: ``python -m kernel`` (run, strace, trace) reaches the kernels a script
    #: makes for itself, to give them instruments, a clock or a policy.
    setups: ClassVar[list[Callable[[Kernel], None]]] = []

    def __init__(
        self,
        *,
        poller: str = "auto",
        clock: Optional[Clock] = None,
        policy: Optional[Policy] = None,
    ) -> None:
        self.clock: Clock = clock or DEFAULT_CLOCK
        self.poller = Poller(poller)
        self.timers = TimerQueue()
        self.runq: Policy = RunQueue() if policy is None else policy
        self._probes: Optional[Probes] = None
        # `wake` bound once, for the timers of sleeping tasks: `k.wake` makes a new bound
        # method at every sleep, one more object per sleeper for the GC to trace.
        self._wake_sleeper = self.wake
        self.files = FileTable()
        self.channels = WaitChannels()
        # Set (from a signal handler or another thread) when the loop must look at
        # posted calls or signals: one check per pass instead of three.
        self.attention = False
        self.door = Door(self._call_attention)
        self.poller.add_kernel_reader(self.door.bell.fd, self.door.bell.drain)
        self.tasks: dict[int, Task] = {}  # every task not yet EXITED, by tid
        # The tasks blocked in join() or kill() on a task, by that task: woken when it
        # exits (kept here, not in every TCB: most tasks are never waited for).
        self.exit_waiters: dict[Task, list[Task]] = {}
        self.current: Optional[Task] = None  # the RUNNING task, if any
        self.main: Optional[Task] = None
        self.stopping = False  # main has exited: the others are being cancelled
        self._tids = itertools.count(1)
        self._signals = SignalWakeup(self._call_attention)
        self._running = False
        self._closed = False
        if isinstance(self.runq, Instrument):  # a policy that learns from the tasks' steps
            self.add_instrument(self.runq)
        for setup in self.setups:
            setup(self)

    @property
    def cpu_clock(self) -> Clock:
        """What instruments time a task's step with: `time.perf_counter`, or the
        kernel clock when that is virtual (a task's CPU time is then what it
        advanced the clock by: repeatable)."""
        return self.clock if getattr(self.clock, "virtual", False) else time.perf_counter

    # ── Instruments (instrument.py) ──────────────────────────────────────

    def add_instrument(self, instrument: Instrument) -> None:
        """Install ``instrument``: its hooks are called from now on (for the tasks
        created and traps made after this; install before `run` to see everything)."""
        if self._probes is None:
            self._probes = Probes(self)
        self._probes.add(instrument)

    def remove_instrument(self, instrument: Instrument) -> None:
        """Uninstall ``instrument``; with none left the kernel runs uninstrumented again."""
        if self._probes is None:
            raise ValueError(f"{instrument!r} is not installed on this kernel")
        self._probes.remove(instrument)

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """The installed instruments, in the order they are called."""
        return tuple(self._probes.instruments) if self._probes else ()

    # ── Running a program ────────────────────────────────────────────────

    def run(self, main: Target, *args: Any) -> Any:
        """Run ``main(*args)`` (or the generator/coroutine ``main``) and every task it
        spawns, until ``main`` finishes. Return its value, or raise its exception.

        Tasks still alive when ``main`` finishes are killed: `Cancelled` is thrown
        into each, and their cleanup (``finally``, ``with``) runs, and may yield,
        before ``run`` returns.
        """
        if self._closed:
            raise RuntimeError("this kernel is closed")
        if self._running:
            raise RuntimeError("this kernel is already running")
        self._running = True
        self.stopping = False
        outer_kernel = getattr(_running, "kernel", None)  # a kernel run inside a task of another
        _running.kernel = self
        wakeup_fd = None
        try:
            self.main = task = self.new_task(main, args, None)
            wakeup_fd = self._signals.install()
            if wakeup_fd is not None:
                self.poller.add_kernel_reader(wakeup_fd, self._signals.drain)
            self._loop()
        except BaseException:
            self._abort()
            raise
        finally:
            if wakeup_fd is not None:
                self.poller.remove_kernel_reader(wakeup_fd)
            self._signals.uninstall()
            self._running = False
            self.main = None
            _running.kernel = outer_kernel
        if task.exception is not None:
            raise task.exception
        return task.result

    def _loop(self) -> None:
        """Poll, expire timers, run the ready tasks; until no task is left."""
        runq, poller, timers, clock = self.runq, self.poller, self.timers, self.clock
        step, complete = self._step, sysio.completer(self)
        virtual = getattr(clock, "virtual", False)
        while self.tasks:
            # Phase 1: wait for I/O, only as long as nothing else can happen.
            if runq:
                timeout: Optional[float] = 0.0
            else:
                deadline = timers.next_deadline()
                if deadline is not None:
                    timeout = max(0.0, deadline - clock())
                    if timeout and virtual:
                        timeout = self._idle_until(deadline, complete)
                elif poller.waiting or self.door.external or self._signals.watched:
                    timeout = None  # only I/O, another thread or a signal can wake anybody
                else:
                    self._deadlock()
                    continue
            if timeout != 0.0 or poller.waiting:
                poller.poll(timeout, complete)
            if self.attention:  # calls posted by other threads, signals, instruments
                self._attend()
                step = self._step
            # Phase 2: wake the tasks whose deadlines have passed.
            if timers.live:
                timers.expire(clock())
            # Phase 3: run every task that is ready now; tasks made ready meanwhile wait a pass.
            for _ in range(len(runq)):
                step(runq.pop_next())

    def _step(self, task: Task, table: dict[type, Callable[..., Any]] = TRAP_TABLE) -> None:
        """Switch to ``task``: resume its generator and serve its traps until it must wait.

        The only place that resumes tasks. A trap answered at once (data was
        there, a spawn, a gettid) resumes the task again right here, without
        a trip through the run queue, up to INLINE_BUDGET times. ``table`` maps
        trap types to service routines (instruments pass a traced copy).
        """
        assert task.state is READY, f"kernel bug: stepping {task!r}"
        coro = task.coro
        assert coro is not None
        self.current = task
        task.state = RUNNING
        value, exc = task.next_value, task.next_exc
        task.next_value = task.next_exc = None
        budget = INLINE_BUDGET
        while True:
            try:
                if exc is None:
                    # (A method call, not a `send` bound once per step: on CPython a bound
                    # builtin method is a new GC-tracked object, and most steps resume
                    # the task once or twice. Binding it cost a switch 9% more instructions.)
                    trap = coro.send(value)
                elif exc is RECV_WHEN_RUN:  # woken because its socket is readable (sysio.py):
                    value, exc = sysio.recv_when_run(self, task, value)  # it reads now
                    if value is SWITCH:  # the data was gone after all: it waits again
                        break
                    continue
                else:
                    trap = coro.throw(exc)
            except StopIteration as stop:
                if not task.callers:
                    if task in self.exit_waiters or task is self.main or self._probes is not None:
                        self.exit_task(task, stop.value, None)
                        return
                    # exit_task, written out for the common end: a task that returns while
                    # nobody waits for it (no joiner, no killer, no instrument; not main).
                    self.current = None
                    task.state = EXITED
                    task.coro = None
                    task.result = stop.value
                    del self.tasks[task.tid]
                    return
                # An Operation subroutine returned: resume its caller with the value.
                coro = task.coro = task.callers.pop()
                value, exc = stop.value, None
                continue
            except BaseException as error:
                if not task.callers:
                    self.exit_task(task, None, error)
                    return
                coro = task.coro = task.callers.pop()  # ... or raised: raise it in the caller
                value, exc = None, error
                continue
            if task.pending_exc is not None:  # killed, timed out or interrupted meanwhile
                exc = self._take_pending(task)
                if exc is not None:
                    value = None
                    continue
            try:
                value = table[type(trap)](self, task, trap)
            except KernelPanic:
                raise
            except BaseException as error:  # the trap failed: raise it in the task, at the trap
                # (or it was no trap: a KeyError from the table, which is not the task's)
                value, exc = None, error if type(trap) in table else bad_trap(task, trap)
                continue
            exc = None
            if value is SWITCH:
                break
            if value is CALL:  # an Operation pushed a subroutine: start it
                coro = task.coro
                assert coro is not None
                value = None
            budget -= 1
            if not budget:
                self.make_ready(task, value)
                break
        self.current = None

    # ── Task life cycle ──────────────────────────────────────────────────

    def new_task(
        self,
        target: Target,
        args: tuple[Any, ...],
        name: Optional[str],
        priority: int = 0,
        tickets: int = DEFAULT_TICKETS,
    ) -> Task:
        """Create a READY task running ``target(*args)`` (or the generator/coroutine ``target``)."""
        if type(target) is FunctionType:  # coroutine_of's usual case, without a call to it
            coro = target(*args)
            if type(coro) is not GeneratorType:
                coro = coroutine_from_result(target, coro)
        else:
            coro = coroutine_of(target, args)
        if not name:
            name = getattr(coro, "__qualname__", "task")  # Task.name cuts it when asked
        current = self.current
        task = Task(
            next(self._tids),
            name,
            coro,
            None if current is None else current.tid,
            None if priority == 0 and tickets == DEFAULT_TICKETS else SchedInfo(priority, tickets),
        )
        self.tasks[task.tid] = task
        if self.stopping:  # spawned during shutdown: cancelled before it starts
            task.flags |= CANCEL_REQUESTED | CANCEL_DELIVERED
            task.next_exc = Cancelled("the kernel is shutting down")
        self.runq.push(task)
        return task

    def exit_task(self, task: Task, result: Any, exception: Optional[BaseException]) -> None:
        """``task`` has returned or raised: record the outcome and wake its joiners and killers.

        (`_step` writes out the bookkeeping part for a task that returns while nobody
        waits for it: a change here must be made there too.)"""
        self.current = None
        task.state = EXITED
        task.coro = None
        task.result, task.exception = result, exception
        del self.tasks[task.tid]
        for waiter in self.exit_waiters.pop(task, ()):
            if type(waiter.trap) is Join:
                task.flags |= JOINED
                if exception is not None:
                    self.wake_exc(waiter, exception)
                else:
                    self.wake(waiter, result)
            else:  # a killer: it only waited for the exit
                self.wake(waiter, None)
        if task is self.main:
            self._stop()
        elif exception is not None and not task.flags & JOINED:
            self._unjoined_failure(task, exception)

    def _unjoined_failure(self, task: Task, exception: BaseException) -> None:
        if isinstance(exception, Cancelled):
            return  # being killed is not a failure
        if isinstance(exception, (KeyboardInterrupt, SystemExit)):
            # A task asked the whole program to stop: main hears it and run raises it.
            if self.main is not None and self.main.state is not EXITED:
                self.interrupt(self.main, exception)
            return
        _log().error(
            "task %r (tid %d) died and nobody joins it",
            task.name,
            task.tid,
            exc_info=(type(exception), exception, exception.__traceback__),
        )

    def cancel(self, task: Task) -> None:
        """Kill ``task``: `Cancelled` is raised in it once, as scopes.py rules."""
        if task.state is not EXITED:
            task.flags |= CANCEL_REQUESTED
            self.deliver_cancellation(task)

    def deliver_cancellation(self, task: Task) -> None:
        """A kill or a deadline may be due in ``task`` (see scopes.py): a BLOCKED task
        gets it now, at its blocking point; any other at its next trap."""
        if task.state is BLOCKED or (task.state is READY and not_started(task.coro)):
            exc = next_cancellation(task)
            if exc is not None:
                self.interrupt(task, exc)  # now: at its blocking point, or before its first line
                task.pending_exc = CHECK_CANCEL  # another may be due after this one
        elif task.state is not EXITED and task.pending_exc is None:
            task.pending_exc = CHECK_CANCEL

    def _take_pending(self, task: Task) -> Optional[BaseException]:
        """The exception to raise at this trap, if any (called only when one may be due)."""
        pending, task.pending_exc = task.pending_exc, None
        if pending is CHECK_CANCEL:
            pending = next_cancellation(task)
            if pending is None:
                return None
        task.pending_exc = CHECK_CANCEL  # look again at the next trap: more may be due
        return pending

    def interrupt(self, task: Task, exc: BaseException) -> None:
        """Raise ``exc`` in ``task`` where it is suspended, whatever its scopes: a
        BLOCKED task leaves its wait now; a READY one gets it at its next trap (a
        result it was woken with is not lost); one that never ran, before its first line."""
        if task.state is BLOCKED:
            undo = task.undo
            assert undo is not None, f"kernel bug: {task!r} is blocked with no undo"
            undo(task)
            self.wake_exc(task, exc)
        elif task.state is READY and not_started(task.coro):
            task.next_exc = exc
        elif task.state is READY:
            task.pending_exc = exc
        else:
            raise KernelPanic(f"cannot interrupt {task!r}")

    def _stop(self) -> None:
        """``main`` has exited: cancel every other task; the loop runs their cleanup."""
        self.stopping = True
        for task in list(self.tasks.values()):
            self.cancel(task)

    # ── Scheduling: the only ways a task becomes READY ───────────────────

    def make_ready(self, task: Task, value: Any) -> None:
        """Put ``task`` on the run queue, to be resumed with ``value``."""
        task.state = READY
        task.next_value = value
        self.runq.push(task)

    def park(self, task: Task, trap: Any, undo: Callable[[Task], None]) -> None:
        """Block ``task`` in ``trap``; ``undo(task)`` takes it out of whatever it waits on.

        (``undo`` is given the task, so that it can be a method bound once, such
        as the poller's `unwait_task`, instead of a fresh closure per wait.)"""
        task.state = BLOCKED
        task.trap = trap
        task.undo = undo

    def wake(self, task: Task, value: Any = None) -> None:
        """End ``task``'s wait: it resumes with ``value``."""
        assert task.state is BLOCKED, f"kernel bug: waking {task!r}"
        task.trap = task.undo = None
        task.state = READY
        task.next_value = value
        self.runq.push(task)

    def wake_exc(self, task: Task, exc: BaseException) -> None:
        """End ``task``'s wait: ``exc`` is raised in it, at its trap."""
        assert task.state is BLOCKED, f"kernel bug: waking {task!r}"
        task.trap = task.undo = None
        task.state = READY
        task.next_exc = exc
        self.runq.push(task)

    def wakeup(
        self,
        channel: Hashable,
        n: Optional[int] = None,
        value: Any = None,
        error: Optional[Callable[[], BaseException]] = None,
    ) -> int:
        """Make up to ``n`` (None: all) tasks parked on ``channel`` ready, oldest first;
        return how many. Each resumes from its wait with ``value``, or raises ``error()``
        there (a new exception per task). See wait.py."""
        if n == 1 and error is None:  # a hand-off to the oldest waiter: no list to build
            waiters = self.channels.waiters
            task = waiters.get(channel)
            if task is None:
                return 0
            if type(task) is dict:  # several wait: the oldest goes
                task = self.channels.pop(channel)
                assert task is not None
            else:  # the only waiter, stored as itself (see wait.py)
                del waiters[channel]
            if self._probes is not None:
                self.wake(task, value)
                return 1
            # `wake`, written out while no instrument listens (instruments shadow `wake`
            # to hear of it): this is every queue hand-off's path. A test checks that
            # both ways leave the task in the same state.
            assert task.state is BLOCKED, f"kernel bug: waking {task!r}"
            task.trap = task.undo = None
            task.state = READY
            task.next_value = value
            self.runq.push(task)
            return 1
        woken = self.channels.take(channel, n)
        for task in woken:
            if error is None:
                self.wake(task, value)
            else:
                self.wake_exc(task, error())
        return len(woken)

    def close_file(self, file: Any) -> None:
        """What the `close` trap does, as a plain call (for code that cannot yield, such
        as an abort): wake every task waiting on the fd with EBADF, then close it."""
        sysio.close_file(self, file, fileno(file))

    def call_from_thread(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` in the kernel's thread at its next loop pass, outside any task.

        The one thread-safe entry into the kernel (see door.py): from another
        thread, post a function that does the kernel-side work, e.g. wakes a
        channel a task waits on.
        """
        self.door.post(fn)

    def watch_signal(self, signum: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` from the loop whenever ``signum`` arrives, until
        `unwatch_signal`; the previous handler is put back then (or when the run ends)."""
        self._signals.watch(signum, callback)

    def unwatch_signal(self, signum: int, callback: Callable[[int], None]) -> None:
        self._signals.unwatch(signum, callback)

    def expect_call(self) -> None:
        """Another thread will post a call: until `call_arrived`, waiting is no deadlock."""
        self.door.external += 1

    def call_arrived(self) -> None:
        """The call announced by `expect_call` has come (or will not come any more)."""
        self.door.external -= 1

    def _call_attention(self) -> None:
        self.attention = True

    def _attend(self) -> None:
        self.attention = False  # before looking: what arrives meanwhile sets it again
        if self.door.calls:
            self._run_posted_calls()
        if self._signals.arrived:
            self._signals.dispatch()
        if self._signals.pending:
            self._deliver_sigint()

    def _run_posted_calls(self) -> None:
        calls = self.door.calls
        for _ in range(len(calls)):  # those posted meanwhile wait for the next pass
            fn = calls.popleft()
            try:
                fn()
            except KernelPanic:
                raise
            except Exception:
                _log().exception("a function posted with call_from_thread failed: %r", fn)

    def _idle_until(self, deadline: float, complete: Callable[[Task], bool]) -> Optional[float]:
        """Virtual clock, nothing ready, a timer pending: jump the clock to
        ``deadline`` if nothing else can make progress (see timers.py). Returns
        how long the loop's poll may still wait (in real seconds)."""
        if self.door.external:
            return None  # a thread works for a task: time stands still until it answers
        self.poller.poll(getattr(self.clock, "autojump", 0.0), complete)
        if not self.runq and not self.attention:
            self.clock.jump_to(deadline)  # type: ignore[attr-defined]
        return 0.0

    # ── The ends of a run ────────────────────────────────────────────────

    def _deliver_sigint(self) -> None:
        self._signals.pending = False
        if self.stopping or self.main is None:
            raise KeyboardInterrupt  # Ctrl-C during shutdown: stop now (see _abort)
        self.interrupt(self.main, KeyboardInterrupt())

    def _deadlock(self) -> None:
        """Nothing is ready, nobody waits on an fd, no timer is pending."""
        blocked = sorted(self.tasks.values(), key=lambda t: t.tid)
        if not self.stopping:
            lines = "\n".join(f"  {t!r}" for t in blocked)
            assert self.main is not None and self.main.state is BLOCKED
            self.interrupt(
                self.main,
                Deadlock(f"no task can ever run again, but main has not finished:\n{lines}"),
            )
            return
        # Shutting down, and some cleanup waits for something that will never happen.
        for task in blocked:
            if task.state is not BLOCKED:
                continue  # woken by the exit of one closed before it
            _log().warning("%r cannot finish its cleanup; closing it", task)
            undo = task.undo
            if undo is not None:
                undo(task)
            self._close(task)

    def _close(self, task: Task) -> None:
        """Throw GeneratorExit into ``task`` (cleanup runs, but may not yield) and end it."""
        self.current = task  # its cleanup runs now, and may ask who it is
        task.state = RUNNING
        error: Optional[BaseException] = None
        frames = [task.coro, *reversed(task.callers or ())]  # innermost subroutine first
        task.callers = None
        for coro in frames:
            try:
                if coro is not None:
                    coro.close()
            except BaseException as exc:
                error = exc
        if task.state is not EXITED:
            self.exit_task(task, None, error or Cancelled("closed by the kernel"))

    def _abort(self) -> None:
        """Emergency stop (a kernel bug, a forced Ctrl-C): close every task without scheduling.

        A task that was woken but has not run yet may hold something it was
        handed: a queue item, a lock, a permit, a joined task's result. As a
        kill does (it raises at the task's *next* trap), the abort first lets
        the task receive it: `_step` with a trap table that serves nothing
        resumes it and stops at the next trap it yields, where `_close` then
        throws GeneratorExit, so its cleanup sees what it got. Only a task
        woken with an exception (nothing to lose; a reader woken to read has
        read nothing yet, see sysio.completer) or never started is closed as
        it is.
        """
        from collections import defaultdict  # (here: an abort is rare)

        def stop_here(k: Kernel, task: Task, trap: Any) -> Any:
            return SWITCH  # the task stays RUNNING, suspended at this trap, to be closed there

        unserved: dict[type, Callable[..., Any]] = defaultdict(lambda: stop_here)
        self.stopping = True
        self.runq.clear()
        for task in sorted(self.tasks.values(), key=lambda t: t.tid):
            if task.state is BLOCKED and task.undo is not None:
                task.undo(task)
            elif task.state is READY and task.next_exc is None and not not_started(task.coro):
                try:
                    Kernel._step(self, task, unserved)  # (the class's: instruments see no run)
                except BaseException:  # the kernel is broken already: close the rest regardless
                    _log().exception("%r failed while receiving what it was handed", task)
            # Discussion: a task's exit waiters are left in place, so that its close wakes
            # them with its outcome (they are closed later in this loop); each keeps its
            # undo working until then (a joiner's undo looks for its place in the list).
            if task.state is not EXITED:
                self._close(task)
        self.runq.clear()

    # ── Looking inside (procfs.py) ───────────────────────────────────────

    def ps(self, *, locals: bool = False) -> list[TaskInfo]:
        """A snapshot of every live task, in tid order: state, what it waits on, its
        frames (with the ``repr`` of their locals if ``locals``). See procfs.py."""
        from .procfs import ps  # here, not at the top: a kernel never looked at pays nothing

        return ps(self, locals=locals)

    def where(self, tid: int, *, locals: bool = False) -> str:
        """Task ``tid``'s saved context as a traceback, outermost frame first. See procfs.py."""
        from .procfs import where

        return where(self, tid, locals=locals)

    # ── Resources ────────────────────────────────────────────────────────

    def close(self) -> None:
        """Close the poller and put back every fd mode the kernel changed."""
        if self._running:
            raise RuntimeError("cannot close a running kernel")
        if self._closed:
            return
        self._closed = True
        self.poller.close()
        self.door.bell.close()
        self.files.restore()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def run(
    main: Target,
    *args: Any,
    poller: str = "auto",
    clock: Optional[Clock] = None,
    policy: Optional[Policy] = None,
) -> Any:
    """Run ``main(*args)`` in a fresh kernel, close the kernel, and return main's value.

    Raises whatever ``main`` raises. Tasks still alive when ``main`` finishes are
    cancelled, and their cleanup runs before ``run`` returns. ``poller``,
    ``clock`` and ``policy`` are passed to `Kernel`.
    """
    with Kernel(poller=poller, clock=clock, policy=policy) as k:
        return k.run(main, *args)
