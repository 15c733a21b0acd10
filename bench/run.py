"""The yieldos benchmark suite: ``python3 -m bench`` (or ``python3 bench/run.py``).

It measures yieldos against its peers on *this* interpreter, in the same run,
and prints one table per workload, then the issue's targets with met/missed:

* peers: asyncio always (stdlib); uvloop, trio, curio and gevent when installed
  (``pip install -e '.[bench]'``, or ``bash bench/setup.sh``). A peer that is not
  installed (uvloop and gevent are not, on PyPy) is skipped with a note. On
  PyPy, the echo tables also have uvloop's server run by CPython (``--cpython``,
  default ``python3``), since the issue asks yieldos on PyPy to beat it.
* the limit: for CPU workloads a bare generator round robin (runtimes/bare.py),
  for I/O a plain callback epoll loop (servers/epoll_server.py) and a bare
  generator-per-connection server (servers/bare_server.py), and the floor of a
  kernel with a task control block (servers/floor_server.py: traps as tuples,
  readers resumed from the poll loop). yieldos pays for everything a real
  kernel does; the limit says how much that is.

Every run of every workload on every runtime is a fresh subprocess, so memory
and import figures start clean and a crash or hang in one peer (curio is
quadratic in the number of live tasks, for instance) costs only that row. Each
figure is the median of ``--runs`` runs, with the min-max spread beside it; the
runs are made in rounds, each runtime once per round (see `rounds`). The
"yieldos" column says how many times better yieldos does than that row
(>1: yieldos wins), whichever way the metric points.

Workloads (sizes of a full run; ``--quick`` shrinks them for a smoke test):

=========  ==================================================================
switch     1,000 tasks x 1,000 sched_yield: switches/s
spawn      100,000 spawn, then join each: spawn+join/s
pingpong   200,000 round trips between two tasks through two queues of
           capacity 1: round trips/s
timers     100,000 tasks sleeping a seeded random 0-100 ms: wall time beyond
           100 ms, lateness p50/p99
memory     100,000 idle blocked tasks: RSS bytes per task
import     ``import kernel, syscalls`` in a fresh interpreter vs ``import asyncio``...
echo       redis-benchmark against each runtime's server (see echo.py): ping
           and 64 B / 16 KiB ECHO, 10 and 1,000 connections: msgs/s,
           p50/p99 latency, server user (and system) CPU per message
syscalls   strace -c on each server: syscalls per echoed message (steady state)
http       wrk against examples/http_server.py (yieldos only: no peer has it)
=========  ==================================================================

``--write docs/performance.md`` puts this interpreter's tables into the doc,
replacing only its own section, so running the suite on CPython and on PyPy
fills in both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

if __package__ in (None, ""):  # python3 bench/run.py: import the package, not the folder
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import echo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMPL = platform.python_implementation()  # "CPython" or "PyPy"
PEERS = ["asyncio", "uvloop", "trio", "curio", "gevent"]
NEEDS = {"uvloop": "uvloop", "trio": "trio", "curio": "curio", "gevent": "gevent"}


# ── What to run ───────────────────────────────────────────────────────────────


@dataclass
class Workload:
    """A CPU workload: run by bench/child.py once per runtime and run."""

    name: str
    title: str
    metric: str  # the key of the result dict the table is about
    unit: str
    higher_is_better: bool
    full: dict[str, Any]
    quick: dict[str, Any]
    extras: list[tuple[str, str]] = field(default_factory=list)  # (key, column title)
    note: str = ""


WORKLOADS = [
    Workload(
        "switch",
        "switch: {tasks:,} tasks x {yields:,} sched_yield",
        "rate",
        "switches/s",
        True,
        {"tasks": 1000, "yields": 1000},
        {"tasks": 100, "yields": 200},
        note="limit: next() over a deque of generators, no kernel at all",
    ),
    Workload(
        "spawn",
        "spawn: {n:,} spawn, then join each",
        "rate",
        "spawn+join/s",
        True,
        {"n": 100_000},
        {"n": 5_000},
        note="trio: start_soon in one nursery, joined when it closes",
    ),
    Workload(
        "pingpong",
        "ping-pong: {n:,} round trips",
        "rate",
        "round trips/s",
        True,
        {"n": 200_000},
        {"n": 5_000},
        note="two long-lived tasks pass an int back and forth through two queues of capacity 1:"
        " yieldos syscalls.Queue(1), asyncio.Queue(1), trio open_memory_channel(1),"
        " curio.Queue(1), gevent.queue.Queue(1); limit: two generators, two deques, next() in"
        " turn",
    ),
    Workload(
        "timers",
        "timers: {n:,} tasks each sleeping a random 0-{max_ms} ms",
        "excess_ms",
        "ms beyond the longest sleep",
        False,
        {"n": 100_000, "seed": 6, "max_ms": 100},
        {"n": 5_000, "seed": 6, "max_ms": 100},
        extras=[("late_p50_ms", "late p50 ms"), ("late_p99_ms", "late p99 ms")],
        note="lateness: wake time minus (time of the sleep call + its length)",
    ),
    Workload(
        "memory",
        "memory: {n:,} idle blocked tasks",
        "bytes",
        "RSS bytes per task",
        False,
        {"n": 100_000},
        {"n": 10_000},
        note="blocked on: yieldos sleep(inf); peers an Event; bare a generator at a yield",
    ),
]

IMPORTS = {
    "yieldos": "kernel, syscalls",
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "trio": "trio",
    "curio": "curio",
    "gevent": "gevent",
}

ECHO_SIZES = {"ping": 0, "64": 64, "16384": 16384}
ECHO_FULL = {"conns": [10, 1000], "sizes": ["ping", "64", "16384"], "syscall_requests": 20_000}
ECHO_QUICK = {"conns": [10, 1000], "sizes": ["ping"], "syscall_requests": 3_000}
ECHO_REQUESTS = {"ping": 100_000, "64": 50_000, "16384": 20_000}
ECHO_REQUESTS_QUICK = {"ping": 5_000, "64": 5_000, "16384": 2_000}
ALL = ["switch", "spawn", "pingpong", "timers", "memory", "import", "echo", "syscalls", "http"]


# ── Running ───────────────────────────────────────────────────────────────────


Runs = list[dict[str, Any]]


@dataclass
class Row:
    """One runtime's runs of one workload (or an explanation why there are none)."""

    runtime: str
    runs: Runs = field(default_factory=list)
    note: str = ""

    def stat(self, key: str) -> Optional[tuple[float, float, float]]:
        values = [r[key] for r in self.runs if key in r]
        if not values:
            return None
        return statistics.median(values), min(values), max(values)

    def median(self, key: str) -> Optional[float]:
        s = self.stat(key)
        return None if s is None else s[0]


Results = dict[str, dict[str, Row]]  # section -> runtime -> row


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.runs: int = args.runs or (1 if self.quick else 5)
        self.echo_runs: int = args.runs or (1 if self.quick else 3)
        self.timeout: float = args.timeout or (20.0 if self.quick else 60.0)
        self.results: Results = {}
        self.notes: list[str] = []
        self._have: dict[str, bool] = {}
        self._cpython: Optional[str] = None  # found by `cpython`: "" when there is none
        self.http_seconds = 0.0
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))

    def have(self, runtime: str) -> bool:
        """Is ``runtime`` installed for this interpreter?"""
        module = NEEDS.get(runtime) or echo.SERVERS.get(runtime, ("", None, ""))[1]
        if module is None:
            return True
        if module not in self._have:
            probe = [sys.executable, "-c", f"import {module}"]
            self._have[module] = subprocess.run(probe, capture_output=True).returncode == 0
            if not self._have[module]:
                why = {
                    "uvloop": "does not support PyPy" if IMPL == "PyPy" else "not installed",
                    "gevent": "not installed on PyPy by the bench extra"
                    if IMPL == "PyPy"
                    else "not installed",
                }.get(module, "not installed")
                self.notes.append(f"{module}: {why} ({IMPL}); its rows are skipped.")
        return self._have[module]

    def cpython(self) -> str:
        """The CPython interpreter with uvloop that runs "uvloop-cpython" in a PyPy run
        (``--cpython``), or "" if there is none (a note says so)."""
        if self._cpython is None:
            path, version = "", ""
            found = shutil.which(self.args.cpython)
            probe = (
                "import platform, sys, uvloop; assert platform.python_implementation() =="
                " 'CPython'; print(sys.executable, platform.python_version())"
            )
            if found:
                proc = subprocess.run([found, "-c", probe], capture_output=True, text=True)
                if proc.returncode == 0:  # (its real path: python3 may be a pyenv shim)
                    path, _, version = proc.stdout.strip().rpartition(" ")
            if path:
                self.notes.append(f"uvloop on CPython: run by {path} (CPython {version}).")
            else:
                self.notes.append(
                    f"uvloop on CPython: {self.args.cpython!r} is not a CPython with uvloop"
                    " (--cpython); its rows are skipped."
                )
            self._cpython = path
        return self._cpython

    def progress(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)

    # ── CPU workloads ────────────────────────────────────────────────────────

    def cpu(self, w: Workload) -> None:
        params = w.quick if self.quick else w.full
        rows: dict[str, Row] = {
            runtime: Row(runtime)
            for runtime in ["bare", "yieldos"] + PEERS
            if runtime in ("bare", "yieldos") or self.have(runtime)
        }
        for i in range(self.runs):  # in rounds: see `rounds`
            for runtime in rounds(rows):
                self.progress(f"  {w.name} {runtime} run {i + 1}/{self.runs}")
                cmd = [sys.executable, "-m", "bench.child", w.name, runtime, json.dumps(params)]
                result = self._child(cmd)
                if isinstance(result, str):
                    rows[runtime].note = result
                else:
                    rows[runtime].runs.append(result)
        self.results[w.name] = rows

    def _child(self, cmd: list[str]) -> Any:
        """Run one child; its result dict, or a string saying why there is none."""
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            return f"timed out (> {self.timeout:.0f} s)"
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed: {err[:120]}"

    # ── import time ──────────────────────────────────────────────────────────

    def imports(self) -> None:
        rows: dict[str, Row] = {}
        runs = self.runs if self.quick else max(self.runs, 10)
        for runtime, modules in IMPORTS.items():
            if runtime in NEEDS and not self.have(runtime):
                continue
            code = (
                "import time; t = time.perf_counter(); "
                f"import {modules}; print('RESULT', '{{\"ms\": %f}}' % "
                "((time.perf_counter() - t) * 1e3))"
            )
            cmd = [sys.executable, "-c", code]
            self._child(cmd)  # once to write the .pyc files
            row = rows[runtime] = Row(runtime)
            self.progress(f"  import {runtime}")
            for _ in range(runs):
                result = self._child(cmd)
                if isinstance(result, str):
                    row.note = result
                    break
                row.runs.append(result)
        self.results["import"] = rows

    # ── I/O ──────────────────────────────────────────────────────────────────

    def echo(self) -> None:
        missing = echo.missing_tools()
        if missing:
            self.notes.append(f"echo: skipped, {', '.join(missing)} missing (bash bench/setup.sh)")
            return
        _raise_fd_limit()
        spec = ECHO_QUICK if self.quick else ECHO_FULL
        for size in spec["sizes"]:
            requests = (ECHO_REQUESTS_QUICK if self.quick else ECHO_REQUESTS)[size]
            for conns in spec["conns"]:
                rows: dict[str, Row] = {
                    runtime: Row(runtime) for runtime in echo.SERVERS if self.have(runtime)
                }
                if IMPL == "PyPy" and self.cpython():
                    rows["uvloop-cpython"] = Row("uvloop-cpython")
                for i in range(self.echo_runs):  # in rounds: see `rounds`
                    for runtime in rounds(rows):
                        self.progress(f"  echo {size} x{conns} {runtime} run {i + 1}")
                        python = self.cpython() if runtime in echo.CROSS else sys.executable
                        try:
                            rows[runtime].runs.append(
                                echo.echo_run(
                                    runtime,
                                    conns,
                                    requests,
                                    ECHO_SIZES[size],
                                    self.timeout,
                                    python,
                                )
                            )
                        except Exception as exc:  # noqa: BLE001 - a row's failure is noted
                            rows[runtime].note = f"failed: {_short(exc)}"
                self.results[f"echo {size} {conns}"] = rows

    def syscalls(self) -> None:
        if echo.missing_tools():
            return  # the echo note says why
        spec = ECHO_QUICK if self.quick else ECHO_FULL
        rows: dict[str, Row] = {}
        runtimes = ["epoll", "yieldos"] if self.quick else list(echo.SERVERS)
        for runtime in runtimes:
            if not self.have(runtime):
                continue
            self.progress(f"  syscalls {runtime}")
            row = rows[runtime] = Row(runtime)
            try:
                row.runs.append(echo.syscall_run(runtime, spec["syscall_requests"], self.timeout))
            except Exception as exc:  # noqa: BLE001
                row.note = f"failed: {_short(exc)}"
        self.results["syscalls"] = rows

    def http(self) -> None:
        """wrk against examples/http_server.py: yieldos only (no peer has that server)."""
        if not echo.HTTP_EXAMPLE.exists():
            self.notes.append("http: skipped: there is no HTTP example yet.")
            return
        if not echo.installed("wrk"):
            self.notes.append("http: skipped, wrk missing (bash bench/setup.sh)")
            return
        _raise_fd_limit()
        seconds = 2.0 if self.quick else 5.0
        for conns in (10, 1000):
            row = Row("yieldos")
            for i in range(self.echo_runs):
                self.progress(f"  http x{conns} yieldos run {i + 1}")
                try:
                    row.runs.append(echo.http_run(conns, seconds))
                except Exception as exc:  # noqa: BLE001
                    row.note = f"failed: {_short(exc)}"
                    break
            self.results[f"http {conns}"] = {"yieldos": row}
        self.http_seconds = seconds

    def run(self, only: list[str]) -> None:
        for name in only:
            self.progress(f"{name}...")
            workload = next((w for w in WORKLOADS if w.name == name), None)
            if workload is not None:
                self.cpu(workload)
            else:
                getattr(self, {"import": "imports"}.get(name, name))()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:100]}"


def _raise_fd_limit() -> None:
    """1,000 connections need more than the usual 1,024 fds in the server and the client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# ── Reporting ─────────────────────────────────────────────────────────────────


def fmt(value: Optional[float], unit: str = "") -> str:
    """A number short enough for a table: 3 significant digits, k/M for big ones."""
    if value is None:
        return "-"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 1e4:
        return f"{value / 1e3:.3g}k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def cell(row: Row, key: str) -> str:
    s = row.stat(key)
    if s is None:
        return "-"
    med, lo, hi = s
    if len(row.runs) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}-{fmt(hi)})"


def advantage(yieldos: Optional[float], other: Optional[float], higher_is_better: bool) -> str:
    """How many times better yieldos does than ``other`` (>1: yieldos wins)."""
    if yieldos is None or other is None or yieldos <= 0 or other <= 0:
        return "-"
    return f"{(yieldos / other if higher_is_better else other / yieldos):.2f}x"


def table(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
        line(r) for r in body
    ]


LIMITS = ("epoll", "bare", "floor")  # the echo servers that are limits, not peers

LABEL = {
    "bare": "bare loop (limit)",
    "epoll": "epoll loop (limit)",
    "asyncio": "asyncio",
}


def label(section: str, runtime: str) -> str:
    if runtime == "uvloop-cpython":
        return "uvloop on CPython"
    if section.startswith("echo") or section == "syscalls":
        return f"{runtime}" + (" (limit)" if runtime in LIMITS else "")
    return LABEL.get(runtime, runtime)


def render(suite: Suite) -> list[str]:
    out: list[str] = []
    quick = suite.quick
    for w in WORKLOADS:
        rows = suite.results.get(w.name)
        if not rows:
            continue
        params = w.quick if quick else w.full
        out += [
            "",
            f"### {w.title.format(**params)}: {w.unit}"
            f" ({'higher' if w.higher_is_better else 'lower'} is better)",
            "",
        ]
        y = rows.get("yieldos")
        ymed = y.median(w.metric) if y else None
        head = ["runtime", w.unit] + [t for _, t in w.extras] + ["yieldos vs it"]
        body = []
        for rt, row in rows.items():
            if row.note and not row.runs:
                body.append([label(w.name, rt), row.note] + ["-"] * len(w.extras) + ["-"])
                continue
            body.append(
                [label(w.name, rt), cell(row, w.metric)]
                + [cell(row, k) for k, _ in w.extras]
                + [
                    "-"
                    if rt == "yieldos"
                    else advantage(ymed, row.median(w.metric), w.higher_is_better)
                ]
            )
        out += table(head, body)
        if w.note:
            out += ["", f"*{w.note}.*"]
    rows = suite.results.get("import")
    if rows:
        out += ["", "### import time in a fresh interpreter: ms (lower is better)", ""]
        ymed = rows["yieldos"].median("ms") if "yieldos" in rows else None
        body = [
            [
                f"import {IMPORTS[rt]}",
                cell(row, "ms") if row.runs else row.note,
                "-" if rt == "yieldos" else advantage(ymed, row.median("ms"), False),
            ]
            for rt, row in rows.items()
        ]
        out += table(["statement", "ms", "yieldos vs it"], body)
    for section, rows in suite.results.items():
        if not section.startswith("echo "):
            continue
        _, size, conns = section.split()
        requests = (ECHO_REQUESTS_QUICK if quick else ECHO_REQUESTS)[size]
        what = "ping_inline (6 B in, 7 B out)" if size == "ping" else f"ECHO {size} B"
        out += [
            "",
            f"### echo: {what}, {conns} connections, {requests:,} messages"
            f" (`{echo.command_line(int(conns), requests, ECHO_SIZES[size])}`)",
            "",
        ]
        y = rows.get("yieldos")
        yuser = y.median("user_us") if y else None
        head = [
            "server",
            "msgs/s",
            "p50 ms",
            "p99 ms",
            "user µs/msg",
            "sys µs/msg",
            "yieldos vs it (user CPU)",
        ]
        body = []
        for rt, row in rows.items():
            if not row.runs:
                body.append([label(section, rt), row.note] + ["-"] * 5)
                continue
            body.append(
                [
                    label(section, rt),
                    cell(row, "rate"),
                    cell(row, "p50_ms"),
                    cell(row, "p99_ms"),
                    cell(row, "user_us"),
                    cell(row, "sys_us"),
                    "-" if rt == "yieldos" else advantage(yuser, row.median("user_us"), False),
                ]
            )
        out += table(head, body)
    for section, rows in suite.results.items():
        if not section.startswith("http "):
            continue
        conns = section.split()[1]
        out += [
            "",
            f"### HTTP: wrk -t 1 -c {conns} -d {suite.http_seconds:g}s --latency --timeout 10s"
            f" against examples/http_server.py, GET {echo.HTTP_PATH} (keep-alive)",
            "",
        ]
        body = [
            [
                rt,
                cell(row, "rate") if row.runs else row.note,
                cell(row, "p50_ms"),
                cell(row, "p99_ms"),
                cell(row, "user_us"),
            ]
            for rt, row in rows.items()
        ]
        out += table(["server", "requests/s", "p50 ms", "p99 ms", "user µs/request"], body)
        out += ["", "*No peer has this server yet: an absolute figure, to watch over time.*"]
    rows = suite.results.get("syscalls")
    if rows:
        spec = ECHO_QUICK if quick else ECHO_FULL
        out += [
            "",
            f"### syscalls per echoed message: strace -c -f -p SERVER, ping_inline,"
            f" 10 connections, steady state: loads of {spec['syscall_requests']:,} and"
            f" {spec['syscall_requests'] // 10:,} messages, difference over difference",
            "",
        ]
        body = [
            [
                label("syscalls", rt),
                cell(row, "per_msg") if row.runs else row.note,
                row.runs[0]["top"] if row.runs else "-",
            ]
            for rt, row in rows.items()
        ]
        out += table(["server", "syscalls/msg", "most frequent, per msg"], body)
    out += ["", "### targets", ""]
    out += table(["target", "measured", "wanted", "result"], targets(suite))
    if suite.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(suite.notes)]
    return out


def _ratio(results: Results, section: str, key: str, a: str, b: str) -> Optional[float]:
    rows = results.get(section, {})
    if a not in rows or b not in rows:
        return None
    x, y = rows[a].median(key), rows[b].median(key)
    if x is None or y is None or y == 0:
        return None
    return x / y


def targets(suite: Suite) -> list[list[str]]:
    """The issue's targets: on CPython, fixed ratios; on PyPy, yieldos beats every peer."""
    res = suite.results
    checks: list[tuple[str, Optional[float], str, float]] = []  # what, value, op, bound

    def add(what: str, value: Optional[float], op: str, bound: float) -> None:
        checks.append((what, value, op, bound))

    if IMPL == "CPython":
        add(
            "switch rate, yieldos / asyncio",
            _ratio(res, "switch", "rate", "yieldos", "asyncio"),
            ">=",
            3,
        )
        add(
            "switch rate, yieldos / uvloop",
            _ratio(res, "switch", "rate", "yieldos", "uvloop"),
            ">=",
            1.5,
        )
        add(
            "spawn+join rate, yieldos / asyncio",
            _ratio(res, "spawn", "rate", "yieldos", "asyncio"),
            ">=",
            3,
        )
        add(
            "ping-pong rate, yieldos / asyncio",
            _ratio(res, "pingpong", "rate", "yieldos", "asyncio"),
            ">=",
            2,
        )
        add(
            "timers excess wall, yieldos / asyncio",
            _ratio(res, "timers", "excess_ms", "yieldos", "asyncio"),
            "<=",
            0.25,
        )
        add(
            "memory per idle task, yieldos / asyncio",
            _ratio(res, "memory", "bytes", "yieldos", "asyncio"),
            "<=",
            0.5,
        )
        add(
            "import time, yieldos / asyncio",
            _ratio(res, "import", "ms", "yieldos", "asyncio"),
            "<=",
            0.25,
        )
        for conns in ECHO_FULL["conns"]:
            section = f"echo ping {conns}"
            add(
                f"echo ping x{conns}: server user CPU/msg, yieldos / asyncio Protocol",
                _ratio(res, section, "user_us", "yieldos", "asyncio"),
                "<=",
                0.65,
            )
            add(
                f"echo ping x{conns}: server user CPU/msg, yieldos / epoll loop",
                _ratio(res, section, "user_us", "yieldos", "epoll"),
                "<=",
                1.3,
            )
            add(
                f"echo ping x{conns}: throughput, yieldos / epoll loop",
                _ratio(res, section, "rate", "yieldos", "epoll"),
                ">=",
                0.9,
            )
        sc = res.get("syscalls", {}).get("yieldos")
        add("echo syscalls per message (yieldos)", sc.median("per_msg") if sc else None, "<=", 2.1)
    else:
        for w in WORKLOADS:
            for peer in PEERS:
                v = _ratio(res, w.name, w.metric, "yieldos", peer)
                if v is not None:
                    add(
                        f"{w.name}: yieldos / {peer} ({w.metric})",
                        v,
                        ">" if w.higher_is_better else "<",
                        1,
                    )
        for peer in PEERS:
            v = _ratio(res, "import", "ms", "yieldos", peer)
            if v is not None:
                add(f"import: yieldos / {peer}", v, "<", 1)
        for section in [s for s in res if s.startswith("echo ")]:
            for peer in [p for p in echo.SERVERS if p not in LIMITS and p != "yieldos"]:
                v = _ratio(res, section, "user_us", "yieldos", peer)
                if v is not None:
                    add(f"{section}: user CPU/msg, yieldos / {peer}", v, "<", 1)
            # The PyPy echo target: throughput above uvloop's, run by CPython.
            v = _ratio(res, section, "rate", "yieldos", "uvloop-cpython")
            if v is not None:
                add(f"{section}: throughput, yieldos / uvloop on CPython", v, ">", 1)
    body = []
    ops: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda v, b: v >= b,
        "<=": lambda v, b: v <= b,
        ">": lambda v, b: v > b,
        "<": lambda v, b: v < b,
    }
    for what, value, op, bound in checks:
        if value is None:
            body.append([what, "-", f"{op} {bound:g}", "not measured"])
        else:
            # Judged on the figure shown: a ratio is a median of noisy runs, and three
            # decimals are more than it means (2.1001 syscalls per message shows, and
            # counts, as 2.100: one read, one write, an epoll_wait per ten messages).
            shown = f"{value:.3f}"
            met = ops[op](float(shown), bound)
            body.append([what, shown, f"{op} {bound:g}", "met" if met else "MISSED"])
    return body


def rounds(rows: dict[str, Row]) -> list[str]:
    """The runtimes to run in the next round: each once, but those given up on.

    Discussion: the runs are made in rounds (every runtime's first run, then every
    runtime's second...) rather than one runtime's runs back to back, so that a
    stretch of noise from the machine's other tenants falls on every runtime of a
    round alike instead of on one runtime's every run: the ratios, taken between
    medians, then compare runs made under the same conditions.
    """
    return [runtime for runtime, row in rows.items() if not row.note]


def header(suite: Suite, command: str) -> list[str]:
    return [
        f"## {IMPL} {platform.python_version()}",
        "",
        f"- command: `{command}`",
        f"- interpreter: {sys.executable} ({' '.join(sys.version.split())})",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Linux "
        f"{platform.release()}, {_cpu_model()}",
        f"- runs: median (min-max) of {suite.runs} (CPU workloads) and {suite.echo_runs}"
        f" (echo){', --quick sizes' if suite.quick else ''}",
    ]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


DOC_INTRO = """# Performance

Generated by `python3 -m bench --write docs/performance.md` (bench/run.py); do not
edit by hand. Each interpreter's section is replaced when the suite is run on that
interpreter, so the CPython and PyPy tables may come from different runs of the
suite; within a section, every figure comes from the same run.

How to read it: every figure is the median of several runs, each in a fresh
process, with the min-max spread in brackets. The runs are made in rounds (each
runtime once per round), so noise from the machine's other tenants falls on all
of a round's runtimes alike. "yieldos vs it" says how many
times better yieldos did than that row, whichever way the metric points (above
1: yieldos wins; the limit rows show how far yieldos is from the bare minimum).
The echo tables have three limit rows: the epoll loop (callbacks, no tasks), the
bare generator server (generators, no kernel) and the kernel floor (a task control
block and the checks every kernel makes, with traps as tuples served inline:
bench/servers/floor_server.py).
On PyPy the echo tables also have "uvloop on CPython": uvloop's server run by
CPython in the same run, for the issue's target that yieldos on PyPy beat its
throughput (its CPU figures are another interpreter's, so no target uses them).
What each workload measures, and why, is written at the top of bench/run.py,
bench/runtimes/__init__.py and bench/echo.py. Set up the tools and peers with
`bash bench/setup.sh`.
"""


def write_doc(path: Path, section: list[str]) -> None:
    """Replace this interpreter's section of the doc (between its markers)."""
    begin, end = f"<!-- bench:{IMPL}:begin -->", f"<!-- bench:{IMPL}:end -->"
    old = path.read_text() if path.exists() else ""
    sections = dict(
        re.findall(r"<!-- bench:(\w+):begin -->\n(.*?)<!-- bench:\1:end -->", old, re.S)
    )
    sections[IMPL] = "\n".join(section).strip() + "\n"
    parts = [DOC_INTRO]
    for impl in sorted(sections, key=lambda i: (i != "CPython", i)):
        b, e = f"<!-- bench:{impl}:begin -->", f"<!-- bench:{impl}:end -->"
        parts.append(f"{b}\n{sections[impl]}{e}\n")
    del begin, end
    path.write_text("\n".join(parts))


# ── Command line ──────────────────────────────────────────────────────────────


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m bench",
        description="Benchmark yieldos against asyncio, uvloop, trio, curio, gevent and the"
        " bare limit, on this interpreter.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one run each: a smoke test (under a minute)",
    )
    p.add_argument(
        "--only",
        default=",".join(ALL),
        help=f"comma-separated workloads (default: all of {','.join(ALL)})",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=0,
        help="runs per figure (default 5 for CPU workloads, 3 for echo; 1 quick)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds one run may take before its row is given up (default 60; 20 quick)",
    )
    p.add_argument(
        "--cpython",
        default="python3",
        metavar="PYTHON",
        help="on PyPy: the CPython (with uvloop) that runs uvloop's echo server (default python3)",
    )
    p.add_argument("--write", metavar="FILE", help="write this interpreter's tables into FILE")
    p.add_argument("--json", metavar="FILE", help="also dump every raw run to FILE")
    p.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse(raw)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in ALL]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {ALL}")
    suite = Suite(args)
    start = time.perf_counter()
    suite.run(only)
    exe = "python3" if IMPL == "CPython" else sys.executable
    command = " ".join([exe, "-m", "bench"] + [shlex.quote(a) for a in raw])
    lines = header(suite, command) + render(suite)
    lines.append("")
    lines.append(f"Suite time: {time.perf_counter() - start:.0f} s.")
    print("\n".join(lines))
    if args.write:
        write_doc(Path(args.write), lines)
    if args.json:
        dump = {
            s: {rt: {"runs": r.runs, "note": r.note} for rt, r in rows.items()}
            for s, rows in suite.results.items()
        }
        Path(args.json).write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
