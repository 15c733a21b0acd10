"""A shell pipeline built by hand: ``ls -l /usr/bin | grep py | wc -l``.

A shell runs a pipeline by making one pipe between each pair of neighbours
(``os.pipe()``: a read end and a write end) and starting every program with
its stdin and stdout moved onto the right ends. The programs then run at
the same time, each blocking on its pipes, and the kernel's pipe buffers
carry the data along; the shell only waits for them all to exit.

One detail decides whether the pipeline ever ends: a reader sees end of
file only when *every* write end of its pipe is closed. The children have
their own copies (``fork`` duplicates fds), so the parent must close its
copies as soon as each child has started, or ``wc`` would wait for ever.

Here the parent is a yieldos task: it starts the three processes, reads
the last one's output through a pipe of its own without blocking the
kernel, and reaps all three. Then it runs the same pipeline through the
shell (`subprocess.run` with ``shell=True``) and checks that the answers
agree::

    python3 examples/pipeline.py [--dir /usr/bin] [--pattern py]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import Any, Generator

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kernel
from syscalls.processes import PIPE, Process, spawn_process


def pipeline(directory: str, pattern: str) -> Generator[Any, Any, bytes]:
    """Run ``ls -l DIR | grep PATTERN | wc -l``; return what wc printed."""
    ours: set[int] = set()  # pipe ends we still hold

    def handed(*fds: int) -> None:
        for fd in fds:
            os.close(fd)
            ours.discard(fd)  # never close a number twice: it may be reused by then

    procs: list[Process] = []
    try:
        ls_to_grep_r, ls_to_grep_w = os.pipe()
        ours.update((ls_to_grep_r, ls_to_grep_w))
        grep_to_wc_r, grep_to_wc_w = os.pipe()
        ours.update((grep_to_wc_r, grep_to_wc_w))
        # Each child gets its ends; then we close our copies of them at once, so
        # that only the children hold the pipes (and EOF can reach each reader).
        procs.append((yield spawn_process(["ls", "-l", directory], stdout=ls_to_grep_w)))
        handed(ls_to_grep_w)
        grep = spawn_process(["grep", pattern], stdin=ls_to_grep_r, stdout=grep_to_wc_w)
        procs.append((yield grep))
        handed(ls_to_grep_r, grep_to_wc_w)
        wc = yield spawn_process(["wc", "-l"], stdin=grep_to_wc_r, stdout=PIPE)
        procs.append(wc)
        handed(grep_to_wc_r)
        assert wc.stdout is not None
        output: bytes = yield wc.stdout.read_all()  # only this task waits for it
        codes = []
        for proc in procs:
            codes.append((yield proc.wait()))
        # grep exits 1 when nothing matched: that is an answer (0), not a failure.
        if codes[0] != 0 or codes[1] not in (0, 1) or codes[2] != 0:
            raise RuntimeError(f"pipeline failed with exit statuses {codes}")
        return output
    finally:
        handed(*ours)  # if something failed half-way
        for proc in procs:
            yield proc.aclose()  # nothing left running, no zombie


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/usr/bin", help="the directory to list")
    parser.add_argument("--pattern", default="py", help="what grep looks for")
    opts = parser.parse_args()

    output = kernel.run(pipeline, opts.dir, opts.pattern)
    count = int(output)
    print(f"ls -l {opts.dir} | grep {opts.pattern} | wc -l  ->  {count}")

    command = f"ls -l {shlex.quote(opts.dir)} | grep {shlex.quote(opts.pattern)} | wc -l"
    expected = int(subprocess.run(command, shell=True, check=True, capture_output=True).stdout)
    if count != expected:
        print(f"MISMATCH: the shell says {expected}", file=sys.stderr)
        return 1
    print("the shell agrees")
    return 0


if __name__ == "__main__":
    sys.exit(main())
