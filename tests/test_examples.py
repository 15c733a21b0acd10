"""The network examples: examples/http_server.py and examples/chat_server.py.

Each example's ``--selftest`` is run as a program, with the interpreter running the
tests (so PyPy too). Then the servers are driven in-process, on every poller backend,
through the corners a real client can push them into: keep-alive and ``Connection:
close``, a line over the limit, a path that climbs out of the static root, a client
that says nothing, a chat client that never reads.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, load_example, run
from syscalls import Queue, connect, kill, recv, sendall, spawn, timeout
from syscalls.streams import open_connection, serve_tcp

EXAMPLES = Path(REPO) / "examples"

#: Seconds a self-test may take (each needs about one; the watchdog of conftest is 10).
SELFTEST_TIMEOUT = 60.0


httpd = load_example("http_server")
chat = load_example("chat_server")


# ── The self-tests, as programs ──────────────────────────────────────────────


@pytest.mark.parametrize(
    "example, clients",
    [("http_server", 10), ("chat_server", 5)],
)
def test_selftest(example, clients, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(EXAMPLES / f"{example}.py"),
         "--selftest", str(clients)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SELFTEST_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, f"{example} exited {proc.returncode}:\n{proc.stderr}"
    assert proc.stderr == ""
    assert proc.stdout.startswith("listening on 127.0.0.1:")
    assert "selftest passed" in proc.stdout


# ── Helpers ──────────────────────────────────────────────────────────────────


def serving(handler, body, poller):
    """Run ``body(port)`` as the main task while ``handler`` serves a free loopback port."""

    def main():
        ports = Queue()
        server = yield spawn(
            serve_tcp(handler, "127.0.0.1", 0, on_listen=lambda lis: ports.put_nowait(lis.port))
        )
        port = yield ports.get()
        try:
            return (yield from body(port))
        finally:
            yield kill(server)

    return run(main, poller=poller)


def http_serving(body, poller, **config):
    cfg = httpd.Config(httpd.EXAMPLES, **config)
    return serving(functools.partial(httpd.handle, cfg), body, poller)


def raw_exchange(port, data, wait=5.0):
    """Connect, send ``data``, read until the server closes; return what came back."""
    with socket.socket() as sock:
        yield connect(sock, ("127.0.0.1", port))
        if data:
            yield sendall(sock, data)
        got = b""
        with timeout(wait):
            while chunk := (yield recv(sock, 65536)):
                got += chunk
        return got


def status_of(response):
    return int(response.split(b" ", 2)[1])


# ── HTTP ─────────────────────────────────────────────────────────────────────


def test_http_keep_alive_serves_two_requests_on_one_connection(poller):
    def body(port):
        stream = yield open_connection("127.0.0.1", port, timeout=5)
        try:
            first = yield from httpd.fetch(stream, "GET", "/hello?name=one")
            second = yield from httpd.fetch(stream, "POST", "/echo", b"two")
            third = yield from httpd.fetch(stream, "HEAD", "/")
        finally:
            yield stream.close()
        return first, second, third

    first, second, third = http_serving(body, poller)
    assert first[0] == 200 and first[2] == b"Hello, one!\n"
    assert first[1]["connection"] == "keep-alive"
    assert {"date", "server", "content-length"} <= set(first[1])
    assert second[0] == 200 and second[2] == b"two"
    assert third[0] == 200 and third[2] == b""
    assert int(third[1]["content-length"]) == len(httpd.INDEX)


def test_http_connection_close_and_http10_close_the_connection(poller):
    def body(port):
        closed = yield from raw_exchange(
            port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        old = yield from raw_exchange(port, b"GET /hello HTTP/1.0\r\n\r\n")
        return closed, old

    closed, old = http_serving(body, poller)
    for response in (closed, old):  # raw_exchange returned: the server closed the connection
        assert status_of(response) == 200
        assert b"\r\nConnection: close\r\n" in response
        assert response.endswith(b"\r\n\r\nHello, world!\n")


def test_http_line_over_the_limit_is_refused_and_the_server_goes_on(poller):
    long_header = b"X-Long: " + b"a" * (httpd.MAX_LINE + 100) + b"\r\n"
    long_target = b"/" + b"b" * httpd.MAX_LINE

    def body(port):
        header = yield from raw_exchange(port, b"GET / HTTP/1.1\r\n" + long_header + b"\r\n")
        target = yield from raw_exchange(port, b"GET " + long_target + b" HTTP/1.1\r\n\r\n")
        after = yield from raw_exchange(port, b"GET /hello HTTP/1.0\r\n\r\n")
        return header, target, after

    header, target, after = http_serving(body, poller)
    assert status_of(header) == 431
    assert status_of(target) == 414
    assert b"Connection: close" in header and b"Connection: close" in target
    assert status_of(after) == 200


def test_http_static_files_and_path_traversal(poller):
    def body(port):
        answers = []
        for target in [
            b"/static/chat_server.py",
            b"/static/../../etc/passwd",
            b"/static/..%2f..%2f..%2fetc%2fpasswd",
            b"/static/%2fetc%2fpasswd",
            b"/static/no-such-file",
            b"/static/tutorial",
        ]:
            request = b"GET " + target + b" HTTP/1.0\r\n\r\n"
            answers.append((yield from raw_exchange(port, request)))
        return answers

    answers = http_serving(body, poller)
    assert [status_of(a) for a in answers] == [200, 403, 403, 403, 404, 404]
    assert answers[0].endswith(b"\r\n\r\n" + (EXAMPLES / "chat_server.py").read_bytes())
    assert not any(b"root:" in a for a in answers)


def test_http_errors_405_413_400(poller):
    def body(port):
        answers = []
        for request in [
            b"DELETE / HTTP/1.0\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"nonsense\r\n\r\n",
            b"GET / HTTP/3\r\n\r\n",
        ]:
            answers.append((yield from raw_exchange(port, request)))
        return answers

    answers = http_serving(body, poller, max_body=1000)
    assert [status_of(a) for a in answers] == [405, 413, 400, 400, 505]
    assert b"\r\nAllow: GET, HEAD\r\n" in answers[0]


def test_http_idle_timeout_drops_a_silent_client_and_a_slow_one(poller):
    def body(port):
        start = time.monotonic()
        silent = yield from raw_exchange(port, b"")
        waited = time.monotonic() - start
        slow = yield from raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n")
        return silent, waited, slow

    silent, waited, slow = http_serving(body, poller, idle_timeout=0.2)
    assert silent == b""  # closed quietly between requests
    assert 0.15 < waited < 3
    assert status_of(slow) == 408  # a request begun and never finished


# ── Chat ─────────────────────────────────────────────────────────────────────


def chat_serving(body, poller, **config):
    room = chat.Room(chat.Config(**config))
    return serving(functools.partial(chat.handle, room), body, poller)


def test_chat_slow_client_is_disconnected_and_the_others_get_everything(poller):
    # The example's own self-test, in this process: 3 clients, and a slow one.
    run(chat.selftest, chat.Config(queue_size=3 * 2 + chat.WINDOW), 3, poller=poller)


def test_chat_lines_reach_the_others_and_quit_leaves(poller):
    def body(port):
        alice = yield open_connection("127.0.0.1", port, timeout=5)
        bob = yield open_connection("127.0.0.1", port, timeout=5)
        try:
            yield alice.write_all(b"alice\n")
            welcome_alice = yield alice.readline()
            yield bob.write_all(b"bob\n")
            welcome_bob = yield bob.readline()
            joined = yield alice.readline()
            yield alice.write_all(b"hello bob\n")
            said = yield bob.readline()
            yield bob.write_all(b"bob\n")  # a line may be anything, even a name
            yield bob.write_all(b"/quit\n")
            bye = yield bob.read()
            rest = [(yield alice.readline()), (yield alice.readline())]
        finally:
            yield alice.close()
            yield bob.close()
        return welcome_alice, welcome_bob, joined, said, bye, rest

    welcome_alice, welcome_bob, joined, said, bye, rest = chat_serving(body, poller)
    assert welcome_alice == b"* welcome, alice (here: nobody else)\n"
    assert welcome_bob == b"* welcome, bob (here: alice)\n"
    assert joined == b"* bob joined\n"
    assert said == b"alice: hello bob\n"
    assert bye == b"* bye\n"
    assert rest == [b"bob: bob\n", b"* bob left\n"]


def test_chat_bad_names_line_too_long_and_idle(poller):
    def body(port):
        taken = yield open_connection("127.0.0.1", port, timeout=5)
        try:
            yield taken.write_all(b"carol\n")
            yield taken.readline()
            answers = [
                (yield from raw_exchange(port, b"carol\n")),
                (yield from raw_exchange(port, b"two words\n")),
                (yield from raw_exchange(port, b"dave\n" + b"x" * 200 + b"\n")),
                (yield from raw_exchange(port, b"erin\n")),  # then silence
            ]
        finally:
            yield taken.close()
        return answers

    taken, spaces, too_long, idle = chat_serving(body, poller, max_line=100, idle_timeout=0.2)
    assert taken == b"* the name carol is taken\n"
    assert spaces.startswith(b"* a name is")
    assert too_long.endswith(b"* line too long (the limit is 100 bytes), bye\n")
    assert idle.endswith(b"* idle for too long, bye\n")
