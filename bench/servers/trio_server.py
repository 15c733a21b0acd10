"""The benchmark line server on trio: ``serve_listeners``, one task per connection."""

from __future__ import annotations

import sys

import trio
from _framing import PING, PONG, RECV_SIZE, Framer, listen, parse_args, ready


async def main(port: int, size: int) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        framer = Framer(size)
        try:
            while True:
                data = await stream.receive_some(RECV_SIZE)
                if not data:
                    break
                reply = PONG if data == PING and not framer.buf else framer.feed(data)
                if reply:
                    await stream.send_all(reply)
        except trio.BrokenResourceError:
            pass

    sock = listen(port)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    ready(sock.getsockname()[1])
    await trio.serve_listeners(handle, [listener])


if __name__ == "__main__":
    try:
        trio.run(main, *parse_args(sys.argv))
    except KeyboardInterrupt:
        pass
