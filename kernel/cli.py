"""``python -m kernel``: run a program under the kernel, and watch it work.

A program makes its own kernels (``kernel.run(main)``), so the command line
cannot hand it one. Instead it reaches every kernel the program creates
through `Kernel.setups`, functions called at the end of each kernel's
construction: one sets the clock, one the scheduling policy, one installs
strace, the trace recorder or the accounting. The program then runs
unchanged, as ``__main__``, with ``sys.argv`` set as if it had been started
with ``python script.py args...``; its exit status is passed through.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
import traceback
from typing import Callable, Optional, Sequence, TextIO

from .instrument import Instrument
from .kernel import Kernel
from .strace import Strace
from .timeline import write_svg
from .timers import VirtualClock
from .trace import TraceRecorder, write_chrome_traces

Setup = Callable[[Kernel], None]

DESCRIPTION = """\
Run Python programs under the yieldos kernel, and watch them work.

subcommands (each has its own --help):

  run     Run a script as `python script.py args` would, with every kernel it
          creates set up by the options: --clock virtual makes time jump to the
          next timer instead of waiting for it, --policy picks the scheduling
          policy, --top prints a table of each task's CPU time when the run ends.

  strace  Run a script and print every trap each task makes, like strace(1):
          the task, the call and its arguments, the result or the error, and
          how long it took on the kernel clock. -c prints a table of counts and
          times instead, -e limits the output to some traps.

  trace   Run a script and record when each task ran, waited for the CPU, or
          was blocked (on I/O, sleeping, or waiting for another task): a Chrome
          trace (open it in ui.perfetto.dev or chrome://tracing) and an SVG
          timeline, one lane per task.

  demo    Run a small built-in program (a CPU-bound task, sleepers, and a
          ping-pong over a socket pair) under the virtual clock: prints its
          strace and writes its trace and timeline.
"""

EPILOG = """\
examples:
  python -m kernel run --clock virtual examples/echo_server.py --selftest 20
  python -m kernel run --policy fair --top myprog.py
  python -m kernel strace --clock virtual myprog.py
  python -m kernel strace -e recv,send -o calls.txt examples/echo_server.py --selftest 2
  python -m kernel strace -c examples/echo_server.py --selftest 50
  python -m kernel trace -o run.json --svg run.svg myprog.py
  python -m kernel demo --out /tmp/yieldos-demo
"""


class UsageError(Exception):
    """A bad command line found after parsing (reported as argparse reports its own)."""


# ── Options shared by run, strace and trace ──────────────────────────────


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clock",
        choices=("virtual", "real"),
        help="the clock of every kernel: virtual (a fresh VirtualClock each: time jumps"
        " to the next timer when nothing else can happen; for programs whose I/O is between"
        " their own tasks) or real (time.monotonic); default: what the script chose",
    )
    parser.add_argument(
        "--policy",
        metavar="SPEC",
        help="the scheduling policy of every kernel: fifo, priority, fair, stride,"
        " lottery[:SEED] or random[:SEED]; default: what the script chose",
    )
    parser.add_argument("script", metavar="SCRIPT", help="the Python file to run as __main__")
    parser.add_argument(
        "args", metavar="ARGS", nargs=argparse.REMAINDER, help="its arguments (sys.argv[1:])"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kernel",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,strace,trace,demo}")
    sub.required = True

    p = sub.add_parser(
        "run",
        help="run a script under the kernel settings given",
        description="Run SCRIPT as __main__ (sys.argv = [SCRIPT, ARGS...]), with every kernel"
        " it creates set up by the options. The exit status is the script's: 1 with the"
        " traceback if it raises, 130 on Ctrl-C, the code of a SystemExit.",
    )
    _common(p)
    p.add_argument(
        "--top",
        action="store_true",
        help="when the run ends, print each task's CPU time and state (on stderr)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "strace",
        help="print every trap each task makes, like strace(1)",
        description="Run SCRIPT and print a line for every trap a task makes:"
        ' `[tid 3 worker] recv(fd=5, 65536) = b"hello" <0.000010>`, the duration on the'
        " kernel clock (exact under --clock virtual). kernel/strace.py documents the format.",
    )
    p.add_argument(
        "-c",
        dest="summary",
        action="store_true",
        help="instead of lines, print a table of time, calls and errors per trap at the end",
    )
    p.add_argument(
        "-e",
        dest="only",
        metavar="TRAP,...",
        help="only these traps (e.g. recv,send or trace=recv,send; a subroutine such as"
        " Lock.acquire also works)",
    )
    p.add_argument("-o", dest="output", metavar="FILE", help="write to FILE instead of stderr")
    _common(p)
    p.set_defaults(func=cmd_strace)

    p = sub.add_parser(
        "trace",
        help="record each task's states: a Chrome trace and an SVG timeline",
        description="Run SCRIPT and record when each task was running, ready, or blocked"
        " (on I/O, sleeping, or waiting). -o writes the Chrome trace event JSON (open it in"
        " ui.perfetto.dev or chrome://tracing), --svg a self-contained SVG timeline. With"
        " several kernels, each is a process in the JSON, and SVGs after the first are"
        " numbered (run-2.svg...).",
    )
    p.add_argument(
        "-o",
        dest="output",
        metavar="FILE.json",
        default="yieldos-trace.json",
        help="the Chrome trace to write (default: %(default)s)",
    )
    p.add_argument("--svg", metavar="FILE.svg", help="also write an SVG timeline")
    p.add_argument("--traps", action="store_true", help="also record every trap as an instant")
    _common(p)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser(
        "demo",
        help="run a small built-in program and show its strace, trace and timeline",
        description="Run kernel/demo.py's program under a virtual clock: a CPU-bound task,"
        " two sleepers and a ping-pong over a socket pair. Prints its strace and -c table,"
        " and writes demo-trace.json and demo-timeline.svg.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the trace and the timeline (default: a new temporary directory)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except UsageError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    return status


# ── The subcommands ──────────────────────────────────────────────────────


def cmd_run(args: argparse.Namespace) -> int:
    setups = _kernel_setups(args)
    if args.top:
        from .accounting import Accounting

        setups.append(lambda k: k.add_instrument(Accounting(summary_at_exit=True, file=sys.stderr)))
    return run_script(args.script, args.args, setups)


def cmd_strace(args: argparse.Namespace) -> int:
    only = None
    if args.only:
        names = args.only[len("trace=") :] if args.only.startswith("trace=") else args.only
        only = {name.strip() for name in names.split(",") if name.strip()}
    try:
        Strace(only=only)  # check the names before running anything
    except ValueError as error:
        raise UsageError(f"-e: {error}") from None
    setups = _kernel_setups(args)
    out: TextIO = sys.stderr
    if args.output:
        try:
            out = open(args.output, "w", encoding="utf-8")  # closed below
        except OSError as error:
            raise UsageError(f"-o: {error}") from None
    setups.append(lambda k: k.add_instrument(Strace(out, summary=args.summary, only=only)))
    try:
        return run_script(args.script, args.args, setups)
    finally:
        if out is not sys.stderr:
            out.close()


def cmd_trace(args: argparse.Namespace) -> int:
    if not os.path.exists(args.script):
        return run_script(args.script, args.args, [])  # (says so, as python would)
    recorders: list[TraceRecorder] = []

    def record(k: Kernel) -> None:
        recorder = TraceRecorder(traps=args.traps)
        recorders.append(recorder)
        k.add_instrument(recorder)

    setups = _kernel_setups(args)
    setups.append(record)
    try:
        return run_script(args.script, args.args, setups)
    finally:  # also when the script failed: the trace shows how it got there
        write_traces(recorders, args.output, args.svg, os.path.basename(args.script))


def write_traces(
    recorders: list[TraceRecorder], json_path: str, svg_path: Optional[str], program: str
) -> None:
    """Write the recorders' Chrome trace and their SVG timelines (titled after
    ``program``), and say where (on stderr)."""
    if not recorders:
        print("trace: the script created no kernel: nothing to write", file=sys.stderr)
        return
    write_chrome_traces(recorders, json_path)
    events = sum(len(r.intervals) + len(r.events) for r in recorders)
    print(f"trace: wrote {json_path} ({events} events)", file=sys.stderr)
    if svg_path:
        stem, ext = os.path.splitext(svg_path)
        for i, recorder in enumerate(recorders, 1):
            path = svg_path if i == 1 else f"{stem}-{i}{ext}"
            title = f"yieldos timeline: {program}"
            write_svg(recorder, path, title=title if len(recorders) == 1 else f"{title} #{i}")
            print(f"trace: wrote {path}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, sys.stdout)
    return 0


# ── Setting up every kernel the script creates ───────────────────────────


def _kernel_setups(args: argparse.Namespace) -> list[Setup]:
    """The setups for --clock and --policy (in this order: instruments come after)."""
    setups: list[Setup] = []
    if args.clock == "virtual":
        setups.append(_set_virtual_clock)
    elif args.clock == "real":
        setups.append(_set_real_clock)
    if args.policy:
        setups.append(policy_setup(args.policy))
    return setups


def _set_virtual_clock(k: Kernel) -> None:
    k.clock = VirtualClock()  # a fresh one per kernel: each starts at time 0


def _set_real_clock(k: Kernel) -> None:
    k.clock = time.monotonic


def policy_setup(spec: str) -> Setup:
    """A setup giving each kernel a fresh policy made from ``spec`` by
    ``kernel.scheduler.make_policy``; a policy that is an `Instrument` is installed."""
    from .scheduler import make_policy

    try:
        make_policy(spec)  # a bad spec is reported now, not inside the script
    except ValueError as error:
        raise UsageError(f"--policy: {error}") from None

    def setup(k: Kernel) -> None:
        old = k.runq
        if isinstance(old, Instrument) and old in k.instruments:  # the script's own policy
            k.remove_instrument(old)
        k.runq = make_policy(spec)
        if isinstance(k.runq, Instrument):
            k.add_instrument(k.runq)

    return setup


# ── Running the script ───────────────────────────────────────────────────


def run_script(path: str, argv: Sequence[str], setups: Sequence[Setup]) -> int:
    """Run the file ``path`` as ``__main__`` with ``sys.argv = [path, *argv]``, every
    kernel it creates set up by ``setups``. Returns the exit status python would give."""
    if not os.path.exists(path):
        print(
            f"python -m kernel: can't open file {os.path.abspath(path)!r}:"
            " [Errno 2] No such file or directory",
            file=sys.stderr,
        )
        return 2
    saved_argv, saved_path = sys.argv, sys.path[:]
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # as python does for a script
    Kernel.setups.extend(setups)
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exit:
        return _exit_status(exit.code)
    except KeyboardInterrupt as error:
        _print_traceback(error, path)
        return 130  # 128 + SIGINT, what a shell reports for a program Ctrl-C stopped
    except BaseException as error:  # the script failed: report it as python would
        _print_traceback(error, path)
        return 1
    finally:
        for setup in setups:
            Kernel.setups.remove(setup)
        sys.argv = saved_argv
        sys.path[:] = saved_path
        sys.stdout.flush()
    return 0


def _exit_status(code: object) -> int:
    """What ``sys.exit(code)`` makes the process exit with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"): printed, status 1
    return 1


def _print_traceback(error: BaseException, path: str) -> None:
    """The traceback from the script's own frames on (not runpy's, not ours)."""
    script = os.path.abspath(path)
    tb = error.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb or error.__traceback__, file=sys.stderr)
