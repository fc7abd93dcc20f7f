"""Every row of the contract's error table, and the bad inputs that must never reach the upstream."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tests.support import DEMO_SECRET, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, body_of

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def login_event(body: str | None, headers: dict[str, str], *, b64: bool = False) -> dict[str, Any]:
    event = load_event("password-json")
    event["headers"] = {"Host": "broker.example", **headers}
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    event["body"] = body
    event["isBase64Encoded"] = b64
    return event


BAD_INPUT = [
    # (name, body, headers, base64?, status, description fragment)
    ("malformed JSON", '{"username": "demo", ', JSON, False, 400, "not valid JSON"),
    ("JSON array", '["demo", "pw"]', JSON, False, 400, "must be an object"),
    ("missing password", '{"username": "demo"}', JSON, False, 400, "Missing required parameter: password"),
    ("empty password counts as missing", '{"username": "demo", "password": ""}', JSON, False, 400, "password"),
    ("no body", None, JSON, False, 400, "Missing required parameter: username, password"),
    ("number as password", '{"username": "demo", "password": 1234}', JSON, False, 400, "must be a string"),
    ("duplicate JSON key", '{"username": "a", "username": "b", "password": "x"}', JSON, False, 400, "more than once"),
    ("duplicate form parameter", "username=a&username=b&password=x", FORM, False, 400, "more than once"),
    ("wrong grant_type (form)", "grant_type=refresh_token&username=a&password=x", FORM, False, 400,
     "grant_type 'refresh_token' is served at POST /auth/refresh or POST /auth/token."),
    ("wrong grant_type (JSON)", '{"grant_type": "client_credentials", "username": "a", "password": "x"}', JSON,
     False, 400, "grant_type 'client_credentials' is not served by this broker."),
    ("wrong grant_type before missing fields", "grant_type=refresh_token&refresh_token=rt", FORM, False, 400,
     "served at POST /auth/refresh"),
    ("1 MiB body", "x" * (1024 * 1024), JSON, False, 413, "16 KiB"),
    ("just over 16 KiB", json.dumps({"username": "a", "password": "p" * 16_400}), JSON, False, 413, "16 KiB"),
    ("1 MiB base64 body", base64.b64encode(b"x" * (1024 * 1024)).decode(), JSON, False, 413, "16 KiB"),
    ("text/plain", "username=a&password=b", {"Content-Type": "text/plain"}, False, 415, "Content-Type"),
    ("no content type", '{"username": "a", "password": "b"}', {}, False, 415, "Content-Type"),
    ("latin-1 charset", "username=a&password=b", {"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"},
     False, 415, "Content-Type"),
    ("non-UTF-8 bytes", base64.b64encode(b'{"username": "\xff\xfe", "password": "x"}').decode(), JSON, True, 400,
     "UTF-8"),
    ("non-UTF-8 form escape", "username=%FF&password=x", FORM, False, 400, "UTF-8"),
    ("lone surrogate", '{"username": "\\ud800", "password": "x"}', JSON, False, 400, "Unicode"),
    ("invalid base64", "!!!not base64!!!", JSON, True, 400, "base64"),
    ("deeply nested JSON", "[" * 5000 + "]" * 5000, JSON, False, 400, "JSON"),
]  # fmt: skip
# RFC 6749 §5.2: a grant type the route does not serve has its own code.
UNSUPPORTED_GRANT = {"wrong grant_type (form)", "wrong grant_type (JSON)", "wrong grant_type before missing fields"}


@pytest.mark.parametrize(
    ("name", "body", "headers", "b64", "status", "fragment"), BAD_INPUT, ids=[row[0] for row in BAD_INPUT]
)
def test_bad_input_is_a_4xx_and_never_reaches_the_upstream(
    name: str,
    body: str | None,
    headers: dict[str, str],
    b64: bool,
    status: int,
    fragment: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    # Given a healthy upstream
    httpserver.expect_request("/auth/token/").respond_with_json({"access_token": "never"})
    # When the SPA sends bad input
    response = load_app("password").lambda_handler(login_event(body, headers, b64=b64), context)
    # Then a clear 4xx from the contract's table, and no upstream call
    assert response["statusCode"] == status
    body_json = body_of(response)
    assert body_json["error"] == ("unsupported_grant_type" if name in UNSUPPORTED_GRANT else "invalid_request")
    assert fragment in body_json["error_description"]
    assert response["headers"]["Cache-Control"] == "no-store"
    assert httpserver.log == []


def test_unlisted_origin_is_403_without_an_upstream_call(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    response = load_app("password").lambda_handler(load_event("password-unlisted-origin"), context)
    assert response["statusCode"] == 403
    assert body_of(response)["error"] == "invalid_request"
    assert "Access-Control-Allow-Origin" not in response["headers"]
    assert httpserver.log == []


def test_null_origin_is_403(load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext) -> None:
    event = load_event("password-json")
    event["headers"]["Origin"] = "null"
    assert load_app("password").lambda_handler(event, context)["statusCode"] == 403


@pytest.mark.parametrize(
    "error", ["invalid_grant", "invalid_scope", "unauthorized_client", "invalid_request", "unsupported_grant_type"]
)
def test_caller_errors_pass_through_sanitised(
    error: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an upstream description with a quote, a backslash, a newline, non-ASCII and the password itself
    description = 'Bad "grant" \\ for\nzoë: demo-password was wrong ' + "x" * 400
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"error": error, "error_description": description}, status=400
    )
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 400
    body = body_of(response)
    assert body["error"] == error
    text = body["error_description"]
    assert "demo-password" not in text
    assert len(text) <= 200
    assert all(c in {" ", "!"} or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e" for c in text)


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, "<html>boom</html>", "text/html"),
        (502, "", "text/plain"),
        (504, "", "text/plain"),
        (200, "<html>login page</html>", "text/html"),
        (200, '{"access_token": "tru', "application/json"),
        (200, '["access_token"]', "application/json"),
        (200, '{"token_type": "Bearer"}', "application/json"),
        (404, "not found", "text/plain"),
        (400, '{"error": "something_else"}', "application/json"),
        (307, "", "text/plain"),
        (308, "", "text/plain"),
    ],
    ids=["500", "502", "504", "html", "truncated-json", "json-array", "no-access-token", "404", "unknown-error", "307",
         "308"],
)  # fmt: skip
def test_broken_upstream_answers_are_502_and_never_echoed(
    status: int,
    body: str,
    content_type: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    headers = {"Location": httpserver.url_for("/elsewhere")} if status in (307, 308) else {}
    httpserver.expect_request("/auth/token/").respond_with_response(
        Response(body, status=status, content_type=content_type, headers=headers)
    )
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 502
    assert body_of(response)["error"] == "server_error"
    if body:
        assert body not in response["body"]
    # a redirect is never followed: the target received nothing
    assert [entry[0].path for entry in httpserver.log] == ["/auth/token/"]


@pytest.mark.parametrize("status", [429, 503])
def test_busy_upstream_is_503_with_its_retry_after(
    status: int, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({}, status=status, headers={"Retry-After": "17"})
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "temporarily_unavailable"
    assert response["headers"]["Retry-After"] == "17"


def test_a_malformed_retry_after_is_dropped(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({}, status=429, headers={"Retry-After": "soon; x"})
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 503
    assert "Retry-After" not in response["headers"]


def test_a_body_over_1_mib_is_502(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    big = json.dumps({"access_token": "a", "padding": "x" * (1024 * 1024)})
    httpserver.expect_request("/auth/token/").respond_with_data(big, content_type="application/json")
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 502


def test_rejected_client_credentials_after_a_fresh_read_are_502(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an upstream that rejects the broker's client, and a secret that does not change
    httpserver.expect_request("/auth/token/").respond_with_json({"error": "invalid_client"}, status=401)
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    # Then one forced re-read, no pointless second upstream call, and a 502
    assert response["statusCode"] == 502
    assert body_of(response)["error"] == "server_error"
    assert len(secrets_manager.reads) == 2
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    "secret",
    [
        None,  # deleted
        "not json",
        json.dumps(["a", "list"]),
        json.dumps({"client_id": "demo-client"}),  # lacks client_secret
        json.dumps({**DEMO_SECRET, "client_secret": ""}),
    ],
    ids=["missing", "not-json", "not-object", "lacks-key", "empty-key"],
)
def test_unusable_secret_is_503_and_not_cached(
    secret: str | None,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    if secret is None:
        secrets_manager.client.delete_secret(SecretId="token-broker/client", ForceDeleteWithoutRecovery=True)
    else:
        secrets_manager.put(secret)
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    app = load_app("password")
    response = app.lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "temporarily_unavailable"
    assert httpserver.log == []

    # When the secret is fixed, the very next call succeeds: nothing bad was cached
    if secret is None:
        secrets_manager.client.create_secret(Name="token-broker/client", SecretString=json.dumps(DEMO_SECRET))
    else:
        secrets_manager.put(DEMO_SECRET)
    assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 200


def test_secret_with_a_line_break_in_a_header_value_is_503(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    secrets_manager.put({**DEMO_SECRET, "exchange_token": "abc\r\nX-Injected: 1"})
    response = load_app("exchange").lambda_handler(load_event("exchange"), context)
    assert response["statusCode"] == 503
    assert httpserver.log == []


def test_other_methods_are_400(load_app: AppLoader, context: FakeContext) -> None:
    event = load_event("password-json", httpMethod="GET")
    response = load_app("password").lambda_handler(event, context)
    assert response["statusCode"] == 400
