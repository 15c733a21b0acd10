"""strace for tasks (kernel/strace.py): the exact lines and table of a small program.

The program runs under a VirtualClock, so every duration is exact and the
whole output can be asserted line by line; fd numbers differ from process to
process, so the program records its own and the expected text is filled in.
"""

from __future__ import annotations

import io
import os
import runpy
import socket
import subprocess
import sys

import pytest

import kernel
from kernel.instrument import _SHADOWED
from kernel.strace import Strace, call_args, format_call, format_outcome, short, trap_name
from kernel.syscall import TRAP_TABLE
from kernel.traps import Operation, RecvInto, SendAll, SendFile, Shutdown, Spawn
from syscalls import WOULD_BLOCK, join, kill, operation, shield, sleep, spawn, wait_on, wakeup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """\
import socket
import kernel
from syscalls import Lock, close, join, kill, recv, sched_yield, send, sleep, spawn

FDS = []

def worker(n):
    yield sleep(0.5)
    return n * 2

def bad():
    yield sleep(0.25)
    raise ValueError("boom")

def sleeper():
    yield sleep(10)

def holder(lock):
    yield lock.acquire()
    try:
        yield sleep(0.125)
    finally:
        lock.release()

def reader(sock):
    yield recv(sock, 10)

def main():
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    FDS.extend([a.fileno(), b.fileno(), c.fileno()])
    lock = Lock()
    with a, b, d:
        t = yield spawn(worker, 21)
        u = yield spawn(bad, name="bad")
        s = yield spawn(sleeper)
        h = yield spawn(holder, lock)
        yield send(a, b"hello" * 10)
        yield recv(b, 100)
        yield sched_yield()
        yield lock.acquire()
        lock.release()
        try:
            yield join(u)
        except ValueError:
            pass
        r = yield t  # yielding a task joins it: traced as join(...)
        yield kill(s)
        yield h
        rd = yield spawn(reader, c)
        yield sched_yield()
        yield close(c)
        try:
            yield join(rd)
        except OSError:
            pass
    return r

if __name__ == "__main__":
    kernel.run(main)
    print(*FDS)
"""

EXPECTED = """\
[tid 1 main] spawn(worker, 21) = <tid 2 worker> <0.000000>
[tid 1 main] spawn(bad, name='bad') = <tid 3 bad> <0.000000>
[tid 1 main] spawn(sleeper) = <tid 4 sleeper> <0.000000>
[tid 1 main] spawn(holder, <Lock unlocked>) = <tid 5 holder> <0.000000>
[tid 1 main] send(fd={a}, b"hellohellohellohellohellohellohe"...) = 50 <0.000000>
[tid 1 main] recv(fd={b}, 100) = b"hellohellohellohellohellohellohe"... <0.000000>
[tid 1 main] sched_yield() <unfinished ...>
[tid 2 worker] sleep(0.5) <unfinished ...>
[tid 3 bad] sleep(0.25) <unfinished ...>
[tid 4 sleeper] sleep(10.0) <unfinished ...>
[tid 5 holder] Lock.acquire() = True <0.000000>
[tid 5 holder] sleep(0.125) <unfinished ...>
[tid 1 main] <... sched_yield resumed> = None <0.000000>
[tid 1 main] Lock.acquire() = <subroutine>
[tid 1 main]   wait_on(<waiting to acquire <Lock locked by tid 5 'holde...>) <unfinished ...>
[tid 5 holder] <... sleep resumed> = None <0.125000>
[tid 1 main]   <... wait_on resumed> = True <0.125000>
[tid 5 holder] +++ exited with None +++
[tid 1 main] join(<tid 3 bad>) <unfinished ...>
[tid 3 bad] <... sleep resumed> = None <0.250000>
[tid 3 bad] +++ raised ValueError: boom +++
[tid 1 main] <... join resumed> = -1 ValueError: boom <0.125000>
[tid 1 main] join(<tid 2 worker>) <unfinished ...>
[tid 2 worker] <... sleep resumed> = None <0.500000>
[tid 2 worker] +++ exited with 42 +++
[tid 1 main] <... join resumed> = 42 <0.250000>
[tid 1 main] kill(<tid 4 sleeper>) <unfinished ...>
[tid 4 sleeper] <... sleep resumed> = ? <Cancelled> <0.500000>
[tid 4 sleeper] +++ killed by Cancelled +++
[tid 1 main] <... kill resumed> = None <0.000000>
[tid 1 main] join(<tid 5 holder>) = None <0.000000>
[tid 1 main] spawn(reader, fd={c}) = <tid 6 reader> <0.000000>
[tid 6 reader] recv(fd={c}, 10) <unfinished ...>
[tid 1 main] sched_yield() = None <0.000000>
[tid 1 main] close(fd={c}) <unfinished ...>
[tid 6 reader] <... recv resumed> = -1 OSError: [Errno 9] fd {c} was closed while waited on \
<0.000000>
[tid 1 main] <... close resumed> = None <0.000000>
[tid 1 main] join(<tid 6 reader>) <unfinished ...>
[tid 6 reader] +++ raised OSError: [Errno 9] fd {c} was closed while waited on +++
[tid 1 main] <... join resumed> = -1 OSError: [Errno 9] fd {c} was closed while waited on \
<0.000000>
[tid 1 main] +++ exited with 42 +++
"""

# sleep: 0.5 (worker) + 0.25 (bad) + 0.5 (sleeper, killed) + 0.125 (holder);
# join: 0.125 (bad, raised) + 0.25 (worker) + 0 (holder) + 0 (reader, raised); wait_on: 0.125.
# Lock.acquire: 2 (an operation with a fast path, counted as a call like the others).
TABLE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 73.33    1.375000      343750         4         1 sleep
 20.00    0.375000       93750         4         2 join
  6.67    0.125000      125000         1           wait_on
  0.00    0.000000           0         5           spawn
  0.00    0.000000           0         2           Lock.acquire
  0.00    0.000000           0         2         1 recv
  0.00    0.000000           0         2           sched_yield
  0.00    0.000000           0         1           close
  0.00    0.000000           0         1           kill
  0.00    0.000000           0         1           send
------ ----------- ----------- --------- --------- ----------------
100.00    1.875000       81522        23         4 total
"""


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(PROGRAM)
    return str(path)


def run_traced(program: str, **options) -> tuple[str, list[int], object]:
    """Run PROGRAM's main under a VirtualClock with a Strace; its output, fds and result."""
    namespace = runpy.run_path(program, run_name="prog")
    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.add_instrument(Strace(out, **options))
        result = k.run(namespace["main"])
    return out.getvalue(), namespace["FDS"], result


def expected(fds) -> str:
    a, b, c = fds
    return EXPECTED.format(a=a, b=b, c=c)


def test_lines_exact(program):
    out, fds, result = run_traced(program)
    assert result == 42
    assert out == expected(fds)


def test_lines_exact_from_the_command_line(program):
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "kernel", "strace", "--clock", "virtual", program],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    fds = [int(fd) for fd in proc.stdout.split()]
    assert proc.stderr == expected(fds)


def test_summary_table_exact(program):
    out, _, _ = run_traced(program, summary=True)
    assert out == TABLE


def test_summary_is_printed_at_the_end_of_each_run():
    def main():
        yield sleep(0.5)

    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        strace = Strace(out, summary=True)
        k.add_instrument(strace)
        k.run(main)
        first = out.getvalue()
        assert first.endswith("100.00    0.500000      500000         1           total\n")
        k.run(main)  # counted afresh: not 2 calls
    assert out.getvalue() == first * 2
    assert strace.stats == {}


def test_summary_of_no_calls_divides_by_nothing():
    def main():
        return 1
        yield

    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.add_instrument(Strace(out, summary=True))
        k.run(main)
    total = out.getvalue().splitlines()[-1]
    assert total == "  0.00    0.000000           0         0           total"


def test_only_filters_lines_and_table(program):
    out, fds, _ = run_traced(program, only={"join", "kill"})
    calls = [line for line in out.splitlines() if "+++" not in line]
    assert calls == [
        "[tid 1 main] join(<tid 3 bad>) <unfinished ...>",
        "[tid 1 main] <... join resumed> = -1 ValueError: boom <0.125000>",
        "[tid 1 main] join(<tid 2 worker>) <unfinished ...>",
        "[tid 1 main] <... join resumed> = 42 <0.250000>",
        "[tid 1 main] kill(<tid 4 sleeper>) <unfinished ...>",
        "[tid 1 main] <... kill resumed> = None <0.000000>",
        "[tid 1 main] join(<tid 5 holder>) = None <0.000000>",
        "[tid 1 main] join(<tid 6 reader>) <unfinished ...>",
        f"[tid 1 main] <... join resumed> = -1 OSError: [Errno 9] fd {fds[2]} was closed while"
        " waited on <0.000000>",
    ]
    # The exits are shown whatever -e says, as strace shows them.
    assert sum("+++" in line for line in out.splitlines()) == 6
    table, _, _ = run_traced(program, summary=True, only={"sleep"})
    assert [line.split()[-1] for line in table.splitlines()[2:]] == [
        "sleep",
        "----------------",
        "total",
    ]


def test_only_names_a_subroutine(program):
    out, _, _ = run_traced(program, only={"Lock.acquire"})
    assert [line for line in out.splitlines() if "+++" not in line] == [
        "[tid 5 holder] Lock.acquire() = True <0.000000>",  # the fast path: a free lock
        "[tid 1 main] Lock.acquire() = <subroutine>",
    ]


def test_only_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown trap name.*: recieve .*known: accept"):
        Strace(only={"recieve", "recv"})
    Strace(only={"Queue.get", "wait_on"})  # subroutine names cannot be checked: accepted


def test_a_task_closed_inside_a_trap_is_reported_unfinished(caplog):
    # Its cleanup waits for ever during shutdown, so the kernel closes it: no result comes.
    def stubborn():
        try:
            yield sleep(100)
        finally:
            yield wait_on("never")

    def main():
        yield spawn(stubborn)
        yield sleep(1)

    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.add_instrument(Strace(out))
        k.run(main)
    assert out.getvalue().splitlines()[-4:] == [
        "[tid 1 main] +++ exited with None +++",  # first: its exit cancels the others
        "[tid 2 stubborn] <... sleep resumed> = ? <Cancelled> <1.000000>",
        "[tid 2 stubborn] wait_on('never') = ? <task closed>",
        "[tid 2 stubborn] +++ killed by Cancelled +++",
    ]
    assert "cannot finish its cleanup" in caplog.text


class Gate:
    """An operation with a fast path (kernel/traps.py TryOperation) to trace."""

    def __init__(self):
        self.open = False

    def __repr__(self):
        return "<Gate>"

    def _pass_now(self, who):
        return f"{who} passed" if self.open else WOULD_BLOCK

    @operation(attempt=_pass_now)
    def enter(self, who):
        while not self.open:
            yield wait_on(self)
        return f"{who} waited"

    @operation(attempt=_pass_now)
    def enter_quietly(self, who):  # its subroutine ends without a trap of its own
        return "let in"
        yield


def trace_lines(main, **options) -> list[str]:
    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.add_instrument(Strace(out, **options))
        k.run(main)
    return out.getvalue().splitlines()


def test_a_fast_path_shows_as_one_call_and_a_slow_one_as_a_subroutine():
    def late(gate):
        yield gate.enter("late")

    def main():
        gate = Gate()
        t = yield spawn(late, gate)
        yield sleep(1)
        gate.open = True
        yield gate.enter("main")
        wakeup(gate)
        yield join(t)
        gate.open = False
        yield gate.enter_quietly("main")

    assert trace_lines(main) == [
        "[tid 1 main] spawn(late, <Gate>) = <tid 2 late> <0.000000>",
        "[tid 1 main] sleep(1.0) <unfinished ...>",
        "[tid 2 late] Gate.enter('late') = <subroutine>",  # the attempt said WOULD_BLOCK
        "[tid 2 late]   wait_on(<Gate>) <unfinished ...>",
        "[tid 1 main] <... sleep resumed> = None <1.000000>",
        "[tid 1 main] Gate.enter('main') = 'main passed' <0.000000>",  # the fast path
        "[tid 2 late]   <... wait_on resumed> = None <1.000000>",
        "[tid 1 main] join(<tid 2 late>) <unfinished ...>",
        "[tid 2 late] +++ exited with None +++",
        "[tid 1 main] <... join resumed> = None <0.000000>",
        "[tid 1 main] Gate.enter_quietly('main') = <subroutine>",
        "[tid 1 main] +++ exited with None +++",
    ]
    assert trace_lines(main, summary=True)[4:6] == [
        "  0.00    0.000000           0         2           Gate.enter",
        "  0.00    0.000000           0         1           Gate.enter_quietly",
    ]


def test_only_filters_fast_path_operations_by_their_subroutine_name():
    def main():
        gate = Gate()
        gate.open = True
        yield gate.enter("main")
        yield gate.enter_quietly("main")

    assert trace_lines(main, only={"Gate.enter"}) == [
        "[tid 1 main] Gate.enter('main') = 'main passed' <0.000000>",
        "[tid 1 main] +++ exited with None +++",
    ]


def test_a_task_that_ends_in_a_fast_path_operations_subroutine():
    def main():
        yield Gate().enter_quietly("main")

    assert trace_lines(main) == [
        "[tid 1 main] Gate.enter_quietly('main') = <subroutine>",
        "[tid 1 main] +++ exited with None +++",
    ]


def test_join_of_a_long_dead_task_does_not_report_its_exit_again():
    def quick():
        return 7
        yield

    def main():
        t = yield spawn(quick)
        yield sleep(1)
        assert (yield join(t)) == 7
        yield kill(t)

    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.add_instrument(Strace(out))
        k.run(main)
    assert out.getvalue().splitlines()[1:] == [
        "[tid 1 main] sleep(1.0) <unfinished ...>",
        "[tid 2 quick] +++ exited with 7 +++",
        "[tid 1 main] <... sleep resumed> = None <1.000000>",
        "[tid 1 main] join(<tid 2 quick>) = 7 <0.000000>",
        "[tid 1 main] kill(<tid 2 quick>) = None <0.000000>",
        "[tid 1 main] +++ exited with None +++",
    ]


def test_exits_are_reported_once_however_many_wait_for_them():
    def quick():
        yield sleep(1)
        return 7

    def waiter(t):
        return (yield join(t))

    def stubborn():
        with shield():
            yield sleep(5)  # still blocked when main exits: its result comes after

    def main():
        t = yield spawn(quick)
        yield spawn(waiter, t)
        yield spawn(stubborn)
        assert (yield join(t)) == 7

    out = io.StringIO()
    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.add_instrument(Strace(out))
        k.run(main)
    lines = out.getvalue().splitlines()
    assert sum("tid 2 quick] +++" in line for line in lines) == 1, lines
    assert sum("tid 1 main] +++" in line for line in lines) == 1, lines
    assert lines[-2:] == [
        "[tid 4 stubborn] <... sleep resumed> = None <5.000000>",
        "[tid 4 stubborn] +++ exited with None +++",  # (no trap after the shield)
    ]


def test_default_file_is_stderr_and_a_trap_made_before_install_is_skipped(capsys):
    def main(k):
        # Install from inside a task: this very sleep entered before the hooks existed.
        k.add_instrument(Strace())
        yield sleep(0.5)
        yield sleep(0.25)

    with kernel.Kernel(clock=kernel.VirtualClock()) as k:
        k.run(main, k)
    assert capsys.readouterr().err == (
        "[tid 1 main] sleep(0.25) = None <0.250000>\n[tid 1 main] +++ exited with None +++\n"
    )


# ── Names and short representations ─────────────────────────────────────


def test_trap_names_are_spelled_as_users_write_them():
    names = {trap_name(cls) for cls in TRAP_TABLE if cls is not kernel.Task}  # (it is a join)
    expected_names = {
        "spawn", "join", "kill", "gettid", "sched_yield", "sleep", "wait_on", "operation",
        "read", "write", "wait_readable", "wait_writable", "recv", "send", "sendall",
        "recv_into", "recvfrom", "recvfrom_into", "sendto", "shutdown", "sendfile", "close",
        "accept", "connect",
    }  # fmt: skip
    assert expected_names <= names
    import syscalls

    for name in names - {"operation"}:  # each is the name of the function that makes it
        assert callable(getattr(syscalls, name)), name


def test_short_representations():
    assert short(b"abc") == 'b"abc"'
    assert short(bytes(range(30, 70))) == ('b"\\x1e\\x1f !\\"#$%&\'()*+,-./0123456789:;<="...')
    assert short(bytearray(b'a\\b\n\r\t"')) == 'b"a\\\\b\\n\\r\\t\\""'
    assert short(memoryview(b"xy")) == 'b"xy"'
    assert short("x" * 40) == repr("x" * 32) + "..."
    assert short("hi") == "'hi'"
    assert short((1,)) == "(1,)"
    assert short((1, 2, 3, 4, 5)) == "(1, 2, 3, 4, ...)"
    assert short([1]) == "[1]"
    assert short(True) == "True" and short(None) == "None" and short(2.5) == "2.5"

    def outer():
        def inner():
            yield

        return inner

    assert short(outer()) == "inner"
    assert short(outer()()) == "<inner()>"
    assert short(len) == "len" and short(dict) == "dict"

    class Thing:
        pass

    assert short(Thing()).startswith("<") and "0x" not in short(Thing())
    long = type("Long", (), {"__repr__": lambda self: "<" + "y" * 100 + ">"})()
    assert short(long) == "<" + "y" * 47 + "...>"
    plain = type("Plain", (), {"__repr__": lambda self: "z" * 100})()
    assert short(plain) == "z" * 48 + "..."


def test_call_arguments():
    a, b = socket.socketpair()
    with a, b:
        fa = a.fileno()
        assert call_args(Spawn(len, 1, name="n", priority=3, tickets=7)) == [
            "len",
            "1",
            "name='n'",
            "priority=3",
            "tickets=7",
        ]
        assert call_args(SendAll(a, bytearray(b"x" * 40))) == [f"fd={fa}", 'b"' + "x" * 32 + '"...']
        assert call_args(RecvInto(a, bytearray(16))) == [f"fd={fa}", "<bytearray[16]>", "16"]
        assert call_args(Shutdown(a, socket.SHUT_WR)) == [f"fd={fa}", "SHUT_WR"]
        assert call_args(Shutdown(a, 99)) == [f"fd={fa}", "99"]
        with open(__file__, "rb") as f:
            assert call_args(SendFile(a, f, 5, 10)) == [
                f"fd={fa}",
                f"in_fd={f.fileno()}",
                "5",
                "10",
            ]
        assert short(a) == f"fd={fa}"
    assert format_call(sleep(1)) == "sleep(1.0)"

    def subroutine(x, *, y):
        yield sleep(x + y)

    op = Operation(subroutine(1, y=b"2"))
    assert format_call(op) == 'subroutine(1, b"2")'
    op.gen.close()  # its frame is gone: the arguments cannot be read any more
    assert format_call(op) == "subroutine(...)"

    fast = operation(attempt=lambda x, y: WOULD_BLOCK)(subroutine)
    assert format_call(fast(1, b"2")) == 'subroutine(1, b"2")'  # no frame: from the trap
    assert format_call(Gate().enter("me")) == "Gate.enter('me')"  # without self


def test_outcomes():
    assert format_outcome(5, None) == "5"
    assert format_outcome(None, ConnectionResetError(104, "Connection reset by peer")) == (
        "-1 ConnectionResetError: [Errno 104] Connection reset by peer"
    )
    assert format_outcome(None, kernel.Cancelled()) == "? <Cancelled>"
    assert format_outcome(None, KeyboardInterrupt()) == "? <KeyboardInterrupt>"
    assert format_outcome(None, RuntimeError()) == "-1 RuntimeError"
    long = format_outcome(None, kernel.Deadlock("x" * 60 + "\nmore lines"))
    assert long == "-1 Deadlock: " + "x" * 48 + "..."


# ── Free when not installed ──────────────────────────────────────────────


def test_a_kernel_without_instruments_has_no_shadows():
    with kernel.Kernel() as k:
        assert not set(_SHADOWED) & set(vars(k))
        assert k._step.__func__ is kernel.Kernel._step  # the class's own method
        strace = Strace(io.StringIO())
        k.add_instrument(strace)
        assert set(_SHADOWED) <= set(vars(k))
        assert strace.kernel is k and k.instruments == (strace,)
        k.remove_instrument(strace)
        assert not set(_SHADOWED) & set(vars(k))
        assert k.instruments == ()
