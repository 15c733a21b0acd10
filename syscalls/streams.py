"""Streams: buffered byte streams over TCP, with or without TLS, and a server that hands one
to a task per connection.

A socket gives you whatever bytes have arrived: a ``recv`` may return half a
line, or three lines and the start of a fourth. Protocols are written in
lines, lengths and separators, so every program ends up writing the same
buffer in front of its socket. A `Stream` is that buffer, done once::

    def client():
        stream = yield open_connection("127.0.0.1", 8007, timeout=5)
        try:
            yield stream.write_all(b"HELLO\\r\\n")
            status = yield stream.readline()          # one whole line, b"" at EOF
            length = int((yield stream.read_until(b"\\r\\n\\r\\n"))[:-4])
            body = yield stream.read_exactly(length)  # exactly that many bytes
        finally:
            yield stream.close()

    async def handler(stream):                        # serve_tcp: one task per connection
        async for line in stream:                     # line by line, until EOF
            await stream.write_all(line)

    yield serve_tcp(handler, "127.0.0.1", 8007)

In a generator task, a stream is read line by line with::

    while (line := (yield stream.readline())):
        ...

How it is built, from public traps only. Every blocking method is an
`operation` (so ``yield``, ``await`` and ``yield from`` all work, and a kill
or a timeout lands where it waits). A plain stream reads with the `recv`
trap and writes with `sendall`. A TLS stream drives an `ssl.SSLSocket` in
non-blocking mode by hand: it calls the SSL method (``do_handshake``,
``recv``, ``send``, ``unwrap``) and, when OpenSSL says it *wants to read*
(``SSLWantReadError``) or *wants to write* (``SSLWantWriteError``), waits
with `wait_readable` / `wait_writable` and calls it again. (A TLS read may
need to write, and a write to read: the handshake and the shutdown are a
conversation.)

Invariants:

* **No byte is lost.** Received bytes go into the stream's read buffer before
  anything else happens, so a read that is killed, times out, or fails with
  `LimitOverrunError` leaves every byte for the next read. Bytes given to
  ``write`` stay in the write buffer until the socket took them; a killed
  ``drain`` puts back what was not sent.
* **Try first, wait second, TLS included.** OpenSSL keeps decrypted bytes of
  a record inside the SSL object, where epoll cannot see them
  (``SSLSocket.pending()``). So a TLS read always calls ``recv`` first and
  waits for the fd only after OpenSSL answered "want read": a wait begins
  only when nothing is buffered anywhere.
* **One reader at a time.** Two tasks reading one stream at once would get
  the bytes in an order nobody can reason about: the second raises
  `RuntimeError`. Writers may be many: ``write`` only appends, and one
  ``drain`` at a time sends (the others wait for it).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl as _ssl
import types
from typing import Any, Callable, Generator, NoReturn, Optional, TypeVar, Union

from kernel import Cancelled
from kernel.task import Task
from kernel.traps import coroutine_of
from syscalls import (
    accept,
    connect,
    current_kernel,
    getaddrinfo,
    join,
    kill,
    move_on_after,
    operation,
    recv,
    sendall,
    shield,
    shutdown,
    sleep,
    spawn,
    wait_on,
    wait_readable,
    wait_writable,
    wakeup,
)
from syscalls import close as close_fd
from syscalls import timeout as timeout_scope

__all__ = [
    "IncompleteReadError",
    "LimitOverrunError",
    "Listener",
    "Stream",
    "listen_tcp",
    "open_connection",
    "serve_tcp",
]

T = TypeVar("T")
log = logging.getLogger("yieldos.streams")

#: The most bytes one read from the socket asks for.
CHUNK = 1 << 16
#: The longest line (separator included) `Stream.readline` and `Stream.read_until`
#: accept by default, as asyncio's streams.
DEFAULT_LIMIT = 1 << 16
#: How long `Stream.close` spends, at most, flushing and saying goodbye to a TLS peer.
CLOSE_TIMEOUT = 1.0
#: How long a server gives a client to finish its TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: How long the accept loop pauses when the process is out of fds or memory.
ACCEPT_BACKOFF = 0.1

# accept() errors that mean "out of a resource": pause, let connections close, go on.
_ACCEPT_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() errors about one connection that died in the backlog: just accept the next.
_ACCEPT_SKIP_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})

SSLArg = Union[_ssl.SSLContext, bool, None]


class IncompleteReadError(EOFError):
    """The stream ended before the read was satisfied.

    ``partial`` holds the bytes that did arrive (they are taken off the
    buffer: nothing is lost, they are here); ``expected`` is the count asked
    for (`Stream.read_exactly`), or None when a separator was awaited
    (`Stream.read_until`).
    """

    def __init__(self, partial: bytes, expected: Optional[int]) -> None:
        wanted = "the separator" if expected is None else f"{expected} bytes"
        super().__init__(f"end of stream after {len(partial)} bytes, before {wanted}")
        self.partial = partial
        self.expected = expected


class LimitOverrunError(ValueError):
    """No separator within ``limit`` bytes (`Stream.read_until`, `Stream.readline`).

    The bytes stay in the stream's buffer, untouched: the caller may read them
    with `Stream.read`, or give up on the connection. ``consumed`` is how many
    buffered bytes were searched.
    """

    def __init__(self, message: str, consumed: int) -> None:
        super().__init__(message)
        self.consumed = consumed


class _Channel:
    """A named wait channel of one stream (a readable name in deadlock reports)."""

    __slots__ = ("stream", "what")

    def __init__(self, stream: Stream, what: str) -> None:
        self.stream = stream
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what} of {self.stream!r}>"


def _tls_retry(sock: _ssl.SSLSocket, fn: Callable[..., T], *args: Any) -> Generator[Any, Any, T]:
    """Call the SSL method ``fn(*args)`` until it stops asking to wait.

    OpenSSL on a non-blocking socket answers "I need the socket readable"
    (``SSLWantReadError``) or "writable" (``SSLWantWriteError``); either may
    come from any call, since TLS is a conversation (a handshake, a key update,
    a shutdown). The same call is made again, with the same arguments, once the
    socket is ready: OpenSSL requires it, and keeps its progress meanwhile.
    """
    while True:
        try:
            return fn(*args)
        except _ssl.SSLWantReadError:
            yield wait_readable(sock)
        except _ssl.SSLWantWriteError:
            yield wait_writable(sock)


# ── Stream ───────────────────────────────────────────────────────────────


class Stream:
    """A buffered, bidirectional byte stream over a connected socket (TLS or not).

    Reading (operations: ``yield`` / ``await`` them):
    `read`, `read_exactly`, `read_until`, `readline`, and ``async for line in stream``.
    Writing: `write` (a plain call: it only buffers), then `drain` (an
    operation: send the buffer); `write_all` does both. `write_eof` half-closes
    a plain stream. `close` (an operation) flushes, says goodbye to a TLS peer,
    and closes the socket; `abort` closes at once. TLS: `do_handshake`, `unwrap`.

    A Stream takes ownership of ``sock`` and makes it non-blocking. Most code
    gets its streams from `open_connection` and `serve_tcp` rather than making
    them. ``close()`` must be *yielded*: a bare ``stream.close()`` call builds
    the operation and does nothing (``abort()`` is the plain call).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Writes are buffered here and sent by drain(): Nagle's delay would only
            # add latency to request/response protocols.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._sock = sock
        self._tls = isinstance(sock, _ssl.SSLSocket)
        self._handshaken = False
        self._rbuf = bytearray()  # received, not yet read by the task
        self._wbuf = bytearray()  # written by the task, not yet sent
        self._eof = False  # the peer has closed its side (or sent TLS close_notify)
        self._reading = False  # a task is receiving into _rbuf (one at a time)
        self._sending = False  # a drain is sending (the others wait on _drained)
        self._closing = False  # close() has begun: no more reads or writes
        self._closed = False  # the socket is closed
        self._drained = _Channel(self, "drain")
        self.peername: Any = _address(sock.getpeername)  #: the peer's address
        self.sockname: Any = _address(sock.getsockname)  #: our own address

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        kind = "TLS " if self._tls else ""
        return f"<{kind}Stream {state} peer={self.peername!r}>"

    # ── What it is ───────────────────────────────────────────────────────

    @property
    def socket(self) -> socket.socket:
        """The socket under the stream (an `ssl.SSLSocket` for TLS). Do not read from it."""
        return self._sock

    @property
    def tls(self) -> bool:
        """True while the stream speaks TLS."""
        return self._tls

    @property
    def ssl_object(self) -> Optional[_ssl.SSLSocket]:
        """The `ssl.SSLSocket` of a TLS stream (for ``version()``, ``getpeercert()``,
        ``selected_alpn_protocol()``...), or None."""
        sock = self._sock
        return sock if self._tls and isinstance(sock, _ssl.SSLSocket) else None

    @property
    def closed(self) -> bool:
        """True once the socket is closed (by `close` or `abort`)."""
        return self._closed

    def at_eof(self) -> bool:
        """True when the peer has closed its side and every received byte has been read."""
        return self._eof and not self._rbuf

    @property
    def buffered(self) -> int:
        """How many received bytes wait in the read buffer."""
        return len(self._rbuf)

    @property
    def write_buffered(self) -> int:
        """How many written bytes the socket has not taken yet (sent by the next `drain`)."""
        return len(self._wbuf)

    def _ssl_socket(self) -> _ssl.SSLSocket:
        sock = self._sock
        assert isinstance(sock, _ssl.SSLSocket), f"{self!r} is not a TLS stream"
        return sock

    def _check_open(self) -> None:
        if self._closing:
            raise ValueError(f"I/O operation on a closed stream: {self!r}")

    # ── Receiving ────────────────────────────────────────────────────────

    def _receive(self, n: int) -> Generator[Any, Any, bytes]:
        """Up to ``n`` bytes from the socket (b"" at EOF), bypassing the buffer."""
        self._check_open()
        if self._eof:
            return b""
        if self._reading:
            raise RuntimeError(f"another task is already reading from {self!r}")
        self._reading = True
        try:
            if self._tls:
                sock = self._ssl_socket()
                data: bytes = yield from _tls_retry(sock, sock.recv, n)
            else:
                data = yield recv(self._sock, n)
        finally:
            self._reading = False
        if not data:
            self._eof = True
        return data

    def _fill(self) -> Generator[Any, Any, int]:
        """Receive one chunk into the buffer; return its size (0 at EOF)."""
        data = yield from self._receive(CHUNK)
        self._rbuf += data
        return len(data)

    def _take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes, taken off the buffer."""
        buf = self._rbuf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        return data

    @operation
    def read(self, n: int = -1) -> Generator[Any, Any, bytes]:
        """Up to ``n`` bytes: what is buffered, or else what the next receive brings.

        Waits only while nothing at all is available. ``b""`` means end of
        stream. ``read()`` (or any negative ``n``) reads everything up to the
        end of the stream; ``read(0)`` returns ``b""`` at once.
        """
        self._check_open()
        if n < 0:
            while (yield from self._fill()):
                pass
            return self._take(len(self._rbuf))
        if n == 0:
            return b""
        if not self._rbuf:
            # Nothing buffered: hand over what the socket gives, without copying it twice.
            return (yield from self._receive(min(n, CHUNK)))
        return self._take(n)

    @operation
    def read_exactly(self, n: int) -> Generator[Any, Any, bytes]:
        """Exactly ``n`` bytes, waiting as long as it takes.

        If the stream ends first, `IncompleteReadError` is raised with the bytes
        that did arrive in its ``partial``.
        """
        if n < 0:
            raise ValueError(f"read_exactly: n must be >= 0, not {n}")
        while len(self._rbuf) < n:
            if not (yield from self._fill()):
                raise IncompleteReadError(self._take(len(self._rbuf)), n)
        return self._take(n)

    @operation
    def read_until(
        self, separator: bytes = b"\n", limit: int = DEFAULT_LIMIT
    ) -> Generator[Any, Any, bytes]:
        """The bytes up to and including the first ``separator``.

        ``limit`` bounds the answer (separator included): a peer that never
        sends the separator cannot make the buffer grow without end. Past it,
        `LimitOverrunError` is raised and the bytes stay in the buffer. If the
        stream ends before the separator, `IncompleteReadError` carries what
        arrived.
        """
        if not separator:
            raise ValueError("read_until: the separator must not be empty")
        seplen = len(separator)
        buf = self._rbuf
        start = 0  # where the separator may still begin (earlier bytes were searched)
        while True:
            i = buf.find(separator, start)
            if i >= 0:
                end = i + seplen
                if end > limit:
                    raise LimitOverrunError(
                        f"separator found {end} bytes in, past the limit of {limit} bytes", i
                    )
                return self._take(end)
            if len(buf) >= limit:
                # Any separator still to come would end past the limit.
                raise LimitOverrunError(
                    f"no separator {separator!r} within the limit of {limit} bytes", len(buf)
                )
            start = max(0, len(buf) - seplen + 1)
            if not (yield from self._fill()):
                raise IncompleteReadError(self._take(len(buf)), None)

    @operation
    def readline(self, limit: int = DEFAULT_LIMIT) -> Generator[Any, Any, bytes]:
        """One line, ending with ``b"\\n"``; at the end of the stream the last line may lack
        it, and after that ``b""`` is returned. A line longer than ``limit`` bytes raises
        `LimitOverrunError`, its bytes still in the buffer (read them with `read`)."""
        try:
            return (yield from self.read_until(b"\n", limit))
        except IncompleteReadError as exc:
            return exc.partial

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        """``async for line in stream:`` -- each line, until the end of the stream."""
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def __iter__(self) -> NoReturn:
        raise TypeError(
            "a Stream is read line by line with `async for line in stream` in an async def"
            " task, or `while (line := (yield stream.readline())):` in a generator task"
        )

    # ── Sending ──────────────────────────────────────────────────────────

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Append ``data`` to the write buffer (a plain call: it never blocks or sends).

        Nothing is sent until `drain` (or `write_all`, or `close`); several
        small writes then go out together.
        """
        self._check_open()
        self._wbuf += data

    @operation
    def drain(self) -> Generator[Any, Any, None]:
        """Send everything written so far; return when the socket has taken it all.

        If it is killed or times out, the bytes not yet sent stay at the front of
        the write buffer (the next ``drain`` sends them). Several tasks may drain
        at once: one sends, the others wait for it and then look again.
        """
        if self._closed:
            raise ValueError(f"I/O operation on a closed stream: {self!r}")
        while self._wbuf or self._sending:
            if self._sending:
                yield wait_on(self._drained)
                continue
            data = bytes(self._wbuf)
            self._wbuf.clear()
            self._sending = True
            sent = 0
            try:
                if self._tls:
                    sock = self._ssl_socket()
                    view = memoryview(data)
                    while sent < len(data):
                        # After a "want", the same chunk is offered again, as OpenSSL requires.
                        chunk = view[sent : sent + CHUNK]
                        sent += yield from _tls_retry(sock, sock.send, chunk)
                else:
                    trap = sendall(self._sock, data)
                    try:
                        yield trap
                    finally:
                        sent = len(data) - trap.remaining
            finally:
                self._sending = False
                if sent < len(data):  # interrupted: the rest goes back in front
                    self._wbuf[0:0] = data[sent:]
                wakeup(self._drained)

    @operation
    def write_all(self, data: Union[bytes, bytearray, memoryview]) -> Generator[Any, Any, None]:
        """`write` then `drain`: send ``data`` (after anything written before it)."""
        self.write(data)
        yield from self.drain()

    @operation
    def write_eof(self) -> Generator[Any, Any, None]:
        """Flush, then tell the peer we will send no more (TCP half-close), while reading
        still works. TLS has no half-close: use `unwrap` or `close` there."""
        if self._tls:
            raise ValueError("a TLS stream cannot half-close: use unwrap() or close()")
        yield from self.drain()
        yield shutdown(self._sock, socket.SHUT_WR)

    # ── TLS ──────────────────────────────────────────────────────────────

    @operation
    def do_handshake(self) -> Generator[Any, Any, None]:
        """Run the TLS handshake (`open_connection` and `serve_tcp` do it for you).

        Certificate problems raise `ssl.SSLCertVerificationError` here, in the
        calling task. Doing it again does nothing.
        """
        if not self._tls:
            raise ValueError(f"{self!r} is not a TLS stream")
        if self._handshaken:
            return
        sock = self._ssl_socket()
        yield from _tls_retry(sock, sock.do_handshake)
        self._handshaken = True

    @operation
    def unwrap(self) -> Generator[Any, Any, None]:
        """End TLS cleanly and go on in plain text on the same connection.

        Flushes, sends TLS ``close_notify``, waits for the peer's, then the stream
        is a plain one (``stream.tls`` is False). Bytes the peer sent in TLS before
        its ``close_notify`` are still buffered for reading. Wrap it in a `timeout`
        if the peer may never answer.
        """
        if not self._tls:
            raise ValueError(f"{self!r} is not a TLS stream")
        self._check_open()
        yield from self.drain()
        sock = self._ssl_socket()
        yield from _tls_retry(sock, sock.unwrap)
        plain = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        plain.setblocking(False)
        self._sock = plain
        self._tls = False
        self._eof = False  # that EOF was TLS's; the TCP connection goes on

    # ── Closing ──────────────────────────────────────────────────────────

    @operation
    def close(self, timeout: float = CLOSE_TIMEOUT) -> Generator[Any, Any, None]:
        """Flush what was written, end TLS politely, close the socket.

        Flushing and the TLS goodbye (``close_notify`` both ways) get ``timeout``
        seconds at most, and their errors are ignored: the peer may be gone. The
        socket is closed whatever happens, even if ``close`` is killed; a task
        still waiting on it gets `OSError` (EBADF). Closing again does nothing.
        """
        if self._closing:
            return
        self._closing = True
        try:
            with move_on_after(timeout):
                if self._wbuf or self._sending:
                    yield from self.drain()
                if self._tls and self._handshaken:
                    sock = self._ssl_socket()
                    yield from _tls_retry(sock, sock.unwrap)
        except GeneratorExit:  # the kernel is closing this task: it may not yield any more
            self.abort()
            raise
        except Exception:
            pass  # the peer is gone, or broke the TLS goodbye: closing is all that is left
        except BaseException:
            yield from self._close_socket()
            raise
        yield from self._close_socket()

    def _close_socket(self) -> Generator[Any, Any, None]:
        self._closed = True
        sock = self._sock
        try:
            if sock.fileno() >= 0:
                with shield():  # a pending kill must not skip the close
                    yield close_fd(sock)  # also wakes any task still waiting on it
        finally:
            if sock.fileno() >= 0:
                sock.close()

    def abort(self) -> None:
        """Close the socket at once (a plain call): unsent bytes are dropped, no TLS goodbye.

        A task still waiting on the stream is woken with an `OSError` (EBADF), as
        the `close` trap does.
        """
        self._closing = self._closed = True
        self._wbuf.clear()
        if self._sock.fileno() < 0:
            return
        try:
            k = current_kernel()
        except RuntimeError:  # no kernel running (cleanup after the run): nobody can wait
            self._sock.close()
        else:
            k.close_file(self._sock)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __enter__(self) -> NoReturn:
        raise TypeError(
            "a Stream is closed by an operation: use `async with stream:` in an async def"
            " task, or `try: ... finally: yield stream.close()` in a generator task"
        )

    def __exit__(self, *exc_info: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None


def _address(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except OSError:
        return None


# ── Connecting ───────────────────────────────────────────────────────────

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def _resolve(host: str, port: Union[int, str]) -> Generator[Any, Any, list[AddrInfo]]:
    """The addresses to try for ``host:port``, in order (IPv4 and IPv6 as the system ranks them).

    A numeric address is its own answer and needs no resolver; a name goes to
    ``getaddrinfo`` in the thread pool, since the system resolver blocks.
    """
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name, not a number
    infos: list[AddrInfo] = yield getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return infos


def _client_context(ssl: SSLArg) -> Optional[_ssl.SSLContext]:
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return _ssl.create_default_context()
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an ssl.SSLContext, True or None, not {ssl!r}")


def _connect_any(host: str, port: Union[int, str]) -> Generator[Any, Any, socket.socket]:
    """Connect to the first address of ``host:port`` that accepts, trying each in order."""
    addresses = yield from _resolve(host, port)
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            yield connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if not errors:
        raise OSError(f"no address to connect to for {host!r}:{port}")
    if len({e.errno for e in errors}) == 1:
        raise errors[0]  # the same failure everywhere: keep its type (ConnectionRefusedError...)
    raise OSError(f"could not connect to {host!r}:{port}: " + "; ".join(map(str, errors)))


@operation
def open_connection(
    host: str,
    port: Union[int, str],
    *,
    ssl: SSLArg = None,
    server_hostname: Optional[str] = None,
    timeout: Optional[float] = None,
) -> Generator[Any, Any, Stream]:
    """Connect to ``host:port`` over TCP; the result is a `Stream`.

    Each address of the host is tried in turn (IPv4 and IPv6) until one
    accepts. ``ssl``: None for plain TCP; True for TLS with
    ``ssl.create_default_context()`` (the system's CAs, hostname checked); or
    your own `ssl.SSLContext` (a private CA: ``create_default_context(cafile=...)``).
    The name sent in SNI and checked against the certificate is ``host``, or
    ``server_hostname``. A certificate that does not verify raises
    `ssl.SSLCertVerificationError` here. ``timeout`` bounds connect and
    handshake together (`TimeoutError`).

    Only numeric addresses and ``localhost`` for now (see `_resolve`).
    """
    ctx = _client_context(ssl)
    if ctx is None and server_hostname is not None:
        raise ValueError("server_hostname is only meaningful with ssl")
    if timeout is None:
        return (yield from _open_connection(host, port, ctx, server_hostname))
    with timeout_scope(timeout):
        stream = yield from _open_connection(host, port, ctx, server_hostname)
    return stream


def _open_connection(
    host: str, port: Union[int, str], ctx: Optional[_ssl.SSLContext], server_hostname: Optional[str]
) -> Generator[Any, Any, Stream]:
    sock = yield from _connect_any(host, port)
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(
                sock,
                server_side=False,
                server_hostname=server_hostname if server_hostname is not None else host,
                do_handshake_on_connect=False,
            )
        stream = Stream(sock)
        if ctx is not None:
            yield from stream.do_handshake()
    except BaseException:
        sock.close()
        raise
    return stream


# ── Serving ──────────────────────────────────────────────────────────────


Handler = Callable[[Stream], Any]


class _Connection:
    """The server's record of one connection: its stream, and the task serving it."""

    __slots__ = ("stream", "task")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.task: Optional[Task] = None


class Listener:
    """A listening socket whose connections become `Stream` s; `serve` runs the accept loop.

    Make one with `listen_tcp` (or wrap a listening socket you made:
    ``Listener(sock, ssl=ctx)``), read the address it got (``listener.port``
    when you asked for port 0), then serve::

        listener = listen_tcp("127.0.0.1", 0, ssl=ctx)
        print("listening on port", listener.port)
        server = yield spawn(listener.serve(handler))
        ...
        yield kill(server)          # closes every connection, then the listener

    ``ssl``: a server-side `ssl.SSLContext` holding the certificate
    (``ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH);
    ctx.load_cert_chain(cert, key)``), or None for plain TCP.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        ssl: Optional[_ssl.SSLContext] = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError(
                f"a server's ssl must be an ssl.SSLContext with its certificate, not {ssl!r}"
            )
        sock.setblocking(False)
        self.socket = sock
        self.ssl = ssl
        self.handshake_timeout = handshake_timeout

    def __repr__(self) -> str:
        return f"<Listener {'TLS ' if self.ssl else ''}{self.sockname!r}>"

    @property
    def sockname(self) -> Any:
        """The address listened on, as ``getsockname()`` gives it."""
        return _address(self.socket.getsockname)

    @property
    def port(self) -> int:
        """The port listened on (the one the system picked, if port 0 was asked)."""
        return int(self.sockname[1])

    def close(self) -> None:
        """Close the listening socket (a plain call). `serve` does it when it ends."""
        self.socket.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @operation
    def serve(self, handler: Handler) -> Generator[Any, Any, NoReturn]:
        """Accept connections for ever, each served by a task running ``handler(stream)``.

        ``handler`` is a generator function or an ``async def`` function; the
        stream is closed when it returns or raises. A handler's exception is
        logged (logger ``yieldos.streams``) and ends only its own connection. A
        TLS client whose handshake fails (or takes longer than
        ``handshake_timeout``) is logged and dropped before any handler runs.
        Out of fds or memory (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``),
        the loop logs, pauses `ACCEPT_BACKOFF` seconds, and accepts again.

        It returns only by raising. Killed (or timed out), it kills every
        connection task, waits for their cleanup (each stream is closed), then
        closes the listening socket.
        """
        if not callable(handler):
            raise TypeError(f"serve: handler must be callable, not {handler!r}")
        conns: set[_Connection] = set()
        sock = self.socket
        backing_off = False
        try:
            while True:
                try:
                    conn, _ = yield accept(sock)
                except OSError as exc:
                    if exc.errno in _ACCEPT_SKIP_ERRNOS:
                        continue
                    if exc.errno not in _ACCEPT_BACKOFF_ERRNOS:
                        raise
                    if not backing_off:
                        log.warning(
                            "accept on %r: %s; pausing %.2f s between tries until it passes",
                            self,
                            exc,
                            ACCEPT_BACKOFF,
                        )
                    backing_off = True
                    yield sleep(ACCEPT_BACKOFF)
                    continue
                backing_off = False
                yield from self._start(handler, conn, conns)
        except GeneratorExit:  # the kernel is closing this task: no more yields
            for rec in list(conns):
                rec.stream.abort()
            self.close()
            raise
        except BaseException:
            with shield():  # a second kill must not cut the connections' cleanup short
                yield from _stop(conns)
                if sock.fileno() >= 0:
                    yield close_fd(sock)  # wakes any other task still waiting to accept
            raise

    def _start(
        self, handler: Handler, conn: socket.socket, conns: set[_Connection]
    ) -> Generator[Any, Any, None]:
        """Make the new connection's stream and spawn the task that serves it."""
        try:
            if self.ssl is not None:
                # No I/O yet: the handshake runs in the connection's own task.
                conn = self.ssl.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            stream = Stream(conn)
        except Exception as exc:
            conn.close()
            log.warning("dropping a new connection on %r: %s", self, exc)
            return
        rec = _Connection(stream)
        conns.add(rec)
        try:
            rec.task = yield spawn(
                _serve_connection, handler, rec, conns, self.handshake_timeout,
                name=f"conn {_format_address(stream.peername)}",
            )  # fmt: skip
        except BaseException:
            conns.discard(rec)
            stream.abort()
            raise


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _stop(conns: set[_Connection]) -> Generator[Any, Any, None]:
    """Kill every connection task at once (a killer task each), wait for them, close leftovers."""
    try:
        killers = []
        for rec in list(conns):
            if rec.task is not None:
                killers.append((yield spawn(_killer, rec.task, name=f"kill:{rec.task.name}")))
        for killer in killers:
            try:
                yield join(killer)
            except (Exception, Cancelled):  # pragma: no cover - a killer killed at shutdown
                pass
    finally:
        for rec in list(conns):  # a task killed before its first line never closed its stream
            rec.stream.abort()
        conns.clear()


def _killer(task: Task) -> Generator[Any, Any, None]:
    yield kill(task)


def _serve_connection(
    handler: Handler, rec: _Connection, conns: set[_Connection], handshake_timeout: float
) -> Generator[Any, Any, None]:
    """One connection's task: TLS handshake, the handler, then close the stream."""
    stream = rec.stream
    try:
        if stream.tls:
            try:
                with timeout_scope(handshake_timeout):
                    yield from stream.do_handshake()
            except Exception as exc:
                log.info("TLS handshake with %s failed: %s", _format_address(stream.peername), exc)
                return
        coro = coroutine_of(handler, (stream,))
        try:
            if isinstance(coro, types.CoroutineType):
                yield from coro.__await__()
            else:
                assert isinstance(coro, types.GeneratorType)
                yield from coro
        except Exception:
            log.exception(
                "handler %s failed on the connection from %s",
                getattr(handler, "__qualname__", handler),
                _format_address(stream.peername),
            )
    except GeneratorExit:
        stream.abort()
        raise
    finally:
        conns.discard(rec)
        if not stream.closed:
            yield from stream.close()


def listen_tcp(
    host: Optional[str],
    port: int,
    *,
    ssl: Optional[_ssl.SSLContext] = None,
    backlog: int = 128,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> Listener:
    """Bind a TCP socket to ``host:port`` and listen (a plain call: it never blocks).

    ``port`` 0 lets the system pick a free port (``listener.port`` says which).
    ``host`` None or ``""`` listens on every interface; otherwise the first
    address of ``host`` is used: a numeric address or ``localhost`` (names are
    not resolved: binding is about the machine's own addresses). ``SO_REUSEADDR`` is
    set, so a restarted server can bind again at once.
    """
    if host is None or host == "":
        infos = socket.getaddrinfo(None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    else:
        # A numeric address, or localhost: both answered without the network.
        flags = 0 if host == "localhost" else socket.AI_NUMERICHOST
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        return Listener(sock, ssl=ssl, handshake_timeout=handshake_timeout)
    except BaseException:
        sock.close()
        raise


@operation
def serve_tcp(
    handler: Handler,
    host: Optional[str],
    port: int,
    *,
    ssl: Optional[_ssl.SSLContext] = None,
    backlog: int = 128,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    on_listen: Optional[Callable[[Listener], None]] = None,
) -> Generator[Any, Any, NoReturn]:
    """Listen on ``host:port`` and serve every connection with a task running ``handler(stream)``.

    `listen_tcp` then `Listener.serve`, in one operation: the rules of both
    apply (one task per connection, a failing handler only ends its own
    connection, EMFILE pauses the accept loop, killing the server kills its
    connections). ``on_listen(listener)`` is called once the socket listens,
    before any connection is accepted: that is how to learn the port when
    ``port`` is 0::

        def main():
            ports = Queue()
            server = yield spawn(serve_tcp(echo, "127.0.0.1", 0,
                                           on_listen=lambda l: ports.put_nowait(l.port)))
            port = yield ports.get()
    """
    listener = listen_tcp(host, port, ssl=ssl, backlog=backlog, handshake_timeout=handshake_timeout)
    try:
        if on_listen is not None:
            on_listen(listener)
    except BaseException:
        listener.close()
        raise
    try:
        yield from listener.serve(handler)
        raise AssertionError("unreachable: serve ends only by raising")  # pragma: no cover
    finally:
        listener.close()
