"""Tasks waiting for signals: SignalSet and wait_signal, with signals raised in-process."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import kernel
from conftest import run
from syscalls import Event, join, move_on_after, sleep, spawn
from syscalls.signals import SignalSet, wait_signal

USR1, USR2 = signal.SIGUSR1, signal.SIGUSR2


@pytest.fixture(autouse=True)
def known_handlers():
    """Start from known handlers; every test must leave them exactly as it found them."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, USR1, USR2)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(USR1, signal.SIG_DFL)
    signal.signal(USR2, signal.SIG_IGN)
    yield
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(USR1) == signal.SIG_DFL
    assert signal.getsignal(USR2) == signal.SIG_IGN
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_raise_signal_in_task_is_delivered_to_the_set(poller):
    def main():
        with SignalSet(USR1) as s:
            assert signal.getsignal(USR1) != signal.SIG_DFL  # the kernel's handler now
            signal.raise_signal(USR1)
            got = yield s.wait()
        assert signal.getsignal(USR1) == signal.SIG_DFL  # back as soon as the set closes
        return got

    got = run(main, poller=poller)
    assert got == USR1 and isinstance(got, signal.Signals)


def test_two_signals_are_both_delivered_in_order(poller):
    async def main():
        async with SignalSet(USR1, USR2) as s:
            signal.raise_signal(USR2)
            signal.raise_signal(USR1)
            await sleep(0.01)  # both arrive before the first wait
            assert s.pending == 2
            return [await s.wait(), await s.wait()]

    assert run(main, poller=poller) == [USR2, USR1]


def test_signal_between_waits_is_not_lost():
    def main():
        with SignalSet(USR1) as s:
            got = []
            for _ in range(3):
                signal.raise_signal(USR1)
                yield sleep(0.005)  # arrives while nobody waits: queued in the set
                got.append((yield s.wait()))
            assert s.poll() is None
            return got

    assert run(main) == [USR1] * 3


def test_handlers_restored_when_the_run_ends_with_the_set_open():
    seen = []

    def main():
        s = SignalSet(USR1, USR2)
        s.open()  # never closed by the task
        seen.append(signal.getsignal(USR1))
        yield sleep(0)
        return repr(s)

    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    assert "SIGUSR1, SIGUSR2 (open" in run(main)
    assert signal.set_wakeup_fd(wakeup_fd) == wakeup_fd  # the wakeup fd is back too
    assert seen[0] not in (signal.SIG_DFL, signal.SIG_IGN)
    # (the fixture checks USR1 and USR2 are back to SIG_DFL and SIG_IGN)


def test_two_sets_share_a_signal():
    def main():
        a, b = SignalSet(USR1), SignalSet(USR1)
        a.open()
        b.open()
        signal.raise_signal(USR1)
        got = [(yield a.wait()), (yield b.wait())]
        a.close()
        assert signal.getsignal(USR1) != signal.SIG_DFL  # b still watches it
        b.close()
        return got

    assert run(main) == [USR1, USR1]


def test_watching_sigint_means_no_keyboard_interrupt():
    def main():
        with SignalSet(signal.SIGINT) as s:
            signal.raise_signal(signal.SIGINT)
            got = yield s.wait()
            yield sleep(0.01)  # no KeyboardInterrupt turns up later either
            return got

    assert run(main) == signal.SIGINT


def test_wait_signal_with_a_timeout(poller):
    def main():
        t0 = time.monotonic()
        with move_on_after(0.02) as scope:
            yield wait_signal(USR1)
        assert signal.getsignal(USR1) == signal.SIG_DFL  # watched only during the call
        return scope.expired, time.monotonic() - t0

    expired, elapsed = run(main, poller=poller)
    assert expired and elapsed < 1


def test_waiting_only_for_a_signal_is_no_deadlock(poller):
    before = signal.getsignal(USR2)
    stop = threading.Event()

    def send_once_watched():
        # Only once the kernel watches USR2: sent earlier, SIG_DFL would end the process.
        # Sent to the process (not raise_signal in this thread), as signals usually come.
        while signal.getsignal(USR2) == before:
            if stop.wait(0.001):
                return
        os.kill(os.getpid(), USR2)

    sender = threading.Thread(target=send_once_watched)

    async def main():
        sender.start()
        return await wait_signal(USR1, USR2)

    try:
        assert run(main, poller=poller) == USR2
    finally:
        stop.set()
        sender.join()


def test_several_tasks_wait_on_one_set():
    def waiter(s, n):
        return (yield s.wait()), n

    def main():
        with SignalSet(USR1) as s:
            a = yield spawn(waiter, s, "a")
            b = yield spawn(waiter, s, "b")
            yield sleep(0)
            signal.raise_signal(USR1)
            first = yield join(a)  # each signal wakes one waiter, the oldest first
            signal.raise_signal(USR1)
            second = yield join(b)
        return [first, second]

    assert run(main) == [(USR1, "a"), (USR1, "b")]


def test_closing_the_set_wakes_its_waiter_with_an_error():
    def waiter(s):
        with pytest.raises(RuntimeError, match="closed"):
            yield s.wait()
        return "woken"

    def main():
        s = SignalSet(USR1)
        s.open()
        s.open()  # opening twice does nothing
        t = yield spawn(waiter, s)
        yield sleep(0)
        s.close()
        s.close()  # nor closing twice
        return (yield join(t))

    assert run(main) == "woken"


def test_bad_signal_numbers():
    with pytest.raises(ValueError):
        SignalSet()
    with pytest.raises(ValueError):
        SignalSet(signal.SIGKILL)
    with pytest.raises(ValueError):
        SignalSet(10_000)


def test_no_signals_outside_the_main_thread():
    outcome = []

    def main():
        with pytest.raises(RuntimeError, match="main thread"):
            SignalSet(USR1).open()
        yield sleep(0)
        return "ok"

    thread = threading.Thread(target=lambda: outcome.append(run(main)))
    thread.start()
    thread.join(5)
    assert outcome == ["ok"]


def test_deadlock_still_detected_after_the_set_closes():
    def main():
        with SignalSet(USR1):
            pass
        with pytest.raises(kernel.Deadlock):
            yield Event().wait()  # no signal is watched any more: nothing can wake it
        return "deadlock"

    assert run(main) == "deadlock"
