"""The local API Gateway: a threaded HTTP server on loopback that proxies to the emulator pools."""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local.runner import auth
from local.runner.emulator import EmulatorPool, InvocationError
from local.runner.events import (
    INTERNAL_ERROR,
    MAX_PAYLOAD_BYTES,
    MISSING_TOKEN,
    TOO_LARGE,
    HttpRequest,
    HttpResponse,
    build_event,
    map_response,
)
from local.runner.logs import LogSink
from local.runner.template import App


class _TooLarge(Exception):
    pass


# A page's text for one refresh delivery mode: ``<!-- delivery: cookie -->...<!-- /delivery -->``.
_DELIVERY_BLOCK = re.compile(r"<!-- delivery: (\w+) -->(.*?)<!-- /delivery -->", re.DOTALL)


def render_page(html: str, delivery: str, code_flow: bool = False) -> str:
    """The demo SPA as served: only the blocks written for ``delivery`` (and for the code flow when it
    is on), and ``{{delivery}}`` filled in, so the page never describes a mode the broker is not running in."""
    kept = {delivery, "code"} if code_flow else {delivery}
    page = _DELIVERY_BLOCK.sub(lambda block: block.group(2) if block.group(1) in kept else "", html)
    return page.replace("{{delivery}}", delivery)


class BrokerServer(ThreadingHTTPServer):
    daemon_threads = True
    # Queue connections beyond the pools' capacity instead of refusing them.
    request_queue_size = 128

    def __init__(
        self,
        port: int,
        app: App,
        pools: dict[str, EmulatorPool],
        sink: LogSink,
        refresh_delivery: str = "body",
        code_flow: bool = False,
    ) -> None:
        self.code_flow = code_flow  # the SPA's "Sign in with the authorization server" button
        self.app = app
        self.pools = pools
        self.sink = sink
        self.refresh_delivery = refresh_delivery  # the mode the demo SPA's pages are rendered for
        self.static_root = (Path(__file__).resolve().parents[1] / "spa").resolve()
        self.api_key = secrets.token_urlsafe(24)  # for routes the template protects with an API key
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # One line, not socketserver's traceback on stderr (e.g. a client that hung up).
        error = sys.exc_info()[1]
        self.sink.line("runner", f"connection from {client_address[0]} failed: {type(error).__name__}")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def dispatch(self, request: HttpRequest) -> tuple[HttpResponse, str, str | None]:
        """The response, the API Gateway request id and the function that served it."""
        found = self.app.route_for(request.method, request.path)
        if found is None:
            return self._static(request), "", None
        route, path_parameters = found
        refused = auth.check(route.auth, request, self.api_key)
        if refused is not None:
            return refused, "", None
        event = build_event(request, route.path, path_parameters)
        request_id = str(event["requestContext"]["requestId"])
        try:
            payload = self.pools[route.function].invoke(json.dumps(event).encode())
        except InvocationError as exc:
            self.sink.line("runner", f"{route.function} failed: {exc}")
            return INTERNAL_ERROR, request_id, route.function
        response, problem = map_response(payload)
        if problem:
            self.sink.line("runner", f"{route.function} request {request_id}: {problem}")
        return response, request_id, route.function

    def _static(self, request: HttpRequest) -> HttpResponse:
        """The demo SPA (local/spa) for GET on a path no route claims; same site as the API."""
        if request.method not in ("GET", "HEAD"):
            return MISSING_TOKEN
        name = request.path.split("?", 1)[0].lstrip("/") or "index.html"
        file = (self.static_root / name).resolve()
        if not file.is_relative_to(self.static_root) or not file.is_file():
            return MISSING_TOKEN
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        headers = [("Content-Type", content_type), ("Cache-Control", "no-store")]
        if content_type == "text/html":
            page = render_page(file.read_text(encoding="utf-8"), self.refresh_delivery, self.code_flow)
            return HttpResponse(200, [("Content-Type", "text/html; charset=utf-8"), headers[1]], page.encode())
        return HttpResponse(200, headers, file.read_bytes())


class _Handler(BaseHTTPRequestHandler):
    server: BrokerServer
    protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway
    server_version = "token-broker-local"

    def _serve(self) -> None:
        started = time.monotonic()
        function: str | None = None
        request_id = ""
        try:
            request = HttpRequest(
                method=self.command,
                target=self.path,
                headers=list(self.headers.items()),
                body=self._read_body(),
                source_ip=self.client_address[0],
                host=self.headers.get("Host", ""),
                protocol=self.request_version,
            )
        except _TooLarge:
            self.close_connection = True  # the rest of the body is never read
            response = TOO_LARGE
        else:
            response, request_id, function = self.server.dispatch(request)
        self._write(response.with_gateway_headers(self.server.app.gateway_responses), request_id)
        elapsed = (time.monotonic() - started) * 1000
        target = self.path.split("?", 1)[0]  # a query string may carry a token: never logged
        served_by = f" ({function})" if function else ""
        self.server.sink.line("runner", f"{self.command} {target} -> {response.status}{served_by} {elapsed:.0f} ms")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, CONNECT, made-up ones) is API Gateway's business too: a 403
        # for a method no resource has, never http.server's 501 HTML page.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            raise _TooLarge
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            if len(body) + size > MAX_PAYLOAD_BYTES:
                raise _TooLarge
            body += self.rfile.read(size)
            self.rfile.readline()

    def _write(self, response: HttpResponse, request_id: str) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if request_id:
            self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _serve logs one line per request, without the query string

    def log_message(self, format: str, *args: Any) -> None:
        # Only send_error() gets here; its message may quote the request line (and its query string).
        code = args[0] if args else "-"
        self.server.sink.line("runner", f"HTTP error {code} for {self.client_address[0]}")
