"""A TLS echo server and client on yieldos streams: every line a client sends comes back.

Let it check itself (a throwaway certificate authority and server certificate are made
with the ``openssl`` command in a temporary directory, then a server and N clients run
in one kernel)::

    python3 examples/tls_echo.py --selftest 20

Or run it for real, and talk to it with OpenSSL's own client::

    python3 examples/tls_echo.py --make-cert /tmp/tlsdemo      # ca.pem, server.pem, server.key
    python3 examples/tls_echo.py --cert /tmp/tlsdemo/server.pem --key /tmp/tlsdemo/server.key
    openssl s_client -connect 127.0.0.1:8443 -servername localhost -CAfile /tmp/tlsdemo/ca.pem

How it works. `serve_tcp` listens, accepts, and runs `handle` in a task of its own for
each connection, with a `Stream`: the TLS handshake is done by then, and the stream is
closed (with a TLS ``close_notify``) when `handle` returns or fails. Reading a whole line
is one call, ``yield stream.readline()``: the stream buffers whatever the network
delivers and hands the line out once it is complete. The client side is
`open_connection` with an `ssl.SSLContext` that trusts our CA: it checks the server's
certificate for the name ``localhost`` as any HTTPS client would, and raises
`ssl.SSLCertVerificationError` if it does not match.

Underneath, TLS is non-blocking OpenSSL: whenever OpenSSL needs the socket readable or
writable, the task waits for it with ``wait_readable`` / ``wait_writable`` and the other
tasks run meanwhile. No threads.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Generator, Optional

# Run from a clone without installing: make the top-level packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel  # noqa: E402
from syscalls import Queue, join, kill, spawn  # noqa: E402
from syscalls.streams import Listener, Stream, open_connection, serve_tcp  # noqa: E402

DEFAULT_PORT = 8443


# ── The server ────────────────────────────────────────────────────────────────


#: The longest line the server takes. Without a limit, a client that never sends a
#: newline could make the server buffer without end; past it, readline raises.
MAX_LINE = 1 << 20


def handle(stream: Stream) -> Generator[Any, Any, None]:
    """Echo each line until the client hangs up (serve_tcp closes the stream after)."""
    while line := (yield stream.readline(limit=MAX_LINE)):
        yield stream.write_all(line)


def serve(
    host: str, port: int, ctx: ssl.SSLContext, on_listen: Callable[[Listener], None]
) -> Generator[Any, Any, None]:
    """The server task: `handle` every connection to ``host:port``, over TLS, for ever."""
    yield serve_tcp(handle, host, port, ssl=ctx, on_listen=on_listen)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context holding our certificate and its private key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# ── The client ────────────────────────────────────────────────────────────────


def messages_for(client: int) -> list[bytes]:
    """What client number `client` sends: two short lines and one long one (200 KB)."""
    return [
        f"hello from client {client}\n".encode(),
        f"client {client} says goodbye\n".encode(),
        b"%d" % (client % 10) * 200_000 + b"\n",
    ]


def echo_client(port: int, ca: Path, client: int) -> Generator[Any, Any, int]:
    """Connect over TLS, send each message, check its echo; return the bytes echoed."""
    ctx = ssl.create_default_context(cafile=str(ca))  # trust our CA, check the hostname
    stream = yield open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost", timeout=10
    )
    total = 0
    try:
        for message in messages_for(client):
            yield stream.write_all(message)
            echoed = yield stream.readline(limit=len(message))
            if echoed != message:
                raise AssertionError(f"client {client}: sent {message[:30]!r}, got {echoed[:30]!r}")
            total += len(echoed)
    finally:
        yield stream.close()
    return total


# ── Certificates, with the openssl command ────────────────────────────────────


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Make ``ca.pem`` (a CA) and ``server.pem``/``server.key`` (signed by it, valid for
    ``localhost`` and ``127.0.0.1``) in ``directory``; return (ca, cert, key).

    The standard library can load certificates but not make them, hence ``openssl``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("tls_echo: the `openssl` command is needed to make certificates")

    def run(*args: str) -> None:
        subprocess.run(
            [openssl, *args],
            cwd=directory,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
        "-subj", "/CN=yieldos demo CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "30",
        "-extfile", "server.ext")  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


# ── The self-test: server and clients in one kernel ───────────────────────────


def selftest(ca: Path, cert: Path, key: Path, clients: int) -> Generator[Any, Any, None]:
    """Main task of ``--selftest``: a TLS server and `clients` TLS clients side by side."""
    ports: Queue[int] = Queue()

    def on_listen(listener: Listener) -> None:
        ports.put_nowait(listener.port)

    server = yield spawn(serve, "127.0.0.1", 0, server_context(cert, key), on_listen)
    port = yield ports.get()
    tasks = []
    for client in range(clients):
        tasks.append((yield spawn(echo_client, port, ca, client, name=f"client {client}")))
    total = 0
    for task in tasks:
        total += yield join(task)  # re-raises here whatever made a client fail
    yield kill(server)  # closes every connection, then the listening socket
    print(f"selftest passed: {clients} TLS clients, {total} bytes echoed", flush=True)


# ── Command line ──────────────────────────────────────────────────────────────


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TLS echo server on yieldos streams.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    parser.add_argument("--cert", type=Path, help="the server's certificate (PEM)")
    parser.add_argument("--key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument(
        "--make-cert", type=Path, metavar="DIR", help="write a demo CA and server certificate"
    )
    parser.add_argument(
        "--selftest", type=int, metavar="N", default=0, help="run N TLS clients, check, exit"
    )
    args = parser.parse_args(argv)
    if not (args.selftest or args.make_cert or (args.cert and args.key)):
        parser.error("give --cert and --key, or --make-cert DIR, or --selftest N")
    if args.selftest < 0:
        parser.error("--selftest needs a positive number of clients")
    return args


def print_listening(listener: Listener) -> None:
    print(f"listening on {listener.sockname[0]}:{listener.port} (TLS)", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.make_cert:
        args.make_cert.mkdir(parents=True, exist_ok=True)
        ca, cert, key = make_certificates(args.make_cert)
        print(f"wrote {ca}, {cert} and {key}")
        return 0
    if args.selftest:
        with tempfile.TemporaryDirectory(prefix="yieldos-tls-") as tmp:
            ca, cert, key = make_certificates(Path(tmp))
            kernel.run(selftest, ca, cert, key, args.selftest)
        return 0
    ctx = server_context(args.cert, args.key)
    try:
        kernel.run(serve, args.host, args.port, ctx, print_listening)
    except KeyboardInterrupt:
        print("interrupted: every connection is closed, bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
