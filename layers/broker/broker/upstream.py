"""One HTTP call to the upstream authorization server, and what its answer means.

Every call goes through one module-level ``PoolManager``: connections stay open across warm
invocations, TLS is verified, redirects are never followed (a 307 would re-send the
password elsewhere), and one deadline covers the whole call, body included.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry
from urllib3.util.url import parse_url

from broker.errors import (
    CALLER_ERRORS,
    CallerRejected,
    ClientRejected,
    UpstreamFailure,
    UpstreamTimeout,
    UpstreamUnavailable,
    sanitise_description,
)
from broker.observability import logger
from broker.profiles import Profile
from broker.snapstart import after_restore

MAX_ANSWER_BYTES = 1024 * 1024
_CONNECT_TIMEOUT = 3.0

# Retries are decided per call below (only when the request certainly never left).
POOL = urllib3.PoolManager(num_pools=4, maxsize=2, retries=False, cert_reqs="CERT_REQUIRED")
# What ``retries=False, redirect=False`` becomes inside urlopen, built once rather than per call.
_NO_RETRY = Retry(total=False, redirect=False)

# The endpoint URLs are fixed at cold start (the profile), so each is parsed, and its pool
# looked up in POOL, once: ``POOL.urlopen`` would redo both on every call (about 40 µs, 12% of
# a loopback round trip, measured with bench/). Same pools, same TLS settings, no redirects.
_ROUTES: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}


class UpstreamRequest:
    """What ``send`` POSTs. Plain classes, not dataclasses: each dataclass costs ~1 ms of cold start."""

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


_MAIN_THREAD = threading.main_thread().ident


def _install_alarm() -> bool:
    """The SIGALRM handler, installed once (only the main thread may install one)."""
    if threading.get_ident() != _MAIN_THREAD:
        return False
    if signal.getsignal(signal.SIGALRM) is not _on_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    return True


_install_alarm()  # at cold start, in Lambda's main thread


def _forget_connections() -> None:
    """After a SnapStart restore no connection of the snapshot may be reused."""
    _ROUTES.clear()
    POOL.clear()


after_restore(_forget_connections)


def send(request: UpstreamRequest, timeout: float) -> UpstreamAnswer:
    """POST once; retry once only if the connection was never made (refused, DNS).

    Socket timeouts bound each read; an upstream that trickles its status line and headers
    a byte at a time would pass every one of them. So in Lambda's main thread an interval
    timer (one syscall to arm, one to disarm) interrupts the call at the deadline.
    """
    alarm = _install_alarm()  # a no-op check unless something replaced the handler
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return _send(request, time.monotonic() + timeout)
    except _DeadlinePassed as exc:
        raise UpstreamTimeout() from exc
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _send(request: UpstreamRequest, deadline: float) -> UpstreamAnswer:
    for attempt in (1, 2):
        try:
            return _post(request, deadline)
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


def _route(url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
    """POOL's connection pool for ``url``'s origin, and the request target to send it."""
    route = _ROUTES.get(url)
    if route is None:
        parts = parse_url(url)
        route = POOL.connection_from_host(parts.host, port=parts.port, scheme=parts.scheme), parts.request_uri
        if len(_ROUTES) >= 16:  # only a profile's few endpoints ever come here; tests make many
            _ROUTES.clear()
        _ROUTES[url] = route
    return route


# urllib3 Timeouts by what remains of the deadline, in tenths of a second rounded down (never
# more than remains): a call usually starts with its whole budget, so one object serves every
# call instead of a new, validated Timeout each time. The alarm and the per-read socket
# timeouts below hold the exact deadline.
_TIMEOUTS: dict[int, urllib3.Timeout] = {}


def _timeout(remaining: float) -> urllib3.Timeout:
    tenths = int(remaining * 10)
    if tenths < 10:  # under a second: the exact value
        return urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, remaining), read=remaining)
    timeout = _TIMEOUTS.get(tenths)
    if timeout is None:
        if len(_TIMEOUTS) >= 64:
            _TIMEOUTS.clear()
        seconds = tenths / 10
        timeout = _TIMEOUTS[tenths] = urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, seconds), read=seconds)
    return timeout


def _post(request: UpstreamRequest, deadline: float) -> UpstreamAnswer:
    remaining = deadline - time.monotonic()
    options: dict[str, Any] = {
        "body": request.body,
        "headers": dict(request.headers),
        "redirect": False,
        "assert_same_host": False,
        "retries": _NO_RETRY,
        "timeout": _timeout(remaining),
        "preload_content": False,
    }
    pool, target = _ROUTES.get(request.url) or _route(request.url)
    try:
        response = pool.urlopen("POST", target, **options)
    except ClosedPoolError:
        # The pool was closed under us (nothing was sent): look the origin up in POOL again.
        _ROUTES.pop(request.url, None)
        pool, target = _route(request.url)
        response = pool.urlopen("POST", target, **options)
    try:
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
    except BaseException:
        response.close()  # a half-read connection must not go back to the pool
        raise
    finally:
        response.release_conn()
    # urllib3's header dict looks names up case-insensitively: no lower-cased copy per call
    return UpstreamAnswer(response.status, response.headers, chunks[0] if len(chunks) == 1 else b"".join(chunks))


def interpret(answer: UpstreamAnswer, profile: Profile, sensitive: tuple[str, ...]) -> dict[str, Any]:
    """The RFC 6749 §5.1 body for a success; the matching BrokerError otherwise."""
    status = answer.status
    if 200 <= status < 300:
        return _token_body(answer.data, profile)
    if 300 <= status < 400:
        raise UpstreamFailure("The upstream authorization server answered with a redirect, which is not followed.")
    if status in (429, 503):
        raise UpstreamUnavailable(retry_after=_retry_after(answer.headers.get("retry-after")))
    if status >= 500:
        raise UpstreamFailure()
    error, description = _error_fields(answer.data)
    if status == 401 or error == "invalid_client":
        raise ClientRejected()
    if status == 400 and error in CALLER_ERRORS:
        text = sanitise_description(description, sensitive) or _DEFAULT_DESCRIPTIONS[error]
        raise CallerRejected(error, text)
    raise UpstreamFailure(f"The upstream authorization server answered HTTP {status}.")


_DEFAULT_DESCRIPTIONS = {
    "invalid_grant": "The authorization server rejected the grant.",
    "invalid_scope": "The requested scope is invalid.",
    "unauthorized_client": "The client is not authorized for this grant.",
    "invalid_request": "The authorization server rejected the request as malformed.",
    "unsupported_grant_type": "The authorization server does not support this grant.",
}


def _error_fields(data: bytes) -> tuple[str, str]:
    try:
        body = json.loads(data)
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, description = body.get("error"), body.get("error_description")
    return (error if isinstance(error, str) else "", description if isinstance(description, str) else "")


_JSON = json.JSONDecoder()


def _token_body(data: bytes, profile: Profile) -> dict[str, Any]:
    try:
        # ``json.loads(data)``: UTF-8 (RFC 8259, BOM allowed) decoded directly; anything else
        # (another encoding, or not JSON at all) is left to json.loads to detect or refuse
        try:
            body = _JSON.decode(data.decode("utf-8-sig"))
        except ValueError:
            body = json.loads(data)
    except ValueError as exc:
        raise UpstreamFailure("The upstream answer is not JSON.") from exc
    if not isinstance(body, dict):
        raise UpstreamFailure("The upstream answer is not a JSON object.")
    names = profile.response_fields
    renamed = body if names.keys().isdisjoint(body) else {names.get(key, key): value for key, value in body.items()}
    access_token = renamed.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamFailure("The upstream answer has no access_token.")
    token_type = renamed.get("token_type")
    result: dict[str, Any] = {
        "access_token": access_token,
        "token_type": token_type if isinstance(token_type, str) and token_type else "Bearer",
    }
    expires_in = renamed.get("expires_in")
    if (isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool)) or (
        isinstance(expires_in, str) and expires_in.isdigit()
    ):
        result["expires_in"] = int(expires_in)
    for key in ("refresh_token", "scope", "id_token"):
        value = renamed.get(key)
        if isinstance(value, str) and value:
            result[key] = value
    return result


def _retry_after(value: str | None) -> str | None:
    """Pass on a Retry-After only in one of its two RFC 9110 forms."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit() and len(value) <= 6:
        return value
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return value if value.isascii() and "\r" not in value and "\n" not in value else None
