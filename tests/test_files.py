"""Regular files through the thread pool: open_file and AsyncFile."""

from __future__ import annotations

import os
import threading
import time

import pytest

import kernel
from conftest import run
from kernel.scopes import current_kernel
from syscalls import kill, sleep, spawn
from syscalls.files import AsyncFile, open_file

LINES = [f"line {i}\n" for i in range(100)]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("".join(LINES))
    return path


def test_read_write_seek_generator_task(tmp_path, poller):
    path = tmp_path / "data.bin"

    def main():
        f = yield open_file(path, "w+b")
        try:
            assert isinstance(f, AsyncFile) and f.mode == "rb+" and not f.closed
            assert (yield f.write(b"hello world")) == 11
            yield f.writelines([b"\n", b"second\n"])
            yield f.flush()
            assert (yield f.tell()) == 19
            assert (yield f.seek(6)) == 6
            assert (yield f.read(5)) == b"world"
            yield f.seek(0)
            assert (yield f.readline()) == b"hello world\n"
            assert (yield f.readlines()) == [b"second\n"]
            assert (yield f.read()) == b""
            assert (yield f.truncate(5)) == 5
        finally:
            yield f.close()
        assert f.closed
        yield f.close()  # closing twice is fine

    run(main, poller=poller)
    assert path.read_bytes() == b"hello"


def test_iterate_lines_generator_task(text_file, poller):
    def main():
        f = yield open_file(text_file)
        lines = []
        try:
            while True:
                line = yield f.readline()
                if not line:
                    break
                lines.append(line)
        finally:
            yield f.close()
        return lines

    assert run(main, poller=poller) == LINES


def test_async_with_and_async_for(text_file, tmp_path, poller):
    copy = tmp_path / "copy.txt"

    async def main():
        async with await open_file(text_file) as fin, await open_file(copy, "w") as fout:
            n = 0
            async for line in fin:
                await fout.write(line.upper())
                n += 1
        assert fin.closed and fout.closed
        return n

    assert run(main, poller=poller) == len(LINES)
    assert copy.read_text() == "".join(LINES).upper()


def test_aclose_and_wrapped(text_file):
    async def main():
        f = await open_file(text_file, encoding="ascii")
        assert f.name == str(text_file) and f.fileno() == f.wrapped.fileno()
        assert "AsyncFile" in repr(f)
        first = await f.read(4)
        await f.aclose()
        return first

    assert run(main) == "line"


def test_open_error_is_raised_in_the_task(tmp_path):
    def main():
        with pytest.raises(FileNotFoundError):
            yield open_file(tmp_path / "missing")

    run(main)


def test_other_tasks_run_during_file_io(tmp_path):
    """A read stuck in its thread (here: a FIFO with no writer yet) stops nobody."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    trace = []

    def writer():
        trace.append("writer runs")
        yield sleep(0.01)
        with open(fifo, "wb") as w:  # the reader's open() can finish now
            w.write(b"through the fifo")

    def main():
        yield spawn(writer)
        f = yield open_file(fifo, "rb")  # blocks its worker until the writer opens
        try:
            trace.append((yield f.read()))
        finally:
            yield f.close()

    run(main)
    assert trace == ["writer runs", b"through the fifo"]


def test_file_opened_for_a_killed_task_is_closed_not_leaked(tmp_path):
    """open_file's task leaves while open() runs: the worker closes the late file
    (the fd-leak check of conftest would catch it otherwise)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened = []
    entered = threading.Event()

    def opener(path, flags):
        entered.set()
        return os.open(path, flags)  # blocks until a writer opens the FIFO

    def opener_task():
        opened.append((yield open_file(fifo, "rb", opener=opener)))

    def main():
        t = yield spawn(opener_task)
        while not entered.is_set():
            yield sleep(0.001)
        yield kill(t)  # its worker is blocked in open() of the FIFO

    with kernel.Kernel() as k:
        k.run(main)
    # Now let that open() finish: its file must be closed by the worker.
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _fifo_still_open(fifo):
        time.sleep(0.01)
    assert opened == []
    assert not _fifo_still_open(fifo)


def _fifo_still_open(path):
    target = os.path.realpath(path)
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                return True
        except OSError:
            pass
    return False


class SlowClose:
    """A file-like object whose close() blocks until ``gate`` is set."""

    def __init__(self, gate):
        self.gate = gate
        self.closed = False

    def close(self):
        assert self.gate.wait(5)
        self.closed = True


def test_close_is_shielded_from_a_kill():
    gate = threading.Event()
    trace = []

    def closer(f):
        try:
            yield f.close()
            trace.append(("closed", f.closed))
            yield sleep(10)
        except kernel.Cancelled:
            trace.append("cancelled after the close")

    def main():
        f = AsyncFile(SlowClose(gate))
        t = yield spawn(closer, f)
        yield sleep(0.01)  # t waits for close() in a worker
        threading.Timer(0.02, gate.set).start()
        yield kill(t)  # held back by the shield until the close is done

    run(main)
    assert trace == [("closed", True), "cancelled after the close"]


def test_file_opened_then_task_killed_before_delivery_is_closed(tmp_path):
    """open() is done and its result posted, but the task is killed before the
    kernel delivers it: the abandoning task closes the file."""
    path = tmp_path / "f.txt"
    path.write_text("x")
    opened = []

    def opener_task():
        opened.append((yield open_file(path)))

    def main():
        k = current_kernel()
        t = yield spawn(opener_task)
        yield sleep(0)  # its open() is submitted
        deadline = time.monotonic() + 5
        while not k.door.calls and time.monotonic() < deadline:
            time.sleep(0.001)  # (blocks the kernel on purpose: no delivery yet)
        yield kill(t)

    run(main)
    assert opened == []  # and conftest's fd-leak check sees no open file
