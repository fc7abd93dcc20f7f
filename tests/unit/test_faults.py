"""Upstream faults against a misbehaving server on loopback: the broker fails closed, on time."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from urllib3.exceptions import NewConnectionError

import broker.upstream
from local.faulty import FaultyUpstream
from tests.support import load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, body_of

TIMEOUT = 1.0
MARGIN = 0.6


def call(
    load_app: AppLoader, context: FakeContext, url: str, function: str = "password"
) -> tuple[int, dict[str, str], float]:
    app = load_app(function, BROKER_TOKEN_URL=url, BROKER_UPSTREAM_TIMEOUT=str(TIMEOUT))
    event = load_event("refresh-json" if function == "refresh" else "password-json")
    started = time.monotonic()
    response = app.lambda_handler(event, context)
    return response["statusCode"], body_of(response), time.monotonic() - started


@pytest.fixture
def faulty() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.mark.parametrize("path", ["/trickle", "/slow-headers", "/hang"])
def test_slow_upstreams_are_504_within_the_deadline(
    path: str, faulty: FaultyUpstream, load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    status, body, elapsed = call(load_app, context, faulty.url + path)
    assert status == 504
    assert body["error"] == "temporarily_unavailable"
    assert elapsed < TIMEOUT + MARGIN  # one deadline for the whole call, not per read


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A listener whose accept queue is full: the kernel drops new SYNs, so connect() times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/auth/token/"
    for sock in [*fillers, listener]:
        sock.close()


def test_connect_timeout_is_504(
    full_backlog: str, load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    status, _, elapsed = call(load_app, context, full_backlog)
    assert status == 504
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.parametrize("path", ["/status/500", "/status/502", "/status/504", "/huge", "/drop"])
def test_broken_upstreams_are_502_without_their_body(
    path: str, faulty: FaultyUpstream, load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    status, body, _ = call(load_app, context, faulty.url + path)
    assert status == 502
    assert body["error"] == "server_error"
    assert "upstream page" not in body["error_description"]


@pytest.mark.parametrize("code", [429, 503])
def test_busy_upstreams_are_503_with_retry_after(
    code: int, faulty: FaultyUpstream, load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    app = load_app("password", BROKER_TOKEN_URL=f"{faulty.url}/status/{code}")
    response = app.lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == "7"


@pytest.mark.parametrize("code", [307, 308])
def test_redirects_are_not_followed(
    code: int, faulty: FaultyUpstream, load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    status, _, _ = call(load_app, context, f"{faulty.url}/redirect-{code}")
    assert status == 502
    assert [seen.path for seen in faulty.seen] == [f"/redirect-{code}"]  # /stolen received nothing


@pytest.mark.parametrize("function", ["password", "refresh"])
def test_a_request_that_left_is_never_retried(
    function: str, faulty: FaultyUpstream, load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    # Given an upstream that reads the whole request, then drops the connection
    status, _, _ = call(load_app, context, faulty.url + "/drop", function)
    # Then 502, and the upstream saw exactly one request (a refresh token may already be spent)
    assert status == 502
    assert len(faulty.seen) == 1


def test_a_connection_that_never_opened_is_retried_once(
    monkeypatch: pytest.MonkeyPatch,
    faulty: FaultyUpstream,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    context: FakeContext,
) -> None:
    # Given a first connection attempt that is refused (the request certainly never left)
    real_request = broker.upstream._request
    attempts: list[str] = []

    def flaky(method: str, request: broker.upstream.UpstreamRequest, deadline: float) -> broker.upstream.UpstreamAnswer:
        attempts.append(request.url)
        if len(attempts) == 1:
            raise NewConnectionError(None, "refused")  # type: ignore[arg-type]  # the pool passes a connection
        return real_request(method, request, deadline)

    monkeypatch.setattr(broker.upstream, "_request", flaky)
    status, _, _ = call(load_app, context, faulty.url + "/ok")
    assert status == 200
    assert len(attempts) == 2
    assert len(faulty.seen) == 1


def test_nothing_listening_is_502_after_one_retry(
    load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, body, _ = call(load_app, context, f"http://127.0.0.1:{port}/auth/token/")
    assert status == 502
    assert body["error"] == "server_error"


@pytest.mark.parametrize("tls", ["self-signed", "wrong-host"])
def test_untrusted_tls_is_502_and_nothing_is_sent(
    tls: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    context: FakeContext,
) -> None:
    with FaultyUpstream(tls=tls) as server:  # type: ignore[arg-type]  # the parametrized literal
        if tls == "wrong-host":
            # trust the certificate, so only the hostname check can refuse it
            monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_path))
        status, body, _ = call(load_app, context, f"https://localhost:{server.port}/ok")
        assert status == 502
        assert body["error"] == "server_error"
        assert server.seen == []
