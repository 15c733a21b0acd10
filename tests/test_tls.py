"""TLS on streams: yieldos against itself and against the real ``openssl s_server`` and
``openssl s_client`` on loopback.

A throwaway CA and a server certificate (for ``localhost`` and ``127.0.0.1``) are made
with the ``openssl`` command into a temporary directory; without ``openssl`` the module
is skipped. Every subprocess wait is bounded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import select
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run
from kernel import Cancelled
from syscalls import Queue, kill, read, sleep, spawn, timeout
from syscalls.streams import open_connection, serve_tcp

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


@dataclass
class Certs:
    ca: Path  # the CA that signed the server's certificate
    cert: Path  # the server's certificate (localhost, 127.0.0.1)
    key: Path
    other_ca: Path  # a CA that signed nothing we use

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))  # PyPy takes no Path here
        return ctx

    def client_context(self, ca: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca or self.ca))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [OPENSSL, *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=yieldos test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    _make_ca(d, "ca")
    _make_ca(d, "other_ca")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=d,
    )  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
        cwd=d,
    )  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "other_ca.pem")


def start_server(handler, ctx, **kwargs):
    ports = Queue()
    server = yield spawn(
        serve_tcp(
            handler, "127.0.0.1", 0, ssl=ctx, on_listen=lambda lis: ports.put_nowait(lis.port),
            **kwargs,
        )
    )  # fmt: skip
    port = yield ports.get()
    return server, port


def echo_lines(stream):
    while line := (yield stream.readline()):
        yield stream.write_all(line)


# ── yieldos <-> yieldos ──────────────────────────────────────────────────────


def test_client_and_server_over_tls(certs, poller):
    payload = random.Random(5).getrandbits(8 * 1_500_000).to_bytes(1_500_000, "little")

    def handler(stream):
        assert stream.tls and stream.ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        line = yield stream.readline()
        n = int(line)
        data = yield stream.read_exactly(n)
        yield stream.write_all(hashlib.sha256(data).hexdigest().encode() + b"\n")
        yield from echo_lines(stream)

    def main():
        server, port = yield from start_server(handler, certs.server_context())
        s = yield open_connection(
            "127.0.0.1", port, ssl=certs.client_context(), server_hostname="localhost", timeout=5
        )
        try:
            cert = s.ssl_object.getpeercert()
            s.write(b"%d\n" % len(payload))
            rng = random.Random(6)
            i = 0
            while i < len(payload):  # random chunk sizes through write/drain
                n = rng.randint(1, 40000)
                s.write(payload[i : i + n])
                i += n
                if rng.random() < 0.3:
                    yield s.drain()
            yield s.drain()
            digest = yield s.readline()
            yield s.write_all(b"one\ntwo\n")
            lines = [(yield s.readline()), (yield s.readline())]
        finally:
            yield s.close()
        yield kill(server)
        return cert, digest, lines

    cert, digest, lines = run(main, poller=poller)
    assert dict(x[0] for x in cert["subject"])["commonName"] == "localhost"
    assert digest == hashlib.sha256(payload).hexdigest().encode() + b"\n"
    assert lines == [b"one\n", b"two\n"]


def test_small_reads_drain_what_openssl_holds(certs, poller):
    """Bytes decrypted and held inside the SSL object are invisible to the poller:
    read(1) after read(1) must still find them without waiting."""

    def handler(stream):
        yield stream.write_all(bytes(range(200)) * 5)
        yield stream.read()  # until the client is done

    def main():
        server, port = yield from start_server(handler, certs.server_context())
        s = yield open_connection("127.0.0.1", port, ssl=certs.client_context(), timeout=5)
        try:
            got = b""
            with timeout(3):
                while len(got) < 1000:
                    got += yield s.read(1)
        finally:
            yield s.close()
        yield kill(server)
        return got

    assert run(main, poller=poller) == bytes(range(200)) * 5


def test_verification_failures_raise_in_the_client_and_the_server_goes_on(certs, caplog):
    def main():
        server, port = yield from start_server(echo_lines, certs.server_context())
        errors = []
        attempts = [
            dict(ssl=certs.client_context(), server_hostname="wrong.example"),  # wrong name
            dict(ssl=certs.client_context(certs.other_ca)),  # untrusted CA
            dict(ssl=True),  # the system's CAs do not know ours either
        ]
        for kwargs in attempts:
            try:
                s = yield open_connection("127.0.0.1", port, timeout=5, **kwargs)
            except ssl.SSLCertVerificationError as exc:
                errors.append(exc)
            else:
                yield s.close()
        s = yield open_connection("localhost", port, ssl=certs.client_context(), timeout=5)
        try:
            yield s.write_all(b"after\n")
            line = yield s.readline()
        finally:
            yield s.close()
        yield kill(server)
        return errors, line

    with caplog.at_level(logging.INFO, logger="yieldos.streams"):
        errors, line = run(main)
    assert len(errors) == 3
    assert "Hostname mismatch" in str(errors[0]) or "hostname" in str(errors[0]).lower()
    assert line == b"after\n"
    assert sum("handshake" in r.getMessage() for r in caplog.records) == 3


def test_a_client_that_never_handshakes_is_dropped(certs, poller):
    def main():
        server, port = yield from start_server(
            echo_lines, certs.server_context(), handshake_timeout=0.1
        )
        with socket.create_connection(("127.0.0.1", port)) as mute:
            mute.setblocking(False)
            with timeout(3):
                eof = yield read(mute, 100)  # the server gives up and hangs up
        s = yield open_connection("127.0.0.1", port, ssl=certs.client_context(), timeout=5)
        try:
            yield s.write_all(b"ok\n")
            line = yield s.readline()
        finally:
            yield s.close()
        yield kill(server)
        return eof, line

    assert run(main, poller=poller) == (b"", b"ok\n")


def test_kill_during_the_handshake(certs):
    with socket.create_server(("127.0.0.1", 0)) as mute:

        def main():
            t = yield spawn(
                open_connection("127.0.0.1", mute.getsockname()[1], ssl=certs.client_context())
            )
            yield sleep(0.05)
            yield kill(t)
            return t.exception

        assert isinstance(run(main), Cancelled)


def test_unwrap_then_plain_text_on_the_same_connection(certs, poller):
    def handler(stream):
        line = yield stream.readline()
        yield stream.write_all(b"tls " + line)
        yield stream.unwrap()
        assert not stream.tls
        line = yield stream.readline()
        yield stream.write_all(b"plain " + line)

    def main():
        server, port = yield from start_server(handler, certs.server_context())
        s = yield open_connection("127.0.0.1", port, ssl=certs.client_context(), timeout=5)
        try:
            yield s.write_all(b"a\n")
            first = yield s.readline()
            with timeout(3):
                yield s.unwrap()
            tls_after = s.tls
            yield s.write_all(b"b\n")
            second = yield s.readline()
            eof = yield s.read()
        finally:
            yield s.close()
        yield kill(server)
        return first, tls_after, second, eof

    assert run(main, poller=poller) == (b"tls a\n", False, b"plain b\n", b"")


def test_close_after_the_peer_vanished_and_no_half_close(certs, poller):
    def handler(stream):
        yield stream.readline()
        stream.abort()  # gone, without a TLS goodbye

    def main():
        server, port = yield from start_server(handler, certs.server_context())
        s = yield open_connection("127.0.0.1", port, ssl=certs.client_context(), timeout=5)
        with pytest.raises(ValueError, match="half-close"):
            yield s.write_eof()
        yield s.write_all(b"bye\n")
        eof = yield s.read()
        yield s.close()  # the goodbye fails: ignored, the socket is closed all the same
        yield kill(server)
        return eof, s.closed

    assert run(main, poller=poller) == (b"", True)


def test_killed_tls_reader_and_writer(certs):
    def handler(stream):
        yield stream.read()  # reads until EOF; sends nothing

    def main():
        server, port = yield from start_server(handler, certs.server_context())
        s = yield open_connection("127.0.0.1", port, ssl=certs.client_context(), timeout=5)
        try:
            reader = yield spawn(s.read_exactly(10))
            yield sleep(0.02)
            yield kill(reader)
            with pytest.raises(TimeoutError):
                with timeout(0.05):
                    yield s.readline()
        finally:
            yield s.close()
        yield kill(server)
        return reader.exception

    assert isinstance(run(main), Cancelled)


# ── Against the real openssl ─────────────────────────────────────────────────


def _wait_for_port(proc: subprocess.Popen, seconds: float) -> int:
    """Read the child's stdout (unbuffered: a file object's readline could keep the next
    line in its buffer while select() waits on the fd) until s_server's ACCEPT line."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        match = re.search(rb"ACCEPT .*:(\d+)\n", out)
        if match:
            return int(match.group(1))
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
    raise AssertionError(f"no ACCEPT line from {proc.args[:2]} within {seconds} s: {out!r}")


def _stop(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_client_against_openssl_s_server(certs, poller):
    server = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", str(certs.cert),
         "-key", str(certs.key), "-naccept", "1", "-rev"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        port = _wait_for_port(server, 5)

        def main():
            s = yield open_connection(
                "127.0.0.1", port, ssl=certs.client_context(), server_hostname="localhost",
                timeout=5,
            )  # fmt: skip
            try:
                yield s.write_all(b"hello yieldos\n")
                with timeout(5):
                    return (yield s.readline()), s.ssl_object.version()
            finally:
                yield s.close()

        line, version = run(main, poller=poller)
    finally:
        _stop(server)
    assert line == b"sodleiy olleh\n"  # -rev: every line comes back reversed
    assert version == "TLSv1.3"


def test_openssl_s_client_against_the_server(certs, poller):
    def handler(stream):
        line = yield stream.readline()
        yield stream.write_all(b"yieldos says: " + line)
        # Returning closes the stream: close_notify, which ends s_client.

    def main():
        server, port = yield from start_server(handler, certs.server_context())
        client = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             "-CAfile", str(certs.ca), "-verify_return_error", "-quiet"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            client.stdin.write(b"hi from s_client\n")
            client.stdin.flush()
            out = b""
            with timeout(5):
                while chunk := (yield read(client.stdout, 4096)):
                    out += chunk
                while client.poll() is None:
                    yield sleep(0.01)
        finally:
            _, err = _stop(client)
        yield kill(server)
        return out, client.returncode, err

    out, rc, err = run(main, poller=poller)
    assert out == b"yieldos says: hi from s_client\n", err
    assert rc == 0, err
