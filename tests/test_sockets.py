"""The socket traps beyond the foundation's, and close() waking whoever waits, on every poller."""

from __future__ import annotations

import hashlib
import os
import random
import socket

import pytest

import kernel
from conftest import run
from syscalls import (
    accept,
    close,
    connect,
    join,
    read,
    recv,
    recv_into,
    recvfrom,
    recvfrom_into,
    sendall,
    sendfile,
    sendto,
    shutdown,
    sleep,
    spawn,
    wait_writable,
)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "family, host",
    [
        (socket.AF_INET, "127.0.0.1"),
        pytest.param(
            socket.AF_INET6,
            "::1",
            marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_udp_sendto_recvfrom_and_recvfrom_into(poller, family, host):
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    a.bind((host, 0))
    b.bind((host, 0))
    try:

        def receiver():
            data, addr = yield recvfrom(b, 100)  # waits: nothing sent yet
            buf = bytearray(10)
            n, addr2 = yield recvfrom_into(b, buf)
            return data, addr[:2], bytes(buf[:n]), addr2[:2]

        def main():
            t = yield spawn(receiver)
            yield sleep(0.001)
            assert (yield sendto(a, b"first", b.getsockname())) == 5
            yield sendto(a, b"second", b.getsockname())
            return (yield join(t))

        data, addr, data2, addr2 = run(main, poller=poller)
        assert (data, data2) == (b"first", b"second")
        assert addr == addr2 == a.getsockname()[:2]
    finally:
        a.close()
        b.close()


def test_unix_stream_socket_and_recv_into_and_shutdown(poller, tmp_path):
    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen()
    try:

        def server():
            conn, _ = yield accept(srv)
            with conn:
                buf = bytearray(64)
                got = b""
                while True:
                    n = yield recv_into(conn, buf)
                    if not n:  # the client shut its writing side: EOF, but we may still reply
                        break
                    got += bytes(buf[:n])
                yield sendall(conn, got.upper())

        def main():
            t = yield spawn(server)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with c:
                yield connect(c, path)
                yield sendall(c, b"hello unix")
                yield shutdown(c, socket.SHUT_WR)
                reply = yield recv(c, 100)
            yield join(t)
            return reply

        assert run(main, poller=poller) == b"HELLO UNIX"
    finally:
        srv.close()


def test_sendfile_streams_a_file_and_moves_its_position(poller, tmp_path):
    payload = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "big"
    path.write_bytes(payload)
    a, b = socket.socketpair()
    try:

        def drain():
            h, total = hashlib.sha256(), 0
            while total < len(payload) - 10:
                chunk = yield recv(b, 1 << 16)
                h.update(chunk)
                total += len(chunk)
            return h.hexdigest(), total

        def main():
            t = yield spawn(drain)
            with open(path, "rb") as f:
                sent = yield sendfile(a, f, offset=10)
                pos = f.tell()
            return sent, pos, (yield join(t))

        sent, pos, (digest, total) = run(main, poller=poller)
        assert sent == total == len(payload) - 10
        assert pos == len(payload)
        assert digest == hashlib.sha256(payload[10:]).hexdigest()
    finally:
        a.close()
        b.close()


def test_sendfile_with_a_count(poller, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    a, b = socket.socketpair()
    try:

        def main():
            with open(path, "rb") as f:
                n = yield sendfile(a, f.fileno(), 2, 5)
            return n, (yield recv(b, 100))

        assert run(main, poller=poller) == (5, b"23456")
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("what", ["reader", "writer", "both"])
def test_close_wakes_every_task_waiting_on_the_fd(poller, what):
    a, b = socket.socketpair()
    a.setblocking(False)
    while True:  # fill a's send buffer, so a writer waits too
        try:
            a.send(b"x" * 65536)
        except BlockingIOError:
            break
    trace = []

    def reader():
        try:
            yield recv(a, 10)
        except OSError as e:
            trace.append(("reader", e.errno))

    def writer():
        try:
            yield wait_writable(a)
            trace.append("writer-woke-writable")
        except OSError as e:
            trace.append(("writer", e.errno))

    def main():
        tasks = []
        if what in ("reader", "both"):
            tasks.append((yield spawn(reader)))
        if what in ("writer", "both"):
            tasks.append((yield spawn(writer)))
        yield sleep(0.005)
        yield close(a)
        for t in tasks:
            yield join(t)

    try:
        with kernel.Kernel(poller=poller) as k:
            k.run(main)
            assert k.poller.waiting == 0
    finally:
        b.close()
        a.close()
    expected = {"reader": [("reader", 9)], "writer": [("writer", 9)]}
    if what == "both":
        assert sorted(trace) == [("reader", 9), ("writer", 9)]
    else:
        assert trace == expected[what]
    assert a.fileno() == -1


def test_close_of_a_raw_fd_and_the_number_is_reusable(poller):
    r, w = os.pipe()

    def reader():
        try:
            yield read(r, 1)
        except OSError as e:
            return e.errno

    def main():
        t = yield spawn(reader)
        yield sleep(0.002)
        yield close(r)
        return (yield join(t))

    try:
        assert run(main, poller=poller) == 9
        with pytest.raises(OSError):
            os.fstat(r)  # really closed
    finally:
        os.close(w)


def test_call_from_thread_wakes_a_kernel_sleeping_in_the_poller(poller):
    import threading

    from syscalls import current_kernel, wait_on, wakeup

    class Box(list):
        __hash__ = object.__hash__  # a channel must be hashable

    def main():
        k = current_kernel()
        box = Box()

        def from_thread():
            def in_kernel():
                box.append("ran")
                wakeup(box)

            k.call_from_thread(in_kernel)
            k.call_from_thread(lambda: 1 / 0)  # a failing call is logged, not fatal
            k.call_from_thread(k.call_arrived)

        k.expect_call()  # without it, waiting for the thread would be a Deadlock
        threading.Timer(0.02, from_thread).start()
        yield wait_on(box)
        return box

    assert run(main, poller=poller) == ["ran"]
