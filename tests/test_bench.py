"""The benchmark suite's own parts: its echo servers speak the protocol, and the PyPy
targets judge yieldos against uvloop run by CPython.

The suite itself (``python3 -m bench``) runs by hand: it takes a quarter of an hour and
its figures are ratios, not pass/fail. What can be checked without timing anything is
checked here: each limit server (the epoll loop, the bare generator server, the kernel
floor) and yieldos's own answer the requests the load generator sends; the PyPy targets
table has a throughput row against "uvloop on CPython" for every echo workload, met only
above 1; and the ``--cpython`` probe takes a CPython with uvloop by its real path and turns down
anything else with a note.
"""

from __future__ import annotations

import os
import socket
import stat
import sys

import pytest

from bench import echo, run

SERVERS = ["epoll", "bare", "floor", "yieldos"]


def exchange(port: int, chunks: list[bytes], expected: bytes) -> bytes:
    """Send ``chunks`` one by one, then read until ``expected``'s length has arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for chunk in chunks:
            conn.sendall(chunk)
        got = b""
        while len(got) < len(expected):
            data = conn.recv(65536)
            if not data:
                break
            got += data
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1) == b"", "the server keeps the connection after the client's EOF"
    return got


@pytest.mark.parametrize("runtime", SERVERS)
def test_a_server_answers_ping_whole_split_and_pipelined(runtime):
    with echo.Server(runtime, 0) as server:
        assert exchange(server.port, [b"PING\r\n"], b"+PONG\r\n") == b"+PONG\r\n"
        # Split across two sends (the framer keeps the first half), then two at once.
        split = exchange(server.port, [b"PI", b"NG\r\n"], b"+PONG\r\n")
        assert split == b"+PONG\r\n"
        two = exchange(server.port, [b"PING\r\nPING\r\n"], b"+PONG\r\n" * 2)
        assert two == b"+PONG\r\n" * 2
        assert server.proc.poll() is None, server.errors()


@pytest.mark.parametrize("runtime", SERVERS)
def test_a_server_echoes_a_sized_payload(runtime):
    payload = bytes(range(256)) * 64  # 16 KiB, every byte value
    request = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(payload), payload)
    reply = b"$%d\r\n%s\r\n" % (len(payload), payload)
    with echo.Server(runtime, len(payload)) as server:
        assert exchange(server.port, [request], reply) == reply
        assert server.proc.poll() is None, server.errors()


def test_the_framer_answers_each_request_as_redis_would():
    sys.path.insert(0, os.path.join(os.path.dirname(echo.__file__), "servers"))
    try:
        from _framing import Framer
    finally:
        sys.path.pop(0)
    payload = bytes(range(256)) * 4
    request = b"*2\r\n$4\r\nECHO\r\n$1024\r\n" + payload + b"\r\n"
    reply = b"$1024\r\n" + payload + b"\r\n"
    framer = Framer(len(payload))
    assert framer.feed(request) == reply  # whole, as the client sends it
    # Split anywhere, the reply comes once the request is whole, and not before.
    for cut in (1, 15, 20, 23, len(request) - 1):
        assert framer.feed(request[:cut]) == b""
        assert framer.feed(request[cut:]) == reply
    assert framer.feed(request * 2 + request[:9]) == reply * 2  # pipelined, plus a start
    assert framer.feed(request[9:]) == reply
    # Another size than the expected one, CONFIG GET, and an inline command.
    short = b"*2\r\n$4\r\necho\r\n$2\r\nhi\r\n"
    config = b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n"
    assert framer.feed(short + config + b"PING\r\n") == b"$2\r\nhi\r\n*0\r\n+PONG\r\n"
    assert not framer.buf


def pypy_results(yieldos_rate: float, uvloop_rate: float) -> run.Results:
    rows: dict[str, run.Row] = {
        "yieldos": run.Row("yieldos", [{"rate": yieldos_rate, "user_us": 1.0}]),
        "asyncio": run.Row("asyncio", [{"rate": 1.0, "user_us": 2.0}]),
        "uvloop-cpython": run.Row("uvloop-cpython", [{"rate": uvloop_rate, "user_us": 0.5}]),
    }
    return {"echo ping 10": rows}


def pypy_targets(monkeypatch: pytest.MonkeyPatch, results: run.Results) -> dict[str, list[str]]:
    monkeypatch.setattr(run, "IMPL", "PyPy")
    suite = run.Suite(run.parse([]))
    suite.results = results
    return {row[0]: row[1:] for row in run.targets(suite)}


def test_the_pypy_targets_want_more_throughput_than_uvloop_on_cpython(monkeypatch):
    what = "echo ping 10: throughput, yieldos / uvloop on CPython"
    assert pypy_targets(monkeypatch, pypy_results(90.0, 80.0))[what] == ["1.125", "> 1", "met"]
    assert pypy_targets(monkeypatch, pypy_results(80.0, 80.0))[what] == ["1.000", "> 1", "MISSED"]
    # uvloop's user CPU is in no target: it ran on another interpreter.
    assert not [
        t for t in pypy_targets(monkeypatch, pypy_results(1, 1)) if "CPU/msg" in t and "uvloop" in t
    ]


def test_no_uvloop_on_cpython_means_no_throughput_target(monkeypatch):
    results = pypy_results(90.0, 80.0)
    del results["echo ping 10"]["uvloop-cpython"]
    assert not [t for t in pypy_targets(monkeypatch, results) if "uvloop" in t]


def fake_interpreter(tmp_path, name: str, output: str, status: int) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {status}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands for the interpreter")
def test_the_cpython_probe_takes_the_real_path_and_notes_it(tmp_path, monkeypatch):
    shim = fake_interpreter(tmp_path, "python3-shim", "/opt/real/bin/python3.11 3.11.7", 0)
    suite = run.Suite(run.parse(["--cpython", shim]))
    assert suite.cpython() == "/opt/real/bin/python3.11"
    assert suite.cpython() == "/opt/real/bin/python3.11"  # asked once, remembered
    assert suite.notes == ["uvloop on CPython: run by /opt/real/bin/python3.11 (CPython 3.11.7)."]


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands for the interpreter")
@pytest.mark.parametrize("status", [1, None])
def test_the_cpython_probe_turns_down_what_is_not_cpython_with_uvloop(tmp_path, status):
    if status is None:
        given = os.path.join(str(tmp_path), "no-such-python")
    else:  # exists, but the probe fails: PyPy, or a CPython without uvloop
        given = fake_interpreter(tmp_path, "pypy3", "", status)
    suite = run.Suite(run.parse(["--cpython", given]))
    assert suite.cpython() == ""
    assert len(suite.notes) == 1 and "is not a CPython with uvloop" in suite.notes[0]
