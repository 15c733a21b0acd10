"""Three dependent RPCs per request: the classic case for coroutines.

A request handler has to call three remote services in a row, each call needing the
previous answer::

    a = inc(x)      # the "inc" service:  n -> n + 1
    b = dbl(a)      # the "dbl" service:  n -> 2 * n
    c = sq(b)       # the "sq" service:   n -> n * n

Done one request at a time with blocking sockets this is four lines, but the program
would spend its life waiting on the network. To keep hundreds of requests in flight in
one thread there are two classic answers, and this file writes the client both ways:

(a) **Callbacks on an event loop.** A tiny epoll reactor calls a function when a socket
    is ready. A request becomes a chain: connect, *then* send ``inc x``, *then* on its
    reply send ``dbl a``, *then* on its reply send ``sq b``, *then* done. The four lines
    above are split over a handful of callbacks, every piece of state must be carried
    from one to the next in closures, and a short send or a reply arriving in pieces
    has to be handled by yet more callbacks.

(b) **A yieldos task.** The handler is the four lines again, with ``yield from`` in
    front of each call. Where a call would block, the kernel parks the task and runs
    the others; the local variables simply stay in the suspended generator frame.

Both clients talk to the same server, a line-based RPC server written as yieldos tasks
("inc 41\\n" in, "42\\n" out), which runs in a child process with its own kernel.
Each client runs in the main thread against it with ``--requests`` concurrent requests
(default 200). Every result is checked, and the program prints both clients' timings and
the number of lines of code each one took.

    python3 examples/three_rpcs.py --requests 1000
"""

from __future__ import annotations

import argparse
import io
import os
import select
import socket
import statistics
import subprocess
import sys
import time
import tokenize
from pathlib import Path
from typing import Any, Callable, Generator, Optional

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from syscalls import accept, connect, join, read, recv, sendall, spawn  # noqa: E402

Address = tuple[str, int]

#: The three services. One line in ("inc 41"), one line out ("42").
SERVICES: dict[str, Callable[[int], int]] = {
    "inc": lambda n: n + 1,
    "dbl": lambda n: 2 * n,
    "sq": lambda n: n * n,
}


def expected(x: int) -> int:
    """What a request for `x` must come back with: sq(dbl(inc(x)))."""
    return (2 * (x + 1)) ** 2


# ── The server: yieldos tasks in a child process ─────────────────────────────


def serve_connection(conn: socket.socket) -> Generator[Any, Any, None]:
    """Answer every request line arriving on `conn` until the client hangs up."""
    with conn:
        pending = b""
        while True:
            data = yield recv(conn, 4096)
            if not data:
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                service, arg = line.decode().split()
                answer = SERVICES[service](int(arg))
                yield sendall(conn, f"{answer}\n".encode())


def accept_loop(listener: socket.socket) -> Generator[Any, Any, None]:
    while True:
        conn, _addr = yield accept(listener)
        yield spawn(serve_connection, conn)


def server_main(listener: socket.socket, stop_fd: int) -> Generator[Any, Any, None]:
    """Serve until `stop_fd` reaches end of file (the parent closed our stdin).

    Returning from the main task ends `kernel.run`: the accept loop and any connection
    tasks still alive are killed, and their ``with`` blocks close their sockets.
    """
    yield spawn(accept_loop, listener)
    while (yield read(stop_fd, 1)):
        pass


def serve() -> None:
    """The ``--serve`` mode: print the port, then serve until stdin is closed."""
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as listener:
        print(listener.getsockname()[1], flush=True)
        kernel.run(server_main, listener, sys.stdin.fileno())


class ServerProcess:
    """The RPC server, in a child process of its own (``three_rpcs.py --serve``).

    A separate process keeps the comparison fair: the server never competes with the
    client being measured for the interpreter lock, and both clients face the same server.
    """

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._proc.stdout is not None
        self.address: Address = ("127.0.0.1", int(self._proc.stdout.readline()))
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()  # end of file on the server's stdin: it stops
        self._proc.stdout.close()
        if self._proc.wait(timeout=30) != 0:
            raise RuntimeError(f"the RPC server failed with exit status {self._proc.returncode}")


# ── Client (a): callbacks on a tiny epoll reactor ─────────────────────────────
# CLIENT A BEGINS


class Reactor:
    """The whole event loop of callback code: call `callback()` when a socket is ready."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}

    def watch(self, sock: socket.socket, events: int, callback: Callable[[], None]) -> None:
        fd = sock.fileno()
        if fd in self._callbacks:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
        self._callbacks[fd] = callback

    def forget(self, sock: socket.socket) -> None:
        self._epoll.unregister(sock.fileno())
        del self._callbacks[sock.fileno()]

    def run(self) -> None:
        with self._epoll:
            while self._callbacks:
                for fd, _events in self._epoll.poll():
                    if fd in self._callbacks:
                        self._callbacks[fd]()


def send_line(reactor: Reactor, sock: socket.socket, line: str, then: Callable[[], None]) -> None:
    """Send `line`; when all of it is sent, call `then()`."""
    unsent = f"{line}\n".encode()

    def try_send() -> None:
        nonlocal unsent
        try:
            unsent = unsent[sock.send(unsent) :]
        except BlockingIOError:
            pass
        if unsent:
            reactor.watch(sock, select.EPOLLOUT, try_send)
        else:
            then()

    try_send()


def read_line(reactor: Reactor, sock: socket.socket, then: Callable[[int], None]) -> None:
    """Wait for one whole reply line, then call `then(number)`."""
    received = b""

    def on_readable() -> None:
        nonlocal received
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        received += chunk
        if received.endswith(b"\n"):
            then(int(received))

    reactor.watch(sock, select.EPOLLIN, on_readable)


def callback_request(
    reactor: Reactor, address: Address, x: int, done: Callable[[int, int], None]
) -> None:
    """Start one request for `x`; `done(x, c)` is called at the end of the chain."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(address)  # EINPROGRESS: the socket turns writable once connected

    def on_connected() -> None:
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise ConnectionError(error, os.strerror(error))
        send_line(reactor, sock, f"inc {x}", lambda: read_line(reactor, sock, on_inc))

    def on_inc(a: int) -> None:
        send_line(reactor, sock, f"dbl {a}", lambda: read_line(reactor, sock, on_dbl))

    def on_dbl(b: int) -> None:
        send_line(reactor, sock, f"sq {b}", lambda: read_line(reactor, sock, on_sq))

    def on_sq(c: int) -> None:
        reactor.forget(sock)
        sock.close()
        done(x, c)

    reactor.watch(sock, select.EPOLLOUT, on_connected)


def run_callback_client(address: Address, xs: range) -> dict[int, int]:
    reactor = Reactor()
    results: dict[int, int] = {}

    def done(x: int, c: int) -> None:
        results[x] = c

    for x in xs:
        callback_request(reactor, address, x, done)
    reactor.run()
    return results


# CLIENT A ENDS
# ── Client (b): one straight-line yieldos task per request ────────────────────
# CLIENT B BEGINS


def call(sock: socket.socket, service: str, arg: int) -> Generator[Any, Any, int]:
    """One RPC: send the request line, read the reply line."""
    yield sendall(sock, f"{service} {arg}\n".encode())
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = yield recv(sock, 4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        reply += chunk
    return int(reply)


def task_request(address: Address, x: int) -> Generator[Any, Any, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        yield connect(sock, address)
        a = yield from call(sock, "inc", x)
        b = yield from call(sock, "dbl", a)
        c = yield from call(sock, "sq", b)
    return c


def task_client(address: Address, xs: range) -> Generator[Any, Any, dict[int, int]]:
    tasks = {}
    for x in xs:
        tasks[x] = yield spawn(task_request, address, x)
    results = {}
    for x, task in tasks.items():
        results[x] = yield join(task)
    return results


def run_task_client(address: Address, xs: range) -> dict[int, int]:
    results: dict[int, int] = kernel.run(task_client, address, xs)
    return results


# CLIENT B ENDS
# ── Comparing the two ─────────────────────────────────────────────────────────


def count_code_lines(begin: str, end: str) -> int:
    """Lines of code between two marker comments of this file.

    Blank lines, comments and docstrings don't count: only what a reader must follow.
    """
    source = Path(__file__).read_text()
    section = source.split(f"# {begin}\n", 1)[1].split(f"# {end}\n", 1)[0]
    code_lines: set[int] = set()
    statement: list[tokenize.TokenInfo] = []
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(section).readline):
        if token.type in skip:
            continue
        if token.type != tokenize.NEWLINE:
            statement.append(token)
            continue
        # A statement ends. A statement that is a lone string is a docstring.
        if not (len(statement) == 1 and statement[0].type == tokenize.STRING):
            for tok in statement:
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
        statement = []
    return len(code_lines)


Client = Callable[[Address, range], dict[int, int]]


def timed(client: Client, address: Address, requests: int) -> float:
    """Run `client` for `requests` concurrent requests, check every answer; seconds taken."""
    xs = range(requests)
    start = time.perf_counter()
    results = client(address, xs)
    elapsed = time.perf_counter() - start
    wrong = {x: c for x, c in results.items() if c != expected(x)}
    if wrong or len(results) != requests:
        raise AssertionError(f"{client.__name__}: {len(results)} results, wrong ones: {wrong}")
    return elapsed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Three dependent RPCs per request: callbacks versus yieldos tasks."
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="concurrent requests per client (default 200)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="runs of each client; the median is shown"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    n = args.requests

    callback_runs, task_runs = [], []
    with ServerProcess() as server:
        for _ in range(max(1, args.rounds)):  # alternate, so drift on a noisy machine hits both
            callback_runs.append(timed(run_callback_client, server.address, n))
            task_runs.append(timed(run_task_client, server.address, n))
    callback_seconds = statistics.median(callback_runs)
    task_seconds = statistics.median(task_runs)

    callback_lines = count_code_lines("CLIENT A BEGINS", "CLIENT A ENDS")
    task_lines = count_code_lines("CLIENT B BEGINS", "CLIENT B ENDS")
    print(f"{n} requests, each three dependent RPCs: inc -> dbl -> sq")
    print(f"every result checked, e.g. x=7 -> inc 8 -> dbl 16 -> sq {expected(7)}")
    print()
    print(f"{'':22}{'(a) callbacks':>16}{'(b) yieldos':>16}")
    print(f"{'correct results':22}{f'{n}/{n}':>16}{f'{n}/{n}':>16}")
    print(f"(median of {len(task_runs)} alternating runs of each client)")
    print(f"{'wall time (s)':22}{callback_seconds:>16.3f}{task_seconds:>16.3f}")
    print(f"{'requests/s':22}{n / callback_seconds:>16.0f}{n / task_seconds:>16.0f}")
    print(f"{'client lines of code':22}{callback_lines:>16}{task_lines:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
