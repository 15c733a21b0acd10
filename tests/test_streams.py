"""Tests for syscalls.streams: buffered reads, writes, connections, and the TCP server.

I/O tests run on every poller backend. Stream pairs come from ``socket.socketpair()``
(plain buffer logic) or from a real `serve_tcp` on loopback (connections, servers).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO, run
from kernel import Cancelled
from syscalls import Queue, join, kill, sleep, spawn, timeout
from syscalls.streams import (
    IncompleteReadError,
    LimitOverrunError,
    Listener,
    Stream,
    listen_tcp,
    open_connection,
    serve_tcp,
)


def stream_pair():
    a, b = socket.socketpair()
    return Stream(a), Stream(b)


def abort_all(*streams):
    for s in streams:
        s.abort()


def start_server(handler, **kwargs):
    """Spawn serve_tcp on a free loopback port; the result is (server task, port)."""
    ports = Queue()
    server = yield spawn(
        serve_tcp(
            handler, "127.0.0.1", 0, on_listen=lambda lis: ports.put_nowait(lis.port), **kwargs
        )
    )
    port = yield ports.get()
    return server, port


def echo_lines(stream):
    while line := (yield stream.readline()):
        yield stream.write_all(line)


# ── Reading ──────────────────────────────────────────────────────────────────


def test_read_methods_share_one_buffer(poller):
    def main():
        a, b = stream_pair()
        try:
            yield b.write_all(b"abc\ndef\r\nghijk")
            yield b.write_eof()
            got = [
                (yield a.readline()),
                (yield a.read_until(b"\r\n")),
                (yield a.read(2)),
                (yield a.read_exactly(1)),
                (yield a.read(0)),
                (yield a.read()),
                (yield a.read(10)),
                (yield a.readline()),
                a.at_eof(),
            ]
        finally:
            abort_all(a, b)
        return got

    assert run(main, poller=poller) == [
        b"abc\n",
        b"def\r\n",
        b"gh",
        b"i",
        b"",
        b"jk",
        b"",
        b"",
        True,
    ]


def test_read_returns_what_is_there_without_waiting_for_more(poller):
    def main():
        a, b = stream_pair()
        try:
            yield b.write_all(b"xy")
            first = yield a.read(100)
            yield b.write_all(b"z" * 10)
            second = yield a.read(4)
            third = yield a.read(100)
        finally:
            abort_all(a, b)
        return first, second, third

    assert run(main, poller=poller) == (b"xy", b"zzzz", b"zzzzzz")


def test_read_exactly_at_eof_raises_with_the_partial_bytes(poller):
    def main():
        a, b = stream_pair()
        try:
            yield b.write_all(b"12345")
            yield b.write_eof()
            try:
                yield a.read_exactly(10)
            except IncompleteReadError as exc:
                caught = exc
            rest = yield a.read()
        finally:
            abort_all(a, b)
        return caught, rest

    exc, rest = run(main, poller=poller)
    assert isinstance(exc, EOFError)
    assert (exc.partial, exc.expected, rest) == (b"12345", 10, b"")


def test_read_until_at_eof_raises_and_readline_returns_the_last_piece(poller):
    def main():
        a, b = stream_pair()
        c, d = stream_pair()
        try:
            for w in (b, d):
                yield w.write_all(b"no end")
                yield w.write_eof()
            try:
                yield a.read_until(b";")
            except IncompleteReadError as exc:
                caught = exc
            lines = [(yield c.readline()), (yield c.readline())]
        finally:
            abort_all(a, b, c, d)
        return caught, lines

    exc, lines = run(main, poller=poller)
    assert (exc.partial, exc.expected) == (b"no end", None)
    assert lines == [b"no end", b""]


def test_limit_overrun_keeps_every_byte(poller):
    def main():
        a, b = stream_pair()
        try:
            yield b.write_all(b"x" * 100 + b"\n" + b"a" * 20 + b"\nabc\n")
            errors = []
            try:
                yield a.readline(limit=50)  # no separator in the first 50 bytes
            except LimitOverrunError as exc:
                errors.append(exc)
            long_line = yield a.readline(limit=200)
            try:
                yield a.readline(limit=10)  # the separator is there, 21 bytes in
            except LimitOverrunError as exc:
                errors.append(exc)
            second = yield a.read_until(b"\n", limit=21)
            exact = yield a.readline(limit=4)  # a line exactly as long as the limit
        finally:
            abort_all(a, b)
        return errors, long_line, second, exact

    errors, long_line, second, exact = run(main, poller=poller)
    assert all(isinstance(e, ValueError) for e in errors)
    assert errors[0].consumed >= 50 and errors[1].consumed == 20
    assert "limit" in str(errors[0])
    assert long_line == b"x" * 100 + b"\n"
    assert second == b"a" * 20 + b"\n"
    assert exact == b"abc\n"


def test_limit_overrun_without_any_separator_does_not_wait():
    def main():
        a, b = stream_pair()
        try:
            yield b.write_all(b"y" * 100)  # no newline, and the writer stays silent after
            yield sleep(0.01)
            with pytest.raises(LimitOverrunError) as info:
                with timeout(2):
                    yield a.readline(limit=50)
            buffered = a.buffered
            rest = yield a.read_exactly(100)
        finally:
            abort_all(a, b)
        return info.value.consumed, buffered, rest

    consumed, buffered, rest = run(main)
    assert consumed == buffered == 100 and rest == b"y" * 100


def test_separator_split_across_receives(poller):
    def writer(b):
        for piece in (b"ab\r", b"\ncd\r", b"\n"):
            yield b.write_all(piece)
            yield sleep(0.01)

    def main():
        a, b = stream_pair()
        try:
            yield spawn(writer, b)
            got = [(yield a.read_until(b"\r\n")), (yield a.read_until(b"\r\n"))]
        finally:
            abort_all(a, b)
        return got

    assert run(main, poller=poller) == [b"ab\r\n", b"cd\r\n"]


def test_bad_arguments():
    def main():
        a, b = stream_pair()
        try:
            with pytest.raises(ValueError):
                yield a.read_until(b"")
            with pytest.raises(ValueError):
                yield a.read_exactly(-1)
            with pytest.raises(TypeError, match="readline"):
                iter(a)
            with pytest.raises(TypeError, match="yield stream.close"):
                with a:
                    pass
            with pytest.raises(ValueError, match="not a TLS"):
                yield a.unwrap()
            with pytest.raises(ValueError, match="not a TLS"):
                yield a.do_handshake()
            assert a.ssl_object is None and not a.tls
        finally:
            abort_all(a, b)

    run(main)


def test_line_iteration_in_generator_and_async_tasks(poller):
    data = b"one\ntwo\n\nthree"

    def gen_reader(a):
        lines = []
        while line := (yield a.readline()):
            lines.append(line)
        return lines

    async def async_reader(a):
        return [line async for line in a]

    def main():
        results = []
        for reader in (gen_reader, async_reader):
            a, b = stream_pair()
            try:
                yield b.write_all(data)
                yield b.write_eof()
                results.append((yield join((yield spawn(reader, a)))))
            finally:
                abort_all(a, b)
        return results

    expected = [b"one\n", b"two\n", b"\n", b"three"]
    assert run(main, poller=poller) == [expected, expected]


def test_two_readers_at_once_is_an_error():
    def main():
        a, b = stream_pair()
        try:
            first = yield spawn(a.read(10))
            yield sleep(0)
            with pytest.raises(RuntimeError, match="already reading"):
                yield a.read(10)
            yield kill(first)
        finally:
            abort_all(a, b)

    run(main)


# ── Streaming megabytes ──────────────────────────────────────────────────────


def _pump(stream, payload, seed):
    """Write ``payload`` in random chunks, draining now and then, then half-close."""
    rng = random.Random(seed)
    i = 0
    while i < len(payload):
        n = rng.randint(1, 70000)
        stream.write(payload[i : i + n])
        i += n
        if rng.random() < 0.5:
            yield stream.drain()
    yield stream.write_eof()


def _slurp(stream, seed):
    """Read to EOF with a random mix of read, read_exactly and read_until; hash it all."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    total = 0
    while True:
        how = rng.randrange(3)
        n = rng.randint(1, 70000)
        if how == 0:
            data = yield stream.read(n)
            if not data:
                break
        elif how == 1:
            try:
                data = yield stream.read_exactly(n)
            except IncompleteReadError as exc:
                data = exc.partial
        else:
            try:
                data = yield stream.read_until(b"\x00\x01", limit=1 << 30)
            except IncompleteReadError as exc:
                data = exc.partial
        digest.update(data)
        total += len(data)
        if not data:
            break
    return total, digest.hexdigest()


@pytest.mark.parametrize("seed", [1, 2])
def test_megabytes_through_a_stream_pair(poller, seed):
    rng = random.Random(seed)
    payload = rng.randbytes(3 << 20) if hasattr(rng, "randbytes") else os.urandom(3 << 20)
    payload = payload.replace(b"\x00\x01", b"\x00\x01\x02")[: 3 << 20]

    def main():
        a, b = stream_pair()
        try:
            yield spawn(_pump, b, payload, seed)
            return (yield from _slurp(a, seed + 100))
        finally:
            abort_all(a, b)

    assert run(main, poller=poller) == (len(payload), hashlib.sha256(payload).hexdigest())


def test_megabytes_both_ways_over_tcp(poller):
    payload = random.Random(7).getrandbits(8 * (2 << 20)).to_bytes(2 << 20, "little")

    def echo_all(stream):
        while data := (yield stream.read(50000)):
            yield stream.write_all(data)
        yield stream.write_eof()

    def main():
        server, port = yield from start_server(echo_all)
        s = yield open_connection("127.0.0.1", port)
        try:
            yield spawn(_pump, s, payload, 3)
            result = yield from _slurp(s, 4)
        finally:
            yield s.close()
        yield kill(server)
        return result

    assert run(main, poller=poller) == (len(payload), hashlib.sha256(payload).hexdigest())


# ── Kill and timeout, at every blocking method ───────────────────────────────

READS = {
    "read": lambda s: s.read(100),
    "read_exactly": lambda s: s.read_exactly(10),
    "read_until": lambda s: s.read_until(b";"),
    "readline": lambda s: s.readline(),
}


@pytest.mark.parametrize("method", sorted(READS))
def test_read_timeout_loses_no_bytes(poller, method):
    def main():
        a, b = stream_pair()
        try:
            if method != "read":
                # A partial answer, already buffered when the timeout hits.
                yield b.write_all(b"abc")
            with pytest.raises(TimeoutError):
                with timeout(0.05):
                    yield READS[method](a)
            yield b.write_all(b"defghij;\n")
            return (yield a.read_exactly(12 if method != "read" else 9))
        finally:
            abort_all(a, b)

    expected = b"abcdefghij;\n" if method != "read" else b"defghij;\n"
    assert run(main, poller=poller) == expected


@pytest.mark.parametrize("method", sorted(READS))
def test_read_kill_loses_no_bytes(poller, method):
    def main():
        a, b = stream_pair()
        try:
            yield b.write_all(b"ab")
            if method == "read":
                yield a.read_exactly(2)
            reader = yield spawn(READS[method](a))
            yield sleep(0.02)
            yield kill(reader)
            assert isinstance(reader.exception, Cancelled)
            yield b.write_all(b"cdefghij;\n")
            return (yield a.read_exactly(8 if method == "read" else 12))
        finally:
            abort_all(a, b)

    expected = b"cdefghij" if method == "read" else b"abcdefghij;\n"
    assert run(main, poller=poller) == expected


def _fill_writer(a):
    """Write until the socket is full and a drain must wait."""
    a.write(b"w" * (8 << 20))


def test_drain_timeout_keeps_unsent_bytes_then_kill(poller):
    total = 8 << 20

    def main():
        a, b = stream_pair()
        try:
            _fill_writer(a)
            with pytest.raises(TimeoutError):
                with timeout(0.05):
                    yield a.drain()
            left = a.write_buffered
            assert 0 < left < total
            drainer = yield spawn(a.write_all(b"END"))
            yield sleep(0.02)
            yield kill(drainer)
            assert isinstance(drainer.exception, Cancelled)
            reader = yield spawn(b.read_exactly(total + 3))
            yield a.drain()
            data = yield join(reader)
        finally:
            abort_all(a, b)
        return left, data

    left, data = run(main, poller=poller)
    assert data == b"w" * total + b"END"


def test_two_drains_at_once_send_everything_once(poller):
    def main():
        a, b = stream_pair()
        try:
            a.write(b"1" * 300000)
            d1 = yield spawn(a.drain())
            a.write(b"2" * 300000)
            d2 = yield spawn(a.drain())
            data = yield b.read_exactly(600000)
            yield join(d1)
            yield join(d2)
            assert a.write_buffered == 0
        finally:
            abort_all(a, b)
        return data

    assert run(main, poller=poller) == b"1" * 300000 + b"2" * 300000


def test_close_gives_up_flushing_after_its_timeout(poller):
    def main():
        a, b = stream_pair()
        try:
            _fill_writer(a)
            t0 = time.monotonic()
            yield a.close(timeout=0.05)
            elapsed = time.monotonic() - t0
            assert a.closed and a.socket.fileno() == -1
            yield a.close()  # again: nothing to do
            with pytest.raises(ValueError, match="closed stream"):
                a.write(b"x")
            with pytest.raises(ValueError, match="closed stream"):
                yield a.read(1)
        finally:
            abort_all(a, b)
        return elapsed

    assert run(main, poller=poller) < 2.0


def test_close_flushes_and_wakes_a_waiting_reader(poller):
    def main():
        a, b = stream_pair()
        try:
            reader = yield spawn(a.read(10))
            yield sleep(0.01)
            a.write(b"bye")
            yield a.close()
            with pytest.raises(OSError) as info:
                yield join(reader)
            assert info.value.errno == errno.EBADF
            return (yield b.read())
        finally:
            abort_all(a, b)

    assert run(main, poller=poller) == b"bye"


def test_close_killed_still_closes_the_socket():
    def main():
        a, b = stream_pair()
        try:
            _fill_writer(a)
            closer = yield spawn(a.close(timeout=10))
            yield sleep(0.02)
            yield kill(closer)
            assert a.closed and a.socket.fileno() == -1
        finally:
            abort_all(a, b)

    run(main)


# ── Connecting ───────────────────────────────────────────────────────────────


def test_open_connection_refused_and_names():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused

        def main():
            with pytest.raises(ConnectionRefusedError):
                yield open_connection("127.0.0.1", port)
            with pytest.raises(socket.gaierror):  # .invalid never resolves (RFC 2606)
                yield open_connection("example.invalid", port)
            with pytest.raises(TypeError):
                yield open_connection("127.0.0.1", port, ssl="yes")
            with pytest.raises(ValueError):
                yield open_connection("127.0.0.1", port, server_hostname="x")

        run(main)


def test_open_connection_to_localhost_tries_each_address(poller):
    # The server listens on IPv4 only; 'localhost' may resolve to ::1 first.
    def main():
        server, port = yield from start_server(echo_lines)
        s = yield open_connection("localhost", port, timeout=5)
        try:
            yield s.write_all(b"hi\n")
            line = yield s.readline()
            peer = s.peername
        finally:
            yield s.close()
        yield kill(server)
        return line, peer

    line, peer = run(main, poller=poller)
    assert line == b"hi\n" and peer[:2] == ("127.0.0.1", peer[1])


def test_open_connection_tries_each_address_in_order(monkeypatch):
    import syscalls.streams as streams

    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, not listening: refused

        def main():
            server, port = yield from start_server(echo_lines)
            addresses = [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", dead.getsockname()),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]

            def resolve(host, port):
                return addresses
                yield

            monkeypatch.setattr(streams, "_resolve", resolve)
            s = yield open_connection("anything", port)
            try:
                yield s.write_all(b"second\n")
                line = yield s.readline()
            finally:
                yield s.close()
            yield kill(server)
            return line, s.peername[1] == port

        assert run(main) == (b"second\n", True)


def test_open_connection_ipv6():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = listen_tcp("::1", 0)
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1: {exc}")

    def main():
        server = yield spawn(listener.serve(echo_lines))
        s = yield open_connection("::1", listener.port)
        try:
            yield s.write_all(b"six\n")
            return (yield s.readline())
        finally:
            yield s.close()
            yield kill(server)

    assert run(main) == b"six\n"


def test_open_connection_timeout_covers_the_handshake():
    # A TCP server that accepts and never says a word: the TLS handshake waits for ever.
    import ssl

    with socket.create_server(("127.0.0.1", 0)) as mute:

        def main():
            ctx = ssl.create_default_context()
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                yield open_connection("127.0.0.1", mute.getsockname()[1], ssl=ctx, timeout=0.1)
            return time.monotonic() - t0

        assert run(main) < 2.0


# ── Serving ──────────────────────────────────────────────────────────────────


def test_server_with_20_clients_survives_a_failing_handler(poller, caplog):
    def handler(stream):
        line = yield stream.readline()
        if line == b"boom\n":
            raise RuntimeError("handler exploded")
        yield stream.write_all(b"echo " + line)

    def client(port, i):
        s = yield open_connection("127.0.0.1", port)
        try:
            yield s.write_all(b"boom\n" if i == 7 else b"%d\n" % i)
            return (yield s.read())  # the server closes after its answer
        finally:
            yield s.close()

    def main():
        server, port = yield from start_server(handler)
        tasks = []
        for i in range(20):
            tasks.append((yield spawn(client, port, i)))
        replies = []
        for t in tasks:
            replies.append((yield join(t)))
        late = yield from client(port, 99)  # and it still serves afterwards
        yield kill(server)
        return replies, late

    with caplog.at_level(logging.ERROR, logger="yieldos.streams"):
        replies, late = run(main, poller=poller)
    assert replies == [b"" if i == 7 else b"echo %d\n" % i for i in range(20)]
    assert late == b"echo 99\n"
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "handler exploded" in failures[0].exc_text


def test_async_handler_and_async_with(poller):
    async def handler(stream):
        async with stream:
            async for line in stream:
                await stream.write_all(line.upper())

    async def main():
        server, port = await _await_gen(start_server(handler))
        s = await open_connection("127.0.0.1", port)
        async with s:
            await s.write_all(b"abc\ndef\n")
            got = [await s.readline(), await s.readline()]
        await kill(server)
        return got

    assert run(main, poller=poller) == [b"ABC\n", b"DEF\n"]


class _GenAwaitable:
    def __init__(self, gen):
        self.gen = gen

    def __await__(self):
        return (yield from self.gen)


def _await_gen(gen):
    return _GenAwaitable(gen)


def test_killing_the_server_closes_every_connection(poller):
    ended = []

    def handler(stream):
        try:
            yield stream.readline()
        finally:
            ended.append(stream.peername)

    def main():
        ports = Queue()
        listener_box = []

        def on_listen(lis):
            listener_box.append(lis)
            ports.put_nowait(lis.port)

        server = yield spawn(serve_tcp(handler, "127.0.0.1", 0, on_listen=on_listen))
        port = yield ports.get()
        clients = []
        for _ in range(5):
            clients.append((yield open_connection("127.0.0.1", port)))
        yield sleep(0.02)
        yield kill(server)
        eofs = []
        for c in clients:
            eofs.append((yield c.read()))
        for c in clients:
            yield c.close()
        with pytest.raises(ConnectionRefusedError):
            yield open_connection("127.0.0.1", port)
        return eofs, listener_box[0].socket.fileno()

    eofs, fileno = run(main, poller=poller)
    assert eofs == [b""] * 5 and len(ended) == 5 and fileno == -1


def test_server_ended_by_the_kernel_shutdown():
    # main returns with the server and connections still running: the kernel kills them all.
    def main():
        server, port = yield from start_server(echo_lines)
        for _ in range(3):
            c = yield open_connection("127.0.0.1", port)
            yield c.write_all(b"x\n")
            yield c.readline()
            c.abort()
        yield sleep(0)

    run(main)


def test_listen_on_every_interface_and_on_listen_failing():
    with listen_tcp(None, 0) as lis:
        assert lis.port > 0

    def on_listen(lis):
        on_listen.sock = lis.socket
        raise RuntimeError("no thanks")

    def main():
        with pytest.raises(RuntimeError, match="no thanks"):
            yield serve_tcp(echo_lines, "127.0.0.1", 0, on_listen=on_listen)

    run(main)
    assert on_listen.sock.fileno() == -1


def test_bad_server_arguments():
    with pytest.raises(TypeError, match="SSLContext"):
        listen_tcp("127.0.0.1", 0, ssl=True)  # type: ignore[arg-type]

    def main():
        with listen_tcp("127.0.0.1", 0) as lis:
            with pytest.raises(TypeError, match="callable"):
                yield lis.serve(42)
            assert "Listener" in repr(lis)

    run(main)


class FlakyListener(socket.socket):
    """A listening socket whose accept fails with ECONNABORTED once (a connection that
    died in the backlog), then with EMFILE the next ``failures`` times."""

    failures = 0
    calls = 0

    def accept(self):
        FlakyListener.calls += 1
        if FlakyListener.calls == 1:
            raise OSError(errno.ECONNABORTED, os.strerror(errno.ECONNABORTED))
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return super().accept()


def test_accept_emfile_backs_off_and_goes_on(poller, caplog):
    sock = FlakyListener(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.failures = 4
    FlakyListener.calls = 0
    listener = Listener(sock)

    def main():
        server = yield spawn(listener.serve(echo_lines))
        t0 = time.monotonic()
        s = yield open_connection("127.0.0.1", listener.port)
        try:
            yield s.write_all(b"still here\n")
            line = yield s.readline()
        finally:
            yield s.close()
        elapsed = time.monotonic() - t0
        yield kill(server)
        return line, elapsed

    with caplog.at_level(logging.WARNING, logger="yieldos.streams"):
        line, elapsed = run(main, poller=poller)
    assert line == b"still here\n"
    assert FlakyListener.calls >= 6
    assert elapsed >= 4 * 0.1 * 0.9  # it paused between the tries
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Too many open files" in warnings[0].getMessage()
    assert sock.fileno() == -1  # serve closed it when killed


CHILD_EMFILE = textwrap.dedent(
    """
    import os, resource, sys
    sys.path.insert(0, {repo!r})
    import kernel
    from syscalls.streams import listen_tcp

    def handler(stream):
        line = yield stream.readline()
        yield stream.write_all(b"echo " + line)
        yield stream.read()  # until the client hangs up: this holds an fd meanwhile

    def main():
        listener = listen_tcp("127.0.0.1", 0)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        # Room for 3 more fds (the limit is one more than the highest fd number allowed).
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 4, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))
        print(listener.port, flush=True)
        yield listener.serve(handler)

    import logging
    logging.basicConfig(level=logging.WARNING)
    try:
        kernel.run(main)
    except KeyboardInterrupt:
        pass
    """
)


def test_accept_emfile_for_real_in_a_child_process():
    """The server runs out of fds for real (RLIMIT_NOFILE lowered in a child process), backs
    off, and serves the waiting clients once earlier ones hang up."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_EMFILE.format(repo=REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    clients = []
    try:
        port = int(_readline_within(child.stdout, 5.0))
        for _ in range(8):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(c)
        for i, c in enumerate(clients):
            c.sendall(b"%d\n" % i)
        replies = {}
        deadline = time.monotonic() + 7.0
        while len(replies) < len(clients) and time.monotonic() < deadline:
            for i, c in enumerate(clients):
                if i in replies:
                    continue
                c.settimeout(0.05)
                try:
                    data = c.recv(100)
                except socket.timeout:
                    continue
                replies[i] = data
                c.close()  # hang up: the server's fd for it is freed
        assert replies == {i: b"echo %d\n" % i for i in range(8)}
    finally:
        for c in clients:
            c.close()
        child.send_signal(2)
        try:
            _, err = child.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
    assert b"Too many open files" in err, err.decode(errors="replace")


def _readline_within(pipe, seconds):
    import select

    r, _, _ = select.select([pipe], [], [], seconds)
    if not r:
        raise AssertionError(f"no line from the child within {seconds} s")
    return pipe.readline()


def test_abort_wakes_a_task_reading_the_stream(poller):
    a, b = socket.socketpair()

    def main():
        s = Stream(a)

        def reader():
            try:
                yield s.readline()
            except OSError as e:
                return e.errno

        t = yield spawn(reader)
        yield sleep(0.005)
        s.abort()
        with timeout(2):
            return (yield join(t))

    try:
        assert run(main, poller=poller) == 9  # EBADF, not left waiting for ever
    finally:
        b.close()
        a.close()
