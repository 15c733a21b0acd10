"""Kernel lifetime: close releases every fd the kernel opened; run works several times."""

from __future__ import annotations

import os
import socket
import time

import kernel
from conftest import open_fds
from syscalls import join, read, recv, send, sleep, spawn, wait_writable, write


def _poller_fds(fds: dict) -> set:
    return {fd for fd, target in fds.items() if "eventpoll" in target}


def _io_main(a, b):
    def main():
        yield wait_writable(a)
        yield send(a, b"ping")
        data = yield recv(b, 10)
        yield sleep(0.001)
        return data, open_fds()

    return main


def test_with_kernel_closes_its_epoll_fd():
    a, b = socket.socketpair()
    try:
        before = open_fds()
        with kernel.Kernel(poller="epoll") as k:
            data, during = k.run(_io_main(a, b))
        after = open_fds()
        assert data == b"ping"
        # the kernel really held an epoll fd while running...
        new_epoll = _poller_fds(during) - _poller_fds(before)
        assert new_epoll, during
        # ...and nothing it opened survives the with block
        assert set(after) == set(before), {fd: after[fd] for fd in set(after) - set(before)}
    finally:
        a.close()
        b.close()


def test_explicit_close_releases_fds_for_every_poller(poller):
    a, b = socket.socketpair()
    try:
        before = open_fds()
        k = kernel.Kernel(poller=poller)
        try:
            data, _ = k.run(_io_main(a, b))
        finally:
            k.close()
        after = open_fds()
        assert data == b"ping"
        assert set(after) == set(before), {fd: after[fd] for fd in set(after) - set(before)}
    finally:
        a.close()
        b.close()


def test_run_twice_on_one_kernel():
    r, w = os.pipe()
    try:

        def child(x):
            yield sleep(0.001)
            return x + 1

        def first():
            t = yield spawn(child, 1)
            n = yield write(w, b"one")
            return (yield join(t)), n

        def second():
            data = yield read(r, 100)
            t = yield spawn(child, 10)
            return data, (yield join(t))

        with kernel.Kernel() as k:
            assert k.run(first) == (2, 3)
            assert k.run(second) == (b"one", 11)

            # a failing run does not spoil the next one
            def failing():
                yield sleep(0)
                raise ZeroDivisionError("third")

            try:
                k.run(failing)
            except ZeroDivisionError as e:
                assert str(e) == "third"
            else:
                raise AssertionError("run did not re-raise")
            assert k.run(first) == (2, 3)
        assert os.get_blocking(r) and os.get_blocking(w)
    finally:
        os.close(r)
        os.close(w)


def test_module_run_leaves_no_fds_and_restores_flags():
    a, b = socket.socketpair()
    try:
        before = open_fds()

        def main():
            t = yield spawn(_io_main(a, b))
            return (yield join(t))

        data, _ = kernel.run(main)
        assert data == b"ping"
        assert set(open_fds()) == set(before)
        assert a.getblocking() and b.getblocking()
        assert os.get_blocking(a.fileno()) and os.get_blocking(b.fileno())
    finally:
        a.close()
        b.close()


def test_default_kernel_is_auto_and_works():
    with kernel.Kernel() as k:
        assert k.run(_sleepy) == "slept"
    with kernel.Kernel(poller="auto") as k:
        assert k.run(_sleepy) == "slept"


def _sleepy():
    yield sleep(0.001)
    return "slept"


def test_run_again_after_deadlock_and_after_failure():
    def stuck():
        yield sleep(float("inf"))

    def fine():
        t = yield spawn(_sleepy)
        return (yield join(t))

    with kernel.Kernel() as k:
        try:
            k.run(stuck)
        except kernel.Deadlock:
            pass
        else:
            raise AssertionError("no Deadlock")
        assert k.run(fine) == "slept"

        def failing():
            yield spawn(stuck)
            yield sleep(0)
            raise OSError("failed main")

        try:
            k.run(failing)
        except OSError as e:
            assert str(e) == "failed main"
        assert k.run(fine) == "slept"


def test_clock_seam_is_the_only_time_source():
    """Deadlines and "now" both come from the kernel's clock: a clock far from
    time.monotonic() (but running at the same rate) gives normal sleeps."""
    readings = []

    def clock():
        now = time.monotonic() + 1e6
        readings.append(now)
        return now

    def main():
        t0 = time.monotonic()
        yield sleep(0.02)
        return time.monotonic() - t0

    with kernel.Kernel(clock=clock) as k:
        elapsed = k.run(main)
    assert 0.02 <= elapsed < 1
    assert readings  # the kernel did read its clock
