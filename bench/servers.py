"""The bench's local world, in one process: an upstream, Secrets Manager, the secrets extension.

- upstream: a minimal HTTP/1.1 keep-alive server that answers every POST with one fixed
  token JSON at once, TCP_NODELAY on every accepted socket (without it, the client's
  delayed ACK stalls each small response ~40 ms and swamps every figure);
- work upstream: the same server, but each token request first does ~2 ms of real CPU work,
  a PBKDF2-HMAC-SHA256 of the request body (an authorization server hashes the password; a
  sleep would let the client's own overhead hide in the wait on a shared CPU), its iterations
  calibrated at start on CPU time, so a busy machine does not shrink the work;
- Secrets Manager: moto's server app, behind a counter of GetSecretValue calls;
- the AWS Parameters and Secrets Lambda Extension's documented API
  (``GET /secretsmanager/get?secretId=…``, ``X-Aws-Parameters-Secrets-Token``), counted;
- a control port: ``GET /stats`` (counters as JSON), ``POST /reset``.

Prints one JSON line with the ports, then serves until stdin closes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sys
import threading
import time
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

WORK_SECONDS = 0.002  # per token request at the work upstream
WORK_SALT = b"bench-work-upstream-salt"

COUNTS = {
    "upstream_connections": 0,
    "upstream_requests": 0,
    "secretsmanager_get": 0,
    "extension_get": 0,
    "work_requests": 0,
    "work_ns": 0,
    "work_cpu_ns": 0,
}
_LOCK = threading.Lock()


def count(name: str, amount: int = 1) -> None:
    with _LOCK:
        COUNTS[name] += amount


def calibrate(seconds: float = WORK_SECONDS) -> int:
    """PBKDF2 iterations that take ``seconds`` of this thread's CPU time (the fastest of a few
    trials, scaled): CPU time, not wall time, which other processes' load would stretch."""
    trial = 20_000
    fastest = float("inf")
    for _ in range(7):
        started = time.thread_time()
        hashlib.pbkdf2_hmac("sha256", b"calibration", WORK_SALT, trial)
        fastest = min(fastest, time.thread_time() - started)
    return max(1, round(trial * seconds / fastest))


def work(body: bytes, iterations: int) -> None:
    started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
    hashlib.pbkdf2_hmac("sha256", body, WORK_SALT, iterations)
    count("work_cpu_ns", time.thread_time_ns() - started_cpu)
    count("work_ns", time.perf_counter_ns() - started)
    count("work_requests")


def upstream_connection(conn: socket.socket, iterations: int = 0) -> None:
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
            body, buffer = buffer[:length], buffer[length:]
            if iterations:
                work(body, iterations)
            else:
                if not served:
                    count("upstream_connections")  # a connection that carried a token request
                served += 1
                count("upstream_requests")
            conn.sendall(ANSWER)


def serve_upstream(listener: socket.socket, iterations: int = 0) -> None:
    """``iterations``: PBKDF2 iterations per request (0: answer at once, counted as the upstream)."""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=upstream_connection, args=(conn, iterations), daemon=True).start()


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
    iterations = calibrate()
    work_listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    threading.Thread(target=serve_upstream, args=(work_listener, iterations), daemon=True).start()
    extension = ThreadingHTTPServer(("127.0.0.1", 0), ExtensionHandler)
    control = ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    for server in (extension, control):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = {
        "upstream": listener.getsockname()[1],
        "work_upstream": work_listener.getsockname()[1],
        "work_iterations": iterations,
        "work_target_us": round(WORK_SECONDS * 1_000_000),
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
