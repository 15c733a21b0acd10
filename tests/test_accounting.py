"""Accounting (kernel/accounting.py) and the long-step watchdog (kernel/watchdog.py).

Both are instruments timed by the kernel's clocks. Under a `VirtualClock` the
clock moves only when a task says so (``clock.advance``: CPU work in its step)
or when the kernel jumps to the next deadline, so every figure is exact.
"""

from __future__ import annotations

import inspect
import io
import logging
import math
import os
import socket

import pytest

import kernel
from kernel.accounting import Accounting, TaskStats
from kernel.task import TaskState
from kernel.watchdog import SlowStepDetector, warn_slow_steps
from syscalls import (
    current_kernel,
    join,
    kill,
    move_on_after,
    read,
    recv,
    recv_into,
    recvfrom,
    recvfrom_into,
    sched_yield,
    send,
    sendall,
    sendfile,
    sendto,
    sleep,
    spawn,
    wait_on,
    wait_readable,
    wait_writable,
    write,
)

READY, RUNNING, BLOCKED, EXITED = (
    TaskState.READY,
    TaskState.RUNNING,
    TaskState.BLOCKED,
    TaskState.EXITED,
)


def run_accounted(main, *args, clock=None, **options):
    """Run ``main`` on a virtual-clock kernel with an `Accounting`; return the instrument."""
    acct = Accounting(**options)
    with kernel.Kernel(clock=clock or kernel.VirtualClock()) as k:
        k.add_instrument(acct)
        k.run(main, *args)
    return acct


def times(stats):
    return (stats.runs, stats.cpu, stats.ready_wait, stats.blocked)


# ── Time: runs, CPU, ready-wait, blocked ─────────────────────────────────


def test_runs_cpu_ready_wait_and_blocked_time_are_exact():
    clock = kernel.VirtualClock()

    def worker():
        clock.advance(0.5)  # CPU in its first step; it waited 1.0 s, READY, for main's step
        yield sleep(2)  # blocked 2.0 s
        clock.advance(0.25)
        yield sched_yield()  # READY again, runs at once (nobody else is ready)

    def main():
        child = yield spawn(worker)
        clock.advance(1.0)
        yield join(child)  # blocked from 1.0 until the worker exits at 3.75

    acct = run_accounted(main, clock=clock)
    main_stats, worker_stats = acct.all()
    assert times(main_stats) == (2, 1.0, 0.0, 2.75)
    assert times(worker_stats) == (3, 0.75, 1.0, 2.0)
    assert main_stats.traps == {"Spawn": 1, "Join": 1}
    assert worker_stats.traps == {"Sleep": 1, "SchedYield": 1}
    assert (main_stats.trap_count, worker_stats.trap_count) == (2, 2)
    assert [(s.tid, s.name, s.state) for s in acct.all()] == [
        (1, "main", EXITED),
        (2, "worker", EXITED),
    ]


def test_a_wait_in_progress_is_counted_up_to_now():
    clock = kernel.VirtualClock()
    seen = {}

    def napper():
        yield sleep(10)

    def main():
        acct = current_kernel().instruments[0]
        nap = yield spawn(napper)
        clock.advance(0.5)  # the napper has been READY 0.5 s when main asks
        seen["ready"] = acct.stats(nap.tid)
        yield sleep(3)  # the napper sleeps from 0.5; main asks at 3.5
        seen["blocked"] = acct.stats(nap.tid)
        seen["me"] = acct.stats(1)
        yield kill(nap)

    run_accounted(main, clock=clock)
    assert (seen["ready"].state, seen["ready"].ready_wait, seen["ready"].runs) == (READY, 0.5, 0)
    assert (seen["blocked"].state, seen["blocked"].blocked) == (BLOCKED, 3.0)
    assert (seen["me"].state, seen["me"].runs, seen["me"].blocked) == (RUNNING, 2, 3.0)


def test_a_task_spawned_before_the_instrument_is_counted_from_then_on():
    clock = kernel.VirtualClock()
    seen = {}

    def napper():
        yield sleep(1)

    def main():
        k = current_kernel()
        nap = yield spawn(napper)
        acct = Accounting()
        k.add_instrument(acct)
        seen["before"] = acct.stats(nap.tid)  # alive, not seen yet: all zero
        yield join(nap)
        seen["after"] = acct.stats(nap.tid)
        with pytest.raises(KeyError):
            acct.stats(99)

    with kernel.Kernel(clock=clock) as k:
        k.run(main)
    assert seen["before"] == TaskStats(2, "napper", READY)
    assert (seen["after"].runs, seen["after"].blocked, seen["after"].state) == (2, 1.0, EXITED)
    assert seen["after"].traps == {"Sleep": 1}


def test_drain_exited_takes_the_ledgers_of_exited_tasks():
    seen = {}

    def quick():
        yield sleep(1)

    def main():
        acct = current_kernel().instruments[0]
        q1 = yield spawn(quick)
        q2 = yield spawn(quick)
        yield join(q1)
        yield join(q2)
        seen["drained"] = acct.drain_exited()
        seen["again"] = acct.drain_exited()
        seen["left"] = acct.all()

    acct = run_accounted(main)
    assert [(s.tid, s.state, s.blocked) for s in seen["drained"]] == [
        (2, EXITED, 1.0),
        (3, EXITED, 1.0),
    ]
    assert seen["again"] == []
    assert [(s.tid, s.state) for s in seen["left"]] == [(1, RUNNING)]
    with pytest.raises(KeyError):
        acct.stats(2)
    assert [s.tid for s in acct.drain_exited()] == [1]
    assert acct.all() == []


def test_stats_of_a_removed_instrument_stop_growing():
    clock = kernel.VirtualClock()
    seen = {}

    def napper():
        yield sleep(10)

    def main():
        k = current_kernel()
        acct = k.instruments[0]
        nap = yield spawn(napper)
        yield sleep(1)
        k.remove_instrument(acct)  # the napper has slept 1 s of its 10 by now
        yield sleep(5)
        seen["nap"] = acct.stats(nap.tid)
        yield kill(nap)

    run_accounted(main, clock=clock)
    assert seen["nap"].blocked == 1.0


# ── Bytes ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("reader_first", [True, False], ids=["woken", "at-once"])
def test_bytes_read_and_written_through_a_socketpair(reader_first):
    a, b = socket.socketpair()
    r, w = os.pipe()

    def producer():
        yield wait_writable(a)  # (no bytes: what these return is not a count)
        assert (yield send(a, b"s" * 100)) == 100
        yield sendall(a, b"a" * 1000)
        assert (yield write(w, b"w" * 7)) == 7

    def consumer():
        yield wait_readable(b)
        got = yield recv(b, 30)
        buf = bytearray(70)
        n = yield recv_into(b, buf)
        assert (len(got), n) == (30, 70)
        total = 0
        while total < 1000:
            total += len((yield recv(b, 4096)))
        assert len((yield read(r, 100))) == 7

    def main():
        # The reader first: it blocks and is woken with the data; or the data is there.
        order = [consumer, producer] if reader_first else [producer, consumer]
        yield from _both(*order)

    try:
        with a, b:
            acct = run_accounted(main)
    finally:
        os.close(r)
        os.close(w)
    stats = {s.name: s for s in acct.all()}
    assert (stats["producer"].bytes_read, stats["producer"].bytes_written) == (0, 1107)
    assert (stats["consumer"].bytes_read, stats["consumer"].bytes_written) == (1107, 0)
    assert (stats["main"].bytes_read, stats["main"].bytes_written) == (0, 0)
    assert stats["producer"].traps == {"WaitWritable": 1, "Send": 1, "SendAll": 1, "Write": 1}
    assert stats["consumer"].traps["RecvInto"] == 1 and stats["consumer"].traps["Read"] == 1
    assert stats["consumer"].traps["WaitReadable"] == 1


def test_bytes_of_a_blocking_sendall_and_reads_that_wait():
    a, b = socket.socketpair()
    size = 3 << 20  # more than the socket buffers hold: sendall waits for the reader

    def producer():
        yield sendall(a, b"x" * size)

    def consumer():
        total = 0
        while total < size:
            total += len((yield recv(b, 65536)))

    def main():
        c = yield spawn(consumer)  # first: its first recv blocks
        p = yield spawn(producer)
        yield join(p)
        yield join(c)

    with a, b:
        acct = run_accounted(main)
    stats = {s.name: s for s in acct.all()}
    assert stats["producer"].bytes_written == size
    assert stats["consumer"].bytes_read == size
    assert stats["producer"].traps == {"SendAll": 1}
    assert stats["consumer"].blocked == 0.0  # (virtual time never moved)


def test_an_interrupted_sendall_counts_what_it_sent_and_a_failed_recv_nothing():
    a, b = socket.socketpair()
    size = 8 << 20  # far more than the buffers hold, and nobody reads

    def producer():
        with move_on_after(1):
            yield sendall(a, b"x" * size)

    def reader():
        with move_on_after(1):
            yield recv(a, 10)  # nothing ever comes: it times out

    with a, b:
        acct = run_accounted(lambda: (yield from _both(producer, reader)))
        b.setblocking(False)
        drained = 0
        try:
            while True:
                drained += len(b.recv(1 << 20))
        except BlockingIOError:
            pass
    stats = {s.name: s for s in acct.all()}
    assert 0 < drained < size
    assert stats["producer"].bytes_written == drained
    assert stats["reader"].bytes_read == 0
    assert stats["reader"].traps == {"Recv": 1}


def test_a_sendall_begun_before_the_instrument_is_not_counted():
    a, b = socket.socketpair()
    size = 3 << 20
    seen = {}

    def producer():
        yield sendall(a, b"x" * size)
        yield send(a, b"12345")

    def main():
        p = yield spawn(producer)
        yield sched_yield()  # it blocks in sendall: the buffers are full
        acct = Accounting()
        current_kernel().add_instrument(acct)
        yield sched_yield()  # (this step's traps still go through the table it began with)
        total = 0
        while total < size + 5:
            total += len((yield recv(b, 1 << 20)))
        yield join(p)
        seen["producer"], seen["main"] = acct.stats(p.tid), acct.stats(1)

    with a, b:
        with kernel.Kernel(clock=kernel.VirtualClock()) as k:
            k.run(main)
    # Only what it did from then on: the send. (Where the sendall began is unknown.)
    assert (seen["producer"].bytes_written, seen["producer"].traps) == (5, {"Send": 1})
    assert seen["main"].bytes_read == size + 5


def _both(*targets):
    tasks = []
    for target in targets:
        tasks.append((yield spawn(target)))
    for task in tasks:
        yield join(task)


def test_bytes_of_datagrams_and_sendfile(tmp_path):
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a, b = socket.socketpair()
    path = tmp_path / "data"
    path.write_bytes(b"f" * 300)

    def main():
        to = u2.getsockname()
        assert (yield sendto(u1, b"abc", to)) == 3
        assert (yield sendto(u1, b"defgh", to)) == 5
        data, _ = yield recvfrom(u2, 100)
        buf = bytearray(100)
        n, _ = yield recvfrom_into(u2, buf)
        assert (data, n) == (b"abc", 5)
        with open(path, "rb") as f:
            assert (yield sendfile(a, f)) == 300
        got = b""
        while len(got) < 300:
            got += yield recv(b, 1000)

    with u1, u2, a, b:
        u1.bind(("127.0.0.1", 0))
        u2.bind(("127.0.0.1", 0))
        acct = run_accounted(main)
    (stats,) = acct.all()
    assert (stats.bytes_written, stats.bytes_read) == (3 + 5 + 300, 3 + 5 + 300)
    assert stats.traps["SendTo"] == 2 and stats.traps["SendFile"] == 1


# ── The top-like table ───────────────────────────────────────────────────


def _table_program(clock):
    def cruncher():
        clock.advance(2.0)
        yield sleep(1)

    def sleeper():
        yield sleep(4)

    def main():
        c = yield spawn(cruncher)
        s = yield spawn(sleeper)
        clock.advance(0.5)
        yield join(c)
        yield join(s)

    return main


TABLE = [
    "TID  NAME             STATE   RUNS       CPU     READY    BLOCKED  TRAPS  READ  WRITTEN",
    "  2  cruncher         exited     2  2.000000  0.500000   1.000000      1     0        0",
    "  1  main             exited     3  0.500000  0.000000   6.000000      4     0        0",
    "  3  sleeper          exited     2  0.000000  2.500000   4.000000      1     0        0",
    "     total (3 tasks)             7  2.500000  3.000000  11.000000      6     0        0",
]


def test_table_sorted_by_cpu():
    clock = kernel.VirtualClock()
    acct = run_accounted(_table_program(clock), clock=clock)
    assert acct.table().splitlines() == TABLE


def test_table_sort_keys_and_limit():
    clock = kernel.VirtualClock()
    acct = run_accounted(_table_program(clock), clock=clock)
    assert acct.table(sort="tid").splitlines() == [TABLE[0], TABLE[2], TABLE[1], *TABLE[3:]]
    assert acct.table(sort="ready", limit=1).splitlines() == [TABLE[0], TABLE[3], TABLE[4]]
    assert acct.table(sort="runs", limit=1).splitlines()[1] == TABLE[2]
    assert acct.table(sort="traps", limit=1).splitlines()[1] == TABLE[2]
    assert acct.table(sort="blocked", limit=2).splitlines()[1:3] == [TABLE[2], TABLE[3]]
    for key in ("read", "written"):  # all zero: ties in tid order
        assert acct.table(sort=key).splitlines()[1:4] == [TABLE[2], TABLE[1], TABLE[3]]
    with pytest.raises(ValueError, match="sort must be one of tid, runs, cpu"):
        acct.table(sort="memory")


def test_summary_at_exit_comes_after_the_last_step():
    clock = kernel.VirtualClock()
    out = io.StringIO()

    def main():
        yield sleep(1)
        clock.advance(0.125)  # the last step's CPU is in the summary

    acct = run_accounted(main, clock=clock, summary_at_exit=True, file=out)
    assert out.getvalue() == acct.table() + "\n"
    assert out.getvalue().splitlines()[1].split() == [
        "1", "main", "exited", "2", "0.125000", "0.000000", "1.000000", "1", "0", "0"
    ]  # fmt: skip


def test_summary_at_exit_goes_to_stderr_and_waits_for_every_task(capsys):
    def child():
        yield sleep(5)

    def main():
        yield spawn(child)
        yield sched_yield()

    acct = run_accounted(main, summary_at_exit=True)
    err = capsys.readouterr().err
    assert err == acct.table() + "\n"
    assert "total (2 tasks)" in err  # printed once the killed child had exited too


def test_summary_when_the_kernel_closes_the_last_task(caplog):
    def stubborn():
        try:
            yield wait_on("never")
        finally:
            yield wait_on("never again")  # cleanup that cannot finish

    def main():
        yield spawn(stubborn)
        yield sched_yield()

    out = io.StringIO()
    acct = run_accounted(main, summary_at_exit=True, file=out)
    assert "cannot finish its cleanup" in caplog.text
    assert out.getvalue() == acct.table() + "\n"
    assert [s.state for s in acct.all()] == [EXITED, EXITED]


def test_no_summary_unless_asked(capsys):
    run_accounted(_table_program(kernel.VirtualClock()))
    assert capsys.readouterr() == ("", "")


# ── The long-step watchdog ───────────────────────────────────────────────


def line_of(fn, marker):
    lines, start = inspect.getsourcelines(fn)
    (hit,) = [start + i for i, line in enumerate(lines) if f"# @{marker}" in line]
    return hit


def warnings_of(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "yieldos" and r.levelno == logging.WARNING
    ]


HERE = os.path.basename(__file__)


def test_a_slow_step_is_reported_with_the_lines_it_ran_between(caplog):
    clock = kernel.VirtualClock()

    def crunch():
        yield sched_yield()  # @start
        clock.advance(0.5)
        yield sched_yield()  # @end
        clock.advance(0.1)  # at the threshold: not reported
        yield sched_yield()

    with kernel.Kernel(clock=clock) as k:
        detector = warn_slow_steps(k, 0.1)
        assert k.instruments == (detector,) and detector.threshold == 0.1
        k.run(crunch)
    start, end = line_of(crunch, "start"), line_of(crunch, "end")
    assert warnings_of(caplog) == [
        f"task 'crunch' (tid 1) ran 0.500 s without yielding, from {HERE}:{start} to {HERE}:{end}"
    ]
    assert detector.slow_steps == 1


def test_slow_steps_through_yield_from_await_and_to_the_exit(caplog):
    clock = kernel.VirtualClock()

    def inner():
        yield sched_yield()  # @inner-start
        clock.advance(1.0)
        yield sched_yield()  # @inner-end

    def outer():
        yield from inner()

    async def finisher():
        await sleep(1)  # @finisher
        clock.advance(0.25)  # then it returns

    def main():
        yield spawn(outer)
        yield spawn(finisher)
        yield sleep(2)

    with kernel.Kernel(clock=clock) as k:
        k.add_instrument(SlowStepDetector(threshold=0.2))
        k.run(main)
    assert warnings_of(caplog) == [
        f"task 'outer' (tid 2) ran 1.000 s without yielding,"
        f" from {HERE}:{line_of(inner, 'inner-start')} to {HERE}:{line_of(inner, 'inner-end')}",
        f"task 'finisher' (tid 3) ran 0.250 s without yielding,"
        f" from {HERE}:{line_of(finisher, 'finisher')} to its exit",
    ]


def test_the_first_step_starts_at_the_def_line_and_a_custom_logger(caplog):
    clock = kernel.VirtualClock()
    logger = logging.getLogger("test.watchdog")

    def eager():  # @def
        clock.advance(3)
        yield sched_yield()  # @first

    with kernel.Kernel(clock=clock) as k:
        k.add_instrument(SlowStepDetector(1.0, logger=logger))
        k.run(eager)
    assert warnings_of(caplog) == []
    (record,) = [r for r in caplog.records if r.name == "test.watchdog"]
    assert record.getMessage() == (
        f"task 'eager' (tid 1) ran 3.000 s without yielding,"
        f" from {HERE}:{line_of(eager, 'def')} to {HERE}:{line_of(eager, 'first')}"
    )


@pytest.mark.parametrize("bad", [-1, math.nan])
def test_threshold_must_be_a_non_negative_number(bad):
    with pytest.raises(ValueError, match="threshold must be a non-negative number"):
        SlowStepDetector(bad)
