"""Data integrity: a GiB through examples/echo_server.py, checked end to end, on each poller.

One kernel runs the shipped server (its own `serve`, which spawns its own `handle`)
and a client of two tasks sharing one connection: a writer sends a seeded random
byte stream in random chunks and then half-closes; a reader reads the echo, in
random sizes too, until the server closes its side. Writing and reading run at
the same time, so neither direction's buffers can fill up and stall the other.
Each side hashes every byte it saw (SHA-256); the digests and the byte counts
must be equal.

* Chunk and read sizes are log-uniform from 1 byte to 256 KiB: as many writes
  under 16 bytes as of 16 KiB and more, so the server sees everything from a byte
  at a time to more than its 64 KiB reads hold.
* The bytes are windows of one random 1 MiB block, each at a random offset: no
  copying, so the test measures the server, not a generator; and no period, so a
  chunk lost, repeated or swapped shows in the digest.
* Every socket's buffers are shrunk to 64 KiB (the server's through its listener,
  which accepted sockets inherit them from), and the reader now and then stops
  reading for a few passes of the loop (sched_yield). So the server keeps meeting
  an empty socket in its recv and a full one in its sendall: both waiting paths,
  about 8,000 and 5,000 times per GiB, where with the default buffers and a reader
  that never pauses its sendall hardly ever waits.

The seed is new for every run and printed (pytest shows it with a failure):
``INTEGRITY_SEED=<seed> python3 -m pytest tests/test_integrity.py`` replays it,
and ``INTEGRITY_MIB=<n>`` changes the size (default 1024 on epoll and selectors,
64 on the poll and select fallbacks). A GiB takes about 3 s per poller on
CPython 3.11 (5 s under coverage, as in tox -e py311) and 5 s on PyPy 3.9, so the
full size is the default.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import socket

import pytest

from conftest import REPO, run
from syscalls import connect, join, kill, recv_into, sched_yield, sendall, shutdown, spawn


def load_echo_server():
    """Import examples/echo_server.py (examples/ is not a package): the shipped code."""
    spec = importlib.util.spec_from_file_location(
        "echo_server", os.path.join(REPO, "examples", "echo_server.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


echo = load_echo_server()

MIB = 1 << 20
#: Bytes streamed per poller: a GiB where it matters (epoll: what runs in
#: production; selectors: the fallback), less on the two legacy selectors.
SIZES = {"epoll": 1024 * MIB, "selectors": 1024 * MIB, "poll": 64 * MIB, "select": 64 * MIB}
#: Chunk and read sizes are 2**uniform(0, CHUNK_BITS): 1 byte to 256 KiB.
CHUNK_BITS = 18
#: The random block the stream is cut from.
BLOCK = 1 * MIB
#: SO_SNDBUF and SO_RCVBUF of every socket, client and server.
SOCKET_BUFFER = 64 * 1024
#: The reader pauses before a read with this probability, for 1 to PAUSE_PASSES passes.
PAUSE_CHANCE = 1 / 8
PAUSE_PASSES = 16
#: Seconds a test may take before conftest's watchdog calls it hung: a GiB needs
#: 3-5 s alone, several times that on a loaded two-core machine.
HANG_SECONDS = 120.0

SEED = int(os.environ.get("INTEGRITY_SEED") or random.SystemRandom().randrange(2**32))


def chunk_size(rng: random.Random) -> int:
    return int(2 ** rng.uniform(0, CHUNK_BITS))


class Side:
    """What one end of the connection saw: bytes, their digest, and its chunk sizes."""

    def __init__(self) -> None:
        self.count = 0
        self.sha = hashlib.sha256()
        self.smallest, self.largest = 1 << 62, 0

    def saw(self, data) -> None:
        n = len(data)
        self.sha.update(data)
        self.count += n
        self.smallest = min(self.smallest, n)
        self.largest = max(self.largest, n)

    @property
    def digest(self) -> str:
        return self.sha.hexdigest()


def writer(sock, total: int, rng: random.Random, block: memoryview):
    """Send ``total`` bytes in random chunks, then half-close: the server's end of file."""
    sent = Side()
    while sent.count < total:
        n = min(chunk_size(rng), total - sent.count)
        offset = rng.randrange(len(block) - n + 1)
        chunk = block[offset : offset + n]
        sent.saw(chunk)
        yield sendall(sock, chunk)
    yield shutdown(sock, socket.SHUT_WR)
    return sent


def reader(sock, rng: random.Random):
    """Read the echo in random sizes, with pauses, until the server closes its side."""
    received = Side()
    buf = memoryview(bytearray(1 << CHUNK_BITS))
    while True:
        if rng.random() < PAUSE_CHANCE:  # the server's sendall meets a full socket
            for _ in range(rng.randrange(1, PAUSE_PASSES + 1)):
                yield sched_yield()
        n = yield recv_into(sock, buf, chunk_size(rng))
        if not n:
            return received
        received.saw(buf[:n])


def small_buffers(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    return sock


def stream_through_echo(listener, total: int, seed: int):
    """Main task: the shipped server, and a writer and a reader on one client connection."""
    server = yield spawn(echo.serve, listener, name="serve")
    master = random.Random(seed)
    block = memoryview(master.randbytes(BLOCK))
    with small_buffers(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        yield connect(sock, listener.getsockname())
        w = yield spawn(writer, sock, total, random.Random(master.getrandbits(64)), block)
        r = yield spawn(reader, sock, random.Random(master.getrandbits(64)))
        sent = yield join(w)
        received = yield join(r)
    yield kill(server)
    return sent, received


@pytest.mark.parametrize("poller", list(SIZES))
def test_a_seeded_random_stream_comes_back_intact(poller):
    total = int(os.environ.get("INTEGRITY_MIB", 0)) * MIB or SIZES[poller]
    replay = f"seed {SEED}: replay with INTEGRITY_SEED={SEED} INTEGRITY_MIB={total // MIB}"
    print(replay)
    with small_buffers(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sent, received = run(stream_through_echo, listener, total, SEED, poller=poller)
    assert sent.count == total, replay
    assert received.count == sent.count, replay
    assert received.digest == sent.digest, replay
    # The stream had the sizes it was meant to have (tiny and huge writes alike).
    assert sent.smallest < 16 and sent.largest > 128 * 1024, replay
