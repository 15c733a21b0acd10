"""Regular files: reading and writing the disk without stopping the other tasks.

Sockets and pipes tell the poller when they are ready; regular files cannot.
epoll refuses them outright (``EPERM``), and select and poll call them
always ready, which is no help either: a ``read`` that misses the page cache
waits for the disk all the same, with the whole kernel stopped behind it,
and non-blocking mode is ignored for them. So, as in most event loops,
every blocking call on a regular file runs in the thread pool (see
threads.py), and the task waits for it like for any other event::

    def count_lines(path):
        f = yield open_file(path)
        try:
            n = 0
            while (yield f.readline()):
                n += 1
            return n
        finally:
            yield f.close()

    async def copy(src, dst):
        async with await open_file(src, "rb") as fin, await open_file(dst, "wb") as fout:
            async for line in fin:
                await fout.write(line)

One call is one trip to a worker and back, so read in big pieces where it
matters (``read(1 << 20)``) rather than line by line.

Cancellation: a task killed in a call resumes at once, as for any thread
job (the call itself may still finish in its thread). A file opened by an
`open_file` whose task left meanwhile is closed by the worker, not leaked.
`AsyncFile.close` is shielded, so a kill cannot leave the file open.
"""

from __future__ import annotations

from typing import IO, Any, AnyStr, Callable, Generator, Generic, Optional

from syscalls import operation, shield

from .threads import _call, thread_pool

__all__ = ["AsyncFile", "open_file"]


def _close_quietly(file: IO[Any]) -> None:
    try:
        file.close()
    except OSError:
        pass


@operation
def open_file(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    newline: Optional[str] = None,
    closefd: bool = True,
    opener: Optional[Callable[[str, int], int]] = None,
) -> Generator[Any, Any, AsyncFile[Any]]:
    """Open a file as the builtin `open` does, in a worker thread; the result is an
    `AsyncFile` whose blocking methods are operations (``yield f.read()``,
    ``await f.read()``). Close it: ``yield f.close()``, ``await f.aclose()`` or
    ``async with``.

    Opening can block too (a slow or network file system), hence the thread.
    """
    f: IO[Any] = yield from _call(
        thread_pool(),
        open,
        (file, mode, buffering, encoding, errors, newline, closefd, opener),
        {},
        discard=_close_quietly,  # opened for a task that left: close it, don't leak it
    )
    return AsyncFile(f)


class AsyncFile(Generic[AnyStr]):
    """A file object whose blocking methods run in the thread pool.

    ``read``, ``readline``, ``readlines``, ``write``, ``writelines``, ``seek``,
    ``tell``, ``flush``, ``truncate`` and ``close`` take the arguments of the
    methods of the same name on the wrapped file, and are operations: use them
    with ``yield`` or ``await``. ``async for line in f`` reads line by line;
    ``async with f`` closes it at the end of the block.

    A file is not safe for two calls at once: do not share one between tasks
    that may use it at the same time (guard it with a `syscalls.Lock`).
    """

    def __init__(self, file: IO[AnyStr]) -> None:
        self._file: IO[AnyStr] = file

    @property
    def wrapped(self) -> IO[AnyStr]:
        """The file object underneath (its methods block the kernel: use with care)."""
        return self._file

    @property
    def name(self) -> Any:
        return self._file.name

    @property
    def mode(self) -> str:
        return self._file.mode

    @property
    def closed(self) -> bool:
        return self._file.closed

    def fileno(self) -> int:
        return self._file.fileno()

    def __repr__(self) -> str:
        return f"<AsyncFile {self._file!r}>"

    # ── The blocking methods, each a trip to a worker thread ─────────────

    @operation
    def read(self, size: int = -1) -> Generator[Any, Any, AnyStr]:
        """Read up to ``size`` bytes or characters (all, if negative); empty at end of file."""
        return (yield from _call(thread_pool(), self._file.read, (size,), {}))

    @operation
    def readline(self, size: int = -1) -> Generator[Any, Any, AnyStr]:
        """Read one line, with its line ending; empty at end of file."""
        return (yield from _call(thread_pool(), self._file.readline, (size,), {}))

    @operation
    def readlines(self, hint: int = -1) -> Generator[Any, Any, list[AnyStr]]:
        """Read the lines that are left (about ``hint`` bytes of them, if positive)."""
        return (yield from _call(thread_pool(), self._file.readlines, (hint,), {}))

    @operation
    def write(self, data: AnyStr) -> Generator[Any, Any, int]:
        """Write ``data``; the result is the count written (all of it, for a buffered file)."""
        return (yield from _call(thread_pool(), self._file.write, (data,), {}))

    @operation
    def writelines(self, lines: list[AnyStr]) -> Generator[Any, Any, None]:
        """Write each of ``lines`` (no line endings are added)."""
        return (yield from _call(thread_pool(), self._file.writelines, (lines,), {}))

    @operation
    def seek(self, offset: int, whence: int = 0) -> Generator[Any, Any, int]:
        """Move to ``offset`` (from the start, ``os.SEEK_CUR`` or ``os.SEEK_END``);
        the result is the new position."""
        return (yield from _call(thread_pool(), self._file.seek, (offset, whence), {}))

    @operation
    def tell(self) -> Generator[Any, Any, int]:
        """The current position (a thread trip too: a buffered file may ask the OS)."""
        return (yield from _call(thread_pool(), self._file.tell, (), {}))

    @operation
    def flush(self) -> Generator[Any, Any, None]:
        """Write out what is buffered."""
        return (yield from _call(thread_pool(), self._file.flush, (), {}))

    @operation
    def truncate(self, size: Optional[int] = None) -> Generator[Any, Any, int]:
        """Cut the file to ``size`` bytes (default: the current position)."""
        return (yield from _call(thread_pool(), self._file.truncate, (size,), {}))

    @operation
    def close(self) -> Generator[Any, Any, None]:
        """Flush and close the file. Shielded: a kill or deadline waits for it to end,
        and it runs even if the kernel stops the task before a worker is free."""
        if self._file.closed:
            return
        with shield():
            yield from _call(thread_pool(), self._file.close, (), {}, essential=True)

    aclose = close  # the name async code expects (``await f.aclose()``)

    # ── async with / async for ───────────────────────────────────────────

    async def __aenter__(self) -> AsyncFile[AnyStr]:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __aiter__(self) -> AsyncFile[AnyStr]:
        return self

    async def __anext__(self) -> AnyStr:
        line: AnyStr = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line
