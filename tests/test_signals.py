"""SIGINT: delivered into main as KeyboardInterrupt, all cleanup runs, run re-raises,
and the previous SIGINT handler is back afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import kernel
from conftest import REPO, run
from syscalls import join, sleep, spawn

CHILD_SCRIPT = textwrap.dedent(
    """
    import signal
    import kernel
    import syscalls

    # A shell starts background jobs with SIGINT ignored; be the foreground program.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def helper():
        try:
            while True:
                yield syscalls.sleep(0.05)
        finally:
            print("cleanup", flush=True)

    def main():
        yield syscalls.spawn(helper)
        yield syscalls.sleep(0)  # the helper is inside its try now
        print("ready", flush=True)
        for _ in range(400):  # bounded: about 20 s
            yield syscalls.sleep(0.05)
        print("not interrupted", flush=True)

    kernel.run(main)
    """
)


def _child_env():
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = REPO if not old else REPO + os.pathsep + old
    return env


@pytest.fixture
def sigint_default():
    """Every test here starts from, and must end with, the default SIGINT handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    current = signal.signal(signal.SIGINT, previous)
    assert current is signal.default_int_handler


def test_sigint_from_parent_process_interrupts_child_and_runs_cleanup():
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT],
        cwd=REPO,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = proc.stdout.readline()
        assert first == b"ready\n", (first, proc.stderr.read() if proc.poll() is not None else b"")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=8)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode != 0
    assert b"KeyboardInterrupt" in err, err
    assert out == b"cleanup\n", (out, err)
    assert elapsed < 5


def test_raise_signal_in_task_interrupts_main_and_restores_handler(sigint_default):
    trace = []

    def child():
        try:
            signal.raise_signal(signal.SIGINT)
            trace.append("child-continued")
            yield sleep(5)
        finally:
            trace.append("child-cleanup")

    def main():
        try:
            yield spawn(child)
            yield sleep(5)
            trace.append("main-not-interrupted")
        except KeyboardInterrupt:
            trace.append("main-got-KeyboardInterrupt")
            raise
        finally:
            trace.append("main-finally")

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(main)
    assert time.monotonic() - t0 < 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # KeyboardInterrupt goes to main at its suspension point, not into the child's code.
    assert trace[0] == "child-continued"
    assert "main-got-KeyboardInterrupt" in trace
    assert "main-finally" in trace
    assert "child-cleanup" in trace
    assert "main-not-interrupted" not in trace


def test_previous_custom_sigint_handler_is_restored(sigint_default):
    calls = []

    def custom(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGINT, custom)

    def main():
        yield sleep(0)
        return "ok"

    assert run(main) == "ok"
    assert signal.getsignal(signal.SIGINT) is custom
    signal.raise_signal(signal.SIGINT)
    assert calls == [signal.SIGINT]
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_handler_restored_after_main_fails_and_after_deadlock(sigint_default):
    def failing():
        yield sleep(0)
        raise ValueError("x")

    with pytest.raises(ValueError):
        run(failing)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def stuck():
        yield sleep(float("inf"))

    with pytest.raises(kernel.Deadlock):
        run(stuck)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_from_thread_wakes_kernel_blocked_in_poller(sigint_default, poller):
    trace = []

    def main():
        try:
            yield sleep(5)
            trace.append("slept-through")
        except KeyboardInterrupt:
            trace.append("interrupted")
            raise

    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(main, poller=poller)
    finally:
        timer.cancel()
        timer.join()
    elapsed = time.monotonic() - t0
    assert elapsed < 2, elapsed
    assert trace == ["interrupted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wakeup_fd_is_restored(sigint_default):
    def main():
        yield sleep(0.001)
        return "ok"

    previous = signal.set_wakeup_fd(-1)
    try:
        assert run(main) == "ok"
        assert signal.set_wakeup_fd(-1) == -1  # the kernel left no wakeup fd behind
        r, w = socket.socketpair()
        try:
            w.setblocking(False)
            signal.set_wakeup_fd(w.fileno())
            assert run(main) == "ok"
            assert signal.set_wakeup_fd(-1) == w.fileno()  # the user's one is back
        finally:
            r.close()
            w.close()
    finally:
        signal.set_wakeup_fd(previous)


def test_kernel_runs_in_a_non_main_thread():
    results = []

    def main():
        yield sleep(0.001)
        t = yield spawn(_child_value)
        return (yield join(t))

    def target():
        try:
            results.append(run(main))
        except BaseException as e:  # noqa: BLE001 - reported below
            results.append(e)

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)
    assert results == ["child"]
    assert signal.getsignal(signal.SIGINT) is before


def _child_value():
    yield sleep(0)
    return "child"
