"""The benchmark line server on gevent: a StreamServer, one greenlet per connection."""

from __future__ import annotations

import socket
import sys
from typing import Any

from _framing import PING, PONG, RECV_SIZE, Framer, parse_args, ready
from gevent.server import StreamServer


def main(port: int, size: int) -> None:
    def handle(conn: Any, _address: Any) -> None:
        framer = Framer(size)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                data = conn.recv(RECV_SIZE)
                if not data:
                    break
                reply = PONG if data == PING and not framer.buf else framer.feed(data)
                if reply:
                    conn.sendall(reply)
        except ConnectionError:
            pass

    server = StreamServer(("127.0.0.1", port), handle, backlog=4096)
    server.start()
    ready(server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main(*parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
