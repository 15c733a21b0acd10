"""The limit for generator tasks: the least a task-per-connection generator kernel runs.

Each connection is a generator that yields ``(RECV, conn)`` and ``(SEND, conn,
data)`` tuples, and a loop of a dozen lines serves them with epoll: a RECV
parks the task until epoll reports its fd (then the loop reads and resumes it
with the data), a SEND is made at once. The same shape as yieldos's echo
server (read when the fd is ready, send first, fds registered once), with
nothing else: no task control block, no trap objects or checks, no
cancellation, timeouts, instruments or fairness. What yieldos costs beyond
this is the price of those; what this costs beyond the epoll loop
(epoll_server.py) is the price of generators themselves.
"""

from __future__ import annotations

import select
import socket
import sys
from typing import Any, Generator

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

RECV, SEND = 0, 1
Handler = Generator[Any, Any, None]


def handle(conn: socket.socket, size: int) -> Handler:
    framer = Framer(size)
    while True:
        data = yield (RECV, conn)
        if not data:
            return
        reply = PONG if data == PING and not framer.buf else framer.feed(data)
        if reply:
            yield (SEND, conn, reply)
        del data, reply  # not held through the wait: see yieldos_server.py


def serve(port: int, size: int) -> None:
    listener, ep = listen_epoll(port)
    lfd = listener.fileno()
    parked: dict[int, tuple[Handler, socket.socket]] = {}  # fd -> task waiting to read
    ready(listener.getsockname()[1])
    poll = ep.poll
    while True:
        for fd, _events in poll():
            if fd == lfd:
                for conn in accept_ready(listener):
                    ep.register(conn.fileno(), select.EPOLLIN)
                    task = handle(conn, size)
                    next(task)  # runs to its first RECV
                    parked[conn.fileno()] = (task, conn)
                continue
            task, conn = parked[fd]
            try:
                data = conn.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            try:
                trap = task.send(data)
                while trap[0] == SEND:  # sent at once (a full buffer is finished blocking)
                    reply = trap[2]
                    try:
                        sent = conn.send(reply)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(reply):
                        send_rest(conn, reply[sent:])
                    trap = task.send(None)
            except StopIteration:  # the peer closed: so does the task
                ep.unregister(fd)
                del parked[fd]
                conn.close()
            # otherwise a RECV: the task stays parked on its fd


if __name__ == "__main__":
    try:
        serve(*parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
