"""A deliberately misbehaving upstream for fault tests, on loopback.

The request path picks the fault:

| path | behaviour |
|---|---|
| `/ok` | a token at once |
| `/trickle` | a token, one byte every 0.2 s |
| `/slow-headers` | the status line, then silence |
| `/hang` | reads the request, never answers |
| `/drop` | reads the whole request, then closes the connection without a word |
| `/redirect-307`, `/redirect-308` | a redirect to `/stolen` (which records what reaches it) |
| `/huge` | a 2 MiB JSON body |
| `/status/<code>` | that status with a `Retry-After: 7` and an HTML body |

Every request is recorded (path, headers, body length) so tests can assert what arrived.
``tls="self-signed"`` serves HTTPS with a certificate for ``localhost``; ``tls="wrong-host"``
with one for ``wrong.example``; neither is trusted by anyone.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

TOKEN = json.dumps({"access_token": "faulty-at", "token_type": "Bearer", "expires_in": 60}).encode()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FaultyUpstream:
    tls: Literal["none", "self-signed", "wrong-host"] = "none"
    # When set, every request gets this fault whatever its path (one broker, many faults).
    mode: str | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self.cert_path: Path | None = None
        self._context = None
        if self.tls != "none":
            self.cert_path, self._context = _tls_context(self.tls)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        scheme = "http" if self.tls == "none" else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self._context is not None:
                try:
                    conn = self._context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()  # the client refused our certificate: nothing was sent
                    return
            conn.settimeout(10)
            while self._one(conn):
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def _one(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        self.seen.append(Seen(path, headers, body))
        return self._answer(conn, self.mode or path)

    def _answer(self, conn: socket.socket, path: str) -> bool:
        if path == "/ok":
            conn.sendall(_response(200, TOKEN))
            return True
        if path == "/trickle":
            for byte in _response(200, TOKEN, close=True):
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
            return False
        if path == "/slow-headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            self._stop.wait(30)
            return False
        if path == "/hang":
            self._stop.wait(30)
            return False
        if path == "/drop":
            return False
        if path.startswith("/redirect-"):
            extra = f"Location: {self.url}/stolen\r\n"
            conn.sendall(_response(int(path.rsplit("-", 1)[1]), b"", extra=extra))
            return True
        if path == "/huge":
            conn.sendall(_response(200, json.dumps({"access_token": "a", "pad": "x" * (2 << 20)}).encode()))
            return True
        if path.startswith("/status/"):
            conn.sendall(_response(int(path.split("/")[2]), b"<html>upstream page</html>", extra="Retry-After: 7\r\n"))
            return True
        conn.sendall(_response(404, b"{}"))
        return True


def _response(status: int, body: bytes, *, extra: str = "", close: bool = False) -> bytes:
    content_type = "text/html" if body.startswith(b"<") else "application/json"
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


def _tls_context(kind: str) -> tuple[Path, ssl.SSLContext]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = "localhost" if kind == "self-signed" else "wrong.example"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="faulty-tls-"))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return folder / "cert.pem", context
