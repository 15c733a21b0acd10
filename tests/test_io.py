"""I/O traps on pipes, socketpairs and TCP, run on every poller backend.

Every test runs on epoll, selectors, poll and select (the ``poller`` fixture, or its own
parametrization), except the one PyPy performance check at the end.
Fds are created blocking on purpose: the kernel must never block, and must restore the
blocking flag when it closes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import time

import pytest

import kernel
from conftest import run
from syscalls import (
    accept,
    connect,
    join,
    kill,
    read,
    recv,
    sched_yield,
    send,
    sendall,
    sleep,
    spawn,
    wait_readable,
    wait_writable,
    write,
)

TaskState = kernel.TaskState

STREAM_BYTES = 4 * 1024 * 1024


def _close_all(*objs):
    for obj in objs:
        if isinstance(obj, int):
            try:
                os.close(obj)
            except OSError:
                pass
        else:
            obj.close()


# ---------------------------------------------------------------------------
# pipes


def test_pipe_read_write_on_blocking_fds_restores_flags(poller):
    r, w = os.pipe()
    assert os.get_blocking(r) and os.get_blocking(w)
    trace = []
    try:

        def reader():
            data = yield read(r, 100)  # pipe empty: must park, not block the kernel
            trace.append(("read", data))
            return data

        def writer():
            yield sleep(0.005)
            n = yield write(w, b"hello")
            trace.append(("wrote", n))

        def main():
            rt = yield spawn(reader)
            wt = yield spawn(writer)
            yield join(wt)
            return (yield join(rt))

        assert run(main, poller=poller) == b"hello"
        assert trace == [("wrote", 5), ("read", b"hello")]
        assert os.get_blocking(r) is True
        assert os.get_blocking(w) is True
    finally:
        _close_all(r, w)


def test_pipe_file_objects_with_fileno(poller):
    r, w = os.pipe()
    rf = os.fdopen(r, "rb", buffering=0)
    wf = os.fdopen(w, "wb", buffering=0)
    try:

        def reader():
            return (yield read(rf, 100))

        def main():
            t = yield spawn(reader)
            yield sleep(0.002)
            assert t.state is TaskState.BLOCKED
            yield wait_writable(wf)
            n = yield write(wf, b"via fileno()")
            return n, (yield join(t))

        assert run(main, poller=poller) == (12, b"via fileno()")
        assert os.get_blocking(r) and os.get_blocking(w)
    finally:
        rf.close()
        wf.close()


def test_pipe_eof_reads_empty_bytes(poller):
    r, w = os.pipe()
    try:

        def main():
            n = yield write(w, b"last")
            os.close(w)
            a = yield read(r, 100)
            b = yield read(r, 100)
            return n, a, b

        assert run(main, poller=poller) == (4, b"last", b"")
    finally:
        _close_all(r, w)


def test_pipe_eof_wakes_a_parked_reader(poller):
    r, w = os.pipe()
    try:

        def reader():
            data = yield read(r, 100)
            return data

        def main():
            t = yield spawn(reader)
            yield sleep(0.005)
            assert t.state is TaskState.BLOCKED
            os.close(w)
            return (yield join(t))

        assert run(main, poller=poller) == b""
    finally:
        _close_all(r, w)


def test_partial_write_then_parked_writer_wakes_when_reader_drains(poller):
    r, w = os.pipe()
    trace = []
    try:
        big = b"x" * (1 << 20)

        def drainer():
            yield sleep(0.01)
            got = 0
            while got < 65536:
                data = yield read(r, 65536)
                got += len(data)
            trace.append("drained")
            return got

        def main():
            n1 = yield write(w, big)  # empty pipe: partial write, returns a count
            trace.append("partial")
            d = yield spawn(drainer)
            n2 = yield write(w, b"y" * 10)  # pipe full: parks until the drainer reads
            trace.append(("second-write", n2))
            got = yield join(d)
            return n1, got

        n1, got = run(main, poller=poller)
        assert 0 < n1 < len(big)
        assert got >= 65536
        assert trace == ["partial", "drained", ("second-write", 10)]
    finally:
        _close_all(r, w)


def test_writer_fills_pipe_while_reader_drains(poller):
    r, w = os.pipe()
    rng = random.Random(1234)
    payload = rng.randbytes(3 * 1024 * 1024)
    counts = []
    try:

        def writer():
            view = memoryview(payload)
            pos = 0
            for _ in range(100000):
                if pos >= len(payload):
                    break
                chunk = view[pos : pos + (1 << 20)]
                n = yield write(w, chunk)
                counts.append((n, len(chunk)))
                pos += n
            return pos

        def reader():
            parts = []
            got = 0
            for _ in range(100000):
                if got >= len(payload):
                    break
                data = yield read(r, 1 << 16)
                assert data, "unexpected EOF"
                parts.append(data)
                got += len(data)
            return b"".join(parts)

        def main():
            wt = yield spawn(writer)
            rt = yield spawn(reader)
            written = yield join(wt)
            received = yield join(rt)
            return written, received

        written, received = run(main, poller=poller)
        assert written == len(payload)
        assert received == payload
        assert all(0 < n <= size for n, size in counts)
        assert sum(n for n, _ in counts) == len(payload)
        assert any(n < size for n, size in counts)  # some writes were partial
    finally:
        _close_all(r, w)


# ---------------------------------------------------------------------------
# streaming megabytes in random chunks


def _make_pipe():
    r, w = os.pipe()
    return r, w, [r, w]


def _make_socketpair():
    a, b = socket.socketpair()
    return b, a, [a, b]


@pytest.mark.parametrize(
    "transport", ["pipe-write", "socket-send", "socket-sendall", "socket-fd-write"]
)
def test_stream_megabytes_random_chunks_checksum(poller, transport):
    if transport == "pipe-write":
        rd, wr, owned = _make_pipe()
    else:
        rd, wr, owned = _make_socketpair()
        if transport == "socket-fd-write":
            rd, wr = rd.fileno(), wr.fileno()
    seed = 20240601
    payload = random.Random(seed).randbytes(STREAM_BYTES)
    try:

        def producer():
            rng = random.Random(seed + 1)
            view = memoryview(payload)
            pos = 0
            for _ in range(1000000):
                if pos >= len(payload):
                    break
                size = rng.randint(1, 200000)
                chunk = view[pos : pos + size]
                if transport == "socket-sendall":
                    result = yield sendall(wr, chunk)
                    assert result is None
                    n = len(chunk)
                elif transport == "socket-send":
                    n = yield send(wr, chunk)
                else:
                    n = yield write(wr, chunk)
                assert 0 < n <= len(chunk)
                pos += n
            return hashlib.sha256(payload[:pos]).hexdigest()

        def consumer():
            rng = random.Random(seed + 2)
            h = hashlib.sha256()
            got = 0
            for _ in range(1000000):
                if got >= len(payload):
                    break
                size = rng.randint(1, 100000)
                if isinstance(rd, socket.socket):
                    data = yield recv(rd, size)
                else:
                    data = yield read(rd, size)
                assert data, "unexpected EOF"
                assert len(data) <= size
                h.update(data)
                got += len(data)
            return h.hexdigest(), got

        def main():
            p = yield spawn(producer)
            c = yield spawn(consumer)
            sent_digest = yield join(p)
            received_digest, got = yield join(c)
            return sent_digest, received_digest, got

        sent_digest, received_digest, got = run(main, poller=poller)
        assert got == len(payload)
        assert sent_digest == received_digest == hashlib.sha256(payload).hexdigest()
    finally:
        _close_all(*owned)


# ---------------------------------------------------------------------------
# socketpairs: objects and raw fds


@pytest.mark.parametrize("kind", ["object", "int"])
def test_socketpair_read_write_objects_and_raw_fds(poller, kind):
    a, b = socket.socketpair()
    try:
        fa = a if kind == "object" else a.fileno()
        fb = b if kind == "object" else b.fileno()

        def ponger():
            data = yield read(fb, 100)
            n = yield write(fb, data.upper())
            return n

        def main():
            t = yield spawn(ponger)
            yield sleep(0.001)
            yield write(fa, b"ping")
            reply = yield read(fa, 100)
            n = yield join(t)
            return reply, n

        assert run(main, poller=poller) == (b"PING", 4)
        assert a.getblocking() and b.getblocking()
        assert os.get_blocking(a.fileno()) and os.get_blocking(b.fileno())
    finally:
        _close_all(a, b)


def test_socketpair_recv_send_sendall(poller):
    a, b = socket.socketpair()
    try:

        def echo():
            data = yield recv(b, 100)
            yield sendall(b, data * 3)

        def main():
            t = yield spawn(echo)
            n = yield send(a, b"abc")
            parts = []
            while sum(map(len, parts)) < 9:
                parts.append((yield recv(a, 100)))
            yield join(t)
            return n, b"".join(parts)

        assert run(main, poller=poller) == (3, b"abcabcabc")
    finally:
        _close_all(a, b)


@pytest.mark.parametrize("kind", ["object", "int"])
def test_wait_readable_and_wait_writable(poller, kind):
    a, b = socket.socketpair()
    trace = []
    try:
        fa = a if kind == "object" else a.fileno()

        def waiter():
            r = yield wait_readable(fa)
            trace.append(("readable", r))
            return a.recv(100)  # a is readable now: this cannot block

        def main():
            r = yield wait_writable(fa)  # fresh socket: writable at once
            trace.append(("writable", r))
            t = yield spawn(waiter)
            yield sleep(0.005)
            assert t.state is TaskState.BLOCKED
            trace.append("sending")
            b.send(b"data")
            return (yield join(t))

        assert run(main, poller=poller) == b"data"
        assert trace == [("writable", None), "sending", ("readable", None)]
    finally:
        _close_all(a, b)


def test_two_tasks_wait_on_same_fd_for_read_and_write(poller):
    a, b = socket.socketpair()
    payload = random.Random(7).randbytes(1024 * 1024)  # far more than the buffers hold
    try:

        def reader():
            data = yield recv(a, 100)
            return data

        def writer():
            yield sendall(a, payload)
            return "sent"

        def main():
            rt = yield spawn(reader)
            wt = yield spawn(writer)
            yield sleep(0.01)
            # both parked on the same fd, one for reading and one for writing
            assert rt.state is TaskState.BLOCKED
            assert wt.state is TaskState.BLOCKED
            yield sendall(b, b"ping")
            parts = []
            got = 0
            for _ in range(100000):
                if got >= len(payload):
                    break
                data = yield recv(b, 65536)
                assert data
                parts.append(data)
                got += len(data)
            r = yield join(rt)
            w = yield join(wt)
            return r, w, b"".join(parts)

        r, w, drained = run(main, poller=poller)
        assert r == b"ping"
        assert w == "sent"
        assert drained == payload
    finally:
        _close_all(a, b)


def test_two_receivers_on_one_socket_take_messages_in_turn(poller):
    """The poller serves an fd's readers first come, first served: when the first one's
    recv empties the socket, the second's retry would block, and it keeps waiting."""
    a, b = socket.socketpair()
    got = []
    try:

        def receiver(name):
            got.append((name, (yield recv(a, 100))))

        def main():
            r1 = yield spawn(receiver, "r1")
            r2 = yield spawn(receiver, "r2")
            yield sched_yield()  # both have run: both are parked on a, r1 first
            assert r1.state is r2.state is TaskState.BLOCKED
            b.send(b"one")
            yield sched_yield()  # next pass: the poller wakes r1 (queued after main)
            yield sched_yield()  # ... which has run by the pass after
            assert got == [("r1", b"one")] and r2.state is TaskState.BLOCKED
            b.send(b"two")
            yield join(r1)
            yield join(r2)

        run(main, poller=poller)
        assert got == [("r1", b"one"), ("r2", b"two")]
    finally:
        _close_all(a, b)


def test_recv_on_never_nonblocking_socket_does_not_block_kernel(poller):
    a, b = socket.socketpair()
    assert a.getblocking()
    trace = []
    try:

        def receiver():
            data = yield recv(a, 100)
            trace.append(("received", data))
            return data

        def ticker():
            for i in range(3):
                trace.append(("tick", i))
                yield sleep(0.002)
            b.send(b"late")

        def main():
            rt = yield spawn(receiver)
            tt = yield spawn(ticker)
            yield join(tt)
            return (yield join(rt))

        assert run(main, poller=poller) == b"late"
        assert trace == [("tick", 0), ("tick", 1), ("tick", 2), ("received", b"late")]
        # the kernel has closed: the user's blocking mode is back
        assert a.getblocking() is True
        assert os.get_blocking(a.fileno()) is True
        b.send(b"x")
        assert a.recv(1) == b"x"
    finally:
        _close_all(a, b)


def test_kill_task_blocked_in_recv_socket_still_usable(poller):
    a, b = socket.socketpair()
    trace = []
    try:

        def receiver():
            try:
                data = yield recv(a, 100)
                trace.append(("stolen", data))  # must not happen
            except kernel.Cancelled:
                trace.append("receiver-cancelled")
                raise

        def main():
            t = yield spawn(receiver)
            yield sleep(0.002)
            assert t.state is TaskState.BLOCKED
            yield kill(t)
            yield sendall(b, b"after")
            data = yield recv(a, 100)
            trace.append(("main-got", data))
            # and a second parked receiver on the same socket still gets woken
            t2 = yield spawn(recv_task, a)
            yield sleep(0.002)
            yield send(b, b"again")
            trace.append(("t2-got", (yield join(t2))))

        def recv_task(sock):
            data = yield recv(sock, 100)
            return data

        run(main, poller=poller)
        assert trace == ["receiver-cancelled", ("main-got", b"after"), ("t2-got", b"again")]
        b.sendall(b"blocking-again")
        assert a.recv(100) == b"blocking-again"
    finally:
        _close_all(a, b)


def test_fd_number_reused_after_close_inside_run(poller):
    """A task closes a socket it waited on; a new socket reusing its fd number must work."""
    owned = []
    try:

        def use_pair(tag):
            a, b = socket.socketpair()
            owned.extend([a, b])

            def late_sender():
                yield sleep(0.002)
                yield send(b, tag)

            t = yield spawn(late_sender)
            data = yield recv(a, 100)  # parks: registers a with the poller
            yield join(t)
            fds = (a.fileno(), b.fileno())
            a.close()
            b.close()
            return data, fds

        def main():
            first, fds1 = yield from use_pair(b"one")
            second, fds2 = yield from use_pair(b"two")
            third, fds3 = yield from use_pair(b"three")
            return [first, second, third], fds1, fds2, fds3

        datas, fds1, fds2, fds3 = run(main, poller=poller)
        assert datas == [b"one", b"two", b"three"]
        # the point of the test: the numbers really were reused
        assert fds2 == fds3
    finally:
        _close_all(*owned)


# ---------------------------------------------------------------------------
# invalid fds


@pytest.mark.parametrize("what", ["closed-int", "closed-socket", "negative-int"])
@pytest.mark.parametrize("op", ["wait_readable", "wait_writable", "read"])
def test_waiting_on_closed_or_invalid_fd_raises_oserror_in_task(poller, what, op):
    a, b = socket.socketpair()
    try:

        def main():
            yield wait_writable(a)  # make sure the kernel's own fds exist by now
            if what == "closed-int":
                fd = os.dup(a.fileno())
                os.close(fd)
            elif what == "closed-socket":
                fd = socket.socket()
                fd.close()
            else:
                fd = -1
            try:
                if op == "wait_readable":
                    yield wait_readable(fd)
                elif op == "wait_writable":
                    yield wait_writable(fd)
                else:
                    yield read(fd, 10)
            except OSError as e:
                error = e
            else:
                return "no error"
            # the kernel goes on afterwards
            yield sleep(0.001)
            yield sendall(b, b"still fine")
            data = yield recv(a, 100)
            return error, data

        result = run(main, poller=poller)
        assert result != "no error"
        error, data = result
        assert isinstance(error, OSError)
        assert data == b"still fine"
    finally:
        _close_all(a, b)


# ---------------------------------------------------------------------------
# TCP on 127.0.0.1


def _listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    return srv


def test_tcp_echo_many_concurrent_clients(poller):
    nclients = 50
    srv = _listener()
    addr = srv.getsockname()
    accepted_blocking = []
    try:

        def handler(conn):
            try:
                parts = []
                for _ in range(100000):
                    data = yield recv(conn, 4096)
                    if not data:
                        break
                    parts.append(data)
                yield sendall(conn, b"".join(parts))
            finally:
                conn.close()

        def server():
            handlers = []
            for _ in range(nclients):
                conn, peer = yield accept(srv)
                accepted_blocking.append(conn.getblocking())
                assert peer[0] == "127.0.0.1"
                h = yield spawn(handler, conn)
                handlers.append(h)
            for h in handlers:
                yield join(h)

        def client(i):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                r = yield connect(s, addr)
                assert r is None
                message = (b"client-%d;" % i) * (50 + i * 40)
                yield sendall(s, message)
                s.shutdown(socket.SHUT_WR)
                parts = []
                for _ in range(100000):
                    data = yield recv(s, 1000)
                    if not data:
                        break
                    parts.append(data)
                return b"".join(parts) == message
            finally:
                s.close()

        def main():
            st = yield spawn(server)
            clients = []
            for i in range(nclients):
                c = yield spawn(client, i)
                clients.append(c)
            results = []
            for c in clients:
                results.append((yield join(c)))
            yield join(st)
            return results

        assert run(main, poller=poller) == [True] * nclients
        assert accepted_blocking == [False] * nclients
        assert srv.getblocking() is True
    finally:
        srv.close()


def test_connect_to_closed_port_raises_connection_refused(poller):
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()  # nothing listens on addr now
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:

        def main():
            try:
                yield connect(s, addr)
            except ConnectionRefusedError as e:
                return "refused", e.errno
            return "connected", None

        assert run(main, poller=poller) == ("refused", errno.ECONNREFUSED)
    finally:
        s.close()


def test_accept_parks_until_a_client_connects(poller):
    srv = _listener()
    addr = srv.getsockname()
    trace = []
    try:

        def server():
            conn, _ = yield accept(srv)
            trace.append("accepted")
            try:
                data = yield recv(conn, 100)
                return data
            finally:
                conn.close()

        def main():
            st = yield spawn(server)
            yield sleep(0.005)
            assert st.state is TaskState.BLOCKED
            trace.append("connecting")
            c = socket.socket()
            try:
                yield connect(c, addr)
                yield sendall(c, b"hi")
                return (yield join(st))
            finally:
                c.close()

        assert run(main, poller=poller) == b"hi"
        assert trace == ["connecting", "accepted"]
    finally:
        srv.close()


def test_async_task_io(poller):
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:

        async def reader():
            return await read(r, 100)

        async def main():
            t = await spawn(reader)
            await sleep(0.001)
            n = await write(w, b"async pipe")
            data = await join(t)
            await sendall(a, b"async sock")
            await wait_readable(b)
            got = await recv(b, 100)
            await wait_writable(w)
            return n, data, got

        assert run(main, poller=poller) == (10, b"async pipe", b"async sock")
    finally:
        _close_all(r, w, a, b)


def test_sleep_zero_spinner_does_not_starve_sockets(poller):
    a, b = socket.socketpair()
    got = []
    try:

        def receiver():
            got.append((yield recv(a, 10)))

        def main():
            t = yield spawn(receiver)
            yield sched_yield()
            assert t.state is TaskState.BLOCKED
            b.send(b"x")
            deadline = time.monotonic() + 2
            while not got and time.monotonic() < deadline:
                yield sleep(0)

        run(main, poller=poller)
        assert got == [b"x"]
    finally:
        _close_all(a, b)


# ---------------------------------------------------------------------------
# errors of the operation, idle behaviour, restored modes


def test_write_to_pipe_without_reader_raises_broken_pipe(poller):
    r, w = os.pipe()
    os.close(r)
    try:

        def main():
            try:
                yield write(w, b"nobody reads")
            except BrokenPipeError:
                return "broken"
            return "written"

        assert run(main, poller=poller) == "broken"
    finally:
        os.close(w)


def test_parked_writer_gets_broken_pipe_when_reader_closes(poller):
    r, w = os.pipe()
    fds = [r, w]
    try:

        def writer():
            pos = 0
            data = b"z" * 65536
            try:
                for _ in range(1000):
                    pos += yield write(w, data)
            except BrokenPipeError:
                return "broken", pos
            return "never blocked", pos

        def main():
            t = yield spawn(writer)
            yield sleep(0.01)
            assert t.state is TaskState.BLOCKED  # the pipe is full
            os.close(r)
            fds.remove(r)
            return (yield join(t))

        result, pos = run(main, poller=poller)
        assert result == "broken"
        assert pos > 0
    finally:
        _close_all(*fds)


# A kernel that sleeps in its poller uses next to no CPU; one that spins uses a good share
# of a core even on a loaded machine. 0.05 s of CPU in a 0.3 s sleep separates the two.


def test_idle_kernel_does_not_spin(poller):
    a, b = socket.socketpair()
    try:

        def reader():
            return (yield recv(a, 10))

        def main():
            yield wait_writable(a)  # a stays writable, and nobody waits for that any more
            t = yield spawn(reader)
            b.send(b"x")  # the registration sees one event...
            first = yield join(t)
            t = yield spawn(reader)  # ...and then the fd stays quiet while a task waits
            cpu0, wall0 = time.process_time(), time.monotonic()
            yield sleep(0.3)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            b.send(b"y")
            second = yield join(t)
            return first, second, cpu, wall

        first, second, cpu, wall = run(main, poller=poller)
        assert (first, second) == (b"x", b"y")
        assert wall >= 0.3
        assert cpu < 0.05, f"the kernel burned {cpu:.3f} s of CPU in a {wall:.3f} s sleep"
    finally:
        _close_all(a, b)


@pytest.mark.parametrize(
    "backend",
    ["epoll", "selectors", "poll", "select"],
)
def test_closing_a_waited_fd_that_has_a_dup_does_not_spin(backend):
    """The user waits on ``a``, then closes it while a dup (a forked child, a
    socket.fromfd) keeps the open file alive and readable. The kernel must not spin."""
    a, b = socket.socketpair()
    a2 = a.dup()
    try:

        def main():
            b.send(b"pending")
            yield wait_readable(a)  # the data stays unread: the file stays readable
            a.close()
            cpu0, wall0 = time.process_time(), time.monotonic()
            yield sleep(0.3)
            return time.process_time() - cpu0, time.monotonic() - wall0

        cpu, wall = run(main, poller=backend)
        assert wall >= 0.3
        assert cpu < 0.05, f"the kernel burned {cpu:.3f} s of CPU in a {wall:.3f} s sleep"
    finally:
        _close_all(a, a2, b)


def test_socket_timeout_is_restored(poller):
    a, b = socket.socketpair()
    a.settimeout(3.5)
    try:

        def main():
            yield spawn(_send_later, b, b"t")
            return (yield recv(a, 10))

        assert run(main, poller=poller) == b"t"
        assert a.gettimeout() == 3.5
    finally:
        _close_all(a, b)


def _send_later(sock, data):
    yield sleep(0.002)
    yield sendall(sock, data)


def test_sendall_hands_send_bounded_chunks():
    """PyPy copies the whole buffer handed to sock.send(): sendall must hand it bounded
    chunks, or a large sendall is quadratic. Checked by what reaches send(), not by
    timing it. Not about the poller: default one only."""
    from kernel.traps import SEND_CHUNK

    class RecordingSocket(socket.socket):
        sizes: list = []

        def send(self, data, *flags):
            RecordingSocket.sizes.append(len(data))
            return super().send(data, *flags)

    raw_a, b = socket.socketpair()
    a = RecordingSocket(fileno=raw_a.detach())
    payload = random.Random(3).randbytes(2 * 1024 * 1024)
    try:

        def drain():
            got = []
            while sum(map(len, got)) < len(payload):
                got.append((yield recv(b, 1 << 16)))
            return b"".join(got)

        def main():
            t = yield spawn(drain)
            yield sendall(a, payload)
            return (yield join(t))

        assert run(main) == payload
        sizes = RecordingSocket.sizes
        assert len(sizes) > 1 and max(sizes) <= SEND_CHUNK
    finally:
        _close_all(a, b)
