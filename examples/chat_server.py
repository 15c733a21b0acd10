"""A line-based chat server on yieldos: what one client says, every other client reads.

Run it and chat from a few other terminals::

    python3 examples/chat_server.py                # listening on 127.0.0.1:8009
    nc 127.0.0.1 8009                              # first line: your name; then chat; /quit

or let it check itself, slow client included::

    python3 examples/chat_server.py --selftest 10

The protocol. A client's first line is its name (1 to 32 printable characters, no
spaces, not in use); the server answers ``* welcome, NAME (here: ...)``. Then every line
the client sends reaches every other client as ``NAME: text``. ``/quit`` leaves. Lines
starting with ``*`` come from the server: who joined, who left, who was disconnected.

How it works. `serve_tcp` runs `handle` in a task of its own for each connection. That
task reads the client's lines and *broadcasts* them. It must never wait on another
client: if it did, one client that stops reading (a laptop lid closed, a stuck program)
would fill its socket buffer, and every sender would block behind it. So each client
has an *outbox*, a bounded `Queue`, and a *writer* task of its own that takes lines
out of it and sends them. Broadcasting is ``outbox.put_nowait(line)`` for each member,
which never waits: a member whose outbox is full has stopped keeping up, and is
disconnected (the others are told), rather than let its backlog grow without end. So a
slow client costs the others nothing, and at most ``--queue-size`` lines of memory.

Disconnecting a member means stopping its two tasks: its handler is killed (`kill`,
from a task spawned for it, so the broadcaster does not wait), and the handler's
cleanup kills the writer and closes the socket at once, dropping what was not sent.

The other limits: a line longer than ``--max-line`` bytes, or ``--idle-timeout``
seconds of silence, end the connection with a last line saying why.

``--selftest N`` starts the server, N clients that chat with each other, and one more
client with a tiny receive buffer that joins and then never reads. The N talk until the
slow one is disconnected; each checks that it got every line of every other client, in
order. The program exits 0 when all is right.
"""

from __future__ import annotations

import argparse
import functools
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Optional

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from kernel import Task  # noqa: E402
from syscalls import (  # noqa: E402
    Barrier,
    Event,
    Queue,
    QueueClosed,
    QueueFull,
    Semaphore,
    connect,
    current_task,
    join,
    kill,
    move_on_after,
    recv,
    sched_yield,
    sendall,
    shield,
    spawn,
    timeout,
)
from syscalls.streams import (  # noqa: E402
    LimitOverrunError,
    Listener,
    Stream,
    open_connection,
    serve_tcp,
)

DEFAULT_PORT = 8009
MAX_LINE = 4096  # default --max-line: the longest line a client may send, newline included
QUEUE_SIZE = 100  # default --queue-size: lines waiting for one client before it is cut off
IDLE_TIMEOUT = 300.0  # default --idle-timeout, in seconds
FLUSH_TIMEOUT = 1.0  # seconds a leaving client's writer gets to send its last lines
MAX_NAME = 32


# ── The room ──────────────────────────────────────────────────────────────────


@dataclass
class Config:
    queue_size: int = QUEUE_SIZE
    max_line: int = MAX_LINE
    idle_timeout: float = IDLE_TIMEOUT


class Client:
    """One member of the room: its connection, its outbox, and the task reading it."""

    def __init__(self, name: str, stream: Stream, queue_size: int, task: Task) -> None:
        self.name = name
        self.stream = stream
        self.outbox: Queue[bytes] = Queue(maxsize=queue_size)  # lines for this client
        self.task = task  # the handler: killing it disconnects the client
        self.kicked = False  # disconnected by the room (too slow), not by itself


class Room:
    """The members, by name, and the three things that change them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.members: dict[str, Client] = {}

    def join(self, client: Client) -> Generator[Any, Any, None]:
        others = ", ".join(self.members) or "nobody else"
        self.members[client.name] = client
        client.outbox.put_nowait(f"* welcome, {client.name} (here: {others})\n".encode())
        yield from self.broadcast(f"* {client.name} joined\n".encode(), sender=client)

    def leave(self, client: Client, why: str) -> Generator[Any, Any, None]:
        """``client`` leaves by itself (quit, hung up, idle...); a no-op if already gone."""
        if self.members.get(client.name) is client:
            del self.members[client.name]
            yield from self.broadcast(f"* {client.name} {why}\n".encode(), sender=client)

    def broadcast(self, line: bytes, sender: Optional[Client]) -> Generator[Any, Any, None]:
        """Put ``line`` in every outbox but the sender's, without ever waiting; disconnect
        the members whose outbox is full."""
        too_slow = []
        for client in list(self.members.values()):
            if client is not sender:
                try:
                    client.outbox.put_nowait(line)
                except QueueFull:
                    too_slow.append(client)
        for client in too_slow:
            yield from self.disconnect(client)

    def disconnect(self, client: Client) -> Generator[Any, Any, None]:
        if self.members.get(client.name) is not client:
            return  # already gone (two broadcasts found it full)
        del self.members[client.name]
        client.kicked = True
        client.outbox.close()
        with shield():  # a kill of this task must not leave the member half-removed
            yield spawn(kill(client.task), name=f"disconnect {client.name}")
        yield from self.broadcast(f"* {client.name} was disconnected (too slow)\n".encode(), None)


# ── One connection ────────────────────────────────────────────────────────────


def handle(room: Room, stream: Stream) -> Generator[Any, Any, None]:
    """Serve one client: its name, then its lines, until it leaves or is disconnected."""
    name = yield from ask_name(room, stream)
    if name is None:
        yield from linger(stream)
        return  # serve_tcp closes the stream
    client = Client(name, stream, room.config.queue_size, current_task())
    writer = yield spawn(write_loop, client, name=f"writer {name}")
    why, farewell = "left", b""
    try:
        yield from room.join(client)
        why, farewell = yield from read_loop(room, client)
    finally:
        with shield():  # even when killed: the writer must not outlive its client
            yield from room.leave(client, why)
            if farewell and not client.kicked:
                try:
                    client.outbox.put_nowait(farewell)
                except QueueFull:
                    pass
            client.outbox.close()  # the writer sends what is left, then ends
            with move_on_after(0 if client.kicked else FLUSH_TIMEOUT):
                yield join(writer)
            yield kill(writer)
            if client.kicked:
                stream.abort()  # drop its backlog: do not wait for a client that does not read
    yield from linger(stream)  # (not reached when kicked or killed: the exception goes on)


def linger(stream: Stream) -> Generator[Any, Any, None]:
    """Half-close, then read and drop what the client still sends, for a moment. Closing
    a socket with unread input makes TCP send a reset, which may destroy our last line."""
    try:
        with move_on_after(FLUSH_TIMEOUT):
            yield stream.write_eof()
            while (yield stream.read(65536)):
                pass
    except OSError:
        pass  # the client is gone already


def ask_name(room: Room, stream: Stream) -> Generator[Any, Any, Optional[str]]:
    """Read the first line, the client's name; None (and a reason sent) if it is no good."""
    line = b""
    with move_on_after(room.config.idle_timeout):
        try:
            line = yield stream.readline(limit=room.config.max_line)
        except (LimitOverrunError, OSError):
            pass
    name = line.decode("utf-8", "replace").strip()
    if not line.endswith(b"\n"):
        stream.write(b"* no name given, bye\n")
        return None
    if not (0 < len(name) <= MAX_NAME and name.isprintable() and " " not in name):
        stream.write(f"* a name is 1 to {MAX_NAME} printable characters, no spaces\n".encode())
        return None
    if name in room.members:
        stream.write(f"* the name {name} is taken\n".encode())
        return None
    return name


def read_loop(room: Room, client: Client) -> Generator[Any, Any, tuple[str, bytes]]:
    """Broadcast the client's lines until it stops; return why it stopped, as told to the
    others, and the last line for the client itself."""
    config = room.config
    while True:
        with move_on_after(config.idle_timeout) as idle:
            try:
                line = yield client.stream.readline(limit=config.max_line)
            except LimitOverrunError:
                reply = f"* line too long (the limit is {config.max_line} bytes), bye\n"
                return "was disconnected (line too long)", reply.encode()
            except OSError:  # reset by the client
                return "left", b""
        if idle.expired:
            return "was disconnected (idle)", b"* idle for too long, bye\n"
        if not line.endswith(b"\n"):
            return "left", b""  # the client hung up
        text = line.decode("utf-8", "replace").strip()
        if text == "/quit":
            return "left", b"* bye\n"
        if text:
            yield from room.broadcast(f"{client.name}: {text}\n".encode(), sender=client)


def write_loop(client: Client) -> Generator[Any, Any, None]:
    """The client's writer: send the lines of its outbox, in order, until it is closed."""
    outbox, stream = client.outbox, client.stream
    try:
        while True:
            stream.write((yield outbox.get()))
            while not outbox.empty():  # what came meanwhile goes out in the same drain
                stream.write(outbox.get_nowait())
            yield stream.drain()
    except (QueueClosed, OSError):  # closed and empty; or the client is gone
        return


def serve(room: Room, host: str, port: int) -> Generator[Any, Any, None]:
    """The server task: `handle` every connection to ``host:port``, for ever."""
    yield serve_tcp(functools.partial(handle, room), host, port, on_listen=print_listening)


def print_listening(listener: Listener) -> None:
    print(f"listening on {listener.sockname[0]}:{listener.port}", flush=True)


# ── The self-test: a room of clients, and one that never reads ────────────────

SLOW = "slowpoke"
KICKED = f"* {SLOW} was disconnected (too slow)\n".encode()
PADDING = "." * 1000  # long lines fill the slow client's buffers sooner
MAX_MESSAGES = 20000  # per client: the slow one must have been cut off long before
WINDOW = 16  # chat lines on their way at once, all clients together


class Traffic:
    """What the self-test's clients share: a meeting point, the news that the slow client
    is gone, and flow control among the well-behaved clients.

    The flow control is the test's, not the server's: a line may be sent only while fewer
    than `WINDOW` lines are on their way to some reader. So no outbox of a client that
    reads ever holds more than a few lines, while the slow client's fills up."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.ready = Barrier(clients)  # everybody has joined
        self.kicked = Event()  # a client saw the slow one disconnected
        self.window = Semaphore(WINDOW)
        self.unread: dict[tuple[str, int], int] = {}  # line -> readers still to get it

    def sending(self, name: str, n: int) -> Generator[Any, Any, None]:
        yield self.window.acquire()
        self.unread[name, n] = self.clients - 1
        if self.clients == 1:
            self.received(name, n)

    def received(self, name: str, n: int) -> None:
        self.unread[name, n] -= 1
        if self.unread[name, n] <= 0:
            del self.unread[name, n]
            self.window.release()


def chat_client(port: int, me: int, traffic: Traffic) -> Generator[Any, Any, int]:
    """Join, wait for everybody, talk until the slow client is gone, then say ``done``;
    check that every line of every other client arrived, in order. Return lines read."""
    stream = yield open_connection("127.0.0.1", port, timeout=10)
    reader: Optional[Task] = None
    try:
        yield stream.write_all(f"client{me}\n".encode())
        welcome = yield stream.readline()
        if not welcome.startswith(f"* welcome, client{me} ".encode()):
            raise AssertionError(f"client{me}: welcomed with {welcome!r}")
        yield traffic.ready.wait()  # everybody is in the room: from now on no line is lost
        reader = yield spawn(read_all, stream, me, traffic, name=f"reader {me}")
        sent = 0
        while not traffic.kicked.is_set():
            if sent == MAX_MESSAGES:
                raise AssertionError(f"{SLOW} still connected after {sent} lines from client{me}")
            yield from traffic.sending(f"client{me}", sent)
            yield stream.write_all(f"{sent} {PADDING}\n".encode())
            sent += 1
            yield sched_yield()  # let the others talk too
        yield stream.write_all(f"done {sent}\n".encode())
        count: int = yield join(reader)
        yield stream.write_all(b"/quit\n")
        rest = yield stream.read()  # until the server closes: others leaving, then our bye
        if not rest.endswith(b"* bye\n"):
            raise AssertionError(f"client{me}: after /quit got {rest[-60:]!r}")
    finally:
        if reader is not None:
            yield kill(reader)
        yield stream.close()
    return count


def read_all(stream: Stream, me: int, traffic: Traffic) -> Generator[Any, Any, int]:
    """Read until every other client said ``done``, checking that each one's lines are
    all there, in order; return how many chat lines arrived."""
    following = {f"client{n}": 0 for n in range(traffic.clients) if n != me}  # next expected
    finished: set[str] = set()
    seen_kick = False
    while len(finished) < len(following) or not seen_kick:
        line = yield stream.readline()
        if line == KICKED:
            seen_kick = True
            traffic.kicked.set()
        if line.startswith(b"*"):
            continue
        name, _, text = line.decode().rstrip("\n").partition(": ")
        what, _, rest = text.partition(" ")
        if name not in following or name in finished:
            raise AssertionError(f"client{me}: unexpected line {line[:60]!r}")
        if what == "done":
            if int(rest) != following[name]:
                raise AssertionError(f"client{me}: {name} sent {rest}, got {following[name]}")
            finished.add(name)
        elif int(what) != following[name]:
            raise AssertionError(f"client{me}: from {name} line {what}, not {following[name]}")
        else:
            traffic.received(name, following[name])
            following[name] += 1
    return sum(following.values())


def slow_client(port: int) -> Generator[Any, Any, socket.socket]:
    """A client with a tiny receive buffer that joins, reads its welcome, then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: it sets the window
    sock.setblocking(False)
    yield connect(sock, ("127.0.0.1", port))
    yield sendall(sock, f"{SLOW}\n".encode())
    welcome = b""
    while not welcome.endswith(b"\n"):
        byte = yield recv(sock, 1)  # exactly the welcome line, not a byte more
        if not byte:
            raise ConnectionError(f"{SLOW}: the server closed the connection")
        welcome += byte
    return sock


def selftest(config: Config, clients: int) -> Generator[Any, Any, None]:
    """Main task of ``--selftest``: the server, ``clients`` chatting clients and a slow one."""
    room = Room(config)
    ports: Queue[int] = Queue()

    def on_listen(listener: Listener) -> None:
        print_listening(listener)
        ports.put_nowait(listener.port)

    server = yield spawn(serve_tcp(functools.partial(handle, room), "127.0.0.1", 0,
                                   on_listen=on_listen))  # fmt: skip
    port = yield ports.get()
    slow = yield from slow_client(port)
    try:
        traffic = Traffic(clients)
        tasks = []
        for n in range(clients):
            tasks.append((yield spawn(chat_client, port, n, traffic, name=f"client{n}")))
        lines = 0
        for task in tasks:
            lines += yield join(task)  # re-raises here whatever made a client fail
        with timeout(10):  # now read the slow client's socket: the server must have closed it
            while (yield recv(slow, 65536)):
                pass
    finally:
        slow.close()
    yield kill(server)
    print(
        f"selftest passed: {clients} clients, {lines} lines delivered, {SLOW} cut off",
        flush=True,
    )


# ── Command line ──────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Line-based chat server on the yieldos kernel.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port, 0 picks a free one (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=QUEUE_SIZE,
        help=f"lines waiting for one client before it is disconnected (default {QUEUE_SIZE})",
    )
    parser.add_argument(
        "--max-line", type=int, default=MAX_LINE, help=f"longest line (default {MAX_LINE})"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help=f"seconds a client may stay silent (default {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--selftest",
        type=int,
        metavar="N",
        default=0,
        help="run N chatting clients and a slow one against the server, check, exit",
    )
    args = parser.parse_args(argv)
    if args.selftest < 0:
        parser.error("--selftest needs a positive number of clients")
    if args.queue_size < 1 or args.max_line < 2 or args.idle_timeout <= 0:
        parser.error("--queue-size, --max-line and --idle-timeout must be positive")
    if args.port is None:
        args.port = 0 if args.selftest else DEFAULT_PORT
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    config = Config(args.queue_size, args.max_line, args.idle_timeout)
    if args.selftest and config.queue_size < 2 * args.selftest + WINDOW:
        # Joins and leaves are announced to everybody: N clients joining at once put N
        # lines in every outbox before any writer runs. Make room for that.
        config.queue_size = 2 * args.selftest + WINDOW
        print(f"selftest: --queue-size raised to {config.queue_size} for {args.selftest} clients")
    try:
        if args.selftest:
            kernel.run(selftest, config, args.selftest)
        else:
            kernel.run(serve, Room(config), args.host, args.port)
    except KeyboardInterrupt:
        print("interrupted: every connection is closed, bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
