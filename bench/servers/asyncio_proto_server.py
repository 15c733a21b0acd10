"""The benchmark line server as an asyncio Protocol: asyncio's fastest style, its best case.

``asyncio_proto_server.py PORT SIZE [--max-size BYTES] [--uvloop]``. asyncio's
selector transport reads 256 KiB per recv by default, and allocating that
buffer for every 6-byte message makes it 3-4x slower; this server sets the
transport's ``max_size`` to 64 KiB (the same read size as every other server),
which is asyncio's best case. ``--uvloop`` runs the very same Protocol on
uvloop (see uvloop_proto_server.py).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Optional

from _framing import PING, PONG, RECV_SIZE, Framer, listen, parse_args, ready


class LineProtocol(asyncio.Protocol):
    size = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.framer = Framer(self.size)
        if hasattr(transport, "max_size"):  # asyncio's selector transport, not uvloop's
            transport.max_size = RECV_SIZE

    def data_received(self, data: bytes) -> None:
        framer = self.framer
        reply = PONG if data == PING and not framer.buf else framer.feed(data)
        if reply:
            self.transport.write(reply)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        pass


async def serve(port: int, size: int) -> None:
    LineProtocol.size = size
    loop = asyncio.get_running_loop()
    sock = listen(port)
    server = await loop.create_server(LineProtocol, sock=sock, backlog=4096)
    ready(sock.getsockname()[1])
    await server.serve_forever()


def main(use_uvloop: bool = False) -> None:
    port, size = parse_args([a for a in sys.argv if not a.startswith("--")])
    if use_uvloop or "--uvloop" in sys.argv:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(port, size))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
