"""Each function invoked in-process with an events/ file, a moto secret and a local upstream."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support import DEMO_SECRET, ISSUED, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of

NO_STORE = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


def assert_no_store(response: dict[str, Any]) -> None:
    for name, value in NO_STORE.items():
        assert response["headers"][name] == value


def test_login_returns_the_rfc6749_token_response(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    # Given an upstream that issues tokens
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    app = load_app("password")

    # When the SPA logs in with JSON
    response = app.lambda_handler(load_event("password-json"), context)

    # Then it gets the upstream's tokens in the RFC 6749 shape, uncacheable, CORS for its origin
    assert response["statusCode"] == 200
    assert body_of(response) == token_answer
    assert_no_store(response)
    assert response["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    assert response["headers"]["Vary"] == "Origin"


@pytest.mark.parametrize("event", ["password-form", "password-base64"])
def test_login_accepts_rfc6749_form_bodies(
    event: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    response = load_app("password").lambda_handler(load_event(event), context)
    assert response["statusCode"] == 200
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True))
    # The SPA's public client_id is dropped; the broker's own credentials are sent.
    assert sent["client_id"] == [DEMO_SECRET["client_id"]]
    assert sent["username"] == ["demo"]


def test_refresh_trades_a_refresh_token(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    response = load_app("refresh").lambda_handler(load_event("refresh-json"), context)
    assert response["statusCode"] == 200
    assert body_of(response)["refresh_token"] == ISSUED["refresh_token"]
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True))
    assert sent == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["demo-refresh-token"],
        "client_id": [DEMO_SECRET["client_id"]],
        "client_secret": [DEMO_SECRET["client_secret"]],
    }


def test_exchange_sends_the_token_header_and_no_body(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/exchange/", method="POST").respond_with_json(
        {"access_token": ISSUED["access_token"], "expires_in": 3600}
    )
    response = load_app("exchange").lambda_handler(load_event("exchange"), context)
    assert response["statusCode"] == 200
    assert body_of(response) == {"access_token": ISSUED["access_token"], "token_type": "Bearer", "expires_in": 3600}
    request = httpserver.log[0][0]
    assert request.headers["Authorization"] == f"Token {DEMO_SECRET['exchange_token']}"
    assert request.get_data() == b""


def test_wrong_password_is_the_upstreams_invalid_grant(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"error": "invalid_grant", "error_description": "Invalid credentials given."}, status=400
    )
    response = load_app("password").lambda_handler(load_event("password-wrong-password"), context)
    assert response["statusCode"] == 400
    assert body_of(response) == {"error": "invalid_grant", "error_description": "Invalid credentials given."}
    assert_no_store(response)


def test_dead_upstream_is_502(load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext) -> None:
    # Given a token URL where nothing listens (port 9 is discard; closed on loopback)
    app = load_app("password", BROKER_TOKEN_URL="http://127.0.0.1:9/auth/token/")
    response = app.lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 502
    assert body_of(response)["error"] == "server_error"


def test_slow_upstream_is_504_within_the_timeout(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    def slow(request: Request) -> Response:
        time.sleep(2.0)
        return Response(json.dumps({"access_token": "late"}), content_type="application/json")

    httpserver.expect_request("/auth/token/").respond_with_handler(slow)
    app = load_app("password", BROKER_UPSTREAM_TIMEOUT="0.5")
    started = time.monotonic()
    response = app.lambda_handler(load_event("password-json"), context)
    elapsed = time.monotonic() - started
    assert response["statusCode"] == 504
    assert body_of(response)["error"] == "temporarily_unavailable"
    assert elapsed < 1.5
    # (the slow answer is logged when the server finishes it: wait, so it never lands in the next test)
    deadline = time.monotonic() + 5
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.05)


def test_preflight_answers_listed_origins_only(load_app: AppLoader, context: FakeContext) -> None:
    app = load_app("password")
    allowed = app.lambda_handler(load_event("password-preflight"), context)
    assert allowed["statusCode"] == 204
    assert allowed["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in allowed["headers"]["Access-Control-Allow-Methods"]

    other = load_event("password-preflight")
    other["headers"]["Origin"] = "https://evil.example"
    refused = app.lambda_handler(other, context)
    assert refused["statusCode"] == 403
    assert "Access-Control-Allow-Origin" not in refused["headers"]


def test_correlation_id_is_the_api_gateway_request_id(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    from tests.support import SINK

    httpserver.expect_request("/auth/token/").respond_with_json({"access_token": ISSUED["access_token"]})
    before = len(SINK.lines)
    load_app("password").lambda_handler(load_event("password-json"), context)
    lines = [line for line in SINK.lines[before:] if "Token request finished" in line]
    assert lines
    assert "c6af9ac6-7b61-11e6-9a41-93e8deadbeef" in lines[-1]


def test_base64_body_is_decoded(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    event = load_event(
        "password-json",
        body=base64.b64encode(json.dumps({"username": "zoë", "password": "pässwörd ✓"}).encode()).decode(),
        isBase64Encoded=True,
    )
    response = load_app("password").lambda_handler(event, context)
    assert response["statusCode"] == 200
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True))
    assert sent["username"] == ["zoë"]
    assert sent["password"] == ["pässwörd ✓"]
