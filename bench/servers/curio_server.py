"""The benchmark line server on curio: one task per connection, ``recv`` then ``sendall``."""

from __future__ import annotations

import socket
import sys
from typing import Any

import curio
from _framing import PING, PONG, RECV_SIZE, Framer, listen, parse_args, ready


async def main(port: int, size: int) -> None:
    async def handle(client: Any) -> None:
        framer = Framer(size)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with client:
            while True:
                try:
                    data = await client.recv(RECV_SIZE)
                except ConnectionError:
                    break
                if not data:
                    break
                reply = PONG if data == PING and not framer.buf else framer.feed(data)
                if reply:
                    await client.sendall(reply)

    sock = curio.io.Socket(listen(port))
    ready(sock.getsockname()[1])
    while True:
        client, _ = await sock.accept()
        await curio.spawn(handle, client, daemon=True)


if __name__ == "__main__":
    try:
        curio.run(main, *parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
