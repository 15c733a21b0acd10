"""A Redis-protocol server on yieldos: strings, expiry, pipelining; the real Redis tools talk to it.

Run it and talk to it with the real client, from another terminal::

    python3 examples/redis_server.py                  # listening on 127.0.0.1:6380
    redis-cli -p 6380 SET greeting hello
    redis-cli -p 6380 GET greeting
    redis-benchmark -p 6380 -t ping,set,get,incr,mset -P 16 -q
    nc 127.0.0.1 6380                                 # type PING, SET k v, GET k...

or let it check itself, with no second terminal::

    python3 examples/redis_server.py --selftest 20

(The default port is 6380 so that it never collides with a real Redis on 6379.)

**The protocol (RESP2).** A client sends each command as an array of byte
strings: ``*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$5\\r\\nhello\\r\\n`` is
``SET k hello``: ``*`` and the number of arguments, then each one as ``$``, its
length, and its bytes. Lengths come first, so values may hold any byte, CRLF
included. Replies are typed by their first byte: ``+OK`` (status), ``-ERR
...`` (error), ``:42`` (integer), ``$5\\r\\nhello`` (bulk string; ``$-1`` is
nil), ``*2`` (array of replies). A person typing into ``nc`` cannot count
bytes, so a line that does not start with ``*`` is an *inline command*:
``SET "a key" 'it\\'s'`` split on spaces, with quotes, as Redis does.

**Pipelining.** A client need not wait for a reply before it sends the next
command; ``redis-benchmark -P 16`` sends sixteen at once. So the server never
reads "one command": it reads whatever arrived (`Stream.read`), runs *every*
complete command in it, writes all the replies into the stream's buffer and
sends them with one ``yield stream.drain()``: one read and one send per batch
instead of per command. That is where a Python server gets its speed.

**Parsing without copying.** The parser (`Session.feed`) walks the received
bytes with an offset, slicing out only the arguments themselves (which become
the stored keys and values). What is left at the end of a batch is the start
of a command still in flight: the arguments of an array already read are kept
(`Session.argv`), and the bytes of a half-received argument wait until its
announced length has arrived (`Session.need`) instead of being parsed again at
every read, so a 100 MB value costs one copy, not a quadratic number of them.

**Commands.** Each is a method of `Database` taking the argument list and
returning the reply's bytes; `Database.commands` is the dispatch table, name
-> (bound method, arity, name for errors), as in Redis's ``redisCommandTable``:
a positive arity is exact, a negative one a minimum. A bad argument raises
`CommandError`, whose reply goes back as ``-ERR ...``, worded as Redis words it;
the connection goes on. Only a broken *protocol* (a length that is not a
number, a bulk over 512 MB, a line over 64 KiB with no end) gets ``-ERR
Protocol error: ...`` and then the connection is closed: past that point the
server cannot know where the next command starts. Real Redis does the same.

**Expiry.** A key may carry a deadline, in milliseconds of the kernel clock
(`syscalls.clock`). It is checked *lazily*, whenever the key is touched: an
expired key is deleted right there and behaves as missing. Keys nobody touches
again are removed by the *active* expiry task (`expire_keys`): ten times a
second it deletes the keys whose deadline has passed, at most `EXPIRE_BATCH`
per pass (a pass that found more yields and goes again), so memory never fills
with dead keys and no pass stalls the other tasks. Redis finds such keys by
sampling random keys with a deadline; a Python dict cannot hand out a random
key cheaply, so the deadlines are kept in a heap instead -- the same design as
the kernel's own timer queue (kernel/timers.py): the next deadline is always on
top, an entry made stale by a new ``SET`` or a ``DEL`` is skipped when it
reaches the top, and the heap is rebuilt once stale entries outnumber live ones.
The clock is a parameter of `Database`, so the tests move time by hand.

``--selftest N`` starts the server and N clients in the same kernel. Each
client runs commands one at a time, then as pipelines of a hundred, inline
commands, commands that must fail (unknown, wrong arity, bad options), keys
that expire, and a malformed request on a second connection; every reply is
compared with the exact bytes expected. All clients also ``INCR`` one shared
counter, whose total is checked at the end. The program exits 0 when every
reply was right.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import heapq
import sys
from pathlib import Path
from typing import Any, Callable, Generator, Optional

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from syscalls import (  # noqa: E402
    Queue,
    TaskGroup,
    clock,
    join,
    kill,
    move_on_after,
    sleep,
    spawn,
    task_group,
)
from syscalls.streams import Listener, Stream, open_connection, serve_tcp  # noqa: E402

DEFAULT_PORT = 6380
CHUNK = 1 << 16  # the most bytes one read asks for
MAX_BULK = 512 << 20  # the longest argument, as Redis's proto-max-bulk-len
MAX_INLINE = 64 << 10  # the longest line without its end: inline command, or a * or $ header
MAX_ARGS = (1 << 31) - 1  # the most arguments in one command (Redis: INT_MAX)
LINGER = 1.0  # seconds spent reading what a client still sends after we decided to close
EXPIRE_INTERVAL = 0.1  # seconds between two passes of the active expiry task
EXPIRE_BATCH = 200  # the most deadlines one pass looks at before it lets others run
COMPACT_MIN = 64  # the deadline heap is rebuilt (stale entries > live ones) only past this size
LLONG_MAX = (1 << 63) - 1  # Redis integers are signed 64-bit
LLONG_MIN = -(1 << 63)

CRLF = b"\r\n"
OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"

# Error messages Redis uses, word for word.
NOT_INTEGER = "value is not an integer or out of range"
SYNTAX = "syntax error"
OVERFLOW = "increment or decrement would overflow"
BAD_EXPIRE = "invalid expire time in '{}' command"
ARGS = "with args beginning with: "

#: What ``CONFIG GET`` knows. redis-benchmark asks for ``save`` and ``appendonly`` before a
#: run (to warn about a server that writes to disk meanwhile): nothing is ever saved here.
CONFIG = {"save": "", "appendonly": "no", "databases": "1"}


class CommandError(Exception):
    """A command's arguments are wrong: answer ``-ERR <message>``, keep the connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = error(message)


class ProtocolError(Exception):
    """The bytes are not RESP: answer ``-ERR Protocol error: <message>``, then close."""


class Quit(Exception):
    """``QUIT``: answer ``+OK``, then close."""


def error(message: str) -> bytes:
    """An error reply. Its message must stay on one line: CR and LF become spaces."""
    line = f"-ERR {message}".replace("\r", " ").replace("\n", " ")
    return line.encode("latin-1") + CRLF


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(values: list[Optional[bytes]]) -> bytes:
    """An array of bulk strings; None is nil."""
    parts = [b"*%d\r\n" % len(values)]
    for value in values:
        parts.append(NIL if value is None else b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def to_int(arg: bytes) -> int:
    """``arg`` as a 64-bit integer, written exactly as Redis writes one ("12", "-3"; not
    "+1", " 1", "007", "-0", "1_0"), else `CommandError` (``value is not an integer``)."""
    if len(arg) <= 20:  # the longest: "-9223372036854775808"
        try:
            value = int(arg)
        except ValueError:
            pass
        else:
            # int() is lenient (spaces, "+", "_", leading zeros): only its own spelling counts.
            if LLONG_MIN <= value <= LLONG_MAX and b"%d" % value == arg:
                return value
    raise CommandError(NOT_INTEGER)


def text(arg: bytes) -> str:
    """An argument as text in a message; latin-1 gives back every byte as it came."""
    return arg.decode("latin-1")


# ── The database ──────────────────────────────────────────────────────────────


Command = Callable[[list[bytes]], bytes]


class Database:
    """The keyspace: byte-string keys to byte-string values, some with a deadline.

    ``clock`` returns seconds (default: the kernel clock); deadlines are kept
    in whole milliseconds of it, as Redis keeps them. A key is expired once the
    clock reaches its deadline. Invariants: every key of `expires` is in
    `data`; every deadline in `expires` has an entry in `_heap` (which may
    also hold stale ones).
    """

    def __init__(self, clock: Optional[Callable[[], float]] = None) -> None:
        self.data: dict[bytes, bytes] = {}
        self.expires: dict[bytes, int] = {}  # key -> deadline, in ms of the clock
        self._heap: list[tuple[int, bytes]] = []  # (deadline, key), soonest on top
        self._clock = clock if clock is not None else default_clock
        #: name (upper case) -> (bound method, arity, name in error messages)
        self.commands: dict[bytes, tuple[Command, int, str]] = {}
        for name, arity in TABLE:
            method = "delete_keys" if name == "DEL" else name.lower()  # `del` is a keyword
            self.commands[name.encode()] = (getattr(self, method), arity, name.lower())
        self.unknown: tuple[Command, int, str] = (self.unknown_command, -1, "")

    def now(self) -> int:
        """The clock now, in milliseconds."""
        return int(self._clock() * 1000)

    # ── Keys and deadlines ──────────────────────────────────────────────────

    def lookup(self, key: bytes) -> Optional[bytes]:
        """The value of ``key``, or None if it is missing or expired (and then deleted)."""
        value = self.data.get(key)
        if value is not None and self.expires and key in self.expires:
            if self.expires[key] <= self.now():
                self.delete(key)
                return None
        return value

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was there (its heap entry goes stale)."""
        if self.data.pop(key, None) is None:
            return False
        if self.expires:
            self.expires.pop(key, None)
        return True

    def store(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``, without a deadline."""
        self.data[key] = value
        if self.expires:
            self.expires.pop(key, None)

    def set_deadline(self, key: bytes, when: int) -> None:
        self.expires[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if len(heap) > COMPACT_MIN and len(heap) > 2 * len(self.expires):
            # Most entries are stale (keys deleted, deadlines changed): keep the live ones.
            self._heap = [(when, key) for key, when in self.expires.items()]
            heapq.heapify(self._heap)

    def expire_due(self, limit: int = EXPIRE_BATCH) -> int:
        """Delete the keys whose deadline has passed, looking at ``limit`` heap entries at
        most; return how many entries were looked at (``limit``: maybe more are due)."""
        heap = self._heap
        now = self.now()
        seen = 0
        while heap and heap[0][0] <= now and seen < limit:
            when, key = heapq.heappop(heap)
            if self.expires.get(key) == when:  # else stale: the key changed since
                self.delete(key)
            seen += 1
        return seen

    def heap_size(self) -> int:
        """How many deadlines the heap holds, stale ones included (for the tests)."""
        return len(self._heap)

    def flush(self) -> None:
        self.data.clear()
        self.expires.clear()
        self._heap.clear()

    def ttl_ms(self, key: bytes) -> int:
        """Milliseconds ``key`` has left: -2 if it does not exist, -1 if it has no deadline."""
        if self.lookup(key) is None:
            return -2
        when = self.expires.get(key)
        return -1 if when is None else max(when - self.now(), 0)

    def deadline_after(self, amount: int, unit: int, command: str) -> int:
        """The deadline ``amount`` seconds (``unit`` 1000) or ms (1) from now, in ms."""
        if unit != 1 and abs(amount) > LLONG_MAX // unit:  # (C's division truncates)
            raise CommandError(BAD_EXPIRE.format(command))
        amount *= unit
        now = self.now()
        if amount > LLONG_MAX - now:
            raise CommandError(BAD_EXPIRE.format(command))
        return now + amount

    # ── Commands: each takes the arguments (name first) and returns the reply ─

    def unknown_command(self, argv: list[bytes]) -> bytes:
        # As Redis: the name as sent, then the first arguments, 128 characters at most.
        shown = ""
        for arg in argv[1:]:
            if len(shown) >= 128:
                break
            shown += f"'{text(arg)[: 128 - len(shown)]}' "
        return error(f"unknown command '{text(argv[0])[:128]}', {ARGS}{shown}")

    def ping(self, argv: list[bytes]) -> bytes:
        if len(argv) == 1:
            return PONG
        if len(argv) == 2:
            return bulk(argv[1])
        raise CommandError("wrong number of arguments for 'ping' command")

    def echo(self, argv: list[bytes]) -> bytes:
        return bulk(argv[1])

    def get(self, argv: list[bytes]) -> bytes:
        key = argv[1]
        value = self.data.get(key)
        if value is None:
            return NIL
        if self.expires and key in self.expires and self.expires[key] <= self.now():
            self.delete(key)
            return NIL
        return b"$%d\r\n%s\r\n" % (len(value), value)

    def set(self, argv: list[bytes]) -> bytes:
        key = argv[1]
        if len(argv) == 3:  # the common case: no options
            self.data[key] = argv[2]
            if self.expires:
                self.expires.pop(key, None)
            return OK
        # SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | KEEPTTL]
        nx = xx = get = keepttl = False
        unit = 0  # 1000 for EX, 1 for PX
        amount = b""
        i = 3
        while i < len(argv):
            option = argv[i].upper()
            if option == b"NX" and not xx:
                nx = True
            elif option == b"XX" and not nx:
                xx = True
            elif option == b"GET":
                get = True
            elif option == b"KEEPTTL" and not unit:
                keepttl = True
            elif option in (b"EX", b"PX") and not unit and not keepttl and i + 1 < len(argv):
                unit = 1000 if option == b"EX" else 1
                i += 1
                amount = argv[i]  # whatever follows, as Redis: "EX NX" is a bad number
            else:
                raise CommandError(SYNTAX)
            i += 1
        when = 0
        if unit:
            seconds = to_int(amount)
            if seconds <= 0:
                raise CommandError(BAD_EXPIRE.format("set"))
            when = self.deadline_after(seconds, unit, "set")
        old = self.lookup(key)
        if (nx and old is not None) or (xx and old is None):
            return NIL if not get or old is None else bulk(old)
        if keepttl:
            self.data[key] = argv[2]
        else:
            self.store(key, argv[2])
        if unit:
            self.set_deadline(key, when)
        if get:
            return NIL if old is None else bulk(old)
        return OK

    def delete_keys(self, argv: list[bytes]) -> bytes:
        count = 0
        for key in argv[1:]:
            if self.lookup(key) is not None:
                self.delete(key)
                count += 1
        return b":%d\r\n" % count

    def exists(self, argv: list[bytes]) -> bytes:
        count = 0
        for key in argv[1:]:  # a key named twice counts twice, as in Redis
            if self.lookup(key) is not None:
                count += 1
        return b":%d\r\n" % count

    def add(self, key: bytes, delta: int) -> bytes:
        value = self.lookup(key)
        number = 0 if value is None else to_int(value)
        number += delta
        if not LLONG_MIN <= number <= LLONG_MAX:
            raise CommandError(OVERFLOW)
        self.data[key] = b"%d" % number  # a deadline stays, as in Redis
        return b":%d\r\n" % number

    def incr(self, argv: list[bytes]) -> bytes:
        return self.add(argv[1], 1)

    def decr(self, argv: list[bytes]) -> bytes:
        return self.add(argv[1], -1)

    def incrby(self, argv: list[bytes]) -> bytes:
        return self.add(argv[1], to_int(argv[2]))

    def decrby(self, argv: list[bytes]) -> bytes:
        delta = to_int(argv[2])
        if delta == LLONG_MIN:  # its negation does not fit in 64 bits
            raise CommandError("decrement would overflow")
        return self.add(argv[1], -delta)

    def mget(self, argv: list[bytes]) -> bytes:
        return array([self.lookup(key) for key in argv[1:]])

    def mset(self, argv: list[bytes]) -> bytes:
        if len(argv) % 2 == 0:
            raise CommandError("wrong number of arguments for 'mset' command")
        for i in range(1, len(argv), 2):
            self.store(argv[i], argv[i + 1])
        return OK

    def expire(self, argv: list[bytes]) -> bytes:
        return self.expire_generic(argv, 1000, "expire")

    def pexpire(self, argv: list[bytes]) -> bytes:
        return self.expire_generic(argv, 1, "pexpire")

    def expire_generic(self, argv: list[bytes], unit: int, command: str) -> bytes:
        """EXPIRE key seconds [NX | XX | GT | LT] (PEXPIRE: milliseconds)."""
        flags = set()
        for arg in argv[3:]:
            option = arg.upper()
            if option not in (b"NX", b"XX", b"GT", b"LT"):
                raise CommandError(f"Unsupported option {text(arg)}")
            flags.add(option)
        if b"NX" in flags and len(flags) > 1:
            raise CommandError("NX and XX, GT or LT options at the same time are not compatible")
        if b"GT" in flags and b"LT" in flags:
            raise CommandError("GT and LT options at the same time are not compatible")
        when = self.deadline_after(to_int(argv[2]), unit, command)
        key = argv[1]
        if self.lookup(key) is None:
            return ZERO
        current = self.expires.get(key)  # None: no deadline, i.e. an infinite one
        if (
            (b"NX" in flags and current is not None)
            or (b"XX" in flags and current is None)
            or (b"GT" in flags and (current is None or when <= current))
            or (b"LT" in flags and current is not None and when >= current)
        ):
            return ZERO
        if when <= self.now():  # a deadline in the past deletes the key at once
            self.delete(key)
        else:
            self.set_deadline(key, when)
        return ONE

    def persist(self, argv: list[bytes]) -> bytes:
        key = argv[1]
        if self.lookup(key) is None or self.expires.pop(key, None) is None:
            return ZERO
        return ONE

    def ttl(self, argv: list[bytes]) -> bytes:
        ms = self.ttl_ms(argv[1])
        return b":%d\r\n" % (ms if ms < 0 else (ms + 500) // 1000)

    def pttl(self, argv: list[bytes]) -> bytes:
        return b":%d\r\n" % self.ttl_ms(argv[1])

    def dbsize(self, argv: list[bytes]) -> bytes:
        # Like Redis, this counts keys that have expired but were not deleted yet.
        return b":%d\r\n" % len(self.data)

    def flushdb(self, argv: list[bytes]) -> bytes:
        if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
            raise CommandError(SYNTAX)
        self.flush()
        return OK

    flushall = flushdb  # one database: the same thing

    def select(self, argv: list[bytes]) -> bytes:
        if to_int(argv[1]) != 0:
            raise CommandError("DB index is out of range")
        return OK

    def config(self, argv: list[bytes]) -> bytes:
        """CONFIG GET pattern [pattern ...]: the known parameters matching a glob pattern."""
        sub = argv[1].upper()
        if sub != b"GET":
            raise CommandError(f"unknown subcommand '{text(argv[1])}'. Try CONFIG HELP.")
        if len(argv) < 3:
            raise CommandError("wrong number of arguments for 'config|get' command")
        found: dict[str, str] = {}
        for pattern in argv[2:]:
            for name, value in CONFIG.items():
                if fnmatch.fnmatchcase(name, text(pattern).lower()):
                    found[name] = value
        return array([part.encode() for pair in found.items() for part in pair])

    def command(self, argv: list[bytes]) -> bytes:
        """COMMAND COUNT; anything else (COMMAND, COMMAND DOCS...) gets an empty array:
        redis-cli asks for the docs at start-up, and does without them."""
        if len(argv) == 2 and argv[1].upper() == b"COUNT":
            return b":%d\r\n" % len(TABLE)
        return EMPTY_ARRAY

    def quit(self, argv: list[bytes]) -> bytes:
        raise Quit


#: The dispatch table: command name -> arity (exact if > 0, a minimum if < 0), as Redis's.
#: The method of `Database` that runs one is its name in lower case.
TABLE: list[tuple[str, int]] = [
    ("PING", -1), ("ECHO", 2), ("SET", -3), ("GET", 2), ("DEL", -2), ("EXISTS", -2),
    ("INCR", 2), ("DECR", 2), ("INCRBY", 3), ("DECRBY", 3), ("MGET", -2), ("MSET", -3),
    ("EXPIRE", -3), ("PEXPIRE", -3), ("PERSIST", 2), ("TTL", 2), ("PTTL", 2),
    ("DBSIZE", 1), ("FLUSHDB", -1), ("FLUSHALL", -1), ("SELECT", 2), ("CONFIG", -2),
    ("COMMAND", -1), ("QUIT", -1),
]  # fmt: skip


def default_clock() -> float:
    return clock()


# ── Reading commands ──────────────────────────────────────────────────────────


#: Headers up to this length are looked up in a table instead of being parsed (hot path).
SMALL = 1024
_ARRAY_HEADERS = {b"*%d" % n: n for n in range(SMALL)}
_BULK_HEADERS = {b"$%d" % n: n for n in range(SMALL)}


def array_length(header: bytes) -> int:
    """The length of ``*<n>`` (0 for a null array, ``*-1``); a bad one is a protocol error."""
    digits = header[1:]
    if digits.isdigit() and len(digits) <= 10 and int(digits) <= MAX_ARGS:
        return int(digits)
    if digits[:1] == b"-" and digits[1:].isdigit():
        return 0  # a null array: no command at all
    raise ProtocolError("invalid multibulk length")


def bulk_length(header: bytes) -> int:
    """The length of ``$<n>``, from 0 to MAX_BULK; anything else is a protocol error."""
    if header[:1] != b"$":
        raise ProtocolError(f"expected '$', got '{text(header[:1])}'")
    digits = header[1:]
    if digits.isdigit() and len(digits) <= 10 and int(digits) <= MAX_BULK:
        return int(digits)
    raise ProtocolError("invalid bulk length")


class Session:
    """One connection's parser state, between two reads.

    `feed` takes the bytes just received and returns the replies to every
    complete command among them (and before them). A command may arrive in
    pieces: `argv` holds the arguments of an array already read and `nargs`
    how many are still to come, `tail` the bytes of the next piece that is not
    complete yet, and `need` how many bytes that piece needs: until that many
    are buffered (in `chunks`), nothing is parsed again.
    """

    __slots__ = ("db", "tail", "chunks", "buffered", "need", "argv", "nargs", "closing")

    def __init__(self, db: Database) -> None:
        self.db = db
        self.tail = b""  # unparsed bytes received before `chunks`
        self.chunks: list[bytes] = []  # received since, not parsed yet
        self.buffered = 0  # len(tail) + the lengths of `chunks`
        self.need = 0  # parse again once `buffered` reaches this
        self.argv: list[bytes] = []  # the arguments of the command being read
        self.nargs = 0  # how many of its arguments are still to come
        self.closing = False  # a protocol error or QUIT: close after these replies

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; return the replies to every command now complete."""
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered < self.need or self.closing:
            return b""
        if not self.tail and len(self.chunks) == 1:
            buf = data  # the common case: no copy at all
        else:
            buf = self.tail + b"".join(self.chunks)
        self.chunks.clear()
        out: list[bytes] = []
        pos = self.parse(buf, out)
        self.tail = buf[pos:] if pos < len(buf) else b""
        self.buffered = len(self.tail)
        return out[0] if len(out) == 1 else b"".join(out)

    def parse(self, buf: bytes, out: list[bytes]) -> int:
        """Run the complete commands at the front of ``buf``, appending their replies to
        ``out``; return how many bytes were used. (The hot path: one pass with an offset,
        local variables, headers looked up in a table, no slices but the arguments.)"""
        commands = self.db.commands
        unknown = self.db.unknown
        end = len(buf)
        pos = 0
        argv = self.argv
        nargs = self.nargs
        self.need = 0
        try:
            while pos < end:
                if not nargs:
                    if buf[pos] != 42:  # not "*": an inline command, up to "\n"
                        nl = buf.find(b"\n", pos)
                        if nl < 0:
                            if end - pos > MAX_INLINE:
                                raise ProtocolError("too big inline request")
                            break
                        argv = split_inline(buf[pos:nl])
                        pos = nl + 1
                        if not argv:
                            continue  # an empty line: nothing to answer
                    else:
                        nl = buf.find(b"\r\n", pos)
                        if nl < 0:
                            if end - pos > MAX_INLINE:
                                raise ProtocolError("too big mbulk count string")
                            break
                        header = buf[pos:nl]
                        nargs = _ARRAY_HEADERS.get(header, -1)
                        if nargs < 0:
                            nargs = array_length(header)
                        pos = nl + 2
                        if not nargs:
                            continue  # *0 or *-1: no command
                        argv = []
                while nargs:  # the arguments of an array: "$<length>\r\n<bytes>\r\n"
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        if end - pos > MAX_INLINE:
                            raise ProtocolError("too big bulk count string")
                        break
                    header = buf[pos:nl]
                    size = _BULK_HEADERS.get(header, -1)
                    if size < 0:
                        size = bulk_length(header)
                    start = nl + 2
                    stop = start + size
                    if stop + 2 > end:
                        self.need = stop + 2 - pos  # counted from `pos`: the tail's start
                        break
                    argv.append(buf[start:stop])
                    pos = stop + 2  # (the CRLF after the bytes is skipped unread, as Redis)
                    nargs -= 1
                if nargs:
                    break  # the rest has not arrived yet
                # A complete command: dispatch it.
                entry = commands.get(argv[0])
                if entry is None:
                    entry = commands.get(argv[0].upper(), unknown)
                fn, arity, name = entry
                if len(argv) == arity or (arity < 0 and len(argv) >= -arity):
                    try:
                        out.append(fn(argv))
                    except CommandError as exc:
                        out.append(exc.reply)
                else:
                    out.append(error(f"wrong number of arguments for '{name}' command"))
        except ProtocolError as exc:
            out.append(error(f"Protocol error: {exc}"))
            self.closing = True
            pos = end
        except Quit:
            out.append(OK)
            self.closing = True
            pos = end
        self.argv = argv if nargs else []
        self.nargs = nargs
        return pos


_SPACES = frozenset(b" \t\n\r\x0b\x0c")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:
    """The arguments of an inline command line, split as Redis's ``sdssplitargs`` does:
    on spaces; ``"..."`` with ``\\n``, ``\\xHH``... escapes; ``'...'`` with ``\\'``."""
    if b'"' not in line and b"'" not in line:
        return line.split()  # the common case (and a trailing "\r" goes with the spaces)
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACES:
            i += 1
        if i == n:
            return args
        arg = bytearray()
        quote = 0  # the quote we are inside of, or 0
        while True:
            c = line[i] if i < n else -1
            if quote:
                if c < 0:
                    raise ProtocolError("unbalanced quotes in request")
                if c == quote:
                    if i + 1 < n and line[i + 1] not in _SPACES:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                if c == 92 and quote == 34 and i + 1 < n:  # a backslash inside "..."
                    if (
                        line[i + 1] == 120  # \xHH
                        and i + 3 < n
                        and line[i + 2] in _HEX
                        and line[i + 3] in _HEX
                    ):
                        arg.append(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    i += 1
                    c = _ESCAPES.get(line[i], line[i])
                elif c == 92 and quote == 39 and i + 1 < n and line[i + 1] == 39:  # \' in '...'
                    i += 1
                    c = 39
                arg.append(c)
            elif c < 0 or c in _SPACES:
                break
            elif c in (34, 39):  # " or '
                quote = c
            else:
                arg.append(c)
            i += 1
        args.append(bytes(arg))


# ── The server ────────────────────────────────────────────────────────────────


def handle(db: Database, stream: Stream) -> Generator[Any, Any, None]:
    """Serve one connection: read what arrived, answer every command in it, again."""
    session = Session(db)
    try:
        while True:
            data = yield stream.read(CHUNK)
            if not data:
                return  # the client closed the connection
            reply = session.feed(data)
            if reply:
                stream.write(reply)  # every reply of the batch...
                yield stream.drain()  # ... sent at once
            if session.closing:
                yield from linger(stream)
                return
    except OSError:
        return  # reset by the client: serve_tcp closes the stream


def linger(stream: Stream) -> Generator[Any, Any, None]:
    """Half-close, then drop what the client still sends, for `LINGER` seconds at most.

    Closing a socket that has unread input makes TCP send a reset, which can
    destroy the reply we just sent before the client reads it.
    """
    yield stream.write_eof()
    with move_on_after(LINGER):
        while (yield stream.read(CHUNK)):
            pass


def expire_keys(db: Database) -> Generator[Any, Any, None]:
    """The active expiry task: delete keys whose deadline passed, a batch at a time."""
    while True:
        yield sleep(EXPIRE_INTERVAL)
        while db.expire_due(EXPIRE_BATCH) == EXPIRE_BATCH:
            yield sleep(0)  # more may be due: let the connections run, then go on


def serve(
    db: Database,
    host: str,
    port: int,
    on_listen: Optional[Callable[[Listener], None]] = None,
) -> Generator[Any, Any, None]:
    """The server task: `handle` every connection to ``host:port``, with the expiry task
    beside it, in one task group (killing the server ends both)."""

    def body(group: TaskGroup) -> Generator[Any, Any, None]:
        yield group.spawn(expire_keys, db, name="expire_keys")
        handler = functools.partial(handle, db)
        on = on_listen or print_listening
        yield serve_tcp(handler, host, port, backlog=1024, on_listen=on)

    yield task_group(body)


def print_listening(listener: Listener) -> None:
    print(f"listening on {listener.sockname[0]}:{listener.port}", flush=True)


# ── The self-test: server and clients in one kernel ───────────────────────────


def command(*args: bytes) -> bytes:
    """``args`` as a RESP array of bulk strings: how clients send commands."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def exchange(
    stream: Stream, requests: bytes, expected: bytes, what: str
) -> Generator[Any, Any, None]:
    """Send ``requests`` at once, read as many bytes as ``expected`` holds, compare."""
    yield stream.write_all(requests)
    got = yield stream.read_exactly(len(expected))
    if got != expected:
        raise AssertionError(f"{what}: expected {expected[:80]!r}, got {got[:80]!r}")


def redis_client(port: int, client: int, counter_incrs: int) -> Generator[Any, Any, int]:
    """Run the self-test's script on one connection; return the number of commands sent."""
    key = b"client:%d" % client
    value = bytes(range(256)) * (client % 3 + 1) + b"\r\n$3\r\n*1"  # binary, protocol-like
    sent = 0
    stream = yield open_connection("127.0.0.1", port, timeout=10)
    try:
        # One at a time.
        one_by_one = [
            (command(b"PING"), PONG),
            (command(b"SET", key, value), OK),
            (command(b"GET", key), bulk(value)),
            (command(b"ECHO", value), bulk(value)),
            (command(b"EXISTS", key, key, b"nosuch"), b":2\r\n"),
            (command(b"SET", key + b":n", b"41"), OK),
            (command(b"INCR", key + b":n"), b":42\r\n"),
            (command(b"INCRBY", key + b":n", b"-50"), b":-8\r\n"),
            (command(b"DECR", key + b":n"), b":-9\r\n"),
            (command(b"SET", key, b"x", b"NX"), NIL),
            (command(b"SET", key, b"y", b"XX"), OK),
            (command(b"MSET", key + b":a", b"1", key + b":b", b"2"), OK),
            (command(b"MGET", key + b":a", b"nosuch", key + b":b"), array([b"1", None, b"2"])),
            (command(b"TTL", key), b":-1\r\n"),
            (command(b"EXPIRE", key, b"100"), ONE),
            (command(b"TTL", key), b":100\r\n"),
            (command(b"DEL", key, key + b":a", b"nosuch"), b":2\r\n"),
            (command(b"TTL", key), b":-2\r\n"),
        ]
        for request, reply in one_by_one:
            yield from exchange(stream, request, reply, f"client {client}: {request[:60]!r}")
        sent += len(one_by_one)
        # A pipeline: a hundred SETs then a hundred GETs, sent in one write.
        keys = [key + b":p%d" % i for i in range(100)]
        requests = b"".join(command(b"SET", k, k[::-1]) for k in keys)
        requests += b"".join(command(b"GET", k) for k in keys)
        expected = OK * 100 + b"".join(bulk(k[::-1]) for k in keys)
        yield from exchange(stream, requests, expected, f"client {client}: pipeline")
        sent += 200
        # Inline commands, as typed into nc; then commands that must fail, politely.
        errors = [
            (b"PING\r\n", PONG),
            (b'SET "%s inline" "a\\x41\\n"\r\n' % key, OK),
            (b"GET '%s inline'\r\n" % key, bulk(b"aA\n")),
            (command(b"NOSUCH", b"a"), error(f"unknown command 'NOSUCH', {ARGS}'a' ")),
            (command(b"GET"), error("wrong number of arguments for 'get' command")),
            (command(b"SET", key, b"v", b"EX", b"0"), error(BAD_EXPIRE.format("set"))),
            (command(b"SET", key, b"v", b"NX", b"XX"), error(SYNTAX)),
            (command(b"SET", key, b"v", b"PX", b"soon"), error(NOT_INTEGER)),
            (command(b"INCR", key + b":p0"), error(NOT_INTEGER)),
            (command(b"PING"), PONG),  # and the connection goes on
        ]  # fmt: skip
        for request, reply in errors:
            yield from exchange(stream, request, reply, f"client {client}: {request[:60]!r}")
        sent += len(errors)
        # Expiry: a key that lives 50 ms, really gone after 100 ms.
        yield from exchange(stream, command(b"SET", key, b"v", b"PX", b"50"), OK, "SET PX")
        yield sleep(0.1)
        yield from exchange(
            stream, command(b"GET", key) + command(b"TTL", key), NIL + b":-2\r\n", "expired"
        )
        sent += 3
        # The shared counter, pipelined.
        requests = command(b"INCR", b"selftest:counter") * counter_incrs
        yield stream.write_all(requests)
        for _ in range(counter_incrs):
            reply = yield stream.readline()
            if not reply.startswith(b":"):
                raise AssertionError(f"client {client}: INCR answered {reply!r}")
        sent += counter_incrs
        yield from exchange(stream, command(b"QUIT"), OK, f"client {client}: QUIT")
        if (yield stream.read()) != b"":
            raise AssertionError(f"client {client}: the server kept the connection after QUIT")
        sent += 1
    finally:
        yield stream.close()
    # A broken request on a second connection: an error, then the server hangs up.
    stream = yield open_connection("127.0.0.1", port, timeout=10)
    try:
        yield stream.write_all(command(b"PING") + b"*1\r\n$x\r\n")
        got = yield stream.read()
        while (more := (yield stream.read())) != b"":
            got += more
        if got != PONG + error("Protocol error: invalid bulk length"):
            raise AssertionError(f"client {client}: a broken request answered {got!r}")
    finally:
        yield stream.close()
    return sent + 1


def selftest(clients: int, counter_incrs: int = 50) -> Generator[Any, Any, None]:
    """Main task of ``--selftest``: run the server and ``clients`` clients side by side."""
    ports: Queue[int] = Queue()

    def on_listen(listener: Listener) -> None:
        print_listening(listener)
        ports.put_nowait(listener.port)

    db = Database()
    server = yield spawn(serve, db, "127.0.0.1", 0, on_listen, name="server")
    port = yield ports.get()
    tasks = []
    for client in range(clients):
        tasks.append(
            (yield spawn(redis_client, port, client, counter_incrs, name=f"client {client}"))
        )
    total = 0
    for task in tasks:
        total += yield join(task)  # re-raises here whatever made a client fail
    counter = db.lookup(b"selftest:counter")
    if counter != b"%d" % (clients * counter_incrs):
        raise AssertionError(f"the shared counter is {counter!r}, not {clients * counter_incrs}")
    yield kill(server)  # closes every connection, then the listening socket
    print(f"selftest passed: {clients} clients, {total} commands, all replies right", flush=True)


# ── Command line ──────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Redis-protocol server on the yieldos kernel.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port, 0 picks a free one (default {DEFAULT_PORT}, not Redis's 6379)",
    )
    parser.add_argument(
        "--selftest",
        type=int,
        metavar="N",
        default=0,
        help="run N clients against the server in the same kernel (on a free port),"
        " check every reply, exit",
    )
    args = parser.parse_args(argv)
    if args.selftest < 0:
        parser.error("--selftest needs a positive number of clients")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.selftest:
            kernel.run(selftest, args.selftest)
        else:
            kernel.run(serve, Database(), args.host, args.port)
    except KeyboardInterrupt:
        print("interrupted: every connection is closed, bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
