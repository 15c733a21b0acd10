"""Fault injection: the clients and conditions a server meets outside the happy path.

Each test drives a real server over real loopback TCP and breaks one thing: a client
that resets in the middle of a request, half-closes, trickles bytes, sends a line too
long, vanishes while a large answer is being written, or never reads; a process out
of file descriptors; signals raining on a process whose tasks are all blocked. Each
checks three things: the fault lands only where it belongs (that connection's
handler, that task), everything else goes on being served, and nothing is left
behind (tasks, fds).

Servers run in this process when the test must look inside them (which handler saw
which error, how many tasks the kernel has), and as a subprocess of
examples/http_server.py when the fault is the process's own (its fd limit, its CPU
time). Nothing waits on a guess: the tests wait for events, for the server's replies,
or poll an observable condition until a deadline.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from conftest import REPO, load_example, open_fds, run
from kernel import TaskState
from kernel.traps import SendAll
from syscalls import (
    Event,
    Queue,
    SignalSet,
    accept,
    close,
    connect,
    current_kernel,
    current_task,
    join,
    kill,
    move_on_after,
    operation,
    recv,
    run_in_thread,
    sched_yield,
    sendall,
    sleep,
    spawn,
    spawn_process,
    timeout,
    wait_readable,
    wait_signal,
)
from syscalls.streams import IncompleteReadError, open_connection, serve_tcp

EXAMPLES = Path(REPO) / "examples"


httpd = load_example("http_server")
echo = load_example("echo_server")


# ── Watching the server from inside ──────────────────────────────────────────

#: The Stream operations http_server's handler uses, recorded for each connection.
TRACED = ("readline", "read", "read_exactly", "drain", "write_all", "write_eof")


class Conn:
    """One connection as the server's handler lived it."""

    def __init__(self, stream, task) -> None:
        self.stream = stream
        self.task = task  # the serve_tcp task that runs the handler
        self.ops: list[tuple[str, object]] = []  # (operation, its result or its exception)
        self.current = None  # the operation the handler is in, if any
        self.raised = None  # what the handler raised (serve_tcp would log it)
        self.ended = False

    def errors(self) -> list[BaseException]:
        return [outcome for _, outcome in self.ops if isinstance(outcome, BaseException)]


class Observer:
    """Wraps http_server's handler: records, per client port, what each stream operation
    returned or raised, and how the handler ended. It changes nothing in what they do."""

    def __init__(self, config) -> None:
        self.config = config
        self.conns: dict[int, Conn] = {}  # by the client's port

    def handler(self, stream):
        conn = self.conns[stream.peername[1]] = Conn(stream, current_task())
        for name in TRACED:  # instance attributes shadow the methods, also for self.drain()
            setattr(stream, name, self._traced(conn, name, getattr(stream, name)))
        try:
            yield from httpd.handle(self.config, stream)
        except BaseException as exc:
            conn.raised = exc
            raise
        finally:
            conn.ended = True

    @staticmethod
    def _traced(conn, name, method):
        @operation
        def traced(*args, **kwargs):
            conn.current = name
            try:
                result = yield method(*args, **kwargs)
            except BaseException as exc:
                conn.ops.append((name, exc))
                raise
            finally:
                conn.current = None
            conn.ops.append((name, result))
            return result

        return traced

    def conn(self, port: int):
        """The server's record of the connection from ``port``, once its handler has begun."""
        yield from until(lambda: port in self.conns, f"a handler for the client at :{port}")
        return self.conns[port]


def until(predicate, what: str, seconds: float = 5.0):
    """Wait (in a task) until ``predicate()`` is true, looking every few milliseconds;
    fail after ``seconds``."""
    try:
        with timeout(seconds):
            while not predicate():
                yield sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"still waiting after {seconds} s for {what}") from None


def serving(handler, body, **listen):
    """Run ``body(port)`` as the main task of a fresh kernel while ``handler`` serves a free
    loopback port; the server is killed (its connections closed) when the body returns."""

    def main():
        ports = Queue()
        server = yield spawn(
            serve_tcp(
                handler, "127.0.0.1", 0, on_listen=lambda lis: ports.put_nowait(lis.port), **listen
            )
        )
        port = yield ports.get()
        try:
            return (yield from body(port))
        finally:
            yield kill(server)

    return run(main)


def reset(sock: socket.socket):
    """Abort a connection: with SO_LINGER (on, 0 s), close() sends a TCP reset (RST)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    yield close(sock)


def connected(port: int, rcvbuf: int = 0):
    """A client socket connected to ``port`` (``rcvbuf``: a small receive buffer, set first)."""
    sock = socket.socket()
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        yield connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def get_ok(stream, target: str = "/"):
    """One keep-alive GET on ``stream`` that must be answered 200 with the right body."""
    status, headers, body = yield from httpd.fetch(stream, "GET", target)
    assert status == 200, f"GET {target}: {status} {body[:80]!r}"
    assert headers["connection"] == "keep-alive"
    if target == "/":
        assert body == httpd.INDEX
    return body


def kernel_census():
    """(tasks alive, fds open) in this process, from inside a task."""
    return len(current_kernel().tasks), len(open_fds())


def yieldos_problems(caplog) -> list[str]:
    """Warnings and errors logged by the kernel or the streams library."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("yieldos") and r.levelno >= logging.WARNING
    ]


# ── A client resets in the middle of a request ───────────────────────────────

#: What each faulty client sends before it resets, and what the server holds in its
#: buffer (not yet parsed) once all of it arrived.
HALF_REQUESTS = {
    "half a request line": (b"GET /hel", b"GET /hel"),
    "half the headers": (b"GET / HTTP/1.1\r\nHost: x\r\nUser-Ag", b"User-Ag"),
    "half a body": (
        b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500,
        b"x" * 500,
    ),
}


def test_reset_mid_request_ends_only_that_handler(caplog):
    caplog.set_level(logging.WARNING)
    # A long idle timeout: a handler that ends within seconds was ended by the reset.
    observer = Observer(httpd.Config(httpd.EXAMPLES, idle_timeout=30.0))

    def faulty(port, data, unparsed):
        sock = yield from connected(port)
        conn = yield from observer.conn(sock.getsockname()[1])
        yield sendall(sock, data)
        # Mid-request for the server too: it has read our bytes and waits for the rest.
        yield from until(lambda: conn.stream.buffered == len(unparsed), "the server to read")
        yield from reset(sock)
        start = time.monotonic()
        yield from until(lambda: conn.ended, "the handler to end", seconds=5.0)
        return conn, time.monotonic() - start

    def body(port):
        steady = yield open_connection("127.0.0.1", port, timeout=5)  # one keep-alive client
        try:
            yield from get_ok(steady)
            before = kernel_census()
            outcomes = []
            for _ in range(3):  # three rounds of every kind, each round at once
                tasks = []
                for what, (data, unparsed) in HALF_REQUESTS.items():
                    tasks.append((what, (yield spawn(faulty, port, data, unparsed))))
                for what, task in tasks:
                    outcomes.append((what, *(yield join(task))))
                yield from get_ok(steady, "/hello?name=steady")  # served between the rounds
            for _, conn, _ in outcomes:
                yield join(conn.task)  # the server's task for that connection is gone
            after = kernel_census()
        finally:
            yield steady.close()
        fresh = yield open_connection("127.0.0.1", port, timeout=5)
        try:
            yield from get_ok(fresh)
        finally:
            yield fresh.close()
        return outcomes, before, after

    outcomes, before, after = serving(observer.handler, body)
    assert after == before, "tasks or fds left behind"
    assert len(outcomes) == 9
    for what, conn, took in outcomes:
        assert took < 3.0, f"{what}: the handler took {took:.1f} s to notice the reset"
        assert conn.raised is None, f"{what}: the handler raised {conn.raised!r}"
        # Nothing was answered: the client was gone; the handler only read.
        assert {name for name, _ in conn.ops} <= {"readline", "read_exactly"}, (what, conn.ops)
        name, last = conn.ops[-1]
        reset_seen = isinstance(last, ConnectionResetError)
        eof_seen = isinstance(last, IncompleteReadError) or (
            isinstance(last, bytes) and not last.endswith(b"\n")
        )
        assert reset_seen or eof_seen, f"{what}: the handler's last read gave {last!r}"
        assert all(isinstance(e, (ConnectionResetError, EOFError)) for e in conn.errors())
    steady = [c for c in observer.conns.values() if c not in {o[1] for o in outcomes}]
    assert len(steady) == 2  # the keep-alive client and the fresh one
    assert all(not c.errors() and c.raised is None for c in steady)
    assert yieldos_problems(caplog) == []


# ── A client half-closes after its request ───────────────────────────────────


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw bytes into whole HTTP responses (Content-Length framed); nothing may be left."""
    responses = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"a response head is cut short: {head[:80]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        length = int(headers["content-length"])
        assert len(data) >= length, f"a body is cut short: {len(data)} of {length} bytes"
        responses.append((int(status_line.split()[1]), headers, data[:length]))
        data = data[length:]
    return responses


def read_to_eof(sock: socket.socket, seconds: float = 5.0):
    """Everything the server sends on ``sock`` until it closes (in a task)."""
    chunks = []
    with timeout(seconds):
        while chunk := (yield recv(sock, 1 << 16)):
            chunks.append(chunk)
    return b"".join(chunks)


def test_half_close_after_a_full_request_still_gets_the_whole_response(tmp_path):
    big = os.urandom(2 << 20)
    (tmp_path / "big.bin").write_bytes(big)
    payload = os.urandom(256 << 10)
    observer = Observer(httpd.Config(tmp_path.resolve(), idle_timeout=30.0))
    requests = {
        "GET /": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /echo": b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload,
        "two pipelined": b"GET /hello?name=a HTTP/1.1\r\n\r\nGET /static/big.bin HTTP/1.1\r\n\r\n",
    }

    def client(port, data):
        sock = yield from connected(port)
        try:
            yield sendall(sock, data)
            sock.shutdown(socket.SHUT_WR)  # our FIN: "no more requests", while we still read
            answer = yield from read_to_eof(sock)
        finally:
            yield close(sock)
        return answer

    def body(port):
        tasks = []
        for data in requests.values():  # all three at once
            tasks.append((yield spawn(client, port, data)))
        answers = []
        for task in tasks:
            answers.append((yield join(task)))
        return answers

    answers = dict(zip(requests, serving(observer.handler, body)))
    page = parse_responses(answers["GET /"])
    assert [(s, b) for s, _, b in page] == [(200, httpd.INDEX)]
    echoed = parse_responses(answers["POST /echo"])
    assert [(s, b) for s, _, b in echoed] == [(200, payload)]
    two = parse_responses(answers["two pipelined"])
    assert [(s, b) for s, _, b in two] == [(200, b"Hello, a!\n"), (200, big)]
    # Each handler answered, then read our FIN as a clean end: no error anywhere.
    assert len(observer.conns) == 3
    for conn in observer.conns.values():
        assert conn.raised is None and conn.errors() == []
        assert conn.ops[-1] == ("readline", b"")


# ── Slow loris: clients that trickle a request byte by byte ──────────────────

LORIS_IDLE = 0.5  # the server's --idle-timeout in this test
LORIS_INTERVAL = 0.1  # a loris sends one byte this often: never silent for the idle timeout


def loris(port: int, prefix: bytes, trickle: bytes):
    """Send ``prefix`` at once, then ``trickle`` one byte per `LORIS_INTERVAL`, until the
    server answers or closes. Return (bytes of ``trickle`` sent, the server's answer, how it
    ended, seconds from the first byte to the server's move)."""
    sock = yield from connected(port)
    try:
        start = time.monotonic()
        yield sendall(sock, prefix)
        sent = 0
        while sent < len(trickle):
            try:
                yield sendall(sock, trickle[sent : sent + 1])
            except OSError:  # EPIPE, ECONNRESET: the server closed already
                break
            sent += 1
            with move_on_after(LORIS_INTERVAL) as wait:
                yield wait_readable(sock)  # the server speaks, or closes
            if not wait.expired:
                break
        took = time.monotonic() - start
        try:
            answer, end = (yield from read_to_eof(sock)), "eof"
        except ConnectionResetError:  # it closed with one of our bytes unread: TCP resets
            answer, end = b"", "reset"
        return sent, answer, end, took
    finally:
        yield close(sock)


def test_slow_loris_is_dropped_while_normal_clients_are_served():
    observer = Observer(httpd.Config(httpd.EXAMPLES, idle_timeout=LORIS_IDLE))
    # Each would need 8 s to finish: 80 bytes at one per 0.1 s.
    in_line = (b"", b"GET /" + b"a" * 64 + b" HTTP/1.1\r\n")
    in_headers = (b"GET / HTTP/1.1\r\n", b"User-Agent: " + b"b" * 66 + b"\r\n\r\n")
    lorises_done = []

    def normal(port, client):
        stream = yield open_connection("127.0.0.1", port, timeout=5)
        try:
            count = 0
            while not lorises_done and count < 10_000:
                yield from get_ok(stream)
                payload = f"client {client} request {count}".encode()
                status, _, answer = yield from httpd.fetch(stream, "POST", "/echo", payload)
                assert (status, answer) == (200, payload)
                count += 2
        finally:
            yield stream.close()
        return count

    def body(port):
        before = kernel_census()
        normals = []
        for client in range(10):
            normals.append((yield spawn(normal, port, client)))
        lorises = []
        for kind in [in_line] * 5 + [in_headers] * 5:
            lorises.append((yield spawn(loris, port, *kind)))
        dropped = []
        for task in lorises:
            dropped.append((yield join(task)))
        lorises_done.append(True)
        served = []
        for task in normals:
            served.append((yield join(task)))
        for conn in list(observer.conns.values()):
            yield join(conn.task)  # the 408s linger a moment, then close
        return dropped, served, before, kernel_census()

    dropped, served, before, after = serving(observer.handler, body)
    assert after == before, "tasks or fds left behind"
    for i, (sent, answer, end, took) in enumerate(dropped):
        kind = "request line" if i < 5 else "headers"
        assert LORIS_IDLE * 0.9 < took < LORIS_IDLE + 2.5, f"loris in the {kind}: {took:.2f} s"
        assert sent < 20, f"loris in the {kind} sent {sent} bytes before it was dropped"
        if kind == "request line":  # between requests: closed quietly
            assert answer == b"" and end in ("eof", "reset"), (answer, end)
        else:  # inside a request: 408, then the connection is closed
            responses = parse_responses(answer)
            assert [status for status, _, _ in responses] == [408], answer
            assert responses[0][1]["connection"] == "close" and end == "eof"
    # Every normal client made requests for as long as the lorises lived, all answered.
    assert len(served) == 10 and min(served) >= 4, served
    assert all(conn.raised is None for conn in observer.conns.values())


# ── A client vanishes while a large answer is being written ──────────────────

BIG_FILE = 8 << 20  # bytes: far more than the socket buffers of both ends hold
BIG_BODY = 4 << 20


@pytest.mark.parametrize("how", ["reset", "close"])
def test_vanish_during_a_large_write_ends_only_that_handler(how, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG_FILE))
    (tmp_path / "small.txt").write_bytes(b"small\n")
    # A long idle timeout (it also bounds a drain): only the client's going can end one.
    config = httpd.Config(tmp_path.resolve(), idle_timeout=30.0, max_body=BIG_BODY)
    observer = Observer(config)
    requests = {
        "a big static file": b"GET /static/big.bin HTTP/1.1\r\n\r\n",
        "a big echo": b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % BIG_BODY
        + os.urandom(BIG_BODY),
    }

    def vanishing(port, request):
        sock = yield from connected(port, rcvbuf=4096)  # a small window: the server must wait
        conn = yield from observer.conn(sock.getsockname()[1])
        yield sendall(sock, request)
        yield wait_readable(sock)  # the answer has begun to arrive ...
        yield from until(lambda: conn.current == "drain", "the server to be writing")
        if how == "reset":  # ... and we go, without reading it
            yield from reset(sock)
        else:  # a close with unread input makes TCP reset the connection too
            yield close(sock)
        yield from until(lambda: conn.ended, "the handler to end")
        return conn

    def body(port):
        steady = yield open_connection("127.0.0.1", port, timeout=5)
        try:
            assert (yield from get_ok(steady, "/static/small.txt")) == b"small\n"
            before = kernel_census()
            gone = []
            for _ in range(2):
                for request in requests.values():
                    gone.append((yield from vanishing(port, request)))
                    yield from get_ok(steady)
            for conn in gone:
                yield join(conn.task)
            after = kernel_census()
        finally:
            yield steady.close()
        return gone, before, after

    gone, before, after = serving(observer.handler, body)
    assert after == before, "tasks or fds left behind"
    for conn in gone:
        assert conn.raised is None
        name, error = conn.ops[-1]
        assert name == "drain" and isinstance(error, (BrokenPipeError, ConnectionResetError)), (
            conn.ops[-1]
        )
    others = [c for c in observer.conns.values() if c not in gone]
    assert len(others) == 1 and others[0].errors() == []
    assert yieldos_problems(caplog) == []


# ── examples/http_server.py as a program ─────────────────────────────────────


class HttpProcess:
    """examples/http_server.py running as a child process on a free port.

    ``rlimit_nofile``: the child's soft limit on open fds, set (prlimit) before it
    listens. Its stderr is collected by a thread (`stderr_lines`), so a full pipe never
    blocks it.
    """

    def __init__(self, *args: str, rlimit_nofile: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "http_server.py"), "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        if rlimit_nofile:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the child's is the same
            resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (rlimit_nofile, hard))
        self.stderr_lines: list[str] = []
        self.stderr_changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # the hang watchdog bounds this wait
        assert line.startswith("listening on 127.0.0.1:"), (line, self.stderr())
        self.port = int(line.rsplit(":", 1)[1])

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self.stderr_changed:
                self.stderr_lines.append(raw.decode(errors="replace"))
                self.stderr_changed.notify_all()

    def stderr(self) -> str:
        with self.stderr_changed:
            return "".join(self.stderr_lines)

    def wait_for_stderr(self, text: str, seconds: float) -> None:
        with self.stderr_changed:
            if not self.stderr_changed.wait_for(
                lambda: text in "".join(self.stderr_lines), seconds
            ):
                raise AssertionError(f"no {text!r} on the server's stderr in {seconds} s")

    def fds(self) -> int:
        """How many fds the server has open now."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Ctrl-C it (every connection is closed, it exits 0); kill it if it does not go."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self._reader.join(timeout=5)
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self.proc.stdout.close()
            self.proc.stderr.close()

    def __enter__(self) -> HttpProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def blocking_client(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def recv_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes (the socket's timeout bounds each wait)."""
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def until_true(predicate, what: str, seconds: float = 5.0) -> None:
    """`until` for plain code: look every few milliseconds, fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {seconds} s for {what}")
        time.sleep(0.01)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on a keep-alive connection, where it is the only one: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(1 << 16)
        assert chunk, "the server closed the connection in the middle of a body"
        body += chunk
    assert len(body) == length, "more than one response"
    return int(head.split()[1]), body


def readable(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed), without waiting."""
    return bool(select.select([sock], [], [], 0)[0])


def get_once(port: int, target: str = "/") -> tuple[int, bytes]:
    """GET ``target`` on a fresh connection that asks to be closed; (status, body)."""
    with blocking_client(port) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        [(status, _, body)] = parse_responses(recv_to_eof(sock))
    return status, body


# ── A line over the limit ────────────────────────────────────────────────────


def test_line_over_the_limit_gets_a_clear_error_and_the_server_goes_on():
    long_target = b"/" + b"t" * httpd.MAX_LINE
    long_header = b"X-Long: " + b"h" * httpd.MAX_LINE + b"\r\n"
    with HttpProcess("--idle-timeout", "30") as server:
        assert get_once(server.port) == (200, httpd.INDEX)
        baseline = server.fds()
        answers = {}
        for what, request in {
            "request line": b"GET " + long_target + b" HTTP/1.1\r\n\r\n",
            "header": b"GET / HTTP/1.1\r\nHost: x\r\n" + long_header + b"\r\n",
        }.items():
            with blocking_client(server.port) as sock:
                sock.sendall(request)
                answers[what] = parse_responses(recv_to_eof(sock))  # EOF: it closed
        # A line that never ends: 4 MiB with no newline, still being sent as the answer
        # comes. The server answers once it has read past the limit, and lingers (reads
        # and drops the rest) so that closing does not reset the answer away.
        with blocking_client(server.port) as sock:
            endless = threading.Thread(target=send_ignoring_errors, args=(sock, 4 << 20))
            endless.start()
            try:
                answers["endless line"] = parse_responses(recv_to_eof(sock))
            finally:
                endless.join(timeout=5)
        assert get_once(server.port, "/hello?name=next") == (200, b"Hello, next!\n")
        until_true(lambda: server.fds() == baseline, "the server to close those connections")
        assert server.stderr() == ""
    statuses = {what: [status for status, _, _ in got] for what, got in answers.items()}
    assert statuses == {"request line": [414], "header": [431], "endless line": [414]}
    for what, [(status, headers, body)] in answers.items():
        assert headers["connection"] == "close", what
        assert body.startswith(b"%d " % status) and b"longer than 8192 bytes" in body, body


def send_ignoring_errors(sock: socket.socket, size: int) -> None:
    """Send ``size`` bytes of one unending request line; the server may close meanwhile."""
    try:
        sock.sendall(b"GET /" + b"e" * size)
    except OSError:
        pass


# ── Out of file descriptors ──────────────────────────────────────────────────

FD_LIMIT = 40  # the server's soft RLIMIT_NOFILE in this test
QUEUED = 8  # connections made beyond what the server can accept
CPU_WINDOW = 1.5  # seconds over which the saturated server's CPU time is measured


def test_emfile_backs_off_keeps_serving_and_recovers():
    with HttpProcess("--idle-timeout", "30", rlimit_nofile=FD_LIMIT) as server, ExitStack() as s:
        baseline = server.fds()
        capacity = FD_LIMIT - baseline  # connections it can accept
        assert capacity >= 10, f"the server starts with {baseline} fds open"
        held = [s.enter_context(blocking_client(server.port)) for _ in range(capacity)]
        queued = [s.enter_context(blocking_client(server.port)) for _ in range(QUEUED)]
        server.wait_for_stderr("Too many open files", seconds=5)
        until_true(lambda: server.fds() == FD_LIMIT, "the server to use every fd it may")

        def each_held_is_served() -> None:
            for sock in held:
                sock.sendall(b"GET /hello?name=held HTTP/1.1\r\n\r\n")
            for sock in held:
                assert read_response(sock) == (200, b"Hello, held!\n")

        each_held_is_served()
        for sock in queued:  # waits in the backlog, unread
            sock.sendall(b"GET /hello?name=queued HTTP/1.1\r\nConnection: close\r\n\r\n")
        cpu, start = server.cpu_seconds(), time.monotonic()
        time.sleep(CPU_WINDOW)  # a measurement window, not a wait for something
        cpu, wall = server.cpu_seconds() - cpu, time.monotonic() - start
        print(f"server CPU while out of fds: {cpu:.3f} s in {wall:.2f} s")
        # Still saturated all along: nothing queued was accepted, let alone answered; and
        # the many failed accepts were reported once.
        assert server.fds() == FD_LIMIT
        assert not any(readable(sock) for sock in queued)
        assert server.stderr().count("Too many open files") == 1, server.stderr()
        # An accept loop spinning on EMFILE would burn a whole core; backing off, ~0.
        assert cpu < 0.2 * wall, f"the server used {cpu:.2f} s of CPU in {wall:.2f} s"
        each_held_is_served()
        for sock in held:
            sock.close()  # fds free up: the server accepts again
        for sock in queued:  # now accepted, and answered
            [(status, _, body)] = parse_responses(recv_to_eof(sock))
            assert (status, body) == (200, b"Hello, queued!\n")
        assert get_once(server.port) == (200, httpd.INDEX)
        for sock in queued:
            sock.close()
        until_true(lambda: server.fds() == baseline, "the server to close every connection")
        log = server.stderr()
    # Only warnings (one per episode of EMFILE: freeing fds one by one may make several).
    assert all("Too many open files" in line for line in log.splitlines()), log


# ── Signals while every task is blocked ──────────────────────────────────────

PINGS = 10  # signals sent one at a time, each waited for by a task
SLEEP = 0.5  # seconds the sleeping task sleeps, under the signal storm


def test_signals_during_blocking_traps_interrupt_nothing_and_reach_their_waiters():
    """A Python handler for SIGUSR1 runs hundreds of times while tasks wait in recv, accept,
    sleep, a wait channel, a worker thread and a child process: every wait ends as it
    should (PEP 475: the kernel's epoll_wait is retried, no InterruptedError reaches a
    task). Meanwhile SIGUSR2 is waited for with wait_signal and a SignalSet: each one
    sent is delivered."""
    handled = [0]  # SIGUSR1 handler runs
    missed = []  # SIGUSR2 that arrived while no task watched it
    blocked = threading.Event()  # every task waits in its trap
    stop = threading.Event()
    job_release = threading.Event()
    problems: list[BaseException] = []
    a, b = socket.socketpair()
    ack_task, ack_thread = socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    child_stdin, feed = os.pipe()
    pipe_ends = {child_stdin, feed}  # those still open
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def storm() -> None:  # both kinds: at the kernel's thread, and at the process
        while not stop.is_set():
            signal.pthread_kill(main_thread, signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.0005)

    def controller() -> None:
        try:
            if not blocked.wait(5):
                raise AssertionError("the tasks never got to their traps")
            storming.start()
            until_true(lambda: handled[0] >= 200, "200 signals handled")
            b.sendall(b"ping")  # recv
            clients.append(socket.create_connection(listener.getsockname(), timeout=5))
            clients[0].sendall(b"hi")  # accept, then recv
            job_release.set()  # the worker thread's job
            os.write(feed, b"through cat")
            os.close(feed)  # the child's stdin ends: cat exits
            pipe_ends.discard(feed)
            ack_thread.settimeout(5)
            for _ in range(PINGS + 1):
                os.kill(os.getpid(), signal.SIGUSR2)
                assert ack_thread.recv(1) == b"!", "a SIGUSR2 was not delivered"
        except BaseException as exc:
            problems.append(exc)

    def job() -> str:
        assert job_release.wait(5)
        return "job done"

    def receiver(event):
        data = yield recv(a, 100)
        event.set()
        return data

    def acceptor():
        conn, _ = yield accept(listener)
        try:
            return (yield recv(conn, 100))
        finally:
            yield close(conn)

    def sleeper():
        start, before = time.monotonic(), handled[0]
        yield sleep(SLEEP)
        return time.monotonic() - start, handled[0] - before

    def child():
        proc = yield spawn_process(["cat"], stdin=child_stdin, stdout=subprocess.PIPE)
        os.close(child_stdin)  # the child has its copy
        pipe_ends.discard(child_stdin)
        try:
            assert proc.stdout is not None
            out = yield proc.stdout.read_all()
            return out, (yield proc.wait())
        finally:
            yield proc.aclose()

    def signals():
        got = [(yield wait_signal(signal.SIGUSR2))]
        with SignalSet(signal.SIGUSR2) as watched:
            yield sendall(ack_task, b"!")  # the next may come: the set is open
            for _ in range(PINGS):
                got.append((yield watched.wait()))
                yield sendall(ack_task, b"!")
        return got

    def main():
        event = Event()
        targets = {
            "recv": functools.partial(receiver, event),
            "accept": acceptor,
            "sleep": sleeper,
            "wait channel": event.wait,
            "thread": functools.partial(run_in_thread, job),
            "process": child,
            "signals": signals,
        }
        tasks = {}
        for name, target in targets.items():
            tasks[name] = yield spawn(target)
        yield sched_yield()  # each has run up to its first blocking trap
        blocked.set()
        results = {}
        with timeout(8):  # if a wait never ends, say so before conftest's watchdog does
            for name, task in tasks.items():
                results[name] = yield join(task)
        return results

    clients: list[socket.socket] = []
    control = threading.Thread(target=controller)
    storming = threading.Thread(target=storm)

    def on_usr1(signum, frame) -> None:
        handled[0] += 1

    previous = {
        signal.SIGUSR1: signal.signal(signal.SIGUSR1, on_usr1),
        signal.SIGUSR2: signal.signal(signal.SIGUSR2, lambda signum, frame: missed.append(signum)),
    }
    try:
        control.start()
        results = run(main)
    except BaseException:
        if problems:  # the controller's failure is why the run went wrong
            raise AssertionError(f"the controller failed: {problems!r}") from problems[0]
        raise
    finally:
        blocked.set()
        stop.set()
        control.join(timeout=5)
        if storming.ident is not None:
            storming.join(timeout=5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for sock in (a, b, ack_task, ack_thread, listener, *clients):
            sock.close()
        for fd in pipe_ends:
            os.close(fd)
    assert problems == []
    assert missed == []
    elapsed, during_sleep = results.pop("sleep")
    assert elapsed >= SLEEP and during_sleep >= 10, (elapsed, during_sleep)
    assert results == {
        "recv": b"ping",
        "accept": b"hi",
        "wait channel": True,
        "thread": "job done",
        "process": (b"through cat", 0),
        "signals": [signal.SIGUSR2] * (PINGS + 1),
    }
    assert handled[0] >= 200


# ── The echo server: a client that sends and never reads ─────────────────────


def test_echo_client_that_never_reads_does_not_stall_the_others(caplog):
    caplog.set_level(logging.WARNING)
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()

    def hog_sends(sock):
        yield sendall(sock, bytes(64 << 20))  # far more than every buffer on the way holds

    def main():
        server = yield spawn(echo.serve, listener, name="serve")
        before = kernel_census()
        hog = socket.socket()
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # small buffers fill sooner
            hog.setsockopt(socket.SOL_SOCKET, option, 1 << 16)
        yield connect(hog, address)
        name = "handle {}:{}".format(*hog.getsockname())
        sender = yield spawn(hog_sends, hog)
        tasks = current_kernel().tasks
        yield from until(lambda: any(t.name == name for t in tasks.values()), "the hog's handler")
        [handler] = [t for t in tasks.values() if t.name == name]

        def stuck() -> bool:  # the server writes to the hog, which does not read
            return handler.state is TaskState.BLOCKED and isinstance(handler.trap, SendAll)

        yield from until(stuck, "the hog's handler to block in sendall")
        others = []
        for client in range(10):
            others.append((yield spawn(echo.echo_client, address, client)))
        echoed = []
        with timeout(5):
            for task in others:
                echoed.append((yield join(task)))
        still = stuck() and sender.state is TaskState.BLOCKED
        yield kill(sender)
        yield from reset(hog)
        try:
            yield join(handler)
            handler_error = None
        except OSError as exc:
            handler_error = exc
        after = kernel_census()
        yield kill(server)
        return echoed, still, handler_error, before, after

    with listener:
        echoed, still, handler_error, before, after = run(main)
    assert echoed == [sum(map(len, echo.messages_for(client))) for client in range(10)]
    assert still, "the hog got unstuck: the test did not fill the buffers"
    # The reset reached the hog's handler, and only it: blocked in sendall, only the
    # reset could end it, and the handler takes a client's reset quietly (no error,
    # nothing logged).
    assert handler_error is None
    assert after == before
    assert yieldos_problems(caplog) == []
