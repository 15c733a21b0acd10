"""The limit for I/O: a plain callback-style epoll loop, no coroutines at all.

One ``epoll_wait``, then for each ready connection ``recv`` and ``send`` right
there. This is the least Python a server can run per message, so the others
are measured against it.
"""

from __future__ import annotations

import select
import socket
import sys

from _framing import (
    PING,
    PONG,
    RECV_SIZE,
    Framer,
    accept_ready,
    listen_epoll,
    parse_args,
    ready,
    send_rest,
)


def serve(port: int, size: int) -> None:
    listener, ep = listen_epoll(port)
    lfd = listener.fileno()
    conns: dict[int, tuple[socket.socket, Framer]] = {}
    ready(listener.getsockname()[1])
    poll = ep.poll
    while True:
        for fd, _events in poll():
            if fd == lfd:
                for conn in accept_ready(listener):
                    conns[conn.fileno()] = (conn, Framer(size))
                    ep.register(conn.fileno(), select.EPOLLIN)
                continue
            conn, framer = conns[fd]
            try:
                data = conn.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                conn.close()
                continue
            reply = PONG if data == PING and not framer.buf else framer.feed(data)
            if reply:
                try:
                    sent = conn.send(reply)
                except BlockingIOError:
                    sent = 0
                if sent < len(reply):
                    send_rest(conn, reply[sent:])


if __name__ == "__main__":
    try:
        serve(*parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
