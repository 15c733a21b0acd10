"""The I/O workloads: one small server per runtime, driven by redis-benchmark, watched from outside.

Every server (bench/servers/*_server.py) speaks the same tiny protocol
(_framing.py) and is started fresh for each run in its own process. The load
comes from ``redis-benchmark``, a C program, so the client costs every server
the same, and most of the machine's time goes to the kernel's TCP work, not to
the client. On loopback that TCP work (~5 µs per message per side) caps even
a C server near 200k messages/s on two cores, so throughput alone hardly tells
Python runtimes apart; what does is the **server's user CPU per message**,
read from /proc/PID/stat before and after the load (utime; the kernel's time
for the server, stime, is shown too). Both are in clock ticks (usually 10 ms),
and the split between user and system time is sampled at each tick. A run
collects only some 30 to 110 ticks of the server's CPU (the 16 KiB rows the
fewest), most of them system time, so one run's user figure is good to about
±20%: each figure is a median of several runs, and the min-max spread beside
it says how far to trust it. (The total, user plus system, is exact in
/proc/PID/schedstat; only the split is sampled.)

Messages:

* ``ping``: ``redis-benchmark -t ping_inline``: ``PING\\r\\n`` in, ``+PONG\\r\\n``
  out (6 and 7 bytes). ping_inline has no payload size, so this stands for the
  issue's 64 B small message in the targets.
* ``64`` / ``16384``: ``redis-benchmark ECHO <payload>``: a Redis ECHO command
  with that many payload bytes, answered with the same bytes (a real echo, so
  16 KiB cross the loopback each way per message).

Latency p50/p99 are redis-benchmark's, measured at the client.

Syscalls per message: ``strace -c -f -p PID`` attached after the server is up
(so start-up imports are not counted), 10 connections, summed over every
syscall the server makes. The steady state is what counts, so the same server
is traced over two loads, of N/10 and N messages, and the figure is the
difference in syscalls over the difference in messages: what each load costs
once (10 accepts, closes and their registrations, the idle waits around it)
cancels out. strace slows the server, which can batch more events per
``epoll_wait``; the count is an honest order of magnitude, not a precise figure.
"""

from __future__ import annotations

import csv
import io
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

SERVERS_DIR = Path(__file__).resolve().parent / "servers"
TICK = os.sysconf("SC_CLK_TCK")

#: runtime -> (server file, module it needs, what it is)
SERVERS: dict[str, tuple[str, Optional[str], str]] = {
    "epoll": ("epoll_server.py", None, "plain callback epoll loop (the limit)"),
    "bare": ("bare_server.py", None, "generator per connection, nothing else (the limit)"),
    "floor": ("floor_server.py", None, "tuple traps, TCB, resumed from poll (the limit)"),
    "yieldos": ("yieldos_server.py", None, "task per connection: recv, sendall"),
    "asyncio": ("asyncio_proto_server.py", None, "Protocol, 64 KiB reads (its best case)"),
    "asyncio-streams": ("asyncio_streams_server.py", None, "stock streams: read, write+drain"),
    "uvloop": ("uvloop_proto_server.py", "uvloop", "the same Protocol on uvloop"),
    "trio": ("trio_server.py", "trio", "serve_listeners: receive_some, send_all"),
    "curio": ("curio_server.py", "curio", "task per connection: recv, sendall"),
    "gevent": ("gevent_server.py", "gevent", "StreamServer: recv, sendall"),
}


#: Peers run by another interpreter than the suite's: runtime -> the server it runs. On
#: PyPy, "uvloop-cpython" is uvloop's server run by CPython: the issue asks that yieldos
#: on PyPy beat it, so it is measured in the same run as the rest (see run.py's --cpython).
CROSS: dict[str, str] = {"uvloop-cpython": "uvloop"}


class Server:
    """One server process: started, told to stop, and its CPU time read from /proc.

    ``python`` runs it: the suite's own interpreter unless told otherwise (`CROSS`)."""

    def __init__(self, runtime: str, size: int, python: str = sys.executable) -> None:
        script = SERVERS[CROSS.get(runtime, runtime)][0]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [python, script, "0", str(size)],
            cwd=SERVERS_DIR,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.port = self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> int:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {self.errors()}")
        return int(line.split()[1])

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TICK, int(fields[12]) / TICK

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def load(port: int, conns: int, requests: int, size: int, timeout: float) -> dict[str, float]:
    """Run redis-benchmark against ``port``; its throughput and client-side latencies."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port)]
    cmd += ["-c", str(conns), "-n", str(requests), "--csv"]
    cmd += ["-t", "ping_inline"] if size == 0 else ["ECHO", "x" * size]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    header, row = rows[0], rows[-1]
    got = dict(zip(header, row))
    return {
        "p50_ms": float(got["p50_latency_ms"]),
        "p99_ms": float(got["p99_latency_ms"]),
    }


def command_line(conns: int, requests: int, size: int) -> str:
    """The load command as a person would type it."""
    what = "-t ping_inline" if size == 0 else f"ECHO <{size} bytes>"
    return f"redis-benchmark -c {conns} -n {requests} --csv {what}"


def echo_run(
    runtime: str,
    conns: int,
    requests: int,
    size: int,
    timeout: float,
    python: str = sys.executable,
) -> dict[str, float]:
    """One run: a fresh server (run by ``python``), one load, and what it cost the server
    per message."""
    with Server(runtime, size, python) as server:
        user0, sys0 = server.cpu()
        start = time.perf_counter()
        result = load(server.port, conns, requests, size, timeout)
        wall = time.perf_counter() - start
        user1, sys1 = server.cpu()
        if server.proc.poll() is not None:
            raise RuntimeError(f"server died: {server.errors()}")
    result["rate"] = requests / wall
    result["user_us"] = (user1 - user0) / requests * 1e6
    result["sys_us"] = (sys1 - sys0) / requests * 1e6
    return result


def syscall_run(runtime: str, requests: int, timeout: float) -> dict[str, Any]:
    """Steady-state syscalls per message of ``runtime``'s server (ping, 10 connections),
    by strace: the difference between a load of ``requests`` and one of a tenth of it."""
    small_requests = requests // 10
    with Server(runtime, 0) as server:
        small = _traced_load(server, small_requests, timeout)
        big = _traced_load(server, requests, timeout)
    messages = requests - small_requests
    per_msg = {name: (n - small.get(name, 0)) / messages for name, n in big.items()}
    total = per_msg.pop("total", sum(per_msg.values()))
    top = sorted(per_msg.items(), key=lambda kv: -kv[1])[:4]
    return {
        "per_msg": total,
        "top": ", ".join(f"{name} {n:.2f}" for name, n in top),
    }


def _traced_load(server: Server, requests: int, timeout: float) -> dict[str, int]:
    """Calls per syscall the server made while serving one load of ``requests``."""
    with tempfile.NamedTemporaryFile("r") as out:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-q", "-o", out.name, "-p", str(server.proc.pid)],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # let strace attach to every thread
            load(server.port, 10, requests, 0, timeout)
        finally:
            tracer.send_signal(signal.SIGINT)  # detach: strace writes its summary
            tracer.wait(30)
        return _strace_counts(out.read())


def _strace_counts(summary: str) -> dict[str, int]:
    """Calls per syscall from ``strace -c`` output."""
    calls: dict[str, int] = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] != "syscall" and parts[3].isdigit():
            calls[parts[-1]] = int(parts[3])
        elif len(parts) >= 4 and parts[-1] == "total":
            calls["total"] = int(parts[3])
    return calls


def installed(name: str) -> bool:
    return subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True).returncode == 0


def missing_tools() -> list[str]:
    return [tool for tool in ("redis-benchmark", "strace") if not installed(tool)]


# ── HTTP: wrk against examples/http_server.py ────────────────────────────────

HTTP_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "http_server.py"
HTTP_PATH = "/hello?name=bench"


def http_run(conns: int, seconds: float) -> dict[str, float]:
    """One run of ``wrk`` against the HTTP example (keep-alive GETs of a small dynamic page).

    Only yieldos has this server, so there is nothing to compare with yet: it is
    the absolute figure, with the server's CPU per request as for echo.
    """
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, str(HTTP_EXAMPLE), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"HTTP example did not start: {line!r}")
        port = int(line.rsplit(":", 1)[1])
        stat = f"/proc/{proc.pid}/stat"

        def cpu() -> float:
            with open(stat) as f:
                return int(f.read().rsplit(")", 1)[1].split()[11]) / TICK

        user0 = cpu()
        # (--timeout: wrk gives up on a request after 2 s by default, counts it as a
        # socket error and leaves it out of the latencies; with 1,000 connections on a
        # busy machine a few of the first requests take longer. Kept in, they show in p99.)
        cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{seconds:g}s", "--latency"]
        cmd += ["--timeout", "10s"]
        cmd.append(f"http://127.0.0.1:{port}{HTTP_PATH}")
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
        user1 = cpu()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise RuntimeError(f"wrk reported errors: {errors.group(0)}")
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _wrk_ms(re.search(r"50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _wrk_ms(re.search(r"99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "user_us": (user1 - user0) / max(requests, 1) * 1e6,
    }


def _wrk_ms(text: str) -> float:
    """wrk's latency ("812.00us", "1.20ms", "2.01s") in milliseconds."""
    for suffix, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)
