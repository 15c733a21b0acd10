"""Child processes (syscalls/processes.py): spawn_process, Process, PipeStream, run_process.

Every test also checks that it leaves no child process behind, running or
zombie (`no_children`, autouse): a child of ours that still shows in /proc
after the test was not reaped. The core I/O tests run on every poller
backend; "both task styles" runs the same generator body inside an
``async def`` task that awaits each trap (`as_async`).

Children are small programs (sh, cat, sleep, python3); the CPython
``python3`` is used even under PyPy, since it starts faster.
"""

from __future__ import annotations

import array
import errno
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest

import kernel
from conftest import run
from syscalls import gather, join, kill, sleep, spawn, timeout
from syscalls.processes import (
    DEVNULL,
    PIPE,
    STDOUT,
    PipeStream,
    Process,
    run_process,
    spawn_process,
)

PY = shutil.which("python3") or sys.executable
EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "pipeline.py"
)
STYLES = ["gen", "async"]
HAS_PIDFD = hasattr(os, "pidfd_open")

# 5 MiB of a known pattern: far more than a 64 KiB pipe buffer.
BIG = 5 << 20
BIG_SCRIPT = f"import sys; sys.stdout.buffer.write(bytes(range(256)) * ({BIG} // 256))"
BIG_SHA = hashlib.sha256(bytes(range(256)) * (BIG // 256)).hexdigest()


def children() -> set[int]:
    """Pids of our child processes, in any state (zombies included), from /proc."""
    me, found = os.getpid(), set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])  # the field after the state
        if ppid == me:
            found.add(int(name))
    return found


@pytest.fixture(autouse=True)
def no_children():
    before = children()
    yield
    left = children() - before
    assert not left, f"test left child processes (running or unreaped): {sorted(left)}"


async def as_async(gen):
    """Run the generator task ``gen`` as an async def task, awaiting each trap it yields."""
    value, exc = None, None
    while True:
        try:
            trap = gen.send(value) if exc is None else gen.throw(exc)
        except StopIteration as stop:
            return stop.value
        try:
            value, exc = await trap, None
        except BaseException as error:
            value, exc = None, error


def run_style(style, body, *args, poller="auto"):
    if style == "gen":
        return run(body, *args, poller=poller)
    return run(as_async, body(*args), poller=poller)


def gone(pid: int) -> bool:
    """True if ``pid`` is no child of ours any more: reaped (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


# ---------------------------------------------------------------------------
# pipes: through cat, large outputs, both directions at once


@pytest.mark.parametrize("style", STYLES)
def test_cat_echoes_stdin_to_stdout(poller, style):
    data = os.urandom(1 << 20)  # 1 MiB each way: feeding and reading must overlap

    def main():
        result = yield run_process(["cat"], input=data, capture_output=True)
        return result

    result = run_style(style, main, poller=poller)
    assert isinstance(result, subprocess.CompletedProcess)
    assert (result.args, result.returncode, result.stderr) == (["cat"], 0, b"")
    assert result.stdout == data


def test_large_stdout_read_all(poller):
    def main():
        proc = yield spawn_process([PY, "-c", BIG_SCRIPT], stdout=PIPE)
        try:
            assert proc.stdin is None and proc.stderr is None
            data = yield proc.stdout.read_all()
            rc = yield proc.wait()
        finally:
            yield proc.aclose()
        return len(data), hashlib.sha256(data).hexdigest(), rc

    assert run(main, poller=poller) == (BIG, BIG_SHA, 0)


def test_large_stdout_and_stderr_run_process(poller):
    # The child fills stderr first, then stdout: reading only stdout would deadlock.
    script = (
        "import sys; sys.stderr.buffer.write(b'e' * 1000000); sys.stderr.flush();"
        f" exec({BIG_SCRIPT!r})"
    )

    def main():
        return (yield run_process([PY, "-c", script], capture_output=True))

    result = run(main, poller=poller)
    assert result.returncode == 0
    assert result.stderr == b"e" * 1000000
    assert hashlib.sha256(result.stdout).hexdigest() == BIG_SHA


def test_pipe_streams_by_hand():
    """Writer and reader in two tasks; one process's stdout is the next one's stdin."""
    lines = b"".join(b"line %d\n" % i for i in range(20000))

    def writer(stream):
        yield stream.write_all(lines)
        stream.close()

    def main():
        first = yield spawn_process(["cat"], stdin=PIPE, stdout=PIPE)
        second = yield spawn_process(["tr", "a-z", "A-Z"], stdin=first.stdout, stdout=PIPE)
        first.stdout.close()  # the second child holds it now
        try:
            w = yield spawn(writer, first.stdin)
            got = yield second.stdout.read_all()
            yield kill(w)
            codes = (yield first.wait()), (yield second.wait())
        finally:
            yield first.aclose()
            yield second.aclose()
        return got, codes

    got, codes = run(main)
    assert got == lines.upper()
    assert codes == (0, 0)


def test_read_in_pieces_and_eof():
    def main():
        proc = yield spawn_process(["printf", "abcdef"], stdout=PIPE)
        try:
            parts = []
            while True:
                data = yield proc.stdout.read(2)
                if not data:
                    break
                parts.append(data)
            return parts, (yield proc.wait()), repr(proc)
        finally:
            yield proc.aclose()

    parts, rc, text = run(main)
    assert b"".join(parts) == b"abcdef" and all(len(p) <= 2 for p in parts)
    assert rc == 0
    assert "returncode=0" in text and "printf" in text


def test_stderr_to_stdout_devnull_and_inherit():
    def main():
        merged = yield run_process("echo out; echo err >&2", shell=True, stdout=PIPE, stderr=STDOUT)
        quiet = yield run_process(["sh", "-c", "echo lost"], stdout=DEVNULL, stderr=PIPE)
        inherited = yield run_process(["true"])  # nothing piped: stdout and stderr are None
        return merged, quiet, inherited

    merged, quiet, inherited = run(main)
    assert sorted(merged.stdout.split()) == [b"err", b"out"] and merged.stderr is None
    assert quiet.stdout is None and quiet.stderr == b""
    assert (inherited.returncode, inherited.stdout, inherited.stderr) == (0, None, None)


def test_write_to_exited_child_is_broken_pipe():
    def main():
        proc = yield spawn_process(["true"], stdin=PIPE)
        try:
            yield proc.wait()
            with pytest.raises(BrokenPipeError):
                yield proc.stdin.write_all(b"x" * 200000)
        finally:
            yield proc.aclose()
        # run_process ignores it, as communicate() does: the child did not want the input.
        return (yield run_process(["true"], input=b"x" * 200000)).returncode

    assert run(main) == 0


def test_pipestream_repr_and_close_twice():
    def main():
        proc = yield spawn_process(["true"], stdout=PIPE)
        stream = proc.stdout
        assert isinstance(stream, PipeStream)
        assert f"fd={stream.fileno()}" in repr(stream)
        yield proc.aclose()
        stream.close()
        assert stream.closed and "closed" in repr(stream)

    run(main)


# ---------------------------------------------------------------------------
# several at once


def test_processes_run_concurrently():
    n = 6

    def one(i):
        result = yield run_process(["sh", "-c", f"sleep 0.2; echo {i}"], stdout=PIPE)
        return int(result.stdout)

    def main():
        return (yield gather(*[partial(one, i) for i in range(n)]))

    start = time.monotonic()
    assert run(main) == list(range(n))
    elapsed = time.monotonic() - start
    assert elapsed < 0.2 * n * 2 / 3  # together: one after the other takes 1.2 s


# ---------------------------------------------------------------------------
# exit statuses, signals, check


def test_exit_codes_signals_and_check():
    def signalled(how):
        proc = yield spawn_process(["sleep", "10"])
        try:
            how(proc)
            return (yield proc.wait())
        finally:
            yield proc.aclose()

    def main():
        codes = [(yield run_process(["sh", "-c", "exit 3"])).returncode]
        codes.append((yield from signalled(Process.terminate)))
        codes.append((yield from signalled(Process.kill)))
        codes.append((yield from signalled(lambda p: p.send_signal(signal.SIGINT))))
        with pytest.raises(subprocess.CalledProcessError) as info:
            yield run_process(["sh", "-c", "echo oops; exit 5"], stdout=PIPE, check=True)
        ok = yield run_process(["true"], check=True)
        return codes, info.value, ok

    codes, error, ok = run(main)
    assert codes == [3, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT]
    assert (error.returncode, error.output, error.cmd) == (
        5,
        b"oops\n",
        ["sh", "-c", "echo oops; exit 5"],
    )
    assert ok.returncode == 0


def test_signal_after_reap_does_nothing():
    def main():
        proc = yield spawn_process(["true"])
        try:
            assert (yield proc.wait()) == 0
            assert (yield proc.wait()) == 0  # waiting again answers at once
            proc.kill()  # reaped: the pid may be somebody else's now; must not be signalled
            proc.terminate()
            return proc.returncode, proc.poll()
        finally:
            yield proc.aclose()

    assert run(main) == (0, 0)


def test_spawn_errors():
    def main():
        with pytest.raises(FileNotFoundError):
            yield spawn_process(["/nonexistent/program"], stdout=PIPE)
        with pytest.raises(FileNotFoundError):
            yield run_process(["/nonexistent/program"], capture_output=True)
        with pytest.raises(ValueError):
            yield run_process(["cat"], input=b"x", stdin=DEVNULL)
        with pytest.raises(ValueError):
            yield run_process(["cat"], capture_output=True, stdout=PIPE)
        proc = yield spawn_process(["true"])
        try:
            with pytest.raises(TypeError, match="aclose"):
                with proc:
                    pass
        finally:
            yield proc.aclose()

    run(main)


# ---------------------------------------------------------------------------
# timeouts and kills: the child never outlives run_process; wait() leaves it running


def test_run_process_timeout_kills_and_reaps(poller):
    def main():
        start = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired) as info:
            yield run_process(
                ["sh", "-c", "echo started; exec sleep 10"], capture_output=True, timeout=0.15
            )
        return info.value, time.monotonic() - start

    error, elapsed = run(main, poller=poller)
    assert 0.14 < elapsed < 2.0
    assert error.timeout == 0.15 and error.cmd[0] == "sh"
    assert error.output == b"started\n" and error.stderr == b""  # what was read before
    # no_children checks that the sleep was killed and reaped


def test_run_process_timeout_while_feeding_stdin():
    # The child never reads: the feeding task is blocked on a full pipe when time is up.
    def main():
        with pytest.raises(subprocess.TimeoutExpired):
            yield run_process(["sleep", "10"], input=b"x" * (1 << 20), timeout=0.1)

    run(main)


@pytest.mark.parametrize("style", STYLES)
def test_killing_run_process_reaps_the_child(style):
    def victim():
        yield run_process(["sh", "-c", "echo hi; exec sleep 10"], stdout=PIPE)

    def main():
        task = yield spawn(as_async(victim()) if style == "async" else victim())
        yield sleep(0.1)
        yield kill(task)  # returns once the task has exited: the child is reaped by then
        return task.exception

    assert isinstance(run(main), kernel.Cancelled)
    # no_children checks that the sleep was killed and reaped


@pytest.mark.parametrize("style", STYLES)
def test_killed_waiter_leaves_child_running_until_aclose(poller, style):
    def waiter(proc):
        yield proc.wait()

    def main():
        proc = yield spawn_process(["sleep", "10"])
        try:
            target = as_async(waiter(proc)) if style == "async" else waiter(proc)
            task = yield spawn(target)
            yield sleep(0.05)
            yield kill(task)
            assert isinstance(task.exception, kernel.Cancelled)
            running = proc.poll() is None and os.path.exists(f"/proc/{proc.pid}")
        finally:
            yield proc.aclose()
        return proc, running

    proc, running = run(main, poller=poller)
    assert running  # the kill was the task's: the child went on
    assert proc.returncode == -signal.SIGTERM
    assert gone(proc.pid)


def test_timeout_around_wait():
    def main():
        proc = yield spawn_process(["sleep", "10"])
        try:
            with pytest.raises(TimeoutError):
                with timeout(0.05):
                    yield proc.wait()
            return proc.poll()
        finally:
            yield proc.aclose(grace=0)

    assert run(main) is None


def stubborn():
    """Start a child that ignores SIGTERM (an ignored signal stays ignored across
    exec), once it does: it says so on its stdout."""
    proc = yield spawn_process(["sh", "-c", "trap '' TERM; echo ready; exec sleep 10"], stdout=PIPE)
    assert (yield proc.stdout.read(100)) == b"ready\n"
    return proc


def test_aclose_kills_a_child_that_ignores_sigterm():
    def main():
        proc = yield from stubborn()
        start = time.monotonic()
        yield proc.aclose(grace=0.1)
        elapsed = time.monotonic() - start
        yield proc.aclose()  # again: nothing to do
        return proc.returncode, elapsed

    rc, elapsed = run(main)
    assert rc == -signal.SIGKILL
    assert 0.09 < elapsed < 2.0


def test_aclose_is_shielded_from_a_kill():
    def closer(proc, done):
        yield proc.aclose(grace=0.1)
        done.append(proc.returncode)
        yield sleep(10)  # the first trap after aclose's shield: the kill lands here

    def main():
        proc = yield from stubborn()
        done = []
        task = yield spawn(closer, proc, done)
        yield sleep(0.02)
        yield kill(task)  # returns when the task has exited: after the shielded reap
        return done, task.exception

    done, exc = run(main)
    assert done == [-signal.SIGKILL]  # aclose ran to the end, SIGKILL after the grace
    assert isinstance(exc, kernel.Cancelled)


def test_aclose_reaps_synchronously_when_the_kernel_closes_it():
    """GeneratorExit (the kernel closing a task that may not yield any more) inside
    aclose: the child is killed and reaped without yielding."""

    def main():
        proc = yield from stubborn()
        gen = proc.aclose(grace=5).gen  # drive the operation by hand, as the kernel would
        trap = gen.send(None)  # sent SIGTERM; now waits for the exit
        assert proc.returncode is None, trap
        gen.close()  # what Kernel._close does
        return proc.returncode

    assert run(main) == -signal.SIGKILL


def test_async_with_closes_the_process():
    async def main():
        async with await spawn_process(["cat"], stdin=PIPE, stdout=PIPE) as proc:
            await proc.stdin.write_all(b"hello")
            proc.stdin.close()
            data = await proc.stdout.read_all()
            rc = await proc.wait()
        return data, rc, proc.stdout.closed

    assert run(main) == (b"hello", 0, True)


# ---------------------------------------------------------------------------
# how the exit is noticed: pidfd, or polling where there is none


@pytest.mark.skipif(not HAS_PIDFD, reason="this Python has no os.pidfd_open")
def test_wait_uses_a_pidfd(monkeypatch):
    opened = []
    real = os.pidfd_open

    def spy(pid, *flags):
        opened.append(pid)
        return real(pid, *flags)

    monkeypatch.setattr(os, "pidfd_open", spy)

    def main():
        proc = yield spawn_process(["sleep", "0.05"])
        try:
            return proc.pid, (yield proc.wait())
        finally:
            yield proc.aclose()

    pid, rc = run(main)
    assert (opened, rc) == ([pid], 0)


def _nosys(pid, *flags):
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


@pytest.mark.parametrize("how", ["missing", "enosys"])
@pytest.mark.parametrize("style", STYLES)
def test_wait_without_pidfd_polls(monkeypatch, how, style):
    if how == "missing":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    else:
        monkeypatch.setattr(os, "pidfd_open", _nosys, raising=False)

    def main():
        quick = yield run_process(["sh", "-c", "sleep 0.02; exit 7"])
        proc = yield spawn_process(["sleep", "10"])
        try:
            with pytest.raises(TimeoutError):  # the polling sleep can be interrupted too
                with timeout(0.03):
                    yield proc.wait()
            proc.terminate()
            rc = yield proc.wait()
        finally:
            yield proc.aclose()
        return quick.returncode, rc

    start = time.monotonic()
    assert run_style(style, main) == (7, -signal.SIGTERM)
    assert time.monotonic() - start < 2.0


def test_several_tasks_wait_for_one_process(poller):
    def waiter(proc):
        return (yield proc.wait())

    def main():
        proc = yield spawn_process(["sh", "-c", "sleep 0.05; exit 4"])
        try:
            tasks = []
            for _ in range(3):
                tasks.append((yield spawn(waiter, proc)))
            codes = []
            for t in tasks:
                codes.append((yield join(t)))
            return codes
        finally:
            yield proc.aclose()

    assert run(main, poller=poller) == [4, 4, 4]


def test_write_all_takes_any_buffer():
    words = array.array("i", range(100000))  # 400 KB, items of 4 bytes: cast to bytes

    def main():
        result = yield run_process(["cat"], input=words, stdout=PIPE)
        return result.stdout

    assert run(main) == words.tobytes()


# ---------------------------------------------------------------------------
# the example: ls | grep | wc over os.pipe() fds


def test_example_pipeline(poller, tmp_path):
    spec = importlib.util.spec_from_file_location("pipeline_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("a.py", "b.py", "c.txt", "copy.py", "d"):
        (tmp_path / name).touch()
    assert int(run(module.pipeline, str(tmp_path), "py", poller=poller)) == 3
    assert int(run(module.pipeline, str(tmp_path), "nothing", poller=poller)) == 0
    with pytest.raises(RuntimeError, match="exit statuses"):
        run(module.pipeline, str(tmp_path / "missing"), "py", poller=poller)


def test_killed_waiter_never_leaves_a_zombie_even_without_aclose(poller):
    """Nobody calls aclose: the child exits on its own later, and is reaped all the same."""

    def waiter(proc):
        yield proc.wait()

    def main():
        proc = yield spawn_process(["sleep", "0.2"])
        task = yield spawn(waiter, proc)
        yield sleep(0.02)
        yield kill(task)
        return proc

    proc = run(main, poller=poller)
    # The reaper thread is blocked in waitpid until the child (sleep 0.2) exits.
    # Join it rather than polling waitpid here: a WNOHANG poll of ours could reap
    # the child itself, or see it reaped before the thread stores returncode.
    (reaper,) = [t for t in threading.enumerate() if t.name == f"reap pid {proc.pid}"]
    reaper.join(timeout=5)
    assert not reaper.is_alive()
    assert gone(proc.pid)
    assert proc.returncode == 0
