"""One HTTP call to the upstream authorization server (its meaning is ``broker.answers``).

Every call goes through one module-level ``PoolManager``: connections stay open across warm
invocations, TLS is verified, redirects are never followed (a 307 would re-send the
password elsewhere), and one deadline covers the whole call, body included.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from broker.errors import UpstreamFailure, UpstreamTimeout
from broker.observability import logger, upstream_timed
from broker.snapstart import after_restore

MAX_ANSWER_BYTES = 1024 * 1024
_CONNECT_TIMEOUT = 3.0

# Retries are decided per call below (only when the request certainly never left).
POOL = urllib3.PoolManager(num_pools=4, maxsize=2, retries=False, cert_reqs="CERT_REQUIRED")


class UpstreamRequest:
    """What ``send`` POSTs."""

    __slots__ = ("body", "headers", "sensitive", "url")

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        # Values that must never come back in an error description (password, tokens, secret).
        sensitive: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        self.headers = headers
        self.body = body
        self.sensitive = sensitive

    def __repr__(self) -> str:  # never the body or header values: they hold secrets
        return f"UpstreamRequest(url={self.url!r}, headers={sorted(self.headers)})"


class UpstreamAnswer:
    __slots__ = ("data", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def __repr__(self) -> str:
        return f"UpstreamAnswer(status={self.status}, bytes={len(self.data)})"


class _DeadlinePassed(Exception):
    """Raised by the alarm when the whole call's deadline passes."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _DeadlinePassed


def _install_alarm() -> bool:
    """The SIGALRM handler, installed once (only the main thread may install one)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGALRM) is not _on_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    return True


_install_alarm()  # at cold start, in Lambda's main thread


# After a SnapStart restore no connection of the snapshot may be reused.
after_restore(POOL.clear)


def send(request: UpstreamRequest, timeout: float) -> UpstreamAnswer:
    """POST once; retry once only if the connection was never made (refused, DNS)."""
    return _call("POST", request, timeout)


def get(url: str, timeout: float) -> UpstreamAnswer:
    """GET a JSON document (OIDC discovery, JWKS) with the same pool, deadline and size limit."""
    return _call("GET", UpstreamRequest(url, {"Accept": "application/json"}, None), timeout)


def _call(method: str, request: UpstreamRequest, timeout: float) -> UpstreamAnswer:
    """One call, a retry only if the connection was never made.

    Socket timeouts bound each read; an upstream that trickles its status line and headers
    a byte at a time would pass every one of them. So in Lambda's main thread an interval
    timer (one syscall to arm, one to disarm) interrupts the call at the deadline.
    """
    alarm = _install_alarm()  # a no-op check unless something replaced the handler
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    started = time.monotonic()
    try:
        return _send(method, request, started + timeout)
    except _DeadlinePassed as exc:
        raise UpstreamTimeout() from exc
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        upstream_timed(time.monotonic() - started)


def _send(method: str, request: UpstreamRequest, deadline: float) -> UpstreamAnswer:
    for attempt in (1, 2):
        try:
            return _request(method, request, deadline)
        except NewConnectionError as exc:  # before ConnectTimeoutError: it is a subclass
            if attempt == 2 or deadline - time.monotonic() <= 0:
                raise UpstreamFailure("Could not connect to the upstream authorization server.") from exc
            logger.warning("Upstream connection failed; retrying once", extra={"reason": type(exc).__name__})
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise UpstreamTimeout() from exc
        except SSLError as exc:
            raise UpstreamFailure("TLS to the upstream authorization server failed.") from exc
        except (HTTPError, OSError) as exc:
            raise UpstreamFailure("The connection to the upstream authorization server failed.") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _request(method: str, request: UpstreamRequest, deadline: float) -> UpstreamAnswer:
    remaining = max(deadline - time.monotonic(), 0.001)
    response = POOL.urlopen(
        method,
        request.url,
        body=request.body,
        headers=dict(request.headers),
        redirect=False,
        retries=False,
        timeout=urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, remaining), read=remaining),
        preload_content=False,
    )
    try:
        data = _read_body(response, deadline)
    except BaseException:
        response.close()  # a half-read connection must not go back to the pool
        raise
    finally:
        response.release_conn()
    return UpstreamAnswer(response.status, response.headers, data)


def _read_body(response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
    """The whole body, at most ``MAX_ANSWER_BYTES``, before the deadline."""
    declared = response.headers.get("content-length", "")
    expected = int(declared) if declared.isdigit() else -1
    if expected > MAX_ANSWER_BYTES:
        raise UpstreamFailure("The upstream answer is too large.")
    if response.chunked or "content-encoding" in response.headers:
        expected = -1  # the length read differs from the one declared: read to the end
    chunks: list[bytes] = []
    size = 0
    # With a Content-Length, stop once it has arrived (no extra read for the end of file).
    while size != expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout()
        sock = getattr(response.connection, "sock", None)
        if sock is not None:
            sock.settimeout(remaining)  # the deadline covers the whole body, not each read
        chunk = response.read1(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise UpstreamFailure("The upstream answer is too large.")
        chunks.append(chunk)
    return b"".join(chunks)
