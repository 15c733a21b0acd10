"""wrk against examples/http_server.py: a real load generator, 100 connections at once.

The server runs as a program (on the interpreter running the tests: PyPy too) with
``--stats``, so it can say how many connections it accepted and how many requests it
answered. wrk runs for a fixed 3 s. Each test checks wrk's own account (no socket error
of any kind, no status outside 2xx/3xx, a nonzero rate) against the server's:

- keep-alive (wrk's default, HTTP/1.1): about 100 connections carry every request;
- ``Connection: close``: one connection per request, and still no error.

The rate is printed (see it with ``pytest -s`` or ``-rP``); a summary line written by a
small wrk Lua script gives the same figures in a form that does not depend on wrk's
human-readable report.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WRK = shutil.which("wrk")
pytestmark = pytest.mark.skipif(
    WRK is None, reason="wrk is not on PATH (Debian: apt-get install wrk); this load test runs it"
)

HTTP_SERVER = Path(REPO) / "examples" / "http_server.py"
CONNECTIONS = 100
DURATION = 3  # seconds
# One line with every figure of the run, written when wrk is done.
SUMMARY_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "summary requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class Server:
    """examples/http_server.py --stats on a free port, stopped with Ctrl-C."""

    def __init__(self, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as stderr:  # a file: it can never fill up and block
            self.proc = subprocess.Popen(
                [sys.executable, str(HTTP_SERVER), "--port", "0", "--stats"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # conftest's watchdog bounds the wait
        assert line.startswith("listening on 127.0.0.1:"), (line, stderr_path.read_text())
        self.port = int(line.rsplit(":", 1)[1])

    def stats(self) -> tuple[int, int]:
        """(connections accepted, requests answered) so far: GET /stats, on a connection of
        its own (counted: it is the last connection, and its request is not yet counted)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /stats HTTP/1.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        body = answer.partition(b"\r\n\r\n")[2].decode()
        match = re.fullmatch(r"connections (\d+)\nrequests (\d+)\n", body)
        assert match, body
        return int(match[1]), int(match[2])

    def close(self) -> str:
        """Ctrl-C: it closes every connection and exits 0. Return what it wrote on stderr."""
        assert self.proc.stdout is not None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise
        finally:
            self.proc.stdout.close()
        assert self.proc.returncode == 0, self.proc.returncode
        return self.stderr_path.read_text()


def wrk(port: int, script: Path, *options: str) -> tuple[dict[str, int], float, str]:
    """Run wrk on ``/``; return the summary figures, requests/s, and its report."""
    command = [
        WRK or "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--timeout", "2s",
        "-s", str(script), *options, f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=DURATION + 5)
    report = run.stdout
    assert run.returncode == 0 and run.stderr == "", (run.returncode, run.stderr, report)
    match = re.search(r"^summary (.*)$", report, re.MULTILINE)
    assert match, report
    summary = {key: int(value) for key, value in (f.split("=") for f in match[1].split())}
    # The same figures in wrk's own words: the error lines appear only when nonzero.
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    assert (socket_errors, non_2xx) == (None, None), report
    rate = re.search(r"^Requests/sec:\s+([\d.]+)$", report, re.MULTILINE)
    assert rate, report
    return summary, float(rate[1]), report


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "summary.lua"
    path.write_text(SUMMARY_SCRIPT)
    return path


def no_errors(summary: dict[str, int]) -> bool:
    return all(summary[kind] == 0 for kind in ("connect", "read", "write", "status", "timeout"))


def test_wrk_keep_alive(tmp_path, script):
    server = Server(tmp_path / "stderr")
    try:
        connections, requests = server.stats()
        summary, rate, report = wrk(server.port, script)
        connections_after, requests_after = server.stats()
    finally:
        stderr = server.close()
    print(f"\n{report}keep-alive: {rate:.0f} requests/s on {sys.implementation.name}")
    assert stderr == ""
    assert no_errors(summary), summary
    assert summary["requests"] > 0 and rate > 0
    # What the server saw, without the /stats connections and requests themselves.
    made = connections_after - connections - 1
    answered = requests_after - requests - 1
    # wrk connects once before the run to check the address, then opens its 100.
    assert CONNECTIONS <= made <= CONNECTIONS + 5, f"{made} connections for {answered} requests"
    # wrk does not count the answers still in flight when it stops: one per connection.
    assert summary["requests"] <= answered <= summary["requests"] + CONNECTIONS


def test_wrk_connection_close(tmp_path, script):
    server = Server(tmp_path / "stderr")
    try:
        connections, requests = server.stats()
        summary, rate, report = wrk(server.port, script, "-H", "Connection: close")
        connections_after, requests_after = server.stats()
    finally:
        stderr = server.close()
    print(f"\n{report}Connection: close: {rate:.0f} requests/s on {sys.implementation.name}")
    assert stderr == ""
    assert no_errors(summary), summary
    assert summary["requests"] > 0 and rate > 0
    made = connections_after - connections - 1
    answered = requests_after - requests - 1
    # One connection per request; beyond those, wrk's check of the address and the
    # connections it had opened, not yet used, when the time was up (one per slot at most).
    assert summary["requests"] <= answered <= made <= answered + 1 + CONNECTIONS, (made, answered)
