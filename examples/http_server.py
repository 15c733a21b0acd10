"""An HTTP/1.1 server on yieldos streams: keep-alive, static files, a few dynamic routes.

Run it and ask it things from another terminal::

    python3 examples/http_server.py                      # listening on 127.0.0.1:8080
    curl -v 'http://127.0.0.1:8080/hello?name=you'
    curl -v http://127.0.0.1:8080/static/http_server.py  # files under --root
    curl -v --data 'ping' http://127.0.0.1:8080/echo

or let it check itself, with no second terminal::

    python3 examples/http_server.py --selftest 20

How it works. `serve_tcp` accepts connections and runs `handle` in a task of its own
for each one, with a `Stream` (a buffer in front of the socket). HTTP/1.1 is a line
protocol up to the blank line that ends the headers, then bytes counted by
``Content-Length``; so a request is read with ``yield stream.readline(limit=...)``, one
line at a time, and a body with ``yield stream.read_exactly(n)``. A response is built
in the stream's write buffer with ``stream.write`` and sent by one ``yield
stream.drain()``. *Keep-alive* is just a loop: after a response, the same task reads the
next request on the same connection, until the client says ``Connection: close`` (or
speaks HTTP/1.0 without asking for keep-alive), hangs up, or stays silent too long.

What a server facing the internet must not trust, and how each is bounded here:

- a line that never ends: ``readline(limit=MAX_LINE)`` raises `LimitOverrunError`, and
  the client gets 414 (request line) or 431 (a header) and the connection is closed;
- a client that connects and says nothing, or trickles a request byte by byte: between
  requests ``move_on_after(idle_timeout)`` closes the connection quietly; inside a
  request ``timeout(idle_timeout)`` answers 408 and closes;
- a client that never reads our answers: the ``drain`` has the same deadline;
- a huge body: past ``--max-body`` the answer is 413, without reading it;
- a file name like ``../../etc/passwd``: the path is resolved and must stay under ``--root``.

``--stats`` adds a route, ``GET /stats``, that answers how many connections the server
has accepted and how many requests it has answered since it started: with keep-alive, a
load generator such as ``wrk -c100`` should make about 100 connections, not one per
request.

After an error the server *lingers* before closing (`linger`): it half-closes, then
reads and drops what the client still sends, for a moment. Closing a socket that has
unread input makes TCP send a reset, which can destroy our error reply before the client
reads it.

``--selftest N`` starts the server and N clients in the same kernel. Each makes a few
rounds of requests on one keep-alive connection (the page, ``HEAD``, ``/hello``, this
file under ``/static/``, ``POST /echo``, a 404, a 405, a path traversal refused), then a
last one with ``Connection: close``, and checks every status and body. The program exits
0 when all the answers are right.
"""

from __future__ import annotations

import argparse
import functools
import mimetypes
import sys
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Generator, Optional
from urllib.parse import parse_qs, unquote, urlsplit

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from syscalls import Queue, join, kill, move_on_after, run_in_thread, spawn, timeout  # noqa: E402
from syscalls.streams import (  # noqa: E402
    LimitOverrunError,
    Listener,
    Stream,
    open_connection,
    serve_tcp,
)

DEFAULT_PORT = 8080
SERVER = "yieldos-http/0.1"
EXAMPLES = Path(__file__).resolve().parent
MAX_LINE = 8192  # the longest request line or header line, CRLF included
MAX_HEADERS = 100  # the most header lines in one request
MAX_BODY = 1 << 20  # default --max-body: the largest request body accepted
MAX_FILE = 16 << 20  # the largest static file served (it is read whole)
IDLE_TIMEOUT = 30.0  # default --idle-timeout, in seconds
LINGER = 1.0  # seconds spent reading what a client still sends after an error reply
STATIC = "/static/"


# ── Requests and responses ────────────────────────────────────────────────────


@dataclass
class Stats:
    """What ``--stats`` counts (and ``GET /stats`` answers), since the server started."""

    connections: int = 0  # connections accepted
    requests: int = 0  # responses sent, error replies included


@dataclass
class Config:
    root: Path  # static files are served from under this directory (resolved)
    idle_timeout: float = IDLE_TIMEOUT
    max_body: int = MAX_BODY
    stats: Optional[Stats] = None  # counted, and served at /stats, only with --stats


@dataclass
class Request:
    method: str
    target: str  # as sent: "/hello?name=x"
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str]  # names in lower case
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 only if asked to keep."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """A request we cannot answer normally: reply with ``status``, then close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def error(status: int, detail: str = "") -> Response:
    phrase = HTTPStatus(status).phrase
    return Response(status, f"{status} {phrase}\n{detail}".rstrip().encode() + b"\n")


# ── Reading a request ─────────────────────────────────────────────────────────


def read_line(stream: Stream, too_long: int) -> Generator[Any, Any, bytes]:
    """One line of the request head; a line over `MAX_LINE` is the HTTP error ``too_long``."""
    try:
        line: bytes = yield stream.readline(limit=MAX_LINE)
    except LimitOverrunError:
        raise HttpError(too_long, f"a line is longer than {MAX_LINE} bytes") from None
    return line


def read_request(stream: Stream, config: Config) -> Generator[Any, Any, Optional[Request]]:
    """The next request on the connection, or None if the client left or stayed silent."""
    line = b""
    with move_on_after(config.idle_timeout):  # between requests: silence just ends it
        while line in (b"", b"\r\n", b"\n"):  # (blank lines before a request are allowed)
            line = yield from read_line(stream, HTTPStatus.REQUEST_URI_TOO_LONG)
            if not line:
                return None  # the client closed the connection
    if not line.endswith(b"\n"):
        return None  # timed out, or the client closed in the middle of a line
    try:
        with timeout(config.idle_timeout):  # inside a request: a slow client gets 408
            request = yield from read_rest(stream, line, config)
    except TimeoutError:
        raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "the request came too slowly") from None
    return request


def read_rest(stream: Stream, line: bytes, config: Config) -> Generator[Any, Any, Request]:
    """Parse the request line, read the headers and the body."""
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        status = HTTPStatus.HTTP_VERSION_NOT_SUPPORTED if version.startswith("HTTP/") else 400
        raise HttpError(status, f"unsupported version {version!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = yield from read_line(stream, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if line in (b"\r\n", b"\n"):
            break
        name, colon, value = line.decode("latin-1").partition(":")
        if not line.endswith(b"\n") or not colon or not name or name != name.strip():
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed header line {line[:40]!r}")
        name = name.lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    else:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header lines")
    request = Request(method, target, version, headers)
    if "transfer-encoding" in headers:
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "only Content-Length bodies are supported")
    length = headers.get("content-length", "0")
    if not (length.isascii() and length.isdigit()):  # also refuses "5, 5" and "-1"
        raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
    if int(length) > config.max_body:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the limit is {config.max_body}")
    if int(length):
        if headers.get("expect", "").lower() == "100-continue":  # curl waits for this
            yield stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = yield stream.read_exactly(int(length))
    return request


# ── Routes ────────────────────────────────────────────────────────────────────

INDEX = b"""<!DOCTYPE html>
<html><head><title>yieldos</title></head>
<body><h1>Hello from yieldos</h1>
<ul>
<li><a href="/hello?name=you">/hello?name=you</a></li>
<li><a href="/static/http_server.py">/static/http_server.py</a></li>
<li>POST /echo</li>
</ul></body></html>
"""


def index(request: Request) -> Response:
    return Response(200, INDEX, "text/html; charset=utf-8")


def hello(request: Request) -> Response:
    name = request.query.get("name", ["world"])[0]
    return Response(200, f"Hello, {name}!\n".encode())


def echo(request: Request) -> Response:
    return Response(200, request.body, "application/octet-stream")


#: path -> (the methods allowed, the function that answers)
ROUTES: dict[str, tuple[tuple[str, ...], Callable[[Request], Response]]] = {
    "/": (("GET", "HEAD"), index),
    "/hello": (("GET", "HEAD"), hello),
    "/echo": (("POST",), echo),
}


def load_file(root: Path, name: str) -> Response:
    """The file ``root/name`` as a response (in a worker thread: the disk may block)."""
    path = (root / name).resolve()  # follows "..", and symbolic links too
    if path != root and root not in path.parents:
        return error(HTTPStatus.FORBIDDEN, "outside the static root")
    try:
        if path.stat().st_size > MAX_FILE:
            return error(HTTPStatus.FORBIDDEN, "too large to serve")
        data = path.read_bytes()
    except OSError:  # missing, a directory, unreadable...
        return error(HTTPStatus.NOT_FOUND)
    return Response(200, data, mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def route(request: Request, config: Config) -> Generator[Any, Any, Response]:
    """Find who answers ``request`` and get the answer (404, 405 when nobody does)."""
    path = request.path
    if path == "/stats" and config.stats is not None:
        stats = config.stats
        return Response(
            200, f"connections {stats.connections}\nrequests {stats.requests}\n".encode()
        )
    if path.startswith(STATIC):
        allowed: tuple[str, ...] = ("GET", "HEAD")
    elif path in ROUTES:
        allowed = ROUTES[path][0]
    else:
        return error(HTTPStatus.NOT_FOUND)
    if request.method not in allowed:
        response = error(HTTPStatus.METHOD_NOT_ALLOWED)
        response.headers["Allow"] = ", ".join(allowed)
        return response
    if path.startswith(STATIC):
        name = unquote(path[len(STATIC) :])
        if "\0" in name:
            return error(HTTPStatus.NOT_FOUND)
        loaded: Response = yield run_in_thread(load_file, config.root, name)
        return loaded
    return ROUTES[path][1](request)


# ── The connection ────────────────────────────────────────────────────────────


def send(
    stream: Stream, response: Response, config: Config, *, keep_alive: bool, head: bool = False
) -> Generator[Any, Any, None]:
    """Write the status line, the headers and (unless ``head``) the body; one drain sends all."""
    if config.stats is not None:
        config.stats.requests += 1
    lines = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        f"Server: {SERVER}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{name}: {value}" for name, value in response.headers.items()),
        "Connection: keep-alive" if keep_alive else "Connection: close",
    ]
    stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        stream.write(response.body)
    with timeout(config.idle_timeout):  # a client that never reads must not hold us for ever
        yield stream.drain()


def linger(stream: Stream) -> Generator[Any, Any, None]:
    """Half-close, then read and drop what the client still sends, for `LINGER` seconds."""
    yield stream.write_eof()
    with move_on_after(LINGER):
        while (yield stream.read(65536)):
            pass


def handle(config: Config, stream: Stream) -> Generator[Any, Any, None]:
    """Serve one connection: request, response, and again while keep-alive holds."""
    if config.stats is not None:
        config.stats.connections += 1
    try:
        while True:
            try:
                request = yield from read_request(stream, config)
            except HttpError as exc:
                yield from send(stream, error(exc.status, exc.detail), config, keep_alive=False)
                yield from linger(stream)
                return
            if request is None:
                return
            response = yield from route(request, config)
            keep_alive = request.keep_alive
            yield from send(
                stream, response, config, keep_alive=keep_alive, head=request.method == "HEAD"
            )
            if not keep_alive:
                return
    except (OSError, EOFError):
        # The client went away: reset, closed in the middle of a body (IncompleteReadError
        # is an EOFError), or too slow to read our reply (TimeoutError is an OSError).
        # serve_tcp closes the stream when we return.
        return


def serve(config: Config, host: str, port: int) -> Generator[Any, Any, None]:
    """The server task: `handle` every connection to ``host:port``, for ever."""
    yield serve_tcp(
        functools.partial(handle, config), host, port, backlog=1024, on_listen=print_listening
    )


def print_listening(listener: Listener) -> None:
    print(f"listening on {listener.sockname[0]}:{listener.port}", flush=True)


# ── The self-test: server and clients in one kernel ───────────────────────────


def fetch(
    stream: Stream, method: str, target: str, body: bytes = b"", extra: str = ""
) -> Generator[Any, Any, tuple[int, dict[str, str], bytes]]:
    """Send one request on ``stream``; return the status, headers and body of the answer."""
    head = f"{method} {target} HTTP/1.1\r\nHost: selftest\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    yield stream.write_all(head.encode() + b"\r\n" + body)
    status_line = yield stream.readline(limit=MAX_LINE)
    if not status_line:
        raise ConnectionError(f"{method} {target}: the server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := (yield stream.readline(limit=MAX_LINE))) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.lower()] = value.strip()
    length = int(headers["content-length"])
    answer = b"" if method == "HEAD" else (yield stream.read_exactly(length))
    return status, headers, answer


def http_client(port: int, client: int, rounds: int) -> Generator[Any, Any, int]:
    """Make ``rounds`` rounds of requests on one keep-alive connection, check every answer;
    return the number of requests made."""
    own_source = Path(__file__).read_bytes()
    payload = f"client {client} ".encode() * (client + 1) * 50
    expected: list[tuple[str, str, bytes, int, Optional[bytes]]] = [
        ("GET", "/", b"", 200, INDEX),
        ("HEAD", "/", b"", 200, b""),
        ("GET", f"/hello?name=client{client}", b"", 200, f"Hello, client{client}!\n".encode()),
        ("GET", "/static/http_server.py", b"", 200, own_source),
        ("POST", "/echo", payload, 200, payload),
        ("GET", "/no/such/page", b"", 404, None),
        ("POST", "/", b"x", 405, None),
        ("GET", "/static/../../../etc/passwd", b"", 403, None),
    ]
    stream = yield open_connection("127.0.0.1", port, timeout=10)
    count = 0
    try:
        for _ in range(rounds):
            for method, target, body, status, want in expected:
                got, headers, answer = yield from fetch(stream, method, target, body)
                what = f"client {client}: {method} {target}"
                if got != status or (want is not None and answer != want):
                    raise AssertionError(f"{what}: got {got} {answer[:60]!r}")
                if "date" not in headers or headers.get("server") != SERVER:
                    raise AssertionError(f"{what}: no Date or Server header in {headers}")
                count += 1
        got, headers, _ = yield from fetch(stream, "GET", "/", extra="Connection: close\r\n")
        if got != 200 or headers.get("connection") != "close":
            raise AssertionError(f"client {client}: Connection: close answered {got} {headers}")
        if (yield stream.read()) != b"":
            raise AssertionError(f"client {client}: the server kept the connection open")
    finally:
        yield stream.close()
    return count + 1


def selftest(config: Config, clients: int, rounds: int = 3) -> Generator[Any, Any, None]:
    """Main task of ``--selftest``: run the server and ``clients`` clients side by side."""
    ports: Queue[int] = Queue()

    def on_listen(listener: Listener) -> None:
        print_listening(listener)
        ports.put_nowait(listener.port)

    server = yield spawn(serve_tcp(functools.partial(handle, config), "127.0.0.1", 0,
                                   backlog=1024, on_listen=on_listen))  # fmt: skip
    port = yield ports.get()
    tasks = []
    for client in range(clients):
        tasks.append((yield spawn(http_client, port, client, rounds, name=f"client {client}")))
    total = 0
    for task in tasks:
        total += yield join(task)  # re-raises here whatever made a client fail
    yield kill(server)  # closes every connection, then the listening socket
    print(f"selftest passed: {clients} clients, {total} requests, all answers right", flush=True)


# ── Command line ──────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HTTP/1.1 server on the yieldos kernel.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port, 0 picks a free one (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--root", type=Path, default=EXAMPLES, help="directory served under /static/"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help=f"seconds a connection may stay silent (default {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-body", type=int, default=MAX_BODY, help="largest request body, in bytes"
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="count connections and requests, and answer the counts at GET /stats",
    )
    parser.add_argument(
        "--selftest",
        type=int,
        metavar="N",
        default=0,
        help="run N keep-alive clients against the server (static root: examples/), exit",
    )
    args = parser.parse_args(argv)
    if args.selftest < 0:
        parser.error("--selftest needs a positive number of clients")
    if args.idle_timeout <= 0:
        parser.error("--idle-timeout must be positive")
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    if args.port is None:
        args.port = 0 if args.selftest else DEFAULT_PORT
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    mimetypes.init()  # once, here: it reads the system's tables from disk
    root = EXAMPLES if args.selftest else args.root.resolve()
    config = Config(root, args.idle_timeout, args.max_body, Stats() if args.stats else None)
    try:
        if args.selftest:
            kernel.run(selftest, config, args.selftest)
        else:
            kernel.run(serve, config, args.host, args.port)
    except KeyboardInterrupt:
        print("interrupted: every connection is closed, bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
