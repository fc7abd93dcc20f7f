"""The scope rules, client authentication in the body, and what a broker checks at cold start.

Scope is the confidential client's privilege (broker.scopes): a requested scope goes upstream
only when the profile's allowlist holds every item of it; without an allowlist it is dropped;
``default_scope`` is sent when nothing is requested, on the grants that ask for it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import broker.pipeline
from broker.client_auth import METHODS
from broker.config import Config
from broker.cookies import COOKIE_NAME, CookieJar, parse_keys
from broker.errors import ConfigError, InvalidScope
from broker.grants import ExchangeGrant, PasswordGrant
from broker.pipeline import TokenBroker
from broker.profiles import PRESETS, Profile
from broker.scopes import scoped
from tests.support import DEMO_SECRET, SINK, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of

BAKRYPT = PRESETS["bakrypt"]
ALLOWLIST = BAKRYPT._replace(scopes=("read", "write", "openid"))
KEY = base64.urlsafe_b64encode(b"p" * 32).decode().rstrip("=")
DEPLOYMENT = "token-broker-test"
COOKIE_ENV = {"BROKER_REFRESH_DELIVERY": "cookie", "BROKER_DEPLOYMENT_ID": DEPLOYMENT}


# -- scoped: what goes upstream ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "params", "use_default", "expected"),
    [
        # no allowlist: a requested scope is dropped (the upstream's default applies), nothing added
        (BAKRYPT, {"username": "u", "scope": "read"}, True, {"username": "u"}),
        (BAKRYPT._replace(default_scope="profile"), {"username": "u", "scope": "read"}, True, {"username": "u"}),
        # an allowlist: the requested items, each allowed, as one space-separated value
        (ALLOWLIST, {"username": "u", "scope": "read  write"}, False, {"username": "u", "scope": "read write"}),
        (ALLOWLIST, {"scope": "openid"}, True, {"scope": "openid"}),
        # nothing requested: no scope at all, unless the grant sends the profile's default
        (ALLOWLIST, {"username": "u"}, False, {"username": "u"}),
        (ALLOWLIST._replace(default_scope="openid read"), {"username": "u"}, True,
         {"username": "u", "scope": "openid read"}),
        (BAKRYPT._replace(default_scope="profile"), {"username": "u"}, True, {"username": "u", "scope": "profile"}),
        (BAKRYPT._replace(default_scope="profile"), {"username": "u"}, False, {"username": "u"}),
        (BAKRYPT, {"username": "u"}, True, {"username": "u"}),
        # a requested scope is never replaced by the default
        (ALLOWLIST._replace(default_scope="openid"), {"scope": "read"}, True, {"scope": "read"}),
    ],
    ids=["dropped", "dropped-not-defaulted", "allowed", "allowed-one", "none", "default", "default-no-allowlist",
         "no-default-on-refresh", "no-default", "requested-wins"],
)  # fmt: skip
def test_the_scope_sent_upstream(
    profile: Profile, params: dict[str, str], use_default: bool, expected: dict[str, str]
) -> None:
    sent = dict(params)
    assert scoped(sent, profile, use_default=use_default) == expected
    assert sent == params  # the caller's parameters are left as they were


def test_a_refused_scope_names_the_first_item_beyond_the_allowlist() -> None:
    with pytest.raises(InvalidScope) as caught:
        scoped({"scope": "read admin root write"}, ALLOWLIST, use_default=True)
    assert caught.value.description == "Scope 'admin' is not allowed; allowed: read write openid."
    assert (caught.value.status, caught.value.error) == (400, "invalid_scope")


# -- client_secret_post: the credentials in the body, an absent one empty ---------------------------


@pytest.mark.parametrize(
    ("secret", "sent"),
    [
        ({"client_id": "id", "client_secret": "sec", "other": "x"}, {"client_id": "id", "client_secret": "sec"}),
        ({"client_id": "id"}, {"client_id": "id", "client_secret": ""}),
        ({"client_secret": "sec"}, {"client_id": "", "client_secret": "sec"}),
        ({}, {"client_id": "", "client_secret": ""}),
    ],
    ids=["both", "id-only", "secret-only", "neither"],
)
def test_client_secret_post_puts_both_credentials_in_the_body(secret: dict[str, str], sent: dict[str, str]) -> None:
    fields = {"grant_type": "password"}
    headers: dict[str, str] = {}
    METHODS["client_secret_post"].apply(fields, headers, secret)
    assert fields == {"grant_type": "password", **sent}
    assert headers == {}


def test_a_public_client_sends_no_credentials() -> None:
    fields = {"grant_type": "refresh_token"}
    headers: dict[str, str] = {}
    METHODS["none"].apply(fields, headers, {"client_id": "id", "client_secret": "sec"})
    assert (fields, headers) == ({"grant_type": "refresh_token"}, {})


# -- cold start: a served route's profile must name the URL its grant calls ---------------------------


def broker_for(grant: Any, profile: Profile, flows: frozenset[str] = frozenset({"password"})) -> TokenBroker:
    return TokenBroker(grant, Config("token-broker/client", profile, frozenset(), login_flows=flows))


@pytest.mark.parametrize(
    ("grant", "profile", "missing"),
    [
        (PasswordGrant(), BAKRYPT._replace(token_url=""), "token_url"),
        (ExchangeGrant(), BAKRYPT._replace(exchange_url=None), "exchange_url"),
    ],
    ids=["login", "exchange"],
)
def test_a_served_route_without_its_url_fails_the_init(grant: Any, profile: Profile, missing: str) -> None:
    with pytest.raises(ConfigError, match=f"^the profile has no {missing}$"):
        broker_for(grant, profile)


def test_a_route_whose_flow_is_off_starts_without_its_url_and_answers_404(secrets_manager: SecretsManager) -> None:
    # Given the login route in a deployment that signs in with the code flow only
    broker = broker_for(PasswordGrant(), BAKRYPT._replace(token_url=""), frozenset({"code"}))
    # When it is called, Then 404, without a secret read
    response = broker.handle(load_event("password-json"))
    assert response["statusCode"] == 404
    assert body_of(response)["error_description"] == "This login flow is not enabled on this deployment."
    assert secrets_manager.reads == []


# -- the pipeline's answers to failures ------------------------------------------------------------


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


def test_an_unexpected_failure_is_a_500_with_cors_and_its_traceback_logged(
    load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bug below the pipeline (the upstream call raises what no grant expects)
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    app = load_app("password")
    monkeypatch.setattr(broker.pipeline, "send", broken)
    before = len(SINK.lines)
    # When a login comes in from an allowed origin
    response = app.lambda_handler(load_event("password-json"), context)
    # Then RFC 6749's server_error, readable by the SPA (CORS), and nothing about the bug
    assert response["statusCode"] == 500
    assert body_of(response) == {
        "error": "server_error",
        "error_description": "The broker could not complete the request.",
    }
    assert response["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    # And the traceback is logged, and the request counted as a 500
    lines = records(before)
    (failure,) = [r for r in lines if r["message"] == "Unexpected failure"]
    assert failure["level"] == "ERROR"
    assert "RuntimeError" in failure["exception"]
    (request,) = [r for r in lines if r["message"] == "Token request failed"]
    assert (request["grant"], request["status"], request["error"]) == ("password", 500, "server_error")


def test_a_refusal_keeps_cors_and_sets_no_cookie_in_body_mode(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({"error": "invalid_grant"}, status=400)
    before = len(SINK.lines)
    response = load_app("password").lambda_handler(load_event("password-wrong-password"), context)
    assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_grant")
    assert response["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    assert response["multiValueHeaders"] == {}  # no refresh cookie to clear outside cookie mode
    (request,) = [r for r in records(before) if r["message"] == "Token request finished"]
    assert (request["status"], request["error"]) == (400, "invalid_grant")


def test_in_cookie_mode_only_a_dead_refresh_token_clears_the_cookie(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    """A refusal that says nothing about the refresh token (a CSRF refusal a cross-site page can
    provoke, the upstream's invalid_request) must not sign the user out."""
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    sealed = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600).seal("rt-PLANTED-kept")
    httpserver.expect_request("/auth/token/").respond_with_json({"error": "invalid_request"}, status=400)
    app = load_app("refresh", **COOKIE_ENV)
    refused = app.lambda_handler(cookie_event(sealed, csrf=False), context)
    assert (refused["statusCode"], refused["multiValueHeaders"]) == (403, {})
    upstream_refusal = app.lambda_handler(cookie_event(sealed), context)
    assert (upstream_refusal["statusCode"], body_of(upstream_refusal)["error"]) == (400, "invalid_request")
    assert upstream_refusal["multiValueHeaders"] == {}


def cookie_event(sealed: str, *, csrf: bool = True) -> dict[str, Any]:
    event = load_event("refresh-json", body=None)
    headers = {"Host": "broker.example", "Origin": ORIGIN, "Cookie": f"{COOKIE_NAME}={sealed}"}
    if csrf:
        headers["X-CSRF"] = "1"
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    return event


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_token_route_names_the_one_method_it_serves(
    method: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    event = load_event("password-json", httpMethod=method)
    response = load_app("password").lambda_handler(event, context)
    assert response["statusCode"] == 400
    assert refusal(response) == ("invalid_request", "Only POST is supported on this route.")
    assert httpserver.log == []


def refusal(response: dict[str, Any]) -> tuple[str, str]:
    answer = body_of(response)
    return answer["error"], answer["error_description"]


class SteppingClock:
    """Stands in for the pipeline's ``time``: each perf_counter() reading is the next one given."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)


def test_the_request_line_gives_the_duration_in_milliseconds_to_two_decimals(
    load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = load_app("password")
    clock = SteppingClock(1000.0, 1000.0123456)  # 12.3456 ms apart
    monkeypatch.setattr(broker.pipeline, "time", clock)
    before = len(SINK.lines)
    response = app.lambda_handler(load_event("password-json", body="{}"), context)
    assert response["statusCode"] == 400
    assert clock.readings == []
    (line,) = [r for r in records(before) if r["message"] == "Token request finished"]
    assert line["duration_ms"] == 12.35
    assert (line["grant"], line["status"], line["error"]) == ("password", 400, "invalid_request")


def test_a_preflight_names_the_routes_own_method(
    load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    """GET /auth/session (the code flow) is preflighted for GET, not for the token routes' POST."""
    env = {**COOKIE_ENV, "BROKER_LOGIN_FLOWS": "password,code"}
    profile = json.dumps({"preset": "bakrypt", "issuer": "https://idp.example"})
    event = load_event("password-preflight", path="/auth/session", resource="/auth/session")
    response = load_app("session", BROKER_PROFILE=profile, **env).lambda_handler(event, context)
    assert response["statusCode"] == 204
    assert response["headers"]["Access-Control-Allow-Methods"] == "GET, OPTIONS"
