"""A TCP echo server on yieldos: every byte a client sends comes straight back.

Run it and talk to it from another terminal::

    python3 examples/echo_server.py                # listening on 127.0.0.1:8007
    nc 127.0.0.1 8007                              # type lines, see them echoed; Ctrl-D ends

or let it check itself, with no second terminal::

    python3 examples/echo_server.py --selftest 50

How it works. A task is a plain generator. Whenever it needs something that may take
time -- a new connection, bytes from the network -- it *yields* a system call such as
``accept(sock)`` or ``recv(conn, n)``. The kernel performs the call; if it cannot finish
yet (no client is waiting, no bytes have arrived), the kernel parks the task and runs
others, and resumes it once the operation completes, sending the result back as the
value of the ``yield``. So each function below reads top to bottom like blocking code,
while one thread serves every connection at once:

- `serve` is the accept loop: it waits for a connection and spawns one `handle` task
  for it, then goes straight back to waiting.
- `handle` echoes one connection until the client closes it; ``with conn:`` closes
  the socket however the task ends: normally, by an error, or by being killed.

When `kernel.run`'s main task ends, every task still alive is killed (`kernel.Cancelled`
is raised at its ``yield``) and its cleanup runs before `run` returns. Ctrl-C works the
same way: ``KeyboardInterrupt`` is raised in the main task, all tasks unwind, and
`run` re-raises it here, where it ends the program quietly.

``--selftest N`` starts the server and N client tasks in the same kernel: each client
connects, sends a few messages (one of them large enough to need several reads) and
checks that every byte comes back. The program exits 0 when all echoes are right.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any, Generator, Optional

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from syscalls import accept, connect, join, recv, sendall, spawn  # noqa: E402

DEFAULT_PORT = 8007
RECV_SIZE = 65536  # the most bytes one recv asks for


# ── The server ────────────────────────────────────────────────────────────────


def handle(conn: socket.socket) -> Generator[Any, Any, None]:
    """Echo everything received on `conn` until the client closes its side."""
    with conn:
        try:
            while True:
                data = yield recv(conn, RECV_SIZE)
                if not data:  # b"": the client closed the connection
                    break
                yield sendall(conn, data)
                # Drop it before waiting again: CPython's recv allocates the full 64 KiB
                # and shrinks it, so a kept buffer pins heap memory for every idle client.
                del data
        except ConnectionError:
            pass  # reset, or gone while we wrote (EPIPE): that client's business, not a bug


def serve(listener: socket.socket) -> Generator[Any, Any, None]:
    """Accept connections forever, one `handle` task for each."""
    while True:
        conn, addr = yield accept(listener)
        yield spawn(handle, conn, name=f"handle {addr[0]}:{addr[1]}")


# ── The self-test: server and clients in one kernel ───────────────────────────


def messages_for(client: int) -> list[bytes]:
    """What client number `client` sends: two short lines and one 100 KiB block."""
    return [
        f"hello from client {client}\n".encode(),
        f"client {client} says goodbye\n".encode(),
        bytes([client % 256]) * 100 * 1024,
    ]


def echo_client(address: tuple[str, int], client: int) -> Generator[Any, Any, int]:
    """Connect, send each message, check its echo; return the number of bytes echoed."""
    total = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        yield connect(sock, address)
        for message in messages_for(client):
            yield sendall(sock, message)
            echoed = b""
            while len(echoed) < len(message):  # TCP is a byte stream: replies come in pieces
                chunk = yield recv(sock, RECV_SIZE)
                if not chunk:
                    raise ConnectionError(f"client {client}: server closed the connection")
                echoed += chunk
            if echoed != message:
                raise AssertionError(f"client {client}: sent {message[:30]!r}, got {echoed[:30]!r}")
            total += len(echoed)
    return total


def selftest(listener: socket.socket, clients: int) -> Generator[Any, Any, None]:
    """Main task of ``--selftest``: run the server and `clients` clients side by side."""
    yield spawn(serve, listener, name="serve")
    address = listener.getsockname()[:2]
    tasks = []
    for client in range(clients):
        tasks.append((yield spawn(echo_client, address, client, name=f"client {client}")))
    total = 0
    for task in tasks:
        total += yield join(task)  # re-raises here whatever made a client fail
    sent = sum(len(messages_for(client)) for client in range(clients))
    print(f"selftest passed: {clients} clients, {sent} messages, {total} bytes echoed", flush=True)
    # Returning ends the run: the `serve` task, still waiting in accept(), is killed.


# ── Command line ──────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TCP echo server on the yieldos kernel.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on, 0 picks a free one (default {DEFAULT_PORT}; 0 with --selftest)",
    )
    parser.add_argument(
        "--selftest",
        type=int,
        metavar="N",
        default=0,
        help="run N echo clients against the server in the same kernel, check the echoes, exit",
    )
    args = parser.parse_args(argv)
    if args.selftest < 0:
        parser.error("--selftest needs a positive number of clients")
    if args.port is None:
        args.port = 0 if args.selftest else DEFAULT_PORT
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.create_server((args.host, args.port), family=family, backlog=1024) as listener:
        host, port = listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        try:
            if args.selftest:
                kernel.run(selftest, listener, args.selftest)
            else:
                kernel.run(serve, listener)
        except KeyboardInterrupt:
            print("interrupted: every connection is closed, bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
