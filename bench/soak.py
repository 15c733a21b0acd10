"""Soak: the echo server under a long run, watched from outside (``python3 -m bench.soak``).

The server is examples/echo_server.py's own ``serve`` and ``handle``, imported (not
copied) and run in a process of its own; this process, the driver, is every
client, on a yieldos kernel of its own. Two phases, one after the other, against
the same server process:

* **messages**: ``--connections`` (1,000) connections exchange ``--messages``
  (1,000,000) messages in all, each one sent, echoed and checked byte for byte
  before the connection sends its next; sizes are seeded random, 1 to 4,095 bytes.
  The connections draw their messages from one common pool, so all of them stay
  busy until the pool is empty (see "Discussion" at `Gate`);
* **churn**: ``--churn`` (100,000) connect/close cycles, ``--churn-parallel`` (100)
  at a time: connect, half-close, wait for the server to close its side, close.
  The client closes first, so its ports go through TIME_WAIT: 100,000 cycles in a
  few seconds need Linux to reuse them on loopback (``net.ipv4.tcp_tw_reuse`` 1,
  or 2, the default: loopback only); with 0, connect fails once the ~28,000
  ephemeral ports are used up.

Why two processes: the figures are then the server's alone. Its RSS holds no client
socket, task or buffer, its fd table only its own ends, and its kernel's task table
only its own tasks; the clients also get a CPU of their own on a multi-core machine.
The driver reads the server's RSS (``VmRSS`` in /proc/PID/status) and open fds
(/proc/PID/fd) from outside, at every 5% of each phase's work, so sampling costs the
server nothing. The task table can only be seen from inside: the server's main task
answers a ``tasks`` line on its stdin with a census of its kernel's ``tasks``.

Every exchange ends the same way: the client half-closes, the server's ``handle``
reads the end of file and closes its socket as its task returns, and the client
reads that end of file. So once every client has seen it, no ``handle`` task and no
connection fd can be left in the server, and the checks below are exact, not
"wait a while and hope".

Checks (the exit status is 1 if any fails):

* every echo is the bytes sent (a client raises at the first difference);
* RSS is flat: after the warm-up (the first 10% of a phase's work), the last sample
  of the phase is at most RSS_SLACK_MIB MiB or RSS_SLACK_PCT% (whichever is larger)
  above the sample taken at the end of the warm-up. Both samples are taken with the
  same connections open (messages: all of them; churn: up to ``--churn-parallel``),
  so what grows between them grew with the work. Over a full run that catches a
  leak of about 5 bytes per message or 50 bytes per connection on CPython (a 4 MiB
  slack over 900,000 messages or 90,000 cycles), twice that on PyPy (its larger
  RSS makes the 10% the larger slack). The RSS after a phase is shown, not checked:
  allocators keep freed memory for reuse;
* the server's fd count is back to its count at start-up after each phase;
* the server's kernel holds exactly ``server_main`` and ``serve`` after each phase,
  and ``server_main``, ``serve`` and one ``handle`` per connection while they are open;
* the server exits 0, with nothing on stderr (a ``handle`` that died would have
  logged it there);
* each phase ends within ``--timeout`` (600 s): a server that stops answering or
  never closes a connection makes the phase cut short and fail, not hang.

A full run takes about 30 s on CPython 3.11 and 25 s on PyPy 3.9 on an idle
two-core machine, a minute or more on a busy one. Quick run:
``python3 -m bench.soak --connections 100 --messages 20000 --churn 2000``
(tests/test_soak.py runs that with ``--json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generator, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # python3 bench/soak.py, or -m from another directory
    sys.path.insert(0, str(ROOT))

import kernel  # noqa: E402
from kernel import Task  # noqa: E402
from syscalls import (  # noqa: E402
    Event,
    connect,
    current_kernel,
    join,
    kill,
    move_on_after,
    read,
    recv,
    recv_into,
    sendall,
    shutdown,
    spawn,
    write,
)

ECHO_SERVER = ROOT / "examples" / "echo_server.py"

#: Samples of RSS and fds per phase: one at every 1/MARKS of its work.
MARKS = 20
#: The warm-up is the work up to this mark (2/20: the first 10%).
WARMUP_MARK = 2
#: "Flat": the last sample is at most this far above the end-of-warm-up sample...
RSS_SLACK_MIB = 4.0
#: ... or this percentage of it, whichever is larger (PyPy's heap grows in steps).
RSS_SLACK_PCT = 10.0
#: Message sizes are 1 to 2**MESSAGE_BITS - 1 bytes, log-uniform: as many short as long.
MESSAGE_BITS = 12
#: Listen backlog of the server (examples/echo_server.py's own main uses the same).
BACKLOG = 1024
#: Seconds the server may take to start, and to exit once told to.
SERVER_TIMEOUT = 30.0

_CENSUS = b"tasks\n"  # what the driver writes to ask the server for its task census


# ── The server process ────────────────────────────────────────────────────────


def load_echo_server() -> ModuleType:
    """Import examples/echo_server.py (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("echo_server", ECHO_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_main(listener: socket.socket, serve: Any) -> Generator[Any, Any, None]:
    """Main task of the server process: run ``serve`` and answer census requests on
    stdin (one JSON line on stdout each) until stdin ends."""
    yield spawn(serve, listener, name="serve")
    pending = b""
    while True:
        data = yield read(0, 4096)
        if not data:  # the driver closed our stdin (or died): the run is over
            return
        pending += data
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line + b"\n" != _CENSUS:
                raise ValueError(f"unknown request on stdin: {line!r}")
            tasks = current_kernel().tasks.values()
            # "handle 127.0.0.1:40000" -> "handle": one count per kind of task.
            names = Counter(task.name.split()[0] for task in tasks)
            reply = memoryview(json.dumps(dict(names)).encode() + b"\n")
            while reply:
                reply = reply[(yield write(1, reply)) :]


def run_server(poller: str) -> int:
    echo = load_echo_server()
    with socket.create_server(("127.0.0.1", 0), backlog=BACKLOG) as listener:
        os.write(1, f"ready {listener.getsockname()[1]}\n".encode())
        try:
            kernel.run(server_main, listener, echo.serve, poller=poller)
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the driver reports
            return 130
    return 0


class Server:
    """The server process, seen from the driver: /proc figures and a task census."""

    def __init__(self, poller: str) -> None:
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--serve", "--poller", poller],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            bufsize=0,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_server, self.from_server = self.proc.stdin, self.proc.stdout
        self._replies = b""
        ready, _, _ = select.select([self.from_server], [], [], SERVER_TIMEOUT)
        line = self.from_server.readline().decode() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r}\n{self.errors()}")
        self.address = ("127.0.0.1", int(line.split()[1]))

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS in /proc/{self.proc.pid}/status")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def census(self) -> Generator[Any, Any, dict[str, int]]:
        """The server kernel's tasks, counted by kind: ``{"serve": 1, "handle": 3, ...}``."""
        yield write(self.to_server, _CENSUS)  # 6 bytes into an empty pipe: all written at once
        while b"\n" not in self._replies:
            data = yield read(self.from_server, 4096)
            if not data:
                raise RuntimeError(f"the server exited:\n{self.errors()}")
            self._replies += data
        line, _, self._replies = self._replies.partition(b"\n")
        census: dict[str, int] = json.loads(line)
        return census

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> Optional[int]:
        """Close its stdin (its main task then returns) and wait; its exit status."""
        self.to_server.close()
        try:
            self.proc.wait(SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.from_server.close()
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        self.stderr.close()


# ── Watching a phase ──────────────────────────────────────────────────────────


@dataclass
class Sample:
    done: int  # units of work (messages, cycles) done when it was taken
    seconds: float  # since the phase started
    rss_mib: float
    fds: int


@dataclass
class Phase:
    """One phase's work, samples and figures."""

    name: str
    total: int  # units of work
    start_fds: int
    samples: list[Sample] = field(default_factory=list)
    census_open: dict[str, int] = field(default_factory=dict)  # all connected, before work
    census_last: dict[str, int] = field(default_factory=dict)  # all connected, after work
    census_end: dict[str, int] = field(default_factory=dict)  # after the phase
    end_fds: int = 0
    end_rss_mib: float = 0.0
    seconds: float = 0.0
    done: int = 0
    timed_out: bool = False  # cut short by --timeout

    def __post_init__(self) -> None:
        self._server: Optional[Server] = None
        self.began = time.perf_counter()  # reset when the work begins
        self.finished = Event()  # set when the last unit of work is done

    def begin(self, server: Server) -> None:
        self._server = server
        self.began = time.perf_counter()
        self.sample()

    def sample(self) -> None:
        assert self._server is not None
        elapsed = time.perf_counter() - self.began
        self.samples.append(Sample(self.done, elapsed, self._server.rss_mib(), self._server.fds()))

    def tick(self) -> None:
        """One unit of work is done (a plain call: no yield)."""
        self.done += 1
        if self.done * MARKS >= len(self.samples) * self.total:
            self.sample()
        if self.done == self.total:
            self.seconds = time.perf_counter() - self.began
            self.finished.set()

    @property
    def warmup(self) -> Sample:
        return self.samples[WARMUP_MARK]

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    def rss_bound(self) -> float:
        base = self.warmup.rss_mib
        return base + max(RSS_SLACK_MIB, base * RSS_SLACK_PCT / 100)


# ── The clients ───────────────────────────────────────────────────────────────


class EchoMismatch(AssertionError):
    pass


@dataclass
class Gate:
    """Where the talkers of the messages phase meet: all connected, go, finish; and
    the pool of messages they draw from.

    Discussion: why a pool rather than a fixed share of the messages per connection.
    With fixed shares, connections finish one by one near the end, and the run's
    tail is a few connections busy while the others sit idle. On CPython that tail
    alone raised the server's RSS by 10-13 MiB over 1,000 connections: each idle
    ``handle`` keeps its last ``data`` alive while it waits in ``recv`` (the name
    is only rebound when the next read returns), and CPython allocates every
    ``recv(65536)`` at its full 64 KiB before shrinking it in place, so each
    idle connection pins a small block in the middle of the heap where the busy
    ones keep allocating 64 KiB. That growth is bounded by the idle connections
    and not a leak (it is gone with ``del data`` after the ``sendall``); with a pool
    every connection stays busy to the end, and the last RSS sample is taken in
    the state the warm-up sample was.
    """

    expected: int  # connections
    unclaimed: int  # messages no talker has taken yet: the pool they all draw from
    connected: int = 0
    everybody_in: Event = field(default_factory=Event)  # set by the last one to connect
    go: Event = field(default_factory=Event)  # the driver has taken the first sample
    finish: Event = field(default_factory=Event)  # the driver has taken the last sample


def talker(
    address: tuple[str, int],
    client: int,
    rng: random.Random,
    block: memoryview,
    phase: Phase,
    gate: Gate,
) -> Generator[Any, Any, None]:
    """One connection of the messages phase: request/response exchanges, one message
    at a time from the common pool until it is empty."""
    buf = memoryview(bytearray(1 << MESSAGE_BITS))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        yield connect(sock, address)
        # One echo first: after it, the server's handle task for us certainly exists.
        yield from exchange(sock, block[:5], buf, client)
        gate.connected += 1
        if gate.connected == gate.expected:
            gate.everybody_in.set()
        yield gate.go.wait()
        while gate.unclaimed:
            gate.unclaimed -= 1
            n = int(2 ** rng.uniform(0, MESSAGE_BITS))
            offset = rng.randrange(len(block) - n + 1)
            yield from exchange(sock, block[offset : offset + n], buf, client)
            phase.tick()
        yield gate.finish.wait()  # stay connected until the last sample of the phase is taken
        yield from hang_up(sock, client)


def exchange(
    sock: socket.socket, message: memoryview, buf: memoryview, client: int
) -> Generator[Any, Any, None]:
    """Send ``message``, read its echo into ``buf`` and compare."""
    yield sendall(sock, message)
    n, got = len(message), 0
    while got < n:
        k = yield recv_into(sock, buf[got:n])
        if not k:
            raise ConnectionError(f"client {client}: the server closed the connection")
        got += k
    if buf[:n] != message:
        raise EchoMismatch(
            f"client {client}: sent {bytes(message[:40])!r}... ({n} B), "
            f"got back {bytes(buf[:40])!r}..."
        )


def hang_up(sock: socket.socket, client: int) -> Generator[Any, Any, None]:
    """Half-close and wait for the server to close its side (its handle task has ended)."""
    yield shutdown(sock, socket.SHUT_WR)
    tail = yield recv(sock, 1)
    if tail:
        raise EchoMismatch(f"client {client}: {tail!r} after the end of the exchange")


def churner(
    address: tuple[str, int], worker: int, cycles: int, phase: Phase
) -> Generator[Any, Any, None]:
    for _ in range(cycles):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            yield connect(sock, address)
            yield from hang_up(sock, worker)
        phase.tick()


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def messages_phase(
    server: Server, args: argparse.Namespace, start_fds: int
) -> Generator[Any, Any, Phase]:
    phase = Phase("messages", args.messages, start_fds)
    tasks: list[Task] = []
    with move_on_after(args.timeout) as scope:
        yield from exchange_messages(server, args, phase, tasks)
    if scope.expired:
        yield from abandon(server, phase, tasks)
    return phase


def exchange_messages(
    server: Server, args: argparse.Namespace, phase: Phase, tasks: list[Task]
) -> Generator[Any, Any, None]:
    master = random.Random(args.seed)
    block = memoryview(master.randbytes(1 << 16))
    gate = Gate(args.connections, args.messages)
    for client in range(args.connections):
        rng = random.Random(master.getrandbits(64))
        tasks.append((yield spawn(talker, server.address, client, rng, block, phase, gate)))
    yield gate.everybody_in.wait()
    phase.census_open = yield from server.census()
    phase.begin(server)
    gate.go.set()
    yield phase.finished.wait()
    # Every connection is open and idle again, as at the start: the same census is due.
    phase.census_last = yield from server.census()
    gate.finish.set()
    for task in tasks:
        yield join(task)  # re-raises what made a client fail
    phase.census_end = yield from server.census()
    phase.end_fds, phase.end_rss_mib = server.fds(), server.rss_mib()


def churn_phase(
    server: Server, args: argparse.Namespace, start_fds: int
) -> Generator[Any, Any, Phase]:
    phase = Phase("churn", args.churn, start_fds)
    tasks: list[Task] = []
    with move_on_after(args.timeout) as scope:
        phase.begin(server)
        for worker, cycles in enumerate(shares(args.churn, args.churn_parallel)):
            tasks.append((yield spawn(churner, server.address, worker, cycles, phase)))
        for task in tasks:
            yield join(task)
        phase.census_end = yield from server.census()
        phase.end_fds, phase.end_rss_mib = server.fds(), server.rss_mib()
    if scope.expired:
        yield from abandon(server, phase, tasks)
    return phase


def abandon(server: Server, phase: Phase, tasks: list[Task]) -> Generator[Any, Any, None]:
    """``--timeout`` cut ``phase`` short (a server that never answers or never closes):
    kill its clients, which closes their sockets, and take the figures as they are."""
    phase.timed_out = True
    phase.seconds = phase.seconds or time.perf_counter() - phase.began
    for task in tasks:
        yield kill(task)
    phase.census_end = {"no answer": 0}
    with move_on_after(SERVER_TIMEOUT):
        phase.census_end = yield from server.census()
    phase.end_fds, phase.end_rss_mib = server.fds(), server.rss_mib()


def driver_main(server: Server, args: argparse.Namespace) -> Generator[Any, Any, dict[str, Any]]:
    start_census = yield from server.census()
    fds = server.fds()
    start = {"rss_mib": server.rss_mib(), "fds": fds, "tasks": start_census}
    phases = []
    if args.messages:
        phases.append((yield from messages_phase(server, args, fds)))
    if args.churn:
        phases.append((yield from churn_phase(server, args, fds)))
    return {"start": start, "phases": phases}


# ── Checks and report ─────────────────────────────────────────────────────────

IDLE = {"server_main": 1, "serve": 1}  # the server's tasks with no connection open


def checks(run: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, bool, str]]:
    """(what, passed, the figures) for every criterion of the module docstring."""
    out: list[tuple[str, bool, str]] = []
    start = run["start"]
    out.append(
        (
            "server starts with only its main and serve tasks",
            start["tasks"] == IDLE,
            f"{start['tasks']}",
        )
    )
    for phase in run["phases"]:
        p = phase.name
        if len(phase.samples) > WARMUP_MARK:
            bound = phase.rss_bound()
            out.append(
                (
                    f"{p}: RSS flat after warm-up (last sample <= warm-up"
                    f" + max({RSS_SLACK_MIB:g} MiB, {RSS_SLACK_PCT:g}%))",
                    phase.last.rss_mib <= bound,
                    f"warm-up {phase.warmup.rss_mib:.1f} MiB, last {phase.last.rss_mib:.1f} MiB,"
                    f" bound {bound:.1f} MiB",
                )
            )
        else:
            out.append((f"{p}: RSS flat after warm-up", False, "too few samples: no work?"))
        if p == "messages":
            want = dict(IDLE, handle=args.connections)
            for when, census in (("before", phase.census_open), ("after", phase.census_last)):
                out.append(
                    (
                        f"{p}: one handle task per open connection, {when} the messages",
                        census == want,
                        f"{census}, want {want}",
                    )
                )
        out.append(
            (
                f"{p}: no task left but server_main and serve",
                phase.census_end == IDLE,
                f"{phase.census_end}",
            )
        )
        out.append(
            (
                f"{p}: fd count back to its start",
                phase.end_fds == phase.start_fds,
                f"{phase.start_fds} at start, {phase.end_fds} after",
            )
        )
        out.append(
            (f"{p}: all work done", phase.done == phase.total, f"{phase.done:,} of {phase.total:,}")
        )
        out.append(
            (
                f"{p}: done within --timeout {args.timeout:g} s",
                not phase.timed_out,
                f"{phase.seconds:.1f} s" + (": cut short" if phase.timed_out else ""),
            )
        )
    out.append(("server exits 0", run["exit"] == 0, f"exit status {run['exit']}"))
    errors = run["stderr"].strip().splitlines()
    first = f"{errors[0][:200]} ... ({len(errors)} lines)" if errors else "empty"
    out.append(("server stderr empty", run["stderr"] == "", first))
    return out


def report(run: dict[str, Any], args: argparse.Namespace, results: list[Any]) -> list[str]:
    start = run["start"]
    lines = [
        f"soak: examples/echo_server.py serve/handle in process {run['pid']}, poller"
        f" {args.poller}, {platform.python_implementation()} {platform.python_version()}",
        f"command: {run['command']}",
        f"server at start: RSS {start['rss_mib']:.1f} MiB, {start['fds']} fds,"
        f" tasks {start['tasks']}",
    ]
    for phase in run["phases"]:
        if phase.name == "messages":
            what = (
                f"{args.connections:,} connections, {args.messages:,} messages"
                f" of 1-{(1 << MESSAGE_BITS) - 1} B (seed {args.seed})"
            )
            rate = f"{phase.total / phase.seconds:,.0f} messages/s" if phase.seconds else ""
        else:
            what = f"{args.churn:,} connect/close cycles, {args.churn_parallel} at a time"
            rate = f"{phase.total / phase.seconds:,.0f} cycles/s" if phase.seconds else ""
        lines += [
            "",
            f"{phase.name}: {what}",
            f"  time {phase.seconds:.1f} s, {rate}",
            "  RSS MiB every 5%: " + " ".join(f"{s.rss_mib:.1f}" for s in phase.samples),
            "  fds every 5%:     " + " ".join(str(s.fds) for s in phase.samples),
        ]
        if len(phase.samples) > WARMUP_MARK:
            after = max(s.rss_mib for s in phase.samples[WARMUP_MARK:])
            lines.append(
                f"  RSS at warm-up end {phase.warmup.rss_mib:.1f} MiB, last sample"
                f" {phase.last.rss_mib:.1f} MiB, max after warm-up {after:.1f} MiB"
            )
        if phase.census_open:
            lines.append(
                f"  server tasks with every connection open: {phase.census_open} before,"
                f" {phase.census_last} after the messages"
            )
        lines.append(
            f"  after the phase: RSS {phase.end_rss_mib:.1f} MiB, {phase.end_fds} fds"
            f" (start {phase.start_fds}), tasks {phase.census_end}"
        )
    lines += ["", "checks:"]
    lines += [f"  [{'ok' if ok else 'FAILED'}] {what}: {figures}" for what, ok, figures in results]
    lines += ["", f"total {run['seconds']:.1f} s: {'PASSED' if run['ok'] else 'FAILED'}"]
    return lines


def to_json(run: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    phases = []
    for phase in run["phases"]:
        data = asdict(phase)
        data["warmup_rss_mib"] = phase.warmup.rss_mib if len(phase.samples) > WARMUP_MARK else None
        data["last_rss_mib"] = phase.last.rss_mib if phase.samples else None
        phases.append(data)
    return {
        "ok": run["ok"],
        "seconds": run["seconds"],
        "start": run["start"],
        "phases": phases,
        "exit": run["exit"],
        "stderr": run["stderr"],
        "checks": [{"what": w, "ok": ok, "figures": f} for w, ok, f in results],
    }


# ── Command line ──────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.soak",
        description="Soak examples/echo_server.py: messages and connection churn, "
        "with the server's RSS, fds and tasks checked.",
    )
    parser.add_argument("--connections", type=int, default=1000, help="default 1000")
    parser.add_argument(
        "--messages",
        type=int,
        default=1_000_000,
        help="messages in all, over every connection (default 1000000)",
    )
    parser.add_argument(
        "--churn", type=int, default=100_000, help="connect/close cycles (default 100000)"
    )
    parser.add_argument(
        "--churn-parallel", type=int, default=100, help="cycles in flight at once (default 100)"
    )
    parser.add_argument(
        "--poller",
        default="auto",
        choices=["auto", "epoll", "selectors", "poll", "select"],
        help="the server kernel's poller (default auto: epoll)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a phase may take before it is cut short and fails (default 600)",
    )
    parser.add_argument("--seed", type=int, default=1, help="message sizes and bytes (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.connections < 1 or args.churn_parallel < 1:
        parser.error("--connections and --churn-parallel need at least 1")
    if args.messages < 0 or args.churn < 0:
        parser.error("--messages and --churn cannot be negative")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return run_server(args.poller)
    command = f"{Path(sys.executable).name} -m bench.soak " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    began = time.perf_counter()
    server = Server(args.poller)
    try:
        run: dict[str, Any] = kernel.run(driver_main, server, args)
        run["pid"] = server.proc.pid
        run["exit"] = server.stop()
        run["stderr"] = server.errors()
    finally:
        server.close()
    run["seconds"] = time.perf_counter() - began
    run["command"] = command.strip()
    results = checks(run, args)
    run["ok"] = all(ok for _, ok, _ in results)
    print("\n".join(report(run, args, results)), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(run, results), f, indent=1)
    return 0 if run["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
