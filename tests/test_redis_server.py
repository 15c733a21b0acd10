"""examples/redis_server.py: the protocol, the commands and expiry, then the real Redis tools.

Four layers:

1. The parser and the keyspace alone, with plain bytes and a fake clock: a stream of
   commands split at every byte gives the same replies as the whole; a 1 MB argument
   arriving in small pieces is parsed once, not once per piece; the deadline heap
   stays bounded; integers are read as strictly as Redis reads them.
2. The server in a kernel running in a thread, with a fake clock in its `Database`,
   talked to through a real socket by a small blocking RESP client written here
   (independent of the server's parser): commands, pipelining, error replies that
   keep the connection, protocol errors that close it, expiry without waiting.
   When ``redis-server`` is installed, the same script is also played against it
   and the replies must be the same bytes. And ``--selftest`` runs, as a program.
3. ``redis-cli`` against the server run as a program (``--port 0``): binary values,
   INCR, MSET/MGET, EXPIRE/TTL, error replies, ``--pipe`` mode, malformed input on a
   raw socket, and Ctrl-C.
4. ``redis-benchmark`` (ping, set, get, incr, mset; 50 clients; -P 1 and -P 16),
   its CSV parsed, then the data checked: INCR by 50 clients gives the exact total,
   and thousands of pipelined SETs read back equal.

Layers 3 and 4 skip, saying why, when redis-cli or redis-benchmark is not on PATH.
"""

from __future__ import annotations

import csv
import io
import queue
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import pytest

import kernel
from conftest import REPO, load_example
from syscalls import Event, kill, spawn

EXAMPLE = Path(REPO) / "examples" / "redis_server.py"
TIMEOUT = 5.0  # seconds any one reply or tool may take


rs = load_example("redis_server")


# ── A small RESP client, independent of the server's code ─────────────────────

Arg = Union[bytes, str, int]


def encode(*args: Arg) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(frozen=True)
class Err:
    """An error reply (its text without the leading "-")."""

    message: str


class Client:
    """A blocking connection that decodes replies: status -> str, error -> Err,
    integer -> int, bulk -> bytes, nil -> None, array -> list."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        return self._take(i + 2)[:-2]

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Err(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self._take(int(rest) + 2)[:-2]
        if kind == b"*":
            return None if int(rest) < 0 else [self.reply() for _ in range(int(rest))]
        raise AssertionError(f"not a RESP reply: {line!r}")

    def raw_reply(self) -> bytes:
        """The next reply's exact bytes (arrays with all their elements)."""
        line = self._line()
        raw = line + b"\r\n"
        if line[:1] == b"$" and int(line[1:]) >= 0:
            raw += self._take(int(line[1:]) + 2)
        elif line[:1] == b"*":
            for _ in range(int(line[1:])):
                raw += self.raw_reply()
        return raw

    def call(self, *args: Arg) -> Any:
        self.send(encode(*args))
        return self.reply()

    def pipeline(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Send every command in one write, then read every reply."""
        self.send(b"".join(encode(*c) for c in commands))
        return [self.reply() for _ in commands]

    def until_eof(self) -> bytes:
        """Everything the server still sends, until it closes the connection."""
        while True:
            try:
                self._fill()
            except EOFError:
                return self._take(len(self.buf))


def err(message: str) -> Err:
    return Err("ERR " + message)


WRONG_ARGS = "wrong number of arguments for '{}' command"
NOT_INT = err("value is not an integer or out of range")
SYNTAX = err("syntax error")


# ── 1. The parser and the keyspace alone ──────────────────────────────────────


class FakeClock:
    """Seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def session() -> Any:
    return rs.Session(rs.Database(FakeClock()))


V = b"a\r\n$3\r\nb*"


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# Commands of every shape: arrays, an argument holding CRLF and "$", an empty one,
# inline lines with quotes, an empty line, a null array, an error reply.
MIXED = (
    encode("SET", "k", V)
    + encode("GET", "k")
    + b"PING\r\n"
    + encode("SET", b"", b"")
    + b'SET "in line" "x\\x41\\n" \r\n'
    + b"\r\n"
    + b"*-1\r\n"
    + encode("GET", "in line")
    + encode("INCR", "n")
    + encode("INCRBY", "n", "41")
    + encode("MGET", "k", "nosuch", "")
    + encode("NOSUCH", "x")
    + b"get 'in line'\n"
    + encode("ECHO", b"\x00\xff" * 100)
)
MIXED_REPLIES = b"".join(
    [b"+OK\r\n", bulk(V), b"+PONG\r\n", b"+OK\r\n", b"+OK\r\n", bulk(b"xA\n"), b":1\r\n",
     b":42\r\n", b"*3\r\n" + bulk(V) + b"$-1\r\n" + bulk(b""),
     b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n",
     bulk(b"xA\n"), bulk(b"\x00\xff" * 100)]
)  # fmt: skip


def test_a_pipeline_is_answered_by_one_feed():
    assert session().feed(MIXED) == MIXED_REPLIES


def test_a_pipeline_split_at_every_byte_gives_the_same_replies():
    for cut in range(1, len(MIXED)):
        s = session()
        got = s.feed(MIXED[:cut]) + s.feed(MIXED[cut:])
        assert got == MIXED_REPLIES, f"split at byte {cut}"
    s = session()
    assert b"".join(s.feed(MIXED[i : i + 1]) for i in range(len(MIXED))) == MIXED_REPLIES


def test_a_large_argument_in_small_pieces_is_parsed_once_it_is_whole():
    parses = []

    class Counting(rs.Session):
        __slots__ = ()

        def parse(self, buf, out):
            parses.append(len(buf))
            return super().parse(buf, out)

    s = Counting(rs.Database(FakeClock()))
    value = random.Random(1).randbytes(1 << 20)
    data = encode("SET", "big", value) + encode("GET", "big")
    replies = b"".join(s.feed(data[i : i + 1000]) for i in range(0, len(data), 1000))
    assert replies == b"+OK\r\n" + b"$%d\r\n%s\r\n" % (len(value), value)
    # Not one parse per piece (1,049 pieces): the header, the whole value, the GET.
    assert len(parses) <= 4, parses


def test_the_longest_argument_allowed_is_waited_for_and_one_byte_more_is_refused():
    s = session()
    assert s.feed(b"*1\r\n$536870912\r\n") == b"" and not s.closing
    s = session()
    assert s.feed(b"*1\r\n$536870913\r\n") == b"-ERR Protocol error: invalid bulk length\r\n"
    assert s.closing
    assert s.feed(encode("PING")) == b""  # nothing is answered after a protocol error


@pytest.mark.parametrize(
    "text, value",
    [(b"0", 0), (b"42", 42), (b"-7", -7), (b"9223372036854775807", (1 << 63) - 1),
     (b"-9223372036854775808", -(1 << 63))],
)  # fmt: skip
def test_integers_are_read_as_redis_writes_them(text, value):
    assert rs.to_int(text) == value


@pytest.mark.parametrize(
    "text",
    [b"", b"+1", b" 1", b"1 ", b"007", b"-0", b"1_0", b"1.0", b"0x10", b"\xd9\xa3",
     b"9223372036854775808", b"-9223372036854775809", b"1" * 30],
)  # fmt: skip
def test_anything_else_is_not_an_integer(text):
    with pytest.raises(rs.CommandError) as info:
        rs.to_int(text)
    assert info.value.reply == b"-ERR value is not an integer or out of range\r\n"


@pytest.mark.parametrize(
    "line, args",
    [
        (b"SET a b", [b"SET", b"a", b"b"]),
        (b"  SET\t a   b \r", [b"SET", b"a", b"b"]),
        (b'SET "a b" "c\\"d"', [b"SET", b"a b", b'c"d']),
        (b'ECHO "\\x41\\x7a\\n\\r\\t\\q"', [b"ECHO", b"Az\n\r\tq"]),
        (b"ECHO 'it\\'s' '\\n'", [b"ECHO", b"it's", b"\\n"]),
        (b'ECHO ""', [b"ECHO", b""]),
        (b"", []),
    ],
)
def test_inline_commands_split_as_redis_splits_them(line, args):
    assert rs.split_inline(line) == args


@pytest.mark.parametrize("line", [b'GET "a', b"GET 'a", b'GET "a"b', b"GET 'a'b"])
def test_unbalanced_quotes_are_a_protocol_error(line):
    with pytest.raises(rs.ProtocolError, match="unbalanced quotes"):
        rs.split_inline(line)


def test_the_deadline_heap_stays_bounded_when_deadlines_keep_changing():
    db = rs.Database(FakeClock())
    for i in range(10_000):
        db.set([b"SET", b"k%d" % (i % 10), b"v", b"EX", b"100"])
    assert len(db.expires) == 10
    assert db.heap_size() <= rs.COMPACT_MIN + 1
    for i in range(10):
        db.delete_keys([b"DEL", b"k%d" % i])
    for i in range(200):
        db.set([b"SET", b"other", b"v", b"PX", b"%d" % (i + 1)])
    assert db.heap_size() <= rs.COMPACT_MIN + 1


def test_an_expiry_pass_does_a_bounded_amount_of_work():
    clock = FakeClock()
    db = rs.Database(clock)
    for i in range(1000):
        db.set([b"SET", b"k%d" % i, b"v", b"PX", b"%d" % (10 + i % 50)])
    db.set([b"SET", b"later", b"v", b"EX", b"100"])
    db.set([b"SET", b"forever", b"v"])
    assert db.expire_due(200) == 0  # nothing is due yet
    clock.advance(1)
    passes = []
    while (seen := db.expire_due(200)) == 200:
        passes.append(seen)
    assert passes == [200] * 5 and seen == 0
    assert sorted(db.data) == [b"forever", b"later"]
    assert db.heap_size() == 1


# ── 2. The server in a kernel, through a socket ───────────────────────────────


@dataclass
class Running:
    port: int
    clock: FakeClock
    db: Any

    def client(self) -> Client:
        return Client(self.port)


@pytest.fixture
def server(caplog):
    """The server (`redis_server.serve`) in a kernel of its own thread, with a fake clock."""
    clock = FakeClock()
    db = rs.Database(clock)
    ports: queue.Queue[Optional[int]] = queue.Queue()
    stop = Event()
    k = kernel.Kernel()
    failures: list[BaseException] = []

    def main():
        srv = yield spawn(rs.serve, db, "127.0.0.1", 0, lambda lis: ports.put(lis.port))
        yield stop.wait()
        yield kill(srv)

    def thread_main():
        try:
            with k:
                k.run(main)
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            failures.append(exc)
            ports.put(None)

    thread = threading.Thread(target=thread_main, name="redis kernel")
    thread.start()
    port = ports.get(timeout=TIMEOUT)
    try:
        assert port is not None, f"the server did not start: {failures}"
        yield Running(port, clock, db)
    finally:
        if thread.is_alive():
            k.call_from_thread(stop.set)
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "the server's kernel did not stop"
    assert not failures, failures
    logged = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not logged, f"the server logged errors: {logged}"


def test_ping_echo_and_inline_commands(server):
    with server.client() as c:
        assert c.call("PING") == "PONG"
        assert c.call("ping", "hello") == b"hello"
        assert c.call("ECHO", b"\x00\r\n\xff") == b"\x00\r\n\xff"
        c.send(b"PING\r\nECHO 'a b'\nSET key \"v\\x00\"\r\nGET key\r\n")
        assert [c.reply() for _ in range(4)] == ["PONG", b"a b", "OK", b"v\x00"]


def test_values_are_binary_safe_and_any_size(server):
    rng = random.Random(7)
    values = [b"", b"\r\n", b"$-1\r\n", b"*1\r\n$4\r\nPING\r\n", bytes(range(256))]
    values += [rng.randbytes(rng.choice([1, 100, 70_000])) for _ in range(20)]
    values.append(rng.randbytes(3 << 20))  # several reads on the server's side
    with server.client() as c:
        for i, value in enumerate(values):
            assert c.call("SET", b"v%d\x00" % i, value) == "OK"
        for i, value in enumerate(values):
            assert c.call("GET", b"v%d\x00" % i) == value
        assert c.call("SET", "v0", "new") == "OK"
        assert c.call("GET", "v0") == b"new"
        assert c.call("GET", "nosuch") is None


def test_pipelined_commands_are_answered_in_order(server):
    commands: list[tuple[Arg, ...]] = []
    expected: list[Any] = []
    for i in range(2000):
        commands += [("SET", f"p{i}", f"value {i}"), ("INCR", "count"), ("GET", f"p{i}")]
        expected += ["OK", i + 1, f"value {i}".encode()]
    with server.client() as c:
        assert c.pipeline(commands) == expected
        assert c.call("DBSIZE") == 2001


def test_many_clients_at_once(server):
    clients = [server.client() for _ in range(50)]
    try:
        for round_ in range(20):
            for n, c in enumerate(clients):
                c.send(encode("INCR", "shared") + encode("SET", f"c{n}", round_))
            for c in clients:
                assert isinstance(c.reply(), int) and c.reply() == "OK"
        assert clients[0].call("GET", "shared") == b"1000"
        assert clients[0].call("MGET", "c0", "c49") == [b"19", b"19"]
    finally:
        for c in clients:
            c.close()


def test_counting_commands(server):
    with server.client() as c:
        assert c.call("MSET", "a", "1", "b", "2", "c", "3") == "OK"
        assert c.call("MGET", "a", "x", "c") == [b"1", None, b"3"]
        assert c.call("EXISTS", "a", "a", "x") == 2
        assert c.call("DEL", "a", "x", "b") == 2
        assert c.call("DBSIZE") == 1
        assert c.call("INCR", "n") == 1
        assert c.call("INCRBY", "n", "-11") == -10
        assert c.call("DECR", "n") == -11
        assert c.call("DECRBY", "n", "-20") == 9
        assert c.call("SET", "big", str((1 << 63) - 1)) == "OK"
        assert c.call("INCR", "big") == err("increment or decrement would overflow")
        assert c.call("DECRBY", "n", str(-(1 << 63))) == err("decrement would overflow")
        assert c.call("GET", "big") == b"9223372036854775807"  # unchanged
        for bad in ("007", " 1", "1.5", "+1", ""):
            assert c.call("SET", "s", bad) == "OK"
            assert c.call("INCR", "s") == NOT_INT
        assert c.call("FLUSHDB") == "OK"
        assert c.call("DBSIZE") == 0


def test_set_options(server):
    with server.client() as c:
        assert c.call("SET", "k", "1", "NX") == "OK"
        assert c.call("SET", "k", "2", "nx") is None
        assert c.call("SET", "missing", "2", "XX") is None
        assert c.call("GET", "missing") is None
        assert c.call("SET", "k", "3", "XX", "GET") == b"1"
        assert c.call("SET", "k", "4", "NX", "GET") == b"3"  # not set: the old value
        assert c.call("SET", "new", "5", "GET") is None
        assert c.call("MGET", "k", "new") == [b"3", b"5"]


@pytest.mark.parametrize(
    "args, reply",
    [
        (("SET", "k", "v", "NX", "XX"), SYNTAX),
        (("SET", "k", "v", "EX", "10", "PX", "100"), SYNTAX),
        (("SET", "k", "v", "EX"), SYNTAX),
        (("SET", "k", "v", "KEEPTTL", "EX", "5"), SYNTAX),
        (("SET", "k", "v", "BOGUS"), SYNTAX),
        (("SET", "k", "v", "EX", "abc"), NOT_INT),
        (("SET", "k", "v", "EX", "NX"), NOT_INT),
        (("SET", "k", "v", "PX", "9999999999999999999"), NOT_INT),
        (("SET", "k", "v", "EX", "0"), err("invalid expire time in 'set' command")),
        (("SET", "k", "v", "PX", "-5"), err("invalid expire time in 'set' command")),
        (("SET", "k", "v", "EX", "9223372036854776"), err("invalid expire time in 'set' command")),
        (("GET",), err(WRONG_ARGS.format("get"))),
        (("get", "a", "b"), err(WRONG_ARGS.format("get"))),
        (("SET", "k"), err(WRONG_ARGS.format("set"))),
        (("MSET", "a"), err(WRONG_ARGS.format("mset"))),
        (("MSET", "a", "1", "b"), err(WRONG_ARGS.format("mset"))),
        (("PING", "a", "b"), err(WRONG_ARGS.format("ping"))),
        (("DBSIZE", "x"), err(WRONG_ARGS.format("dbsize"))),
        (("INCRBY", "n", "x"), NOT_INT),
        (("EXPIRE", "k", "x"), NOT_INT),
        (("EXPIRE", "k", "10", "BOGUS"), err("Unsupported option BOGUS")),
        (("EXPIRE", "k", "10", "NX", "XX"),
         err("NX and XX, GT or LT options at the same time are not compatible")),
        (("EXPIRE", "k", "10", "GT", "LT"),
         err("GT and LT options at the same time are not compatible")),
        (("EXPIRE", "k", "99999999999999999"), err("invalid expire time in 'expire' command")),
        (("SELECT", "1"), err("DB index is out of range")),
        (("SELECT", "x"), NOT_INT),
        (("FLUSHDB", "BOGUS"), SYNTAX),
        (("CONFIG",), err(WRONG_ARGS.format("config"))),
        (("CONFIG", "GET"), err(WRONG_ARGS.format("config|get"))),
        (("CONFIG", "SET", "save", ""), err("unknown subcommand 'SET'. Try CONFIG HELP.")),
        (("FOO",), err("unknown command 'FOO', with args beginning with: ")),
        (("foo", "a", "b"), err("unknown command 'foo', with args beginning with: 'a' 'b' ")),
        (("FOO", "x" * 200, "y"),
         err("unknown command 'FOO', with args beginning with: '" + "x" * 128 + "' ")),
        (("FOO", "a\r\nb"), err("unknown command 'FOO', with args beginning with: 'a  b' ")),
    ],
)  # fmt: skip
def test_bad_commands_get_an_error_and_the_connection_goes_on(server, args, reply):
    with server.client() as c:
        assert c.call(*args) == reply
        assert c.call("PING") == "PONG"


@pytest.mark.parametrize(
    "data, reply",
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1 \r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*3000000000\r\n", "invalid multibulk length"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$600000000\r\n", "invalid bulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"x" * 70_000, "too big inline request"),
        (b"*" + b"1" * 70_000, "too big mbulk count string"),
        (b"*1\r\n$" + b"1" * 70_000, "too big bulk count string"),
        (b'SET "a b\r\n', "unbalanced quotes in request"),
    ],
)
def test_a_broken_protocol_gets_an_error_then_the_connection_is_closed(server, data, reply):
    with server.client() as c:
        c.send(encode("SET", "before", "1") + data)
        assert c.until_eof() == b"+OK\r\n-ERR Protocol error: " + reply.encode() + b"\r\n"
    with server.client() as c:  # the server is fine
        assert c.call("GET", "before") == b"1"


def test_quit_answers_then_closes(server):
    with server.client() as c:
        c.send(encode("PING") + encode("QUIT") + encode("PING"))
        assert c.until_eof() == b"+PONG\r\n+OK\r\n"


def test_what_the_tools_ask_at_start_up(server):
    with server.client() as c:
        assert c.call("CONFIG", "GET", "save") == [b"save", b""]
        assert c.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
        assert c.call("config", "get", "APPEND*", "nosuch") == [b"appendonly", b"no"]
        assert c.call("CONFIG", "GET", "*") == [b"save", b"", b"appendonly", b"no",
                                                b"databases", b"1"]  # fmt: skip
        assert c.call("COMMAND", "DOCS") == []
        assert c.call("COMMAND", "COUNT") == len(rs.TABLE)
        assert c.call("SELECT", "0") == "OK"


def test_keys_expire_on_the_clock(server):
    with server.client() as c:
        assert c.call("SET", "k", "v", "PX", "1500") == "OK"
        assert c.call("PTTL", "k") == 1500
        assert c.call("TTL", "k") == 2  # rounded, as Redis rounds
        server.clock.advance(1.0)
        assert c.call("PTTL", "k") == 500
        assert c.call("TTL", "k") == 1
        server.clock.advance(0.499)
        assert c.call("GET", "k") == b"v"
        server.clock.advance(0.001)  # the deadline: gone
        assert c.call("GET", "k") is None
        assert c.call("TTL", "k") == -2
        assert c.call("SET", "s", "v", "EX", "10") == "OK"
        assert c.call("TTL", "s") == 10
        assert c.call("TTL", "nosuch") == -2


def test_every_command_sees_an_expired_key_as_missing(server):
    # Each key is touched first by a different command after its deadline (before the
    # expiry task could delete it: the fake clock moved, the task's pass comes later).
    names = ["get", "ttl", "pttl", "exists", "mget", "incr", "setnx", "expire", "del", "persist"]
    with server.client() as c:
        assert c.pipeline([("SET", n, "7", "PX", "100") for n in names]) == ["OK"] * len(names)
        server.clock.advance(0.1)
        assert c.pipeline(
            [("GET", "get"), ("TTL", "ttl"), ("PTTL", "pttl"), ("EXISTS", "exists"),
             ("MGET", "mget"), ("INCR", "incr"), ("SET", "setnx", "new", "NX"),
             ("EXPIRE", "expire", "100"), ("DEL", "del"), ("PERSIST", "persist")]
        ) == [None, -2, -2, 0, [None], 1, "OK", 0, 0, 0]  # fmt: skip
        assert c.call("MGET", "incr", "setnx", "expire") == [b"1", b"new", None]
        assert c.call("TTL", "incr") == -1 and c.call("TTL", "setnx") == -1


def test_what_keeps_and_what_clears_a_deadline(server):
    with server.client() as c:
        c.pipeline([("SET", "n", "1", "EX", "100"), ("SET", "k", "v", "EX", "100")])
        assert c.call("INCR", "n") == 2
        assert c.call("TTL", "n") == 100  # INCR keeps it
        assert c.call("SET", "k", "w", "KEEPTTL") == "OK"
        assert c.call("TTL", "k") == 100
        assert c.call("SET", "k", "x") == "OK"
        assert c.call("TTL", "k") == -1  # a plain SET clears it
        assert c.call("EXPIRE", "k", "50") == 1
        assert c.call("PERSIST", "k") == 1
        assert c.call("PERSIST", "k") == 0
        assert c.call("TTL", "k") == -1
        assert c.call("MSET", "n", "5") == "OK"
        assert c.call("TTL", "n") == -1  # MSET too


def test_expire_options(server):
    with server.client() as c:
        c.pipeline([("SET", "k", "v"), ("SET", "t", "v", "EX", "100")])
        assert c.call("EXPIRE", "nosuch", "10") == 0
        assert c.call("EXPIRE", "k", "10", "XX") == 0  # no deadline yet
        assert c.call("EXPIRE", "k", "10", "GT") == 0  # none is infinite: nothing is greater
        assert c.call("EXPIRE", "k", "10", "NX") == 1
        assert c.call("EXPIRE", "k", "20", "NX") == 0
        assert c.call("EXPIRE", "k", "5", "GT") == 0
        assert c.call("EXPIRE", "k", "30", "gt") == 1
        assert c.call("TTL", "k") == 30
        assert c.call("EXPIRE", "k", "40", "LT") == 0
        assert c.call("EXPIRE", "k", "20", "LT", "XX") == 1
        assert c.call("PEXPIRE", "k", "1234") == 1
        assert c.call("PTTL", "k") == 1234
        assert c.call("EXPIRE", "t", "0") == 1  # a deadline now deletes at once
        assert c.call("EXISTS", "t") == 0
        assert c.call("EXPIRE", "k", "-5") == 1
        assert c.call("DBSIZE") == 0


def test_keys_nobody_touches_are_deleted_by_the_expiry_task(server):
    with server.client() as c:
        commands: list[tuple[Arg, ...]] = [
            ("SET", f"t{i}", "v", "PX", 100 + i) for i in range(3000)
        ]
        commands += [("SET", f"keep{i}", "v") for i in range(10)]
        assert set(c.pipeline(commands)) == {"OK"}
        assert c.call("DBSIZE") == 3010
        server.clock.advance(10)  # all 3,000 deadlines have passed; nobody reads those keys
        deadline = time.monotonic() + TIMEOUT
        while (size := c.call("DBSIZE")) != 10 and time.monotonic() < deadline:
            time.sleep(0.02)  # the task runs ten times a second
        assert size == 10
        assert c.call("MGET", "keep0", "keep9") == [b"v", b"v"]
    assert server.db.heap_size() == 0 and not server.db.expires


# ── 2b. The same script against a real Redis, when there is one ───────────────

SCRIPT: list[tuple[Arg, ...]] = [
    ("FLUSHALL",), ("PING",), ("PING", "x"), ("ECHO", b"\x00\r\n"), ("SET", "k", b"\xff\r\n"),
    ("GET", "k"), ("GET", "nosuch"), ("SET", "k", "v", "NX"), ("SET", "k", "w", "XX", "GET"),
    ("SET", "k2", "v", "EX", "100"), ("TTL", "k2"), ("PTTL", "nosuch"), ("TTL", "k"),
    ("SET", "k2", "v", "KEEPTTL"), ("TTL", "k2"), ("PERSIST", "k2"), ("TTL", "k2"),
    ("EXPIRE", "k2", "100", "GT"), ("EXPIRE", "k2", "100", "LT"), ("EXPIRE", "k2", "50", "LT"),
    ("EXPIRE", "k2", "60", "NX"), ("EXPIRE", "k2", "0"), ("EXISTS", "k2", "k", "k"),
    ("INCR", "n"), ("INCRBY", "n", "100"), ("DECR", "n"), ("DECRBY", "n", "-3"), ("INCR", "k"),
    ("INCRBY", "n", "1.5"), ("SET", "n", "9223372036854775807"), ("INCR", "n"),
    ("DECRBY", "n", "-9223372036854775808"), ("MSET", "a", "1", "b", "2"), ("MSET", "a"),
    ("MGET", "a", "b", "zz"), ("DEL", "a", "b", "zz"), ("DBSIZE",), ("SET", "k", "v", "EX", "0"),
    ("SET", "k", "v", "EX", "x"), ("SET", "k", "v", "NX", "XX"), ("SET", "k", "v", "PX"),
    ("SET", "k", "v", "GET", "GET"), ("SET", "k", "v", "EX", "1", "KEEPTTL"), ("GET",),
    ("ECHO",), ("NOSUCH",), ("nosuch", "a", "b\r\nc"), ("EXPIRE", "k", "1", "XX", "NX"),
    ("EXPIRE", "k", "1", "bogus"), ("EXPIRE", "k", "99999999999999999"), ("SELECT", "0"),
    ("SELECT", "x"), ("CONFIG",), ("CONFIG", "GET"), ("CONFIG", "BOGUS"), ("FLUSHDB", "x"),
    ("FLUSHDB", "ASYNC"), ("DBSIZE",), ("CONFIG", "GET", "appendonly"),
]  # fmt: skip
PROTOCOL_ERRORS = [b"*x\r\n", b"*1\r\n$x\r\n", b"*1\r\n+PING\r\n", b'PING "x\r\n', b"*-1\r\n"]


def play(port: int) -> list[bytes]:
    """The exact reply bytes to SCRIPT, then to each broken request on a new connection."""
    with Client(port) as c:
        c.send(b"".join(encode(*cmd) for cmd in SCRIPT))
        replies = [c.raw_reply() for _ in SCRIPT]
        c.send(b"PING\r\nECHO 'in line'\r\n")
        replies += [c.raw_reply(), c.raw_reply()]
        c.sock.shutdown(socket.SHUT_WR)
        assert c.until_eof() == b"", "more replies than commands"
    for data in PROTOCOL_ERRORS:
        with Client(port) as c:
            c.send(data + encode("PING"))
            c.sock.shutdown(socket.SHUT_WR)
            replies.append(c.until_eof())
    return replies


@pytest.fixture
def real_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with Client(port) as c:
                    if c.call("PING") == "PONG":
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)


def test_the_replies_are_the_bytes_a_real_redis_sends(server, real_redis):
    ours, theirs = play(server.port), play(real_redis)
    for (i, a), b in zip(enumerate(ours), theirs):
        what = SCRIPT[i] if i < len(SCRIPT) else "inline / protocol error"
        assert a == b, f"{what}: ours {a!r}, redis {b!r}"
    assert len(ours) == len(theirs)


# ── 2c. The self-test, as a program ───────────────────────────────────────────


def test_selftest(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(EXAMPLE), "--selftest", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("listening on 127.0.0.1:")
    assert "selftest passed: 5 clients" in proc.stdout


# ── 3. redis-cli against the server as a program ──────────────────────────────

TOOLS = [tool for tool in ("redis-cli", "redis-benchmark") if shutil.which(tool) is None]
needs_tools = pytest.mark.skipif(
    bool(TOOLS), reason=f"{' and '.join(TOOLS)} not on PATH (apt-get install redis-tools)"
)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server() -> tuple[subprocess.Popen[str], int, Any]:
    """``redis_server.py --port 0`` as a child process; it, its port, its stderr file."""
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-W", "error::ResourceWarning", str(EXAMPLE), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        # Ctrl-C must reach it even when the tests run in a background job, whose
        # children start with SIGINT ignored (and Python then leaves it ignored).
        preexec_fn=default_sigint,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30.0)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("listening on 127.0.0.1:"):
        proc.kill()
        proc.communicate()
        errors.seek(0)
        raise AssertionError(f"the server did not start: {line!r} {errors.read()!r}")
    return proc, int(line.rsplit(":", 1)[1]), errors


def stop_server(proc: subprocess.Popen[str], errors: Any) -> tuple[int, str, str]:
    """Ctrl-C it; its exit status, the rest of its output and its stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    errors.seek(0)
    stderr = errors.read().decode(errors="replace")
    errors.close()
    return proc.returncode, out, stderr


@pytest.fixture(scope="module")
def program():
    """One server program for the whole module (each test uses keys of its own)."""
    if TOOLS:
        pytest.skip(f"{' and '.join(TOOLS)} not on PATH (apt-get install redis-tools)")
    proc, port, errors = start_server()
    try:
        yield port
    finally:
        status, out, stderr = stop_server(proc, errors)
        assert (status, stderr) == (0, ""), f"the server ended badly: {status} {stderr}"


def cli(port: int, *args: Union[str, bytes], stdin: bytes = b"") -> bytes:
    """What ``redis-cli -p PORT ARGS...`` prints (raw, as it does when not on a terminal)."""
    cmd: list[Union[str, bytes]] = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and proc.stderr == b"", (proc.returncode, proc.stderr)
    return proc.stdout


@needs_tools
def test_cli_set_and_get_random_binary_values(program):
    rng = random.Random(2024)
    for i in range(8):
        # Any byte but NUL as an argument (argv is C strings); any byte at all through -x.
        value = bytes(rng.choice(range(1, 256)) for _ in range(rng.randint(1, 300)))
        assert cli(program, "SET", f"cli:arg:{i}", value) == b"OK\n"
        assert cli(program, "GET", f"cli:arg:{i}") == value + b"\n"
        blob = rng.randbytes(rng.randint(1, 5000))
        assert cli(program, "-x", "SET", f"cli:stdin:{i}", stdin=blob) == b"OK\n"
        assert cli(program, "GET", f"cli:stdin:{i}") == blob + b"\n"
    assert cli(program, "GET", "cli:nosuch") == b"\n"


@needs_tools
def test_cli_counters_lists_and_expiry(program):
    assert cli(program, "INCR", "cli:n") == b"1\n"
    assert cli(program, "INCRBY", "cli:n", "41") == b"42\n"
    assert cli(program, "MSET", "cli:a", "x", "cli:b", "y z") == b"OK\n"
    assert cli(program, "MGET", "cli:a", "cli:nosuch", "cli:b") == b"x\n\ny z\n"
    assert cli(program, "TTL", "cli:a") == b"-1\n"
    assert cli(program, "EXPIRE", "cli:a", "100") == b"1\n"
    assert cli(program, "TTL", "cli:a") in (b"100\n", b"99\n")  # real time passes here
    assert cli(program, "SET", "cli:gone", "v", "PX", "1") == b"OK\n"
    deadline = time.monotonic() + TIMEOUT
    while cli(program, "EXISTS", "cli:gone") != b"0\n":
        assert time.monotonic() < deadline, "a key with PX 1 never expired"
    assert cli(program, "TTL", "cli:gone") == b"-2\n"


@needs_tools
def test_cli_shows_the_error_replies(program):
    assert cli(program, "NOSUCH", "a") == (
        b"ERR unknown command 'NOSUCH', with args beginning with: 'a' \n\n"
    )
    assert cli(program, "GET") == b"ERR wrong number of arguments for 'get' command\n\n"
    assert (
        cli(program, "SET", "k", "v", "EX", "0") == b"ERR invalid expire time in 'set' command\n\n"
    )
    assert cli(program, "PING") == b"PONG\n"


@needs_tools
def test_cli_pipe_mode_then_every_value_reads_back(program):
    rng = random.Random(5)
    values = {f"pipe:{i}".encode(): rng.randbytes(rng.randint(0, 200)) for i in range(5000)}
    data = b"".join(encode("SET", k, v) for k, v in values.items())
    out = cli(program, "--pipe", stdin=data)
    assert out.endswith(b"errors: 0, replies: 5000\n"), out
    with Client(program) as c:
        assert c.pipeline([("GET", k) for k in values]) == list(values.values())


@needs_tools
def test_malformed_input_on_a_raw_socket_does_not_hurt_the_server(program):
    for data, reply in [
        (b"*1\r\n$x\r\n", b"invalid bulk length"),
        (b"*1\r\n$999999999\r\n", b"invalid bulk length"),
        (b"x" * 100_000, b"too big inline request"),
    ]:
        with Client(program) as c:
            c.send(data)
            assert c.until_eof() == b"-ERR Protocol error: " + reply + b"\r\n"
    with Client(program) as c:  # a client that hangs up in the middle of a command
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc")
    assert cli(program, "PING") == b"PONG\n"


@needs_tools
def test_ctrl_c_closes_every_connection_and_exits_cleanly():
    proc, port, errors = start_server()
    try:
        with Client(port) as c:
            assert c.call("SET", "k", "v") == "OK"
            status, out, stderr = stop_server(proc, errors)
            assert c.until_eof() == b""  # the server closed our connection
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (status, stderr) == (0, "")
    assert out == "interrupted: every connection is closed, bye\n"


# ── 4. redis-benchmark ────────────────────────────────────────────────────────

BENCH_TESTS = {"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"}


def benchmark(port: int, *args: str) -> dict[str, float]:
    """Run redis-benchmark with ``args`` and ``--csv``; requests per second, by test."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--csv", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    # It warns when CONFIG GET fails, and prints every error reply it gets.
    assert proc.stderr == "", proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0][:2] == ["test", "rps"], rows[0]
    return {row[0]: float(row[1]) for row in rows[1:]}


@needs_tools
@pytest.mark.parametrize("pipeline, requests", [(1, 2000), (16, 10_000)])
def test_benchmark_runs_every_test_and_the_data_is_right(program, pipeline, requests):
    cli(program, "DEL", "counter:__rand_int__", "key:__rand_int__")
    rates = benchmark(
        program, "-t", "ping,set,get,incr,mset", "-c", "50", "-n", str(requests),
        "-P", str(pipeline),
    )  # fmt: skip
    assert set(rates) == BENCH_TESTS
    assert all(rate > 0 for rate in rates.values()), rates
    # Without -r every INCR hits the same key, named literally "counter:__rand_int__".
    assert cli(program, "GET", "counter:__rand_int__") == b"%d\n" % requests
    value = cli(program, "GET", "key:__rand_int__")  # SET and MSET: -d 3, random letters
    assert len(value) == 4 and value.endswith(b"\n"), value


@needs_tools
def test_fifty_clients_incr_one_counter_to_the_exact_total(program):
    cli(program, "DEL", "counter:__rand_int__")
    benchmark(program, "-t", "incr", "-c", "50", "-n", "3000", "-P", "1")
    assert cli(program, "GET", "counter:__rand_int__") == b"3000\n"
    benchmark(program, "-t", "incr", "-c", "50", "-n", "7007", "-P", "7")  # whole pipelines
    assert cli(program, "GET", "counter:__rand_int__") == b"10007\n"


@needs_tools
def test_after_a_benchmark_distinct_values_read_back_from_many_connections(program):
    benchmark(program, "-t", "set,get", "-c", "50", "-n", "5000", "-P", "16", "-r", "1000")
    rng = random.Random(9)
    values = {f"after:{i}".encode(): b"%d:" % i + rng.randbytes(rng.randint(0, 64))
              for i in range(10_000)}  # fmt: skip
    keys = list(values)
    clients = [Client(program) for _ in range(10)]
    try:
        for n, c in enumerate(clients):  # ten connections write their tenth, pipelined
            c.send(b"".join(encode("SET", k, values[k]) for k in keys[n::10]))
        for n, c in enumerate(clients):
            assert {c.reply() for _ in keys[n::10]} == {"OK"}
        for n, c in enumerate(clients):  # and each reads back another's
            mine = keys[(n + 1) % 10 :: 10]
            assert c.pipeline([("GET", k) for k in mine]) == [values[k] for k in mine]
    finally:
        for c in clients:
            c.close()
