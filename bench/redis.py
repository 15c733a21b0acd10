"""``python3 -m bench.redis``: examples/redis_server.py against a real ``redis-server``.

Both servers are driven by the same ``redis-benchmark`` runs, on 127.0.0.1:

* the tests ``ping_inline``, ``ping_mbulk``, ``set``, ``get``, ``incr`` and
  ``mset`` (``-t ping,set,get,incr,mset``), each its own redis-benchmark
  invocation, so that the server's CPU time can be read around each one;
* 50 connections (``-c 50``), without pipelining (``-P 1``) and with sixteen
  commands in flight per connection (``-P 16``).

The real server runs with persistence off (``--save '' --appendonly no``) in a
temporary directory, on a free port. Ours runs under each interpreter given
with ``--python`` (default: this one, and ``pypy3`` when it is on PATH). All
servers are started once, warmed up (PyPy's JIT needs a moment), then measured
in rounds: each round runs every test on every server in turn, so a burst of
noise on the machine hits them alike. Each figure is the median of ``--runs``
rounds.

Two tables per pipeline depth: requests per second as redis-benchmark reports
them, with "ours / redis" the ratio of the medians; and the server's CPU time
(user + system, from /proc/PID/stat) per request, which the client's share of
the machine disturbs less. On loopback much of a request's cost is the kernel's
TCP work on both sides, so the ratio of requests/s understates how much more
CPU a Python server spends than a C one; the CPU table says it directly.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

if __package__ in (None, ""):  # python3 bench/redis.py: import the package, not the folder
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.run import table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "redis_server.py"
TICK = os.sysconf("SC_CLK_TCK")
#: redis-benchmark's -t name -> the names of the rows it prints.
TESTS = {
    "ping_inline": "PING_INLINE",
    "ping_mbulk": "PING_MBULK",
    "set": "SET",
    "get": "GET",
    "incr": "INCR",
    "mset": "MSET (10 keys)",
}
CLIENTS = 50
PIPELINES = (1, 16)
#: Requests per test and run, by pipeline depth (--quick: a tenth).
REQUESTS = {1: 20_000, 16: 200_000}
START_TIMEOUT = 30.0


# ── The servers ───────────────────────────────────────────────────────────────


@dataclass
class Server:
    """A server process on 127.0.0.1: its name in the tables, port, and CPU time so far."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]
    tmpdir: Optional[tempfile.TemporaryDirectory[str]] = None

    def cpu(self) -> float:
        """User + system CPU seconds the server has used."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # both servers exit cleanly on it
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> Server:
    """A real redis-server on a free port, persistence off, in a temporary directory."""
    tmpdir = tempfile.TemporaryDirectory(prefix="bench-redis-")
    port = free_port()
    log = tempfile.TemporaryFile()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", tmpdir.name]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = Server("redis-server", proc, port, log, tmpdir)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(100) == b"+PONG\r\n":
                    return server
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"redis-server did not start: {server.errors()}")
        time.sleep(0.05)


def start_ours(python: str) -> Server:
    """examples/redis_server.py under ``python``, on a port it picks."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [python, str(EXAMPLE), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        preexec_fn=default_sigint,  # stop() sends SIGINT, even from a background job
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline().decode() if ready else ""
    server = Server(f"ours ({interpreter(python)})", proc, 0, log)
    if not line.startswith("listening on "):
        server.stop()
        raise RuntimeError(f"{python} {EXAMPLE.name} did not start: {line!r} {server.errors()}")
    server.port = int(line.rsplit(":", 1)[1])
    return server


def default_sigint() -> None:
    """In the child: SIGINT as a terminal gives it (a background job's children ignore it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interpreter(python: str) -> str:
    """ "CPython 3.11.7" or "PyPy 3.9.16" for the interpreter ``python``."""
    code = "import platform; print(platform.python_implementation(), platform.python_version())"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# ── The load ──────────────────────────────────────────────────────────────────


def benchmark(server: Server, test: str, pipeline: int, requests: int) -> tuple[float, float]:
    """One redis-benchmark run of ``test``: (requests/s, server CPU µs per request)."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-t", test]
    cmd += ["-c", str(CLIENTS), "-n", str(requests), "-P", str(pipeline), "--csv"]
    before = server.cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    after = server.cpu()
    if proc.returncode != 0 or proc.stderr:
        raise RuntimeError(f"{' '.join(cmd)} failed on {server.name}: {proc.stderr[-500:]}")
    rows = {row[0]: row for row in csv.reader(io.StringIO(proc.stdout))}
    return float(rows[TESTS[test]][1]), (after - before) / requests * 1e6


@dataclass
class Figures:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def measure(
    servers: list[Server], runs: int, requests: dict[int, int], progress: bool
) -> dict[tuple[str, int, str], Figures]:
    """(server name, pipeline, test) -> the figures of every round."""
    results: dict[tuple[str, int, str], Figures] = {}
    for server in servers:  # warm-up, not measured: the JIT, the allocator, the caches
        for test in TESTS:
            benchmark(server, test, 16, max(requests[16] // 10, 1000))
    for pipeline in PIPELINES:
        for run in range(runs):
            for test in TESTS:
                for server in servers:
                    if progress:
                        print(
                            f"  -P {pipeline} run {run + 1}/{runs} {test} {server.name}",
                            file=sys.stderr,
                            flush=True,
                        )
                    rps, cpu_us = benchmark(server, test, pipeline, requests[pipeline])
                    figures = results.setdefault((server.name, pipeline, test), Figures())
                    figures.rps.append(rps)
                    figures.cpu_us.append(cpu_us)
    return results


# ── The report ────────────────────────────────────────────────────────────────


def report(
    servers: list[Server], results: dict[tuple[str, int, str], Figures], requests: dict[int, int]
) -> list[str]:
    lines: list[str] = []
    real = servers[0].name
    ours = [s.name for s in servers[1:]]
    for pipeline in PIPELINES:
        for what, unit in (("rps", "requests/s"), ("cpu_us", "server CPU µs per request")):
            higher = what == "rps"
            lines += [
                "",
                f"### -P {pipeline}, -c {CLIENTS}, -n {requests[pipeline]:,}: {unit}"
                f" ({'higher' if higher else 'lower'} is better)",
                "",
            ]
            head = ["test", real]
            for name in ours:
                head += [name, "ours / redis"]
            body = []
            for test in TESTS:
                base = statistics.median(getattr(results[(real, pipeline, test)], what))
                row = [TESTS[test], _fmt(base, what)]
                for name in ours:
                    value = statistics.median(getattr(results[(name, pipeline, test)], what))
                    row += [_fmt(value, what), f"{value / base:.2f}" if base else "-"]
                body.append(row)
            lines += table(head, body)
    return lines


def _fmt(value: float, what: str) -> str:
    return f"{value:,.0f}" if what == "rps" else f"{value:.1f}"


def tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[0] if out.strip() else tool


# ── Command line ──────────────────────────────────────────────────────────────


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m bench.redis",
        description="examples/redis_server.py against a real redis-server, by redis-benchmark.",
    )
    p.add_argument(
        "--python",
        action="append",
        metavar="EXE",
        help="an interpreter to run our server with (repeat it; default: this one,"
        " and pypy3 if it is on PATH)",
    )
    p.add_argument("--runs", type=int, default=3, help="measured rounds (default 3)")
    p.add_argument("--quick", action="store_true", help="a tenth of the requests, one round")
    p.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse(raw)
    missing = [t for t in ("redis-server", "redis-benchmark") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not on PATH: apt-get install redis-server")
    pythons = args.python or [sys.executable] + (["pypy3"] if shutil.which("pypy3") else [])
    runs = 1 if args.quick else args.runs
    requests = {p: n // 10 if args.quick else n for p, n in REQUESTS.items()}
    servers: list[Server] = []
    start = time.perf_counter()
    try:
        servers.append(start_redis())
        for python in pythons:
            servers.append(start_ours(python))
        results = measure(servers, runs, requests, not args.silent)
    finally:
        for server in servers:
            server.stop()
    exe = "python3" if platform.python_implementation() == "CPython" else sys.executable
    command = " ".join([exe, "-m", "bench.redis"] + [shlex.quote(a) for a in raw])
    lines = [
        "## examples/redis_server.py against redis-server",
        "",
        f"- command: `{command}`",
        f"- {tool_version('redis-server')}; {tool_version('redis-benchmark')}",
        f"- ours under: {', '.join(s.name for s in servers[1:])}",
        f"- machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs",
        f"- figures: median of {runs} round(s); each test is one"
        f" `redis-benchmark -t TEST -c {CLIENTS} -n N -P P --csv`",
    ]
    lines += report(servers, results, requests)
    lines += ["", f"Time: {time.perf_counter() - start:.0f} s."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
