"""Child processes: start programs, talk to them through pipes, wait for them to exit.

The Unix way to run a program is two system calls. ``fork`` copies the
calling process; in the copy (the *child*), ``exec`` replaces the program
with another one, keeping the open fds. Before the ``exec``, the child
moves the fds it should use onto 0, 1 and 2 (stdin, stdout, stderr) with
``dup2``. A *pipe* (``pipe()``: a kernel buffer of 64 KiB on Linux with a
read end and a write end) connects the parent to the child: the parent
keeps one end, the child gets the other as its stdin or stdout. The
standard library's `subprocess.Popen` does all of this (with ``vfork`` or
``posix_spawn`` where it can); this module starts children with it, and
adds what a kernel of tasks needs: pipes that other tasks can run beside,
and a wait for the exit that blocks only the waiting task.

**Pipes block; tasks must not.** A write to a full pipe, a read from an
empty one, would stop the whole kernel. So each pipe end the parent keeps is
a `PipeStream`, whose operations are the kernel's ``read`` and ``write``
traps: the kernel makes the fd non-blocking and parks the task until the
child has drained or filled the pipe. Feeding a child's stdin and reading
its stdout from *one* task, one after the other, can still deadlock (the
child blocks writing a full stdout while we block writing its stdin):
`run_process` feeds and reads in separate tasks, as ``communicate()`` does
with threads.

**Exit, zombies and reaping.** A child that exits does not vanish: it
stays a *zombie* (an entry in the process table, holding its pid and exit
status) until its parent collects the status with ``waitpid``. That is
*reaping*. A parent that never reaps leaks process-table slots, and a pid
cannot be reused while its zombie exists, which is also what makes
signalling an unreaped child safe.

**Waiting without blocking the kernel.** ``waitpid(pid, 0)`` blocks the
caller, which here is every task. ``waitpid(pid, WNOHANG)`` never blocks but
only answers "not yet". Since Linux 5.3 there is a better way: a *pidfd*
(``os.pidfd_open(pid)``, Python 3.9+) is an fd that refers to the process
and becomes readable when it exits. So `Process.wait` parks the task on the
pidfd with the ``wait_readable`` trap, like any socket, then reaps with
``WNOHANG``, which cannot block any more. Where there is no pidfd (another
OS, an older kernel, a seccomp filter, PyPy 3.9 whose ``os`` lacks
``pidfd_open``), it polls ``WNOHANG`` with sleeps that double from 1 ms to
50 ms: correct, and cheap enough (a few syscalls per second per waiting
task), at the price of noticing an exit up to 50 ms late.

**Who reaps.** `Process.wait` (also `Process.poll`) reaps. A task killed
while it waits does *not* stop the child (as in asyncio and trio: the kill
is the task's, not the program's); whoever owns the `Process` ends it with
``yield proc.aclose()`` (or ``async with``), which closes the pipes,
terminates the child if it still runs, and waits for it, shielded and
bounded, so nothing is left behind. `run_process` does that on every way
out: a timeout, a kill or an error never leaves a child running or a zombie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from subprocess import DEVNULL, PIPE, STDOUT, CalledProcessError, CompletedProcess, TimeoutExpired
from typing import IO, TYPE_CHECKING, Any, Generator, Mapping, Optional, Sequence, Union

from syscalls import (
    CancelScope,
    move_on_after,
    operation,
    read,
    shield,
    sleep,
    wait_readable,
    write,
)
from syscalls.groups import TaskGroup, task_group

if TYPE_CHECKING:
    Command = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", Sequence[Any]]
    #: What a child's stdin/stdout/stderr may be: PIPE, DEVNULL, STDOUT, an fd, a
    #: file object, a `PipeStream` (another child's pipe), or None (inherit ours).
    Redirect = Union[None, int, IO[Any], "PipeStream"]

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "CalledProcessError",
    "CompletedProcess",
    "PipeStream",
    "Process",
    "TimeoutExpired",
    "run_process",
    "spawn_process",
]

#: How much one ``read`` asks for: the size of a Linux pipe buffer, so one
#: read empties a full pipe.
READ_CHUNK = 1 << 16

#: The most one ``write`` is handed: a pipe takes at most its 64 KiB buffer
#: at once, and PyPy copies the whole buffer given to ``os.write``.
WRITE_CHUNK = 1 << 16

#: Polling for an exit without a pidfd: the first sleep, and the longest.
POLL_FIRST = 0.001
POLL_MAX = 0.05

#: How long `Process.aclose` lets a child handle SIGTERM before SIGKILL.
TERMINATE_GRACE = 1.0


class PipeStream:
    """The parent's end of a pipe to a child: ``proc.stdin``, ``proc.stdout``, ``proc.stderr``.

    The blocking methods are operations (``data = yield stream.read()``, or
    ``await``); only the calling task waits. ``close()`` is a plain call:
    closing a pipe never blocks. Closing the write end is how a child reading
    its stdin learns there is no more input (it reads end of file).
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file  # the object, not just its fd: the kernel tracks fds by object

    def fileno(self) -> int:
        """The fd of this end (so a `PipeStream` can be another child's stdin)."""
        return self._file.fileno()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        """Close this end (twice does nothing). Do not close it while a task uses it."""
        self._file.close()

    def __repr__(self) -> str:
        what = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<PipeStream {what}>"

    @operation
    def read(self, n: int = READ_CHUNK) -> Generator[Any, Any, bytes]:
        """Read up to ``n`` bytes, waiting until there are some; ``b''`` once the
        child (and every other holder of the write end) has closed it."""
        data: bytes = yield read(self._file, n)
        return data

    @operation
    def read_all(self) -> Generator[Any, Any, bytes]:
        """Read until end of file; return everything."""
        chunks: list[bytes] = []
        while True:
            data: bytes = yield read(self._file, READ_CHUNK)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    @operation
    def write_all(self, data: bytes) -> Generator[Any, Any, None]:
        """Write all of ``data``, waiting while the pipe is full.

        `BrokenPipeError` if the child has closed its end (it exited, say). If
        the task is killed meanwhile, a part of ``data`` may have been written.
        """
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            # Discussion: only when needed. PyPy 7.3 copies out of a cast view
            # item by item: bytes(cast_view[:64K]) is some 400 times slower.
            view = view.cast("B")
        while view:
            # bytes(): the write trap is typed for bytes (os.write would take the view).
            n: int = yield write(self._file, bytes(view[:WRITE_CHUNK]))
            view = view[n:]


def _redirect(spec: Redirect) -> Any:
    """What Popen takes for a stdin/stdout/stderr argument (a PipeStream becomes its fd)."""
    return spec.fileno() if isinstance(spec, PipeStream) else spec


class Process:
    """A child process started by `spawn_process`.

    ``pid``; ``returncode``: None while the child has not been reaped, then its
    exit status, or ``-N`` if signal N killed it; ``stdin``, ``stdout``,
    ``stderr``: a `PipeStream` for each one spawned with ``PIPE``, else None.
    ``yield proc.wait()`` waits for the exit; ``terminate()``, ``kill()`` and
    ``send_signal()`` signal it. Whoever spawns a process must end with
    ``yield proc.aclose()`` (or ``async with``): it closes the pipes and
    makes sure the child is gone and reaped.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.args = popen.args
        self.pid = popen.pid
        self.stdin = None if popen.stdin is None else PipeStream(popen.stdin)
        self.stdout = None if popen.stdout is None else PipeStream(popen.stdout)
        self.stderr = None if popen.stderr is None else PipeStream(popen.stderr)

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<Process pid={self.pid} {state} args={self.args!r}>"

    @property
    def returncode(self) -> Optional[int]:
        """The exit status once reaped (``-N``: killed by signal N); None before."""
        return self._popen.returncode

    def poll(self) -> Optional[int]:
        """Reap the child if it has exited (``waitpid`` with ``WNOHANG``); return
        `returncode`. A plain call: it never blocks."""
        return self._popen.poll()

    # ── Signals ──────────────────────────────────────────────────────────

    def send_signal(self, sig: int) -> None:
        """Send signal ``sig`` to the child; nothing once it has been reaped (its pid
        may belong to another process by then)."""
        self._popen.send_signal(sig)

    def terminate(self) -> None:
        """Ask the child to exit: SIGTERM, which it may catch to clean up."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Force the child to exit: SIGKILL, which it cannot catch or ignore."""
        self.send_signal(signal.SIGKILL)

    # ── Waiting and reaping ──────────────────────────────────────────────

    @operation
    def wait(self) -> Generator[Any, Any, int]:
        """Wait for the child to exit, reap it, and return `returncode`.

        Only this task waits (on a pidfd, or by polling where there is none:
        see the module docstring). Several tasks may wait for one process. If
        the waiting task is killed or times out, the child keeps running
        (`aclose` ends it), but it can never become a zombie: a daemon thread
        is left blocked in ``waitpid`` to reap it whenever it exits.
        """
        try:
            return (yield from self._wait())
        except BaseException:
            if self._popen.returncode is None:
                _reap_in_background(self._popen)
            raise

    def _wait(self) -> Generator[Any, Any, int]:
        rc = self._popen.poll()
        if rc is not None:
            return rc
        # Discussion: the pidfd is opened only now that poll() has seen the child
        # unreaped. Only we reap it, and nothing between here and the open yields,
        # so the pid still names our child (a zombie at worst), never a stranger
        # that reused the number.
        pidfd = _pidfd_open(self.pid)
        if pidfd is not None:
            try:
                yield wait_readable(pidfd)  # readable once the child has exited
            finally:
                os.close(pidfd)
            rc = self._popen.poll()
            if rc is not None:
                return rc
            # Readable yet not reapable should not happen: poll, which is always right.
        delay = POLL_FIRST
        while True:
            rc = self._popen.poll()
            if rc is not None:
                return rc
            yield sleep(delay)
            delay = min(delay * 2, POLL_MAX)

    @operation
    def aclose(self, grace: float = TERMINATE_GRACE) -> Generator[Any, Any, None]:
        """Close the pipes; if the child still runs, end it; reap it. Idempotent.

        The child gets SIGTERM and ``grace`` seconds to exit, then SIGKILL
        (``grace=0``: SIGKILL at once). All of it is shielded: a kill or a
        timeout of the caller waits for the child to be reaped, so it is
        bounded by ``grace`` plus the instant a SIGKILL takes. This is
        cleanup: to let the child finish its work, ``wait()`` for it first.
        """
        self.close_pipes()
        if self._popen.poll() is not None:
            return
        try:
            with shield():
                if grace > 0:
                    self.terminate()
                    with move_on_after(grace):
                        yield from self._wait()
                if self._popen.poll() is None:
                    self.kill()
                    yield from self._wait()
        except GeneratorExit:
            # The kernel is closing this task (it may not yield any more): reap
            # synchronously. After SIGKILL the exit takes a moment at most.
            self.kill()
            self._popen.wait()
            raise

    def close_pipes(self) -> None:
        """Close our ends of the pipes (a plain call). The child sees end of file
        on its stdin, and SIGPIPE (or EPIPE) if it writes to a closed stdout."""
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __enter__(self) -> None:
        raise TypeError(
            "a Process is closed with `async with` in an async def task; a generator task"
            " ends with `yield proc.aclose()` (in a finally block)"
        )

    def __exit__(self, *exc_info: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None


def _reap_in_background(popen: subprocess.Popen[bytes]) -> None:
    """Reap ``popen`` when it exits, from a daemon thread (Popen's own lock keeps
    this thread and the kernel's ``poll()`` from reaping it twice)."""
    threading.Thread(target=popen.wait, name=f"reap pid {popen.pid}", daemon=True).start()


def _pidfd_open(pid: int) -> Optional[int]:
    """A pidfd for ``pid``, or None where the OS or Python has none (then we poll)."""
    pidfd_open = getattr(os, "pidfd_open", None)  # looked up each time: tests remove it
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # ENOSYS (Linux < 5.3), EPERM (a seccomp filter), ...
        return None
    return fd


@operation
def spawn_process(
    args: Command,
    *,
    stdin: Redirect = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cwd: Optional[Union[str, os.PathLike[str]]] = None,
    env: Optional[Mapping[str, str]] = None,
    shell: bool = False,
    start_new_session: bool = False,
) -> Generator[Any, Any, Process]:
    """Start a child process; the result is its `Process` (``proc = yield spawn_process(...)``).

    ``args`` as for `subprocess.Popen` (a list, or a command line with
    ``shell=True``). Each of ``stdin``, ``stdout``, ``stderr`` is ``PIPE`` (a
    new pipe: ``proc.stdin`` ... is our end), ``DEVNULL``, an fd or a file
    object (``os.pipe()`` ends, another child's `PipeStream`: for pipelines),
    or None to share ours; ``stderr=STDOUT`` joins stderr to stdout. Pipes
    carry bytes. The child gets no other fd of ours (``close_fds``).

    Raises at the ``yield`` if the program cannot be started
    (`FileNotFoundError`, `PermissionError`). Starting is fork+exec, which
    takes the calling task a fraction of a millisecond; the other tasks
    wait meanwhile. End with ``yield proc.aclose()`` (or ``async with``).

    An fd handed over is the same *open file* in the child, with its flags:
    one the kernel has made non-blocking (because a task read it) is
    non-blocking in the child too, which few programs expect. Hand children
    fds that the tasks do not use themselves.
    """
    popen = subprocess.Popen(
        args,
        bufsize=0,  # raw file objects: we never use their buffers, only their fds
        stdin=_redirect(stdin),
        stdout=_redirect(stdout),
        stderr=_redirect(stderr),
        cwd=cwd,
        env=env,
        shell=shell,
        start_new_session=start_new_session,
        close_fds=True,
    )
    return Process(popen)
    yield  # never reached: the yield makes this a generator, so the call is an Operation


@operation
def run_process(
    args: Command,
    *,
    input: Optional[bytes] = None,
    timeout: Optional[float] = None,
    check: bool = False,
    capture_output: bool = False,
    stdin: Redirect = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cwd: Optional[Union[str, os.PathLike[str]]] = None,
    env: Optional[Mapping[str, str]] = None,
    shell: bool = False,
) -> Generator[Any, Any, CompletedProcess[bytes]]:
    """Run a program to its end; the result is a `subprocess.CompletedProcess`.

    `subprocess.run` for tasks, with its arguments and defaults: ``input``
    (bytes) is fed to the child's stdin; ``capture_output=True`` (or
    ``stdout=PIPE``, ``stderr=PIPE``) collects the output into the result's
    ``stdout`` and ``stderr``; unpiped streams are shared with us. Feeding
    and reading go on in tasks of their own, so a child with megabytes to
    say never blocks on a full pipe while we write.

    ``timeout`` (seconds): past it, the child is killed (SIGKILL) and reaped,
    and `subprocess.TimeoutExpired` is raised, holding the output read so
    far. ``check=True``: a nonzero exit raises `subprocess.CalledProcessError`.
    If the calling task is killed, or something fails, the child is killed and
    reaped before the exception goes on: it never outlives the call.
    """
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        stdout = stderr = PIPE
    proc: Process = yield spawn_process(
        args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, shell=shell
    )
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        with CancelScope(timeout=timeout, raise_timeout=False) as deadline:
            yield task_group(_communicate, proc, input, out, err)
            returncode = yield from proc._wait()
    finally:
        # Every way out: a child still running is killed, and reaped. Shielded
        # from here: a cancellation pending at the trap below must not skip it.
        with shield():
            yield proc.aclose(grace=0)
    output = b"".join(out) if proc.stdout is not None else None
    errors = b"".join(err) if proc.stderr is not None else None
    if deadline.expired:
        assert timeout is not None
        raise TimeoutExpired(proc.args, timeout, output=output, stderr=errors)
    if check and returncode:
        raise CalledProcessError(returncode, proc.args, output=output, stderr=errors)
    return CompletedProcess(proc.args, returncode, output, errors)


def _communicate(
    g: TaskGroup, proc: Process, input: Optional[bytes], out: list[bytes], err: list[bytes]
) -> Generator[Any, Any, None]:
    """Feed stdin and drain stdout and stderr, each in a task of the group ``g``."""
    if proc.stdin is not None:
        yield g.spawn(_feed, proc.stdin, input or b"", name=f"stdin:{proc.pid}")
    if proc.stdout is not None:
        yield g.spawn(_drain, proc.stdout, out, name=f"stdout:{proc.pid}")
    if proc.stderr is not None:
        yield g.spawn(_drain, proc.stderr, err, name=f"stderr:{proc.pid}")


def _feed(stream: PipeStream, data: bytes) -> Generator[Any, Any, None]:
    try:
        yield stream.write_all(data)
    except BrokenPipeError:
        pass  # the child exited, or closed its stdin, without reading it all: as communicate()
    finally:
        stream.close()  # end of file for the child


def _drain(stream: PipeStream, chunks: list[bytes]) -> Generator[Any, Any, None]:
    # Into ``chunks`` as it comes, so a timeout can report what was read.
    while True:
        data = yield stream.read(READ_CHUNK)
        if not data:
            return
        chunks.append(data)
