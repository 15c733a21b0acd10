"""The benchmark line server on yieldos: one task per connection, recv then sendall.

This is the README's echo server with the benchmark framing (see _framing.py).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, Generator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: kernel, syscalls

from _framing import PING, PONG, RECV_SIZE, Framer, listen, parse_args, ready  # noqa: E402

import kernel  # noqa: E402
from syscalls import accept, recv, sendall, spawn  # noqa: E402


def handle(conn: socket.socket, size: int) -> Generator[Any, Any, None]:
    framer = Framer(size)
    with conn:
        while True:
            data = yield recv(conn, RECV_SIZE)
            if not data:
                break
            reply = PONG if data == PING and not framer.buf else framer.feed(data)
            if reply:
                yield sendall(conn, reply)
            # Let go of the message before waiting for the next one. On PyPy, a large
            # buffer still referenced when the nursery is collected is promoted to the
            # old generation and costs a major collection's work later: holding the
            # last 16 KiB message through the wait doubled the server's user CPU.
            # (asyncio's data_received lets go of it simply by returning.)
            del data, reply


def serve(port: int, size: int) -> Generator[Any, Any, None]:
    with listen(port) as listener:
        ready(listener.getsockname()[1])
        while True:
            conn, _ = yield accept(listener)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            yield spawn(handle, conn, size)


if __name__ == "__main__":
    try:
        kernel.run(serve, *parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
