"""A local upstream that speaks the contract's "partner" dialect, for integration tests.

JSON bodies with camelCase fields, the partner id and grant type in headers, no client
authentication, camelCase answers:

    POST /v1/auth/token   partnerId: <id>   grantType: password|refresh_token
    {"grant_type": "password", "username": ..., "password": ...}  or  {"grant_type": ..., "refreshToken": ...}
    -> {"accessToken": ..., "refreshToken": ..., "expiresIn": 900, "tokenType": "Bearer"}

Refresh tokens rotate; what it received is kept in ``requests`` for assertions.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class PartnerUpstream:
    partner_id: str = "demo-partner"
    username: str = "demo"
    password: str = "demo-password"
    requests: list[dict[str, Any]] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                upstream.requests.append({"path": self.path, "headers": dict(self.headers), "body": raw})
                status, answer = upstream.answer(self.path, dict(self.headers), raw)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PartnerUpstream:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        if path != "/v1/auth/token" or headers.get("Content-Type") != "application/json":
            return 404, {"message": "not found"}
        if headers.get("partnerId") != self.partner_id:
            return 403, {"message": "unknown partner"}
        body = json.loads(raw)
        grant = headers.get("grantType")
        if grant != body.get("grant_type"):
            return 400, {"error": "invalid_request"}
        if grant == "password":
            if (body.get("username"), body.get("password")) != (self.username, self.password):
                return 400, {"error": "invalid_grant", "error_description": "Bad credentials"}
        elif grant == "refresh_token":
            token = body.get("refreshToken")
            if token not in self.refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "Unknown refresh token"}
            self.refresh_tokens.discard(token)
        else:
            return 400, {"error": "unsupported_grant_type"}
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens.add(refresh)
        return 200, {"accessToken": secrets.token_urlsafe(24), "refreshToken": refresh, "expiresIn": 900,
                     "tokenType": "Bearer"}  # fmt: skip
