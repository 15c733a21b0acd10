"""The process table (kernel/procfs.py): ``Kernel.ps``, ``format_ps`` and ``Kernel.where``.

Every test runs under a `VirtualClock`, so the deadlines shown are exact. The line
a task is suspended at is never hard-coded: it is found in the source by the marker
comment at the end of that line (``# @name``), or by the text of the line for code
in syscalls/.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

import kernel
from kernel import procfs
from kernel.accounting import Accounting, TaskStats
from kernel.procfs import REPR_LIMIT, FrameInfo, TaskInfo, format_ps
from kernel.task import Task, TaskState
from kernel.traps import Sleep
from syscalls import (
    Lock,
    current_kernel,
    gettid,
    join,
    kill,
    move_on_after,
    operation,
    recv,
    sched_yield,
    send,
    sleep,
    spawn,
    sync,
    timeout,
    wait_on,
)
from syscalls.queues import Queue

HERE = __file__
READY, RUNNING, BLOCKED = TaskState.READY, TaskState.RUNNING, TaskState.BLOCKED


def line_of(fn, text):
    """The line number of the one line of ``fn``'s source that contains ``text``."""
    lines, start = inspect.getsourcelines(fn)
    hits = [start + i for i, line in enumerate(lines) if text in line]
    assert len(hits) == 1, (fn, text, hits)
    return hits[0]


def at(fn, marker):
    """(file, line, function) of the line of ``fn`` marked ``# @marker``."""
    return (inspect.getsourcefile(fn), line_of(fn, f"# @{marker}"), fn.__name__)


def where_of(frames):
    return [(f.filename, f.lineno, f.function) for f in frames]


def run_virtual(main, *args, start=0.0, instruments=()):
    with kernel.Kernel(clock=kernel.VirtualClock(start)) as k:
        for instrument in instruments:
            k.add_instrument(instrument)
        return k.run(main, *args)


def settle(n=3):
    """Let every other ready task run until it blocks (FIFO run queue)."""
    for _ in range(n):
        yield sched_yield()


class Channel:
    def __repr__(self):
        return "<the channel>"


def full_socketpair():
    """A socketpair whose first socket cannot send any more: its buffers are full."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return a, b


# ── Tasks in every state ─────────────────────────────────────────────────


def idle():  # never runs before ps looks
    yield sleep(1)


def reader(sock):
    yield recv(sock, 10)  # @recv


def writer(sock):
    yield send(sock, b"y" * 100)  # @send


def sleeper(seconds):
    yield sleep(seconds)  # @sleep


def waiter(channel):
    yield wait_on(channel)  # @wait_on


def timed(channel):
    with timeout(3):
        with move_on_after(10):
            yield wait_on(channel)  # @timed


def joiner(task):
    yield join(task)  # @join


def victim():
    try:
        yield sleep(math.inf)
    except kernel.Cancelled:
        yield sleep(7)  # @cleanup: killed, and its cleanup blocks


def killer(task):
    yield kill(task)  # @kill


def quick():
    return (yield gettid())


def test_ps_shows_each_task_its_state_and_what_it_waits_on():
    a, b = socket.socketpair()
    c, d = full_socketpair()
    chan, chan2 = Channel(), Channel()
    seen = {}

    def main():
        done = yield spawn(quick)
        yield join(done)
        t = {}
        t["reader"] = yield spawn(reader, a)
        t["writer"] = yield spawn(writer, c)
        t["sleeper"] = yield spawn(sleeper, 2.5)
        t["forever"] = yield spawn(sleeper, math.inf, name="forever")
        t["waiter"] = yield spawn(waiter, chan)
        t["timed"] = yield spawn(timed, chan2)
        t["victim"] = yield spawn(victim)
        yield from settle(1)  # the victim blocks in sleep(inf)
        t["killer"] = yield spawn(killer, t["victim"])
        t["joiner"] = yield spawn(joiner, t["sleeper"])
        yield from settle()  # the killer kills: the victim's cleanup blocks
        t["idle"] = yield spawn(idle)
        seen["infos"] = current_kernel().ps()  # @ps
        seen["tids"] = {name: task.tid for name, task in t.items()}
        seen["done"] = done.tid
        for task in t.values():
            if task.state is not TaskState.EXITED:
                yield kill(task)

    with a, b, c, d:
        run_virtual(main, start=100.0)
        a_fd, c_fd = a.fileno(), c.fileno()
    infos, tids = seen["infos"], seen["tids"]
    by_tid = {info.tid: info for info in infos}
    assert [info.tid for info in infos] == sorted([1, *tids.values()])  # every live task, in order
    assert seen["done"] not in by_tid  # exited: gone
    by = {name: by_tid[tid] for name, tid in tids.items()}
    by["main"] = by_tid[1]

    def fields(info):
        return (info.state, info.trap, info.fd, info.writing, info.until, info.channel)

    assert fields(by["main"]) == (RUNNING, None, None, None, None, None)
    assert fields(by["idle"]) == (READY, None, None, None, None, None)
    assert fields(by["reader"]) == (BLOCKED, "Recv", a_fd, False, None, None)
    assert fields(by["writer"]) == (BLOCKED, "Send", c_fd, True, None, None)
    assert fields(by["sleeper"]) == (BLOCKED, "Sleep", None, None, 102.5, None)
    assert fields(by["forever"]) == (BLOCKED, "Sleep", None, None, math.inf, None)
    assert fields(by["waiter"]) == (BLOCKED, "WaitOn", None, None, None, chan)
    assert fields(by["timed"]) == (BLOCKED, "WaitOn", None, None, None, chan2)
    assert fields(by["victim"]) == (BLOCKED, "Sleep", None, None, 107.0, None)
    assert fields(by["killer"]) == (BLOCKED, "Kill", None, None, None, None)
    assert fields(by["joiner"]) == (BLOCKED, "Join", None, None, None, None)

    assert {name: info.wait for name, info in by.items()} == {
        "main": None,
        "idle": None,
        "reader": f"Recv fd {a_fd} (read)",
        "writer": f"Send fd {c_fd} (write)",
        "sleeper": "Sleep until 102.500",
        "forever": "Sleep for ever",
        "waiter": "WaitOn <the channel>",
        "timed": "WaitOn <the channel>",
        "victim": "Sleep until 107.000",
        "killer": f"Kill tid {tids['victim']} ('victim')",
        "joiner": f"Join tid {tids['sleeper']} ('sleeper')",
    }
    assert {name: info.target for name, info in by.items() if info.target is not None} == {
        "killer": tids["victim"],
        "joiner": tids["sleeper"],
    }
    # The earliest deadline of the scopes a task is inside (timeout(3) within move_on_after(10)).
    assert {name: info.deadline for name, info in by.items() if info.deadline is not None} == {
        "timed": 103.0
    }
    assert {info.parent for name, info in by.items() if name != "main"} == {1}
    assert by["main"].parent is None
    assert by["forever"].name == "forever" and by["timed"].name == "timed"
    assert all(info.stats is None for info in infos)  # no Accounting installed

    # Where each one is: the line of its yield (main: the line that called ps).
    assert where_of(by["main"].frames) == [at(main, "ps")]
    assert where_of(by["idle"].frames) == [(HERE, idle.__code__.co_firstlineno, "idle")]
    assert where_of(by["reader"].frames) == [at(reader, "recv")]
    assert where_of(by["writer"].frames) == [at(writer, "send")]
    assert where_of(by["sleeper"].frames) == [at(sleeper, "sleep")]
    assert where_of(by["forever"].frames) == [at(sleeper, "sleep")]
    assert where_of(by["waiter"].frames) == [at(waiter, "wait_on")]
    assert where_of(by["timed"].frames) == [at(timed, "timed")]
    assert where_of(by["victim"].frames) == [at(victim, "cleanup")]
    assert where_of(by["killer"].frames) == [at(killer, "kill")]
    assert where_of(by["joiner"].frames) == [at(joiner, "join")]
    assert all(f.locals is None for info in infos for f in info.frames)  # not asked for


def test_ps_outside_a_run_and_ps_current_outside_a_task():
    with kernel.Kernel() as k:
        assert k.ps() == []
        with pytest.raises(LookupError, match="no live task with tid 1"):
            k.where(1)
    with pytest.raises(RuntimeError, match="no yieldos kernel is running"):
        procfs.ps_current()


# ── The saved context: yield from, await, Operations ─────────────────────


def helper(sock):
    data = yield recv(sock, 10)  # @helper
    return data


def delegating(sock):
    return (yield from helper(sock))  # @delegating


def trap_from(sock):
    return (yield from recv(sock, 10))  # @trap_from


async def ahelper(sock):
    return await recv(sock, 10)  # @ahelper


async def awaiting(sock):
    return await ahelper(sock)  # @awaiting


def locker(lock):
    yield lock.acquire()  # @locker: an Operation, run as a subroutine


def lock_helper(lock):
    yield lock.acquire()  # @lock_helper


def deep_locker(lock):
    yield from lock_helper(lock)  # @deep_locker


async def async_locker(lock):
    await lock.acquire()  # @async_locker: the Operation runs in the task's own frames


async def getter(q):
    return await q.get()  # @getter


def acquire_lines():
    """Where a task waiting in Lock.acquire is, inside syscalls/sync.py."""
    sync_file = inspect.getsourcefile(sync)
    return [
        (sync_file, line_of(Lock.acquire, "yield WaitOn(w)"), "acquire"),
    ]


def snapshot_of(target, *args, setup=None):
    """Spawn ``target(*args)``, let it block, and return its `TaskInfo`."""
    seen = {}

    def main():
        if setup is not None:
            yield from setup()
        task = yield spawn(target, *args)
        yield from settle()
        (seen["info"],) = [i for i in current_kernel().ps() if i.tid == task.tid]
        yield kill(task)

    run_virtual(main)
    return seen["info"]


def test_frames_follow_yield_from_chains_to_the_suspended_yield():
    a, b = socket.socketpair()
    with a, b:
        assert where_of(snapshot_of(delegating, a).frames) == [
            at(delegating, "delegating"),
            at(helper, "helper"),
        ]
        # Trap.__iter__'s own frame is the trap ABI, not the task's: left out.
        assert where_of(snapshot_of(trap_from, a).frames) == [at(trap_from, "trap_from")]


def test_frames_follow_await_chains():
    a, b = socket.socketpair()
    with a, b:
        info = snapshot_of(awaiting, a)
        assert info.wait == f"Recv fd {a.fileno()} (read)"
    assert where_of(info.frames) == [at(awaiting, "awaiting"), at(ahelper, "ahelper")]


@pytest.mark.parametrize(
    "target, outer",
    [
        (locker, [(locker, "locker")]),
        (deep_locker, [(deep_locker, "deep_locker"), (lock_helper, "lock_helper")]),
        (async_locker, [(async_locker, "async_locker")]),
    ],
)
def test_frames_go_through_operation_subroutines(target, outer):
    lock = Lock()

    def hold():
        yield lock.acquire()

    info = snapshot_of(target, lock, setup=hold)
    assert info.trap == "WaitOn"
    assert where_of(info.frames) == [at(fn, marker) for fn, marker in outer] + acquire_lines()


def test_frames_of_a_queue_get():
    """A get is one trap (a conditional wait), not a subroutine: no frame of its own."""
    q = Queue()
    info = snapshot_of(getter, q)
    assert info.wait == "WaitOn <get on <Queue 0 items (unbounded), 1 getter waiting>>"
    assert where_of(info.frames) == [at(getter, "getter")]


def name_and_line(frame):
    return frame.f_code.co_name, frame.f_lineno  # (a running frame's line moves on: read it now)


def test_frames_of_the_running_task_in_a_yield_from_chain():
    seen = {}

    def inner():
        seen["infos"] = procfs.ps_current()  # @inner
        seen["innermost"] = name_and_line(procfs.suspended_at(current_kernel().current))  # @deepest
        yield sched_yield()

    def outer():
        yield from inner()  # @outer

    run_virtual(outer)
    (info,) = seen["infos"]
    assert info.state is RUNNING
    assert where_of(info.frames) == [at(outer, "outer"), at(inner, "inner")]
    assert seen["innermost"] == ("inner", line_of(inner, "# @deepest"))


def test_frames_of_a_running_coroutine():
    seen = {}

    async def inner():
        seen["infos"] = procfs.ps_current()  # @inner
        await sched_yield()

    async def outer():
        await inner()  # @outer

    run_virtual(outer)
    (info,) = seen["infos"]
    assert where_of(info.frames) == [at(outer, "outer"), at(inner, "inner")]


class OddAwaitable:
    """Awaitable through a plain iterator, not a generator: there is no frame below it."""

    def __await__(self):
        return iter([sleep(math.inf)])


async def odd():
    await OddAwaitable()  # @odd


def test_frames_stop_at_an_awaitable_that_is_not_a_generator():
    info = snapshot_of(odd)
    assert (info.trap, info.until) == ("Sleep", math.inf)
    assert where_of(info.frames) == [at(odd, "odd")]


def test_frames_of_the_running_task_inside_an_operation():
    seen = {}

    @operation
    def peek():
        seen["where"] = current_kernel().where(1)  # @peek
        yield sched_yield()

    def main():
        yield peek()  # @main

    run_virtual(main)
    peek_line = line_of(peek, "# @peek")
    assert seen["where"] == "\n".join(
        [
            "Task 1 'main' (running), outermost frame first:",
            f'  File "{HERE}", line {line_of(main, "# @main")}, in main',
            "    yield peek()  # @main",
            f'  File "{HERE}", line {peek_line}, in peek',
            '    seen["where"] = current_kernel().where(1)  # @peek  <-- running here',
        ]
    )


def test_a_task_running_seen_from_another_thread_shows_its_generator_frame():
    seen = {}

    def look(task):
        seen["info"] = procfs.snapshot(task)

    def main():
        me = current_kernel().current
        thread = threading.Thread(target=look, args=(me,))
        thread.start()
        thread.join()
        yield sched_yield()

    run_virtual(main)
    info = seen["info"]
    assert info.state is RUNNING
    # Only its generator's frame: the other thread cannot see the kernel thread's stack
    # (and the line of a frame executing in another thread is only approximate).
    (frame,) = info.frames
    assert (frame.filename, frame.function) == (HERE, "main")


# ── Locals ───────────────────────────────────────────────────────────────


class BrokenRepr:
    def __repr__(self):
        raise ValueError("no")


def with_locals(sock):
    count = 42
    text = "z" * 500
    broken = BrokenRepr()
    yield recv(sock, count)  # @locals
    return count, text, broken


def test_locals_on_request_as_bounded_reprs():
    a, b = socket.socketpair()
    seen = {}

    def main():
        task = yield spawn(with_locals, a)
        yield from settle()
        k = current_kernel()
        seen["without"] = k.ps()
        seen["with"] = k.ps(locals=True)
        seen["where"] = k.where(task.tid, locals=True)
        yield kill(task)

    with a, b:
        run_virtual(main)
        sock_repr, fd = repr(a), a.fileno()
    (plain,) = [i for i in seen["without"] if i.tid == 2]
    (info,) = [i for i in seen["with"] if i.tid == 2]
    assert plain.frames[-1].locals is None
    frame = info.frames[-1]
    assert (frame.filename, frame.lineno) == at(with_locals, "locals")[:2]
    assert list(frame.locals) == ["sock", "count", "text", "broken"]
    assert frame.locals["count"] == "42"
    assert re.fullmatch(r"<BrokenRepr instance at 0x[0-9a-f]+>", frame.locals["broken"])
    assert len(frame.locals["text"]) <= REPR_LIMIT
    assert frame.locals["text"].startswith("'zzz") and "..." in frame.locals["text"]
    assert len(frame.locals["sock"]) <= REPR_LIMIT and frame.locals["sock"][:10] == sock_repr[:10]
    line = line_of(with_locals, "# @locals")
    assert seen["where"] == "\n".join(
        [
            f"Task 2 'with_locals' (blocked in Recv fd {fd} (read)), outermost frame first:",
            f'  File "{HERE}", line {line}, in with_locals',
            "    yield recv(sock, count)  # @locals  <-- suspended here",
            f"      sock = {frame.locals['sock']}",
            "      count = 42",
            f"      text = {frame.locals['text']}",
            f"      broken = {frame.locals['broken']}",
        ]
    )


def test_long_reprs_are_cut_even_when_reprlib_does_not():
    many = ["L" * 70] * 6  # reprlib cuts each item, but shows six of them
    assert procfs._safe_repr(many) == repr(many)[: REPR_LIMIT - 3] + "..."


# ── Printing ─────────────────────────────────────────────────────────────


def test_format_ps_table():
    a, b = socket.socketpair()
    seen = {}

    def main():
        yield spawn(sleeper, 5, name="nap")
        yield spawn(reader, a)
        yield spawn(timed, Channel())
        yield from settle()
        seen["table"] = format_ps(current_kernel().ps())
        for info in current_kernel().ps()[1:]:
            yield kill(current_kernel().tasks[info.tid])

    with a, b:
        run_virtual(main, start=10.0)
        fd = a.fileno()
    assert seen["table"].splitlines() == [
        "TID  PPID  STATE    TIMEOUT  NAME    WAIT",
        "  1     -  running        -  main    -",
        "  2     1  blocked        -  nap     Sleep until 15.000",
        f"  3     1  blocked        -  reader  Recv fd {fd} (read)",
        "  4     1  blocked   13.000  timed   WaitOn <the channel>",
    ]


def test_format_ps_with_accounting():
    seen = {}
    clock = kernel.VirtualClock()

    def busy():
        clock.advance(0.25)
        yield sleep(math.inf)

    def main():
        yield spawn(busy)
        yield from settle()
        seen["infos"] = current_kernel().ps()
        seen["table"] = format_ps(seen["infos"])
        yield kill(current_kernel().tasks[2])

    acct = Accounting()
    with kernel.Kernel(clock=clock) as k:
        k.add_instrument(acct)
        k.run(main)
    main_info, busy_info = seen["infos"]
    assert busy_info.stats is not None and busy_info.stats.cpu == 0.25
    assert main_info.stats.runs == 4 and main_info.stats.traps == {"Spawn": 1, "SchedYield": 3}
    assert seen["table"].splitlines() == [
        "TID  PPID  STATE    SCHED       CPU  TIMEOUT  NAME  WAIT",
        "  1     -  running      4  0.000000        -  main  -",
        "  2     1  blocked      1  0.250000        -  busy  Sleep for ever",
    ]


def test_format_ps_mixes_records_with_and_without_stats():
    plain = TaskInfo(7, "x", None, READY, None, None, None, None, None, None, None, None, (), None)
    assert format_ps([plain]).splitlines() == [
        "TID  PPID  STATE  TIMEOUT  NAME  WAIT",
        "  7     -  ready        -  x     -",
    ]
    stats = TaskStats(8, "y", READY, runs=3, cpu=1.5)
    with_stats = TaskInfo(
        8, "y", 7, READY, None, None, None, None, None, None, None, None, (), stats
    )
    assert format_ps([plain, with_stats]).splitlines() == [
        "TID  PPID  STATE  SCHED       CPU  TIMEOUT  NAME  WAIT",
        "  7     -  ready      -         -        -  x     -",
        "  8     7  ready      3  1.500000        -  y     -",
    ]


def test_where_marks_the_suspended_line_in_a_chain():
    a, b = socket.socketpair()
    seen = {}

    def main():
        task = yield spawn(delegating, a)
        yield from settle()
        seen["where"] = current_kernel().where(task.tid)
        yield kill(task)

    with a, b:
        run_virtual(main)
        fd = a.fileno()
    assert seen["where"] == "\n".join(
        [
            f"Task 2 'delegating' (blocked in Recv fd {fd} (read)), outermost frame first:",
            f'  File "{HERE}", line {line_of(delegating, "# @delegating")}, in delegating',
            "    return (yield from helper(sock))  # @delegating",
            f'  File "{HERE}", line {line_of(helper, "# @helper")}, in helper',
            "    data = yield recv(sock, 10)  # @helper  <-- suspended here",
        ]
    )


def test_frame_info_str_and_a_frame_without_source():
    info = FrameInfo("/nowhere/app.py", 12, "serve")
    assert str(info) == 'File "/nowhere/app.py", line 12, in serve'
    code = compile("def ghost():\n    yield 1\n", "/nowhere/ghost.py", "exec")
    namespace = {}
    exec(code, namespace)
    seen = {}

    def main():
        task = yield spawn(namespace["ghost"])
        seen["where"] = current_kernel().where(task.tid)
        yield kill(task)

    run_virtual(main)
    assert seen["where"].splitlines() == [
        "Task 2 'ghost' (ready), outermost frame first:",
        '  File "/nowhere/ghost.py", line 1, in ghost',
        "    (no source)  <-- suspended here",
    ]


# ── What the kernel does not tell: read from the trap and the undo ───────


def test_unknown_traps_and_unreadable_sleeps():
    def gen():
        yield 1

    task = Task(9, "odd", gen())
    task.state = BLOCKED
    task.trap = ("a", "strange", "trap")
    task.undo = lambda task: None
    info = procfs.snapshot(task)
    assert (info.trap, info.wait) == ("tuple", "('a', 'strange', 'trap')")
    task.trap = Sleep(3)  # blocked in a sleep whose undo is not a timer's
    info = procfs.snapshot(task)
    assert (info.trap, info.until, info.wait) == ("Sleep", None, "Sleep")
    finished = gen()
    list(finished)
    task.coro = finished  # (never seen in a live task: shown as no frames)
    assert procfs.snapshot(task).frames == ()
    task.coro = None
    assert procfs.suspended_at(task) is None
    assert procfs.snapshot(task).frames == ()


# ── Costs nothing until used ─────────────────────────────────────────────


def test_procfs_accounting_and_watchdog_are_not_imported_by_the_kernel():
    code = (
        "import sys, kernel, syscalls\n"
        "k = kernel.Kernel(); k.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('kernel.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(HERE)),
    ).stdout
    for module in ("kernel.procfs", "kernel.accounting", "kernel.watchdog"):
        assert f"'{module}'" not in out
    assert "'kernel.kernel'" in out  # (the check itself works)
