"""The benchmark line server in stock asyncio streams: what most asyncio code looks like.

``StreamReader.read`` / ``StreamWriter.write`` + ``drain``, with asyncio's
default transport (256 KiB reads).
"""

from __future__ import annotations

import asyncio
import sys

from _framing import PING, PONG, RECV_SIZE, Framer, listen, parse_args, ready


async def main(port: int, size: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer(size)
        try:
            while True:
                data = await reader.read(RECV_SIZE)
                if not data:
                    break
                reply = PONG if data == PING and not framer.buf else framer.feed(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    sock = listen(port)
    server = await asyncio.start_server(handle, sock=sock, backlog=4096)
    ready(sock.getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(*parse_args(sys.argv)))
    except KeyboardInterrupt:
        pass
