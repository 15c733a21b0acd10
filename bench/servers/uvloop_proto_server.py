"""The benchmark line server as an asyncio Protocol on uvloop (libuv, in C)."""

from __future__ import annotations

from asyncio_proto_server import main

if __name__ == "__main__":
    main(use_uvloop=True)
