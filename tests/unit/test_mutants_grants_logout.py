"""POST /auth/logout, rule by rule: RFC 7009's request upstream, what a failed revocation logs and
counts, the secret keys a logout needs, and the code flow's end-session URL.

A revocation that fails never blocks the logout: the caller always gets 200. So what shows the
failure is the log line (``Token revocation failed`` / ``refused``, with the error or the
upstream's status, never the token) and the ``RevocationFailed`` metric the template alarms on.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_httpserver import HTTPServer

import broker.oidc_discovery
from broker.cookies import COOKIE_NAME, CookieJar, parse_keys
from broker.grants.revocation import RevocationGrant
from broker.profiles import PRESETS
from tests.support import DEMO_SECRET, SINK, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of

KEY = base64.urlsafe_b64encode(b"L" * 32).decode().rstrip("=")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
REVOKE = "/auth/revoke_token/"
CODE_ENV = {
    "BROKER_REFRESH_DELIVERY": "cookie",
    "BROKER_DEPLOYMENT_ID": "token-broker-test",
    "BROKER_LOGIN_FLOWS": "password,code",
}


def records(before: int) -> list[dict[str, Any]]:
    """The broker's JSON log lines since ``before`` (the sink may see a record twice: once each)."""
    found: dict[str, dict[str, Any]] = {}
    for line in SINK.lines[before:]:
        try:
            record, end = json.JSONDecoder().raw_decode(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "message" in record:
            found.setdefault(line[:end], record)
    return list(found.values())


def logged(before: int, message: str) -> list[dict[str, Any]]:
    return [record for record in records(before) if record["message"] == message]


def revocation_failures(out: str) -> list[dict[str, Any]]:
    """The RevocationFailed counts on stdout (CloudWatch EMF lines)."""
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    return [document for document in documents if "RevocationFailed" in document]


def logout_app(load_app: AppLoader, httpserver: HTTPServer, **profile: Any) -> Any:
    settings = {
        "token_url": httpserver.url_for("/auth/token/"),
        "revocation_url": httpserver.url_for(REVOKE),
        **profile,
    }
    return load_app("logout", BROKER_PROFILE=json.dumps({k: v for k, v in settings.items() if v is not None}))


def form_logout(body: str) -> dict[str, Any]:
    return load_event("logout-rfc7009-form", body=body)


# -- RFC 7009's request: a form, the broker's own client authentication ----------------------------


def test_the_revocation_request_is_a_form_asking_for_json(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("")
    response = logout_app(load_app, httpserver).lambda_handler(form_logout("token=rt-1"), context)
    assert response["statusCode"] == 200
    sent = httpserver.log[0][0]
    assert sent.headers["Accept"] == JSON
    assert sent.headers["Content-Type"] == FORM
    assert "Authorization" not in sent.headers  # client_secret_post: the credentials are in the form


def test_with_client_secret_basic_the_revocation_authenticates_in_the_header(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("")
    app = logout_app(load_app, httpserver, client_auth="client_secret_basic")
    response = app.lambda_handler(form_logout("token=rt-1&token_type_hint=refresh_token"), context)
    assert response["statusCode"] == 200
    sent = httpserver.log[0][0]
    pair = f"{DEMO_SECRET['client_id']}:{DEMO_SECRET['client_secret']}".encode()
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(pair).decode()
    assert parse_qs(sent.get_data(as_text=True)) == {"token": ["rt-1"], "token_type_hint": ["refresh_token"]}


# -- which token, which hint ---------------------------------------------------------------------


def test_the_refresh_token_alias_keeps_a_hint_the_caller_sent(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("")
    event = form_logout("refresh_token=at-9&token_type_hint=access_token")
    assert logout_app(load_app, httpserver).lambda_handler(event, context)["statusCode"] == 200
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True))
    assert (sent["token"], sent["token_type_hint"]) == (["at-9"], ["access_token"])


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ("client_id=spa", "Missing required parameter: token."),
        ("token=a&refresh_token=b", "Send token or refresh_token, not both."),
    ],
    ids=["none", "two"],
)
def test_a_logout_without_exactly_one_token_is_described_exactly(
    body: str,
    description: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    response = logout_app(load_app, httpserver).lambda_handler(form_logout(body), context)
    assert response["statusCode"] == 400
    assert body_of(response) == {"error": "invalid_request", "error_description": description}
    assert httpserver.log == []


def test_the_same_token_under_both_names_is_one_token(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("")
    response = logout_app(load_app, httpserver).lambda_handler(form_logout("token=rt-1&refresh_token=rt-1"), context)
    assert response["statusCode"] == 200
    assert parse_qs(httpserver.log[0][0].get_data(as_text=True))["token"] == ["rt-1"]


# -- a revocation that fails is logged and counted; one that succeeds is not ---------------------------


def test_a_revocation_the_upstream_accepts_logs_and_counts_no_failure(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("", status=200)
    app = logout_app(load_app, httpserver)
    capsys.readouterr()
    before = len(SINK.lines)
    assert app.lambda_handler(form_logout("token=rt-1"), context)["statusCode"] == 200
    assert len(httpserver.log) == 1
    assert [r["message"] for r in records(before) if r["level"] in ("ERROR", "WARNING")] == []
    assert revocation_failures(capsys.readouterr().out) == []


@pytest.mark.parametrize("status", [201, 400, 503])
def test_a_revocation_the_upstream_refuses_is_logged_with_its_status_and_counted(
    status: int,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an upstream that answers the revocation with something other than RFC 7009's 200
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("nope", status=status)
    app = logout_app(load_app, httpserver)
    capsys.readouterr()
    before = len(SINK.lines)
    # When the SPA logs out, Then it is still 200
    response = app.lambda_handler(form_logout("token=rt-PLANTED-refused"), context)
    assert (response["statusCode"], body_of(response)) == (200, {})
    # And the refusal is logged with the upstream's status (never the token), and counted once
    (line,) = logged(before, "Token revocation refused")
    assert (line["level"], line["upstream_status"]) == ("ERROR", status)
    assert not any("rt-PLANTED-refused" in text for text in SINK.lines[before:])
    (metric,) = revocation_failures(capsys.readouterr().out)
    assert metric["RevocationFailed"] == [1.0]


def test_a_revocation_that_cannot_reach_the_upstream_is_logged_with_the_error_and_counted(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a revocation URL where nothing listens (port 9 is discard; closed on loopback)
    app = logout_app(load_app, httpserver, revocation_url="http://127.0.0.1:9/auth/revoke_token/")
    capsys.readouterr()
    before = len(SINK.lines)
    # When the SPA logs out, Then it is still 200
    response = app.lambda_handler(form_logout("token=rt-PLANTED-unreached"), context)
    assert (response["statusCode"], body_of(response)) == (200, {})
    # And the failure is logged with the broker's error and status, and counted once
    (line,) = logged(before, "Token revocation failed")
    assert (line["level"], line["error"], line["status"]) == ("ERROR", "server_error", 502)
    (metric,) = revocation_failures(capsys.readouterr().out)
    assert metric["RevocationFailed"] == [1.0]


def test_without_a_revocation_url_the_logout_says_nothing_was_revoked(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = logout_app(load_app, httpserver, revocation_url=None)
    capsys.readouterr()
    before = len(SINK.lines)
    response = app.lambda_handler(form_logout("token=rt-1"), context)
    assert (response["statusCode"], body_of(response)) == (200, {})
    assert httpserver.log == []
    (line,) = logged(before, "The profile has no revocation_url; the refresh token was not revoked")
    assert line["level"] == "INFO"
    assert revocation_failures(capsys.readouterr().out) == []


# -- the secret keys a logout needs ---------------------------------------------------------------


def test_a_logout_needs_the_client_credentials_only_when_it_revokes() -> None:
    templated = PRESETS["bakrypt"]._replace(headers={"X-Partner": "{partner_id}"})
    grant = RevocationGrant()
    assert grant.secret_keys(templated._replace(revocation_url=None)) == ("partner_id",)
    assert grant.secret_keys(templated) == ("client_id", "client_secret", "partner_id")
    assert grant.secret_keys(PRESETS["bakrypt"]._replace(revocation_url=None)) == ()


def test_without_a_revocation_url_a_cookie_logout_needs_the_broker_keys_only(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given cookie mode without revocation, and a secret holding the cookie keys and nothing else
    secrets_manager.put({"broker_keys": [KEY]})
    sealed = CookieJar(parse_keys(KEY), CODE_ENV["BROKER_DEPLOYMENT_ID"], 3600).seal("rt-PLANTED-cookie")
    event = load_event("logout-cookie")
    event["headers"]["Cookie"] = f"{COOKIE_NAME}={sealed}"
    event["multiValueHeaders"]["Cookie"] = [f"{COOKIE_NAME}={sealed}"]
    env = {k: v for k, v in CODE_ENV.items() if k != "BROKER_LOGIN_FLOWS"}
    app = load_app("logout", BROKER_PROFILE=json.dumps({"token_url": httpserver.url_for("/auth/token/")}), **env)
    before = len(SINK.lines)
    # When the SPA logs out
    response = app.lambda_handler(event, context)
    # Then the cookie is opened (its token is the one not revoked) and cleared, with no error
    assert response["statusCode"] == 200
    assert "Max-Age=0" in response["multiValueHeaders"]["Set-Cookie"][0]
    assert logged(before, "The profile has no revocation_url; the refresh token was not revoked")
    assert [r["message"] for r in records(before) if r["level"] == "ERROR"] == []


# -- the code flow's end-session URL ---------------------------------------------------------------


def test_without_the_code_flow_a_logout_offers_no_end_session_url(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a body-mode deployment whose profile names every code-flow endpoint
    httpserver.expect_request(REVOKE, method="POST").respond_with_data("")
    app = logout_app(
        load_app,
        httpserver,
        authorization_url=httpserver.url_for("/authorize"),
        end_session_url=httpserver.url_for("/logout"),
    )
    # When the SPA logs out from an allowed origin
    response = app.lambda_handler(load_event("logout-json"), context)
    # Then the logout is the revocation alone: no end-session URL for a flow that is off
    assert (response["statusCode"], body_of(response)) == (200, {})
    assert [entry[0].path for entry in httpserver.log] == [REVOKE]


@pytest.fixture
def fresh_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.oidc_discovery, "_documents", {})


def test_the_end_session_url_never_carries_a_client_id_the_secret_lacks(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
    fresh_discovery: None,
) -> None:
    # Given a code-flow deployment without revocation, whose secret holds its keys only
    issuer = httpserver.url_for("/issuer-a")
    httpserver.expect_request("/issuer-a/.well-known/openid-configuration").respond_with_json(
        {
            "issuer": issuer,
            "authorization_endpoint": httpserver.url_for("/authorize"),
            "token_endpoint": httpserver.url_for("/auth/token/"),
            "jwks_uri": httpserver.url_for("/jwks"),
            "end_session_endpoint": httpserver.url_for("/logout"),
        }
    )
    secrets_manager.put({"broker_keys": [KEY]})
    profile = {"token_url": httpserver.url_for("/auth/token/"), "issuer": issuer}
    app = load_app("logout", BROKER_PROFILE=json.dumps(profile), **CODE_ENV)
    # When the SPA logs out
    response = app.lambda_handler(load_event("logout-cookie"), context)
    # Then the end-session URL brings the browser back, and names no client
    assert response["statusCode"] == 200
    url = urlsplit(body_of(response)["end_session_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == httpserver.url_for("/logout")
    assert parse_qs(url.query) == {"post_logout_redirect_uri": [f"{ORIGIN}/"]}


def test_an_unknown_end_session_endpoint_is_logged_and_the_logout_goes_on(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
    fresh_discovery: None,
) -> None:
    # Given a code-flow deployment whose upstream's discovery document is unavailable
    issuer = httpserver.url_for("/issuer-down")
    httpserver.expect_request("/issuer-down/.well-known/openid-configuration").respond_with_data("", status=500)
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    profile = {"token_url": httpserver.url_for("/auth/token/"), "issuer": issuer}
    app = load_app("logout", BROKER_PROFILE=json.dumps(profile), **CODE_ENV)
    before = len(SINK.lines)
    # When the SPA logs out
    response = app.lambda_handler(load_event("logout-cookie"), context)
    # Then it is logged out (the cookie cleared) without an end-session URL, and the broker says why
    assert (response["statusCode"], body_of(response)) == (200, {})
    assert "Max-Age=0" in response["multiValueHeaders"]["Set-Cookie"][0]
    (line,) = logged(before, "The upstream's end-session endpoint is unknown")
    assert (line["level"], line["error"]) == ("ERROR", "server_error")
