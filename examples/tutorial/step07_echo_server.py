"""Step 7: an echo server, on the real yieldos kernel.

Steps 1 to 6 built a kernel that can run tasks, serve their traps, sleep and
wait for sockets. yieldos is that kernel grown up, so from here on we use it:
``kernel.run(main)`` runs a task, and the functions of ``syscalls`` build the
traps (``accept``, ``recv``, ``sendall``, ``connect``, ``spawn``, ``join``).

The server is two small generators: ``serve`` accepts connections and spawns
one ``handle`` task per connection, which echoes until the client closes. Each
reads top to bottom like blocking code; where it would block, the kernel
parks it (try first, park second: step 6) and runs the others. The clients
run in the same kernel, over 127.0.0.1; one is written as an ``async def``
coroutine, to show that ``await`` and ``yield`` reach the same traps.

When ``main`` returns, the kernel kills the tasks still alive (here the
server, blocked in ``accept``): ``kernel.Cancelled`` is raised at that
``yield`` and its ``with`` blocks close the sockets.

Run it::

    python3 examples/tutorial/step07_echo_server.py
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, Generator

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kernel  # noqa: E402
from syscalls import accept, connect, join, recv, sendall, spawn  # noqa: E402

Coro = Generator[Any, Any, Any]
MESSAGES = [b"hello", b"yieldos"]


def handle(conn: socket.socket, number: int) -> Coro:
    """Echo everything received on ``conn`` until the client closes its side."""
    try:
        with conn:
            while True:
                data = yield recv(conn, 65536)
                if not data:
                    break
                yield sendall(conn, data)
    finally:  # the client closed, or the kernel killed us: the socket is closed either way
        print(f"server: connection {number} closed")


def serve(listener: socket.socket) -> Coro:
    number = 0
    try:
        while True:
            conn, _address = yield accept(listener)
            number += 1
            yield spawn(handle, conn, number)
    except kernel.Cancelled:
        print(f"server: killed after {number} connections (main has returned)")
        raise


def generator_client(address: tuple[str, int]) -> Coro:
    echoed = []
    with socket.socket() as sock:
        yield connect(sock, address)
        for message in MESSAGES:
            yield sendall(sock, message)
            echoed.append((yield recv(sock, 65536)))  # small messages arrive whole here
    return echoed


async def async_client(address: tuple[str, int]) -> list[bytes]:
    echoed = []
    with socket.socket() as sock:
        await connect(sock, address)
        for message in MESSAGES:
            await sendall(sock, message)
            echoed.append(await recv(sock, 65536))
    return echoed


def main(listener: socket.socket) -> Coro:
    yield spawn(serve, listener)
    address = listener.getsockname()
    clients = [(yield spawn(generator_client, address)), (yield spawn(async_client, address))]
    for name, task in zip(["generator client", "async client"], clients):
        echoed = yield join(task)
        print(f"{name}: sent {MESSAGES}, got back {echoed}")


def run() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print("server: listening on 127.0.0.1, on a free port")
        kernel.run(main, listener)
    print(IN_YIELDOS)


IN_YIELDOS = """
In yieldos:
  examples/echo_server.py is the full server (with --selftest N clients).
  syscalls/__init__.py `accept`, `recv`, `sendall`, `connect` build the traps of
  kernel/traps.py (`Accept`, `Recv`, `SendAll`, `Connect`), all served by
  kernel/sysio.py `sys_io` (written out for the two of every message, as
  kernel/sysio.py `sys_recv` and `sys_sendall`); kernel/kernel.py
  `Kernel.run` kills what is left when main returns (`Kernel._stop`), and the
  trap's `__await__` in kernel/traps.py `Trap` is what makes `await recv(...)`
  the same trap as `yield recv(...)`."""

if __name__ == "__main__":
    run()
