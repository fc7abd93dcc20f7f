"""POST /auth/token (one token endpoint, by grant_type) and RFC 7009 on POST /auth/logout."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer

from broker.config import Config
from broker.grants import PasswordGrant, RefreshGrant, TokenEndpointGrant
from broker.pipeline import TokenBroker
from broker.profiles import PRESETS
from tests.support import DEMO_SECRET, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, body_of

FORM = "application/x-www-form-urlencoded"


def sent_form(httpserver: HTTPServer, index: int = -1) -> dict[str, list[str]]:
    return parse_qs(httpserver.log[index][0].get_data(as_text=True))


@pytest.mark.parametrize(
    ("event", "single_route_app", "single_route_event"),
    [("token-password-form", "password", "password-form"), ("token-refresh-form", "refresh", "refresh-form")],
)
def test_the_token_endpoint_sends_what_the_single_route_sends(
    event: str,
    single_route_app: str,
    single_route_event: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    # Given an upstream that issues tokens
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)

    # When a library posts its grant to /auth/token, and the SPA the same grant to its own route
    via_token = load_app("token").lambda_handler(load_event(event), context)
    via_route = load_app(single_route_app).lambda_handler(load_event(single_route_event), context)

    # Then both get the same answer from the same upstream request, the public client_id dropped
    assert via_token["statusCode"] == via_route["statusCode"] == 200
    assert body_of(via_token) == body_of(via_route) == token_answer
    assert via_token["headers"]["Cache-Control"] == "no-store"
    assert sent_form(httpserver, 0) == sent_form(httpserver, 1)
    assert sent_form(httpserver, 0)["client_id"] == [DEMO_SECRET["client_id"]]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("username=demo&password=demo-password", "grant_type must be 'password' or 'refresh_token'"),
        ("grant_type=client_credentials", "grant_type 'client_credentials' is not served by this broker."),
        ("grant_type=authorization_code&code=abc", "not served by this broker"),
        ("grant_type=demo-password", "grant_type must be 'password' or 'refresh_token' on this route."),
    ],
)
def test_the_token_endpoint_refuses_other_grant_types_without_an_upstream_call(
    body: str, fragment: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer,
    context: FakeContext,
) -> None:  # fmt: skip
    # When a library sends a grant type the broker does not serve (or none)
    response = load_app("token").lambda_handler(load_event("token-password-form", body=body), context)

    # Then RFC 6749's unsupported_grant_type, and the upstream is never called
    assert response["statusCode"] == 400
    answer = body_of(response)
    assert answer["error"] == "unsupported_grant_type"
    assert fragment in answer["error_description"]
    assert "demo-password" not in response["body"]  # an unknown value is never echoed
    assert httpserver.log == []


def test_the_single_routes_name_the_route_that_serves_a_grant_type(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # When a refresh lands on the login route (a library with one token endpoint, misconfigured)
    event = load_event("refresh-form", resource="/auth/login", path="/auth/login")
    response = load_app("password").lambda_handler(event, context)

    # Then unsupported_grant_type naming the routes that serve it, not "missing username"
    assert response["statusCode"] == 400
    assert body_of(response) == {
        "error": "unsupported_grant_type",
        "error_description": "grant_type 'refresh_token' is served at POST /auth/refresh or POST /auth/token.",
    }
    assert httpserver.log == []


def test_the_token_endpoint_keeps_cookie_mode_rules(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    # Given cookie mode
    secrets_manager.put({**DEMO_SECRET, "broker_keys": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"]})
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    app = load_app("token", BROKER_REFRESH_DELIVERY="cookie")

    # When a library logs in at /auth/token: the refresh token goes into the cookie, as on /auth/login
    login = app.lambda_handler(load_event("token-password-form"), context)
    assert login["statusCode"] == 200, login["body"]
    assert "refresh_token" not in body_of(login)
    assert login["multiValueHeaders"]["Set-Cookie"][0].startswith("__Host-")

    # And a refresh there without X-CSRF is refused, as on /auth/refresh
    refresh = load_event("token-refresh-form", body="grant_type=refresh_token")
    refresh["headers"]["Origin"] = "http://localhost:5173"
    refused = app.lambda_handler(refresh, context)
    assert refused["statusCode"] == 403
    assert len(httpserver.log) == 1


class RecordingGuards:
    """Stands in for broker.guards.Guards: records which guard each call went through."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def keys_for(self, secret: object) -> None:
        return None

    def login(self, username: str, source_ip: str, keys: object, call: Callable[[], Any]) -> Any:
        self.calls.append(f"login:{username}")
        return call()

    def single_flight(self, refresh_token: str, keys: object, call: Callable[[], Any], *, scope: str = "") -> Any:
        self.calls.append("single_flight")
        return call()


def test_each_grant_type_goes_through_its_own_routes_guard(
    secrets_manager: SecretsManager, httpserver: HTTPServer, token_answer: dict[str, Any], context: FakeContext
) -> None:
    # Given the token endpoint's broker with the guards on
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    profile = PRESETS["bakrypt"]._replace(token_url=httpserver.url_for("/auth/token/"))
    config = Config("token-broker/client", profile, frozenset(), state_table="token-broker-state")
    broker = TokenBroker(TokenEndpointGrant(), config)
    assert broker.guards is not None  # the guards' table is set: a login is counted, a refresh single-flighted
    guards = RecordingGuards()
    broker.guards = guards  # type: ignore[assignment]  # a recording stand-in for Guards

    # When a login and a refresh come in
    for event in ("token-password-form", "token-refresh-form"):
        assert broker.handle(load_event(event))["statusCode"] == 200

    # Then the login went through the lockout, the refresh through single-flight
    assert guards.calls == ["login:demo", "single_flight"]


def test_the_token_endpoint_needs_what_both_grants_need() -> None:
    profile = PRESETS["didit"]._replace(headers={"partnerId": "{partner_id}"})
    grant = TokenEndpointGrant()
    keys = set(PasswordGrant().secret_keys(profile)) | set(RefreshGrant().secret_keys(profile))
    assert grant.secret_keys(profile) == tuple(sorted(keys))


# -- RFC 7009 on /auth/logout --------------------------------------------------------------------


def revocation_upstream(httpserver: HTTPServer, status: int = 200) -> Mapping[str, str]:
    httpserver.expect_request("/auth/revoke_token/", method="POST").respond_with_data("", status=status)
    return {"BROKER_PROFILE": json.dumps({"token_url": httpserver.url_for("/auth/token/"),
                                          "revocation_url": httpserver.url_for("/auth/revoke_token/")})}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "forwarded"),
    [
        # a library's form, with its public client_id (and an empty Basic header in the event)
        ("token=at-1&token_type_hint=access_token&client_id=spa", FORM,
         {"token": ["at-1"], "token_type_hint": ["access_token"]}),
        ('{"token": "rt-1"}', "application/json", {"token": ["rt-1"]}),
        ('{"refresh_token": "rt-1"}', "application/json", {"token": ["rt-1"], "token_type_hint": ["refresh_token"]}),
        ("token=rt-1&token_type_hint=something_else", FORM, {"token": ["rt-1"], "token_type_hint": ["something_else"]}),
    ],
)  # fmt: skip
def test_logout_takes_rfc7009_token_and_forwards_the_hint_as_given(
    body: str,
    content_type: str,
    forwarded: dict[str, list[str]],
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    # Given an upstream with a revocation endpoint
    env = revocation_upstream(httpserver)
    event = load_event("logout-rfc7009-form", body=body)
    event["headers"]["Content-Type"] = content_type

    # When a library revokes
    response = load_app("logout", **env).lambda_handler(event, context)

    # Then 200, and the upstream got the token and the hint as sent, with the broker's own client
    assert response["statusCode"] == 200
    sent = sent_form(httpserver)
    assert sent == {
        **forwarded,
        "client_id": [DEMO_SECRET["client_id"]],
        "client_secret": [DEMO_SECRET["client_secret"]],
    }


def test_logout_answers_200_for_a_token_the_upstream_does_not_know(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    env = revocation_upstream(httpserver, status=400)
    response = load_app("logout", **env).lambda_handler(load_event("logout-rfc7009-form"), context)
    assert response["statusCode"] == 200
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [("client_id=spa", "Missing required parameter: token."), ("token=a&refresh_token=b", "not both")],
)
def test_logout_without_one_token_is_invalid_request(
    body: str, fragment: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer,
    context: FakeContext,
) -> None:  # fmt: skip
    env = revocation_upstream(httpserver)
    response = load_app("logout", **env).lambda_handler(load_event("logout-rfc7009-form", body=body), context)
    assert response["statusCode"] == 400
    assert body_of(response)["error"] == "invalid_request"
    assert fragment in body_of(response)["error_description"]
    assert httpserver.log == []


def test_with_the_password_flow_off_the_token_endpoint_refuses_the_password_grant(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a deployment that signs in with the code flow only (RFC 10017: no password grant)
    secrets_manager.put({**DEMO_SECRET, "broker_keys": ["a" * 43]})
    profile = json.dumps({"preset": "bakrypt", "issuer": "https://idp.example"})
    app = load_app("token", BROKER_REFRESH_DELIVERY="cookie", BROKER_LOGIN_FLOWS="code", BROKER_PROFILE=profile)

    # When a library sends a password grant to the one token endpoint
    response = app.lambda_handler(load_event("token-password-form"), context)

    # Then it is unsupported_grant_type, and the upstream never sees the password
    assert (response["statusCode"], body_of(response)["error"]) == (400, "unsupported_grant_type")
    assert httpserver.log == []
