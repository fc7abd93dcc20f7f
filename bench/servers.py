"""The bench's local world, in one process: an upstream, Secrets Manager, the secrets extension.

- upstream: a minimal HTTP/1.1 keep-alive server that answers every POST with one fixed
  token JSON at once, TCP_NODELAY on every accepted socket (without it, the client's
  delayed ACK stalls each small response ~40 ms and swamps every figure);
- Secrets Manager: moto's server app, behind a counter of GetSecretValue calls;
- the AWS Parameters and Secrets Lambda Extension's documented API
  (``GET /secretsmanager/get?secretId=…``, ``X-Aws-Parameters-Secrets-Token``), counted;
- a control port: ``GET /stats`` (counters as JSON), ``POST /reset``.

Prints one JSON line with the ports, then serves until stdin closes.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SECRET_ID = "token-broker/client"
SECRET = {
    "client_id": "bench-client",
    "client_secret": "bench-client-secret",
    "exchange_token": "bench-exchange-token",
    "partner_id": "partner-42",
}
SESSION_TOKEN = "bench-session-token"
TOKEN = json.dumps(
    {"access_token": "at-bench", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-bench"}
).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
    b"Content-Length: " + str(len(TOKEN)).encode() + b"\r\n\r\n" + TOKEN
)

COUNTS = {"upstream_connections": 0, "upstream_requests": 0, "secretsmanager_get": 0, "extension_get": 0}
_LOCK = threading.Lock()


def count(name: str) -> None:
    with _LOCK:
        COUNTS[name] += 1


def upstream_connection(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    served = 0
    with conn:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(buffer) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            if not served:
                count("upstream_connections")  # a connection that carried a token request
            served += 1
            count("upstream_requests")
            conn.sendall(ANSWER)


def serve_upstream(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=upstream_connection, args=(conn,), daemon=True).start()


class ExtensionHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        secret_id = parse_qs(url.query).get("secretId", [""])[0]
        if self.headers.get("X-Aws-Parameters-Secrets-Token") != SESSION_TOKEN:
            self._send(401, {"message": "missing or wrong X-Aws-Parameters-Secrets-Token"})
        elif url.path != "/secretsmanager/get" or secret_id != SECRET_ID:
            self._send(400, {"message": "not found"})
        else:
            count("extension_get")
            self._send(200, {"Name": SECRET_ID, "SecretString": json.dumps(SECRET), "VersionStages": ["AWSCURRENT"]})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ControlHandler(ExtensionHandler):
    def do_GET(self) -> None:
        with _LOCK:
            self._send(200, dict(COUNTS))

    def do_POST(self) -> None:
        with _LOCK:
            for key in COUNTS:
                COUNTS[key] = 0
            self._send(200, dict(COUNTS))


Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def counting(app: Wsgi) -> Wsgi:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") == "secretsmanager.GetSecretValue":
            count("secretsmanager_get")
        return app(environ, start_response)

    return wrapped


def serve_secrets_manager() -> int:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    server = make_server("127.0.0.1", 0, counting(DomainDispatcherApplication(create_backend_app)), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_port)

    import boto3

    client = boto3.client(
        "secretsmanager",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    client.create_secret(Name=SECRET_ID, SecretString=json.dumps(SECRET))
    return port


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    threading.Thread(target=serve_upstream, args=(listener,), daemon=True).start()
    extension = ThreadingHTTPServer(("127.0.0.1", 0), ExtensionHandler)
    control = ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    for server in (extension, control):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = {
        "upstream": listener.getsockname()[1],
        "secretsmanager": serve_secrets_manager(),
        "extension": extension.server_address[1],
        "control": control.server_address[1],
    }
    with _LOCK:
        for key in COUNTS:
            COUNTS[key] = 0
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # until the bench closes our stdin


if __name__ == "__main__":
    main()
