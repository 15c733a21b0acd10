"""The tutorial (examples/tutorial/) runs, and the teaching map (docs/teaching.md) is true.

Every step is run as a program, as a reader would run it, with the interpreter
running the tests (so PyPy too): it must exit 0, write nothing to stderr (with
ResourceWarning turned into an error: no socket left unclosed), and print the trace
its docstring promises. Where a step is deterministic the whole trace is compared;
where the order of some lines depends on the network or real time, the key lines
are checked in order.

docs/teaching.md and each step's "In yieldos" section name real files and functions
of the kernel; those names are looked up here, so the map cannot rot.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "examples" / "tutorial"
TEACHING = REPO / "docs" / "teaching.md"

#: Seconds a step may take (each needs well under one; the watchdog of conftest is 10).
STEP_TIMEOUT = 8.0


def run_step(name: str, tmp_path: Path) -> str:
    """Run a step from an unrelated directory; return its stdout up to "In yieldos:"."""
    proc = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(TUTORIAL / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr}"
    assert proc.stderr == "", f"{name} wrote to stderr:\n{proc.stderr}"
    trace, marker, in_yieldos = proc.stdout.partition("\nIn yieldos:\n")
    assert marker, f"{name} does not end with its 'In yieldos:' section:\n{proc.stdout}"
    assert in_yieldos.strip(), f"{name}: empty 'In yieldos:' section"
    return trace.strip("\n")


def assert_in_order(trace: str, expected: list[str]) -> None:
    """Each expected line is in the trace, in this order (other lines may come between)."""
    lines = trace.splitlines()
    at = 0
    for line in expected:
        assert line in lines[at:], f"{line!r} missing (or out of order) in:\n{trace}"
        at = lines.index(line, at) + 1


# ── Deterministic steps: the whole trace ─────────────────────────────────

EXACT = {
    "step01_generator_task.py": """
        countdown(3) ran nothing yet: it is GEN_CREATED
          countdown: n = 3
        task 1 yielded 'tick 3'; saved context: n = 3
          countdown: n = 2
        task 1 yielded 'tick 2'; saved context: n = 2
          countdown: n = 1
        task 1 yielded 'tick 1'; saved context: n = 1
        task 1 exited with 'liftoff'
        state at the end: GEN_CLOSED
        """,
    "step02_round_robin.py": """
        alice step 1
        bob step 1
        carol step 1
        alice step 2
        bob step 2
        carol step 2
        alice step 3
          [kernel] task 2 (bob) exited
        carol step 3
          [kernel] task 1 (alice) exited
          [kernel] task 3 (carol) exited
        11 context switches, run queue empty
        """,
    "step03_traps.py": """
          [kernel] tid 1 trap GetTid() -> 1
        alice: my tid is 1
          [kernel] tid 1 trap SchedYield() -> SWITCH
          [kernel] tid 2 trap GetTid() -> 2
        bob: my tid is 2
          [kernel] tid 2 trap SchedYield() -> SWITCH
        confused: the kernel said tid 3 yielded 42, not a trap
          [kernel] tid 3 trap SchedYield() -> SWITCH
          [kernel] tid 1 trap Switches() -> 4
        alice: the kernel has switched 4 times
          [kernel] tid 1 exited
          [kernel] tid 2 trap Switches() -> 5
        bob: the kernel has switched 5 times
          [kernel] tid 2 exited
        confused: still alive, and done
          [kernel] tid 3 exited
        """,
    "step04_spawn_join_kill.py": """
        worker: step 0
        looper: spinning
        worker: step 1
        looper: spinning
          [kernel] tid 4 (failing) exited: raised ValueError('bad input')
          [kernel] tid 2 (worker) exited: returned 20
        looper: spinning
        parent: worker returned 20
        parent: join(failing) raised ValueError('bad input')
        looper: finally block runs (cleanup)
          [kernel] tid 3 (looper) exited: raised Cancelled()
        parent: looper is exited, killed by Cancelled()
          [kernel] tid 1 (parent) exited: returned None
        """,
    # The virtual clock makes the times exact; the real clock must agree on the order.
    "step05_sleep_timer_queue.py": """
        virtual clock:
        t=0.00  alice: sleep(0.3)
        t=0.00  bob: sleep(0.1)
        t=0.00  carol: sleep(0.2)
        t=0.00  dozer: sleep(10.0)
        t=0.10  bob: woke up
        t=0.20  carol: woke up
        t=0.25  main: kill dozer
        t=0.25  main: the timer heap holds 2 entries, 1 live
        t=0.25  dozer: killed in its sleep
        t=0.30  alice: woke up
        real clock (time.monotonic, lengths x0.5): same order of events: True
        """,
    "step08_wait_channels_lock.py": """
        Part 1: wait channels
        ann: wait_on('door')
        ben: wait_on('door')
        cat: wait_on('door')
        main: wakeup('door', 1) woke 1
        ann: woken
        main: wakeup('door') woke 2
        ben: woken
        cat: woken
        main: wakeup('door') woke 0: nobody waits, the wakeup is lost

        Part 2: who gets the lock, 3 rounds each for A and B
        TinyLock (wake, then compete): A A A B B B
          B was woken 2 times only to find the lock taken again
        syscalls.Lock (hand-off, FIFO): A B A B A B
        """,
    # Seeded lottery: the same on every run and on CPython and PyPy alike.
    "step09_scheduling_policies.py": """
        A, B, C: priorities 3, 2, 1 (lower first); tickets 1, 2, 4; 4 turns each
        fifo:            A B C A B C A B C A B C
        priority:        C C C C B B B B A A A A
        lottery seed 1:  A C C B C C B A B B A A
        lottery seed 2:  C C A B B B A C C B A A
        same seed, same order: True
        lottery, 7000 turns of endless tasks: A 984, B 2015, C 4001
        priority, the same:                  A 0, B 0, C 7000
        """,
}

# ── Steps on real sockets and real time: the key lines, in order ─────────

IN_ORDER = {
    "step06_epoll_io.py": [
        "reader: recv ...",
        "ghost: recv on a socket nobody writes to ...",
        "main: kill the ghost",
        "ghost: killed while it waited for its fd",
        "main: fds watched now: 1",
        "writer: send b'ping'",
        "  [epoll] fd readable: retry for reader",
        "reader: got b'ping'",
        "writer: send b'pong'",
        "reader: got b'pong'",
        "reader: got b''",
    ],
    "step07_echo_server.py": [
        "server: listening on 127.0.0.1, on a free port",
        "generator client: sent [b'hello', b'yieldos'], got back [b'hello', b'yieldos']",
        "async client: sent [b'hello', b'yieldos'], got back [b'hello', b'yieldos']",
        "server: killed after 2 connections (main has returned)",
    ],
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_deterministic_step(name: str, tmp_path: Path) -> None:
    assert run_step(name, tmp_path) == textwrap.dedent(EXACT[name]).strip("\n")


@pytest.mark.parametrize("name", sorted(IN_ORDER))
def test_io_step(name: str, tmp_path: Path) -> None:
    assert_in_order(run_step(name, tmp_path), IN_ORDER[name])


def test_step06_idle_waits_in_epoll(tmp_path: Path) -> None:
    trace = run_step("step06_epoll_io.py", tmp_path)
    assert "  [idle] epoll_wait (fds watched: 2, a timer is pending)" in trace
    assert "  [idle] epoll_wait (fds watched: 1, no timer)" in trace  # only I/O can wake


def test_step07_closes_every_connection(tmp_path: Path) -> None:
    lines = run_step("step07_echo_server.py", tmp_path).splitlines()
    assert "server: connection 1 closed" in lines
    assert "server: connection 2 closed" in lines


def test_every_step_is_tested_and_listed() -> None:
    steps = {p.name for p in TUTORIAL.glob("step*.py")}
    assert steps == set(EXACT) | set(IN_ORDER)
    assert len(steps) == 9
    readme = (TUTORIAL / "README.md").read_text()
    teaching = TEACHING.read_text()
    for name in steps:
        assert f"({name})" in readme, f"examples/tutorial/README.md does not link {name}"
        assert f"examples/tutorial/{name})" in teaching, f"docs/teaching.md does not link {name}"


# ── The map of concepts to code ──────────────────────────────────────────

#: `kernel/traps.py:Trap`, `kernel/kernel.py:Kernel._step`, `syscalls/sync.py:Lock.acquire`
DOC_REF = re.compile(r"`((?:kernel|syscalls)/[\w/]+\.py):([\w.]+)`")
#: kernel/task.py `Task`, as the steps' "In yieldos" sections write it (may wrap a line)
STEP_REF = re.compile(r"((?:kernel|syscalls)/\w+\.py)\s+`([\w.]+)`")


def resolve(path: str, dotted: str) -> object:
    """Import the module at ``path`` (relative to the repo) and look ``dotted`` up in it."""
    module = path[: -len(".py")].replace("/", ".")
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    obj: object = importlib.import_module(module)
    for part in dotted.split("."):
        obj = getattr(obj, part)  # AttributeError names what is missing
    return obj


def test_teaching_map_names_real_code() -> None:
    refs = DOC_REF.findall(TEACHING.read_text())
    assert len(refs) > 60, "the reference pattern no longer matches docs/teaching.md"
    missing = []
    for path, dotted in refs:
        assert (REPO / path).is_file(), f"docs/teaching.md names {path}, which does not exist"
        try:
            resolve(path, dotted)
        except (AttributeError, ImportError):
            missing.append(f"{path}:{dotted}")
    assert not missing, f"docs/teaching.md names what does not exist: {missing}"


def test_teaching_map_covers_the_concepts() -> None:
    text = TEACHING.read_text()
    must = {
        "trap": "kernel/traps.py:Trap",
        "trap table": "kernel/syscall.py:TRAP_TABLE",
        "task control block": "kernel/task.py:Task",
        "saved context": "kernel/task.py:Task.coro",
        "run queue": "kernel/scheduler.py:RunQueue",
        "context switch": "kernel/kernel.py:Kernel._step",
        "wait channel": "kernel/wait.py:WaitChannels",
        "sleep on a channel": "kernel/sysproc.py:sys_wait_on",
        "wakeup": "kernel/kernel.py:Kernel.wakeup",
        "timer interrupt": "kernel/timers.py:TimerQueue.expire",
        "idle loop": "kernel/poller.py:Poller.poll",
        "process states": "kernel/task.py:TaskState",
        "undo": "kernel/kernel.py:Kernel.park",
    }
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for concept, ref in must.items():
        assert any(concept in row and f"`{ref}`" in row for row in rows), (concept, ref)


@pytest.mark.parametrize("name", sorted(set(EXACT) | set(IN_ORDER)))
def test_step_in_yieldos_names_real_code(name: str) -> None:
    source = (TUTORIAL / name).read_text()
    section = source.partition('IN_YIELDOS = """')[2]
    assert section, f"{name} has no IN_YIELDOS section"
    refs = STEP_REF.findall(section)
    assert refs, f"{name}'s In yieldos section names no kernel file and function"
    for path, dotted in refs:
        resolve(path, dotted)
