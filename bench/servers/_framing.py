"""The wire protocol every benchmark server speaks: just enough of Redis for redis-benchmark.

redis-benchmark is the load generator (a C tool, so the client side costs the
same for every server). It sends one of two things, depending on the run:

* ``PING\\r\\n`` (``-t ping_inline``): the server answers ``+PONG\\r\\n``. This is
  the *small message* of the suite: 6 bytes in, 7 bytes out. ping_inline has
  no payload size, so "64 B" in the issue is measured with this.
* ``*2\\r\\n$4\\r\\nECHO\\r\\n$N\\r\\n<N bytes>\\r\\n`` (``redis-benchmark ECHO <payload>``):
  the server answers ``$N\\r\\n<the same N bytes>\\r\\n``, a real echo of the
  payload. This is how sized messages (64 B, 16 KiB) are run.

Every server calls the same code here, so protocol parsing costs every runtime
the same. The common cases are one comparison each and are written inline in
the servers (``data == PING``) or here (``feed``'s first branch); anything else
(split or pipelined requests, the ``CONFIG GET`` redis-benchmark sends first)
goes through a small general RESP parser, so the framing is always exact.
"""

from __future__ import annotations

import select
import socket
from typing import Optional

PING = b"PING\r\n"
PONG = b"+PONG\r\n"
CRLF = b"\r\n"
ECHO_COMMAND = b"*2\r\n$4\r\nECHO\r\n"  # an ECHO request, up to its argument
RECV_SIZE = 65536  # every server reads at most this much at a time


class Framer:
    """Per-connection request buffer: ``feed(data)`` returns the bytes to answer (maybe b"")."""

    __slots__ = ("buf", "echo_header", "request_len")

    def __init__(self, size: int = 0) -> None:
        self.buf = bytearray()
        # The ECHO request for the payload size expected (0: PING mode) is this header,
        # the payload and CRLF.
        self.echo_header = ECHO_COMMAND + b"$%d\r\n" % size
        self.request_len = len(self.echo_header) + size + 2

    def feed(self, data: bytes) -> bytes:
        buf = self.buf
        if not buf and len(data) == self.request_len and data.startswith(self.echo_header):
            # One whole ECHO request, as the client sent it. The reply, ``$N\r\n<payload>\r\n``,
            # is the request's own tail: one slice. (Not %-formatted: on PyPy, formatting a
            # 16 KiB payload into a reply cost 2-5 µs, more than a server's own work.)
            return data[len(ECHO_COMMAND) :]
        buf += data
        out = []
        while buf:
            parsed = _parse(buf)
            if parsed is None:
                break
            end, reply = parsed
            out.append(reply)
            del buf[:end]
        return b"".join(out)


def _parse(buf: bytearray) -> Optional[tuple[int, bytes]]:
    """One request from the front of ``buf``: (its length, the reply), or None if incomplete."""
    nl = buf.find(b"\r\n")
    if nl < 0:
        return None
    if buf[:1] != b"*":  # an inline command: any line gets +PONG
        return nl + 2, PONG
    count = int(buf[1:nl])
    command = b""  # the first argument: only it is looked at, so only it is copied
    pos = last = nl + 2
    for i in range(count):
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return None
        start = nl + 2
        end = start + int(buf[pos + 1 : nl])
        if len(buf) < end + 2:
            return None
        if i == 0:
            command = bytes(buf[start:end])
        last, pos = pos, end + 2
    if count == 2 and command.upper() == b"ECHO":
        return pos, bytes(buf[last:pos])  # the reply is the argument as sent: $N, payload, CRLF
    return pos, b"*0\r\n"  # CONFIG GET and anything else: an empty list


def parse_args(argv: list[str]) -> tuple[int, int]:
    """``server.py PORT [SIZE]``: the port (0 picks one) and the ECHO payload size."""
    port = int(argv[1]) if len(argv) > 1 else 0
    size = int(argv[2]) if len(argv) > 2 else 0
    return port, size


def ready(port: int) -> None:
    """Tell the harness the server listens (it waits for this line)."""
    print(f"ready {port}", flush=True)


def listen_epoll(port: int) -> tuple[socket.socket, select.epoll]:
    """A non-blocking listener (see `listen`), registered for input in a new epoll (for the
    servers that run their own epoll loop)."""
    listener = listen(port)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    return listener, ep


def accept_ready(listener: socket.socket) -> list[socket.socket]:
    """Accept every connection waiting on the non-blocking ``listener``: each comes back
    non-blocking, with TCP_NODELAY (for the servers that run their own epoll loop)."""
    conns: list[socket.socket] = []
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return conns
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(conn)


def send_rest(conn: socket.socket, rest: bytes) -> None:
    """Finish a reply a non-blocking send left part of, blocking: rare (a big reply, a full
    buffer) and short, since the client reads all the while. It keeps the loops minimal."""
    conn.setblocking(True)
    conn.sendall(rest)
    conn.setblocking(False)


def listen(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 with a backlog big enough for 1,000 clients."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    return sock
