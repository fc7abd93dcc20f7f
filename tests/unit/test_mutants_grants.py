"""The grants' rules mutation testing found unpinned: exact descriptions, what goes upstream, what the guards get.

Each group names the rule it pins. Every test reaches the broker the way a caller does (a
function's handler, or ``TokenBroker.handle`` when a stand-in for the DynamoDB guards records
what they are asked), except where the rule is a grant's own contract (its secret keys, its
client authentication, its repr).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer

import broker.sealing
from broker.client_auth import METHODS
from broker.config import Config
from broker.cookies import COOKIE_NAME, CookieJar, parse_keys
from broker.errors import CsrfRejected, InvalidRequest, SchemaViolation
from broker.grants import PasswordGrant, RefreshGrant, TokenEndpointGrant
from broker.grants.base import Grant
from broker.grants.exchange import ExchangeGrant
from broker.grants.revocation import RevocationGrant
from broker.http import Request as BrokerRequest
from broker.pipeline import TokenBroker, check_csrf
from broker.profiles import PRESETS
from tests.support import DEMO_SECRET, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of

KEY = base64.urlsafe_b64encode(b"g" * 32).decode().rstrip("=")
DEPLOYMENT = "token-broker-test"
COOKIE_ENV = {"BROKER_REFRESH_DELIVERY": "cookie", "BROKER_DEPLOYMENT_ID": DEPLOYMENT}
JSON = "application/json"


def json_event(name: str, body: dict[str, str]) -> dict[str, Any]:
    event = load_event(name, body=json.dumps(body))
    event["headers"]["Content-Type"] = JSON
    event["multiValueHeaders"]["Content-Type"] = [JSON]
    return event


def refused(response: dict[str, Any]) -> tuple[int, str, str]:
    answer = body_of(response)
    return response["statusCode"], answer["error"], answer["error_description"]


# -- a schema violation's description names the field and the rule, never the value -----------


@pytest.mark.parametrize(
    ("app", "event", "body", "description"),
    [
        ("password", "password-json", {"username": "u" * 1025, "password": "pw"}, "Parameter 'username' is too long."),
        ("password", "password-json", {"username": "demo", "password": "p" * 4097},
         "Parameter 'password' is too long."),
        ("password", "password-json", {"username": "demo", "password": "pw", "scope": "read\\write"},
         "Parameter 'scope' is invalid."),
        ("password", "password-json", {"username": "demo", "password": "pw", "scope": "s" * 1025},
         "Parameter 'scope' is too long."),
        ("password", "password-json", {"username": "demo"}, "Missing required parameter: password."),
        ("refresh", "refresh-json", {"refresh_token": "r" * 4097}, "Parameter 'refresh_token' is too long."),
        ("logout", "logout-json", {"token": "rt-1", "token_type_hint": "h" * 65},
         "Parameter 'token_type_hint' is too long."),
    ],
    ids=["username-long", "password-long", "scope-pattern", "scope-long", "required", "refresh-long", "hint-long"],
)  # fmt: skip
def test_a_schema_violation_is_described_exactly(
    app: str,
    event: str,
    body: dict[str, str],
    description: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    # When a parameter breaks the route's schema
    response = load_app(app).lambda_handler(json_event(event, body), context)
    # Then invalid_request names the field and what is wrong with it, and the upstream is never called
    assert refused(response) == (400, "invalid_request", description)
    assert httpserver.log == []


def test_a_username_with_a_control_character_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as caught:
        PasswordGrant().check({"username": "de\x1bmo", "password": "pw"})
    assert caught.value.description == "Parameter 'username' holds a control character."


# -- scope: a refused item is named, cut to 40 characters ----------------------------------------


def test_a_refused_scope_is_named_cut_to_40_characters(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a profile that allows "read" and "write" only
    profile = json.dumps({"preset": "bakrypt", "scopes": ["read", "write"]})
    item = "admin:" * 10  # 60 characters, no run a description would redact
    body = {"username": "demo", "password": "pw", "scope": f"read {item}"}
    # When the SPA asks for more
    response = load_app("password", BROKER_PROFILE=profile).lambda_handler(json_event("password-json", body), context)
    # Then invalid_scope names the first refused item's first 40 characters, and the allowlist
    expected = "Scope 'admin:admin:admin:admin:admin:admin:admi' is not allowed; allowed: read write."
    assert refused(response) == (400, "invalid_scope", expected)
    assert httpserver.log == []


# -- client_secret_basic: each part form-encoded, an absent one empty ------------------------------


@pytest.mark.parametrize(
    ("secret", "pair"),
    [
        ({}, b":"),
        ({"client_id": "demo client"}, b"demo+client:"),
        ({"client_secret": "s/cret:1"}, b":s%2Fcret%3A1"),
        ({"client_id": "id", "client_secret": "sec"}, b"id:sec"),
    ],
    ids=["neither", "id-only", "secret-only", "both"],
)
def test_client_secret_basic_sends_an_absent_part_as_empty(secret: dict[str, str], pair: bytes) -> None:
    fields: dict[str, str] = {"grant_type": "password"}
    headers: dict[str, str] = {}
    METHODS["client_secret_basic"].apply(fields, headers, secret)
    assert headers == {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    assert fields == {"grant_type": "password"}  # nothing in the body


# -- the grants' names as logged ----------------------------------------------------------------


def test_a_grant_reads_as_its_class_and_the_token_endpoint_as_the_grants_it_serves() -> None:
    assert repr(PasswordGrant()) == "PasswordGrant()"
    assert repr(RevocationGrant()) == "RevocationGrant()"
    assert repr(TokenEndpointGrant()) == "TokenEndpointGrant(password, refresh_token)"
    assert repr(TokenEndpointGrant((RefreshGrant(),))) == "TokenEndpointGrant(refresh_token)"


# -- the token endpoint: validation and the password flow switched off ----------------------------


def test_the_token_endpoints_validator_is_the_chosen_grants() -> None:
    validate = TokenEndpointGrant().validate
    login = {"grant_type": "password", "username": "demo", "password": "pw"}
    assert validate(login) == login
    assert validate({"grant_type": "refresh_token"}) == {"grant_type": "refresh_token"}
    with pytest.raises(SchemaViolation) as caught:
        validate({"grant_type": "password", "username": "demo"})
    assert caught.value.rule == "required"


def test_with_the_password_flow_off_the_token_endpoint_says_so(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    profile = json.dumps({"preset": "bakrypt", "issuer": "https://idp.example"})
    app = load_app("token", **COOKIE_ENV, BROKER_LOGIN_FLOWS="code", BROKER_PROFILE=profile)
    response = app.lambda_handler(load_event("token-password-form"), context)
    assert refused(response) == (
        400,
        "unsupported_grant_type",
        "grant_type 'password' is turned off in this deployment.",
    )
    assert httpserver.log == []


# -- which grants load the cipher in the init phase -------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "cipher"),
    [(TokenEndpointGrant(), True), (RefreshGrant(), True), (PasswordGrant(), False), (RevocationGrant(), False)],
    ids=["token", "refresh", "password", "logout"],
)
def test_the_grants_that_seal_shared_refreshes_load_the_cipher_at_cold_start(
    grant: Grant, cipher: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh grant (alone, or behind /auth/token) seals single-flight outcomes: its guards
    import the cipher in the init phase, not in a request. The others derive keys only."""
    loaded: list[bool] = []
    real = broker.sealing.preload

    def preload(*, cipher: bool) -> None:
        loaded.append(cipher)
        real(cipher=cipher)

    monkeypatch.setattr(broker.sealing, "preload", preload)
    config = Config("token-broker/client", PRESETS["bakrypt"], frozenset(), state_table="token-broker-state")
    assert grant.make_guards(config) is not None
    assert loaded == [cipher]
    # And without a table there are no guards, and nothing is loaded for them
    assert grant.make_guards(config._replace(state_table="")) is None
    assert loaded == [cipher]


# -- the guards get the request's own values -------------------------------------------------------


class RecordingGuards:
    """Stands in for broker.guards.Guards: records what each guard is asked, then lets the call through."""

    def __init__(self) -> None:
        self.keys = object()  # what keys_for derives from the secret
        self.calls: list[tuple[Any, ...]] = []

    def keys_for(self, secret: object) -> object:
        return self.keys

    def login(self, username: str, source_ip: str, keys: object, call: Callable[[], Any]) -> Any:
        self.calls.append(("login", username, source_ip, keys))
        return call()

    def single_flight(self, refresh_token: str, keys: object, call: Callable[[], Any], *, scope: str = "") -> Any:
        self.calls.append(("single_flight", refresh_token, keys, scope))
        return call()

    def end_refresh(self, refresh_token: str, keys: object) -> None:
        self.calls.append(("end_refresh", refresh_token, keys))


def guarded_broker(grant: Grant, profile_changes: dict[str, Any]) -> tuple[TokenBroker, RecordingGuards]:
    profile = PRESETS["bakrypt"]._replace(**profile_changes)
    config = Config("token-broker/client", profile, frozenset({ORIGIN}), state_table="token-broker-state")
    broker = TokenBroker(grant, config)
    assert broker.guards is not None
    guards = RecordingGuards()
    broker.guards = guards  # type: ignore[assignment]  # a recording stand-in for Guards
    return broker, guards


def test_a_refresh_is_single_flighted_by_its_token_and_its_scope(
    secrets_manager: SecretsManager, httpserver: HTTPServer, token_answer: dict[str, Any]
) -> None:
    """Twins share an outcome only for the same refresh token and the same scope (none: "")."""
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    broker, guards = guarded_broker(
        RefreshGrant(), {"token_url": httpserver.url_for("/auth/token/"), "scopes": ("read", "write")}
    )
    for body in ({"refresh_token": "rt-1", "scope": "read"}, {"refresh_token": "rt-2"}):
        assert broker.handle(json_event("refresh-json", body))["statusCode"] == 200
    assert guards.calls == [("single_flight", "rt-1", guards.keys, "read"), ("single_flight", "rt-2", guards.keys, "")]
    assert [parse_qs(entry[0].get_data(as_text=True)).get("scope") for entry in httpserver.log] == [["read"], None]


def test_a_login_is_counted_by_username_and_source_ip(
    secrets_manager: SecretsManager, httpserver: HTTPServer, token_answer: dict[str, Any]
) -> None:
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    broker, guards = guarded_broker(PasswordGrant(), {"token_url": httpserver.url_for("/auth/token/")})
    assert broker.handle(load_event("password-json"))["statusCode"] == 200
    assert guards.calls == [("login", "demo", "198.51.100.7", guards.keys)]


def test_a_logout_ends_the_shared_refreshes_of_the_token_it_revokes(secrets_manager: SecretsManager) -> None:
    """No twin may receive the session's tokens once it is logged out, revoked upstream or not."""
    broker, guards = guarded_broker(RevocationGrant(), {"revocation_url": None})
    response = broker.handle(json_event("logout-json", {"token": "rt-ended"}))
    assert (response["statusCode"], body_of(response)) == (200, {})
    assert guards.calls == [("end_refresh", "rt-ended", guards.keys)]


# -- cookie mode: the refresh cookie ------------------------------------------------------------


@pytest.fixture
def keyed_secret(secrets_manager: SecretsManager) -> SecretsManager:
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    return secrets_manager


def cookie_refresh_event(cookie_headers: list[str], *, csrf: bool = True, origin: bool = True) -> dict[str, Any]:
    event = load_event("refresh-json", body=None)
    headers = {"Host": "broker.example", **({"Origin": ORIGIN} if origin else {}), **({"X-CSRF": "1"} if csrf else {})}
    event["headers"] = {**headers, **({"Cookie": cookie_headers[0]} if cookie_headers else {})}
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    if cookie_headers:
        event["multiValueHeaders"]["Cookie"] = cookie_headers
    return event


def test_a_refresh_without_the_cookie_says_to_sign_in_again(
    load_app: AppLoader, keyed_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    app = load_app("refresh", **COOKIE_ENV)
    response = app.lambda_handler(cookie_refresh_event(["theme=dark"]), context)
    assert refused(response) == (400, "invalid_request", "The refresh cookie is missing; sign in again.")
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("csrf", "origin", "description"),
    [(False, True, "The X-CSRF: 1 header is required."), (True, False, "An allowed Origin header is required.")],
    ids=["no-x-csrf", "no-origin"],
)
def test_a_cookie_refresh_without_the_csrf_defence_is_refused_with_its_reason(
    csrf: bool,
    origin: bool,
    description: str,
    load_app: AppLoader,
    keyed_secret: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    sealed = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600).seal("rt-PLANTED-csrf")
    event = cookie_refresh_event([f"{COOKIE_NAME}={sealed}"], csrf=csrf, origin=origin)
    response = load_app("refresh", **COOKIE_ENV).lambda_handler(event, context)
    assert refused(response) == (403, "invalid_request", description)
    assert httpserver.log == []


def test_a_same_origin_get_needs_x_csrf_but_no_origin() -> None:
    """Browsers omit Origin on a same-origin GET (GET /auth/session): X-CSRF alone passes there,
    while any other method without Origin is refused."""
    check_csrf(BrokerRequest("GET", {"x-csrf": "1"}, b"", "198.51.100.7"))
    with pytest.raises(CsrfRejected) as caught:
        check_csrf(BrokerRequest("POST", {"x-csrf": "1"}, b"", "198.51.100.7"))
    assert caught.value.description == "An allowed Origin header is required."
    with pytest.raises(CsrfRejected) as caught:
        check_csrf(BrokerRequest("GET", {"origin": ORIGIN}, b"", "198.51.100.7"))
    assert caught.value.description == "The X-CSRF: 1 header is required."


def test_the_refresh_cookie_is_found_in_any_of_several_cookie_headers(
    load_app: AppLoader, keyed_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    """HTTP/2 browsers may split cookies over several Cookie headers; API Gateway's single-value
    map keeps one of them. The cookie is read from all of them."""
    httpserver.expect_request("/auth/token/").respond_with_json({"access_token": "at-2", "token_type": "Bearer"})
    sealed = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600).seal("rt-PLANTED-split")
    event = cookie_refresh_event(["theme=dark", f"{COOKIE_NAME}={sealed}"])
    response = load_app("refresh", **COOKIE_ENV).lambda_handler(event, context)
    assert response["statusCode"] == 200
    assert parse_qs(httpserver.log[0][0].get_data(as_text=True))["refresh_token"] == ["rt-PLANTED-split"]


# -- exchange: the profile's header templates, and the exchange token never echoed ------------------


def test_exchange_fills_the_profiles_header_templates_from_the_secret(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/exchange/", method="POST").respond_with_json({"access_token": "at-x"})
    profile = json.dumps({"preset": "bakrypt", "headers": {"X-Partner": "{partner_id}", "X-Grant": "{grant_type}"}})
    response = load_app("exchange", BROKER_PROFILE=profile).lambda_handler(load_event("exchange"), context)
    assert response["statusCode"] == 200
    sent = httpserver.log[0][0].headers
    assert (sent["X-Partner"], sent["X-Grant"]) == (DEMO_SECRET["partner_id"], "exchange")
    assert sent["Authorization"] == f"Token {DEMO_SECRET['exchange_token']}"


def test_an_upstream_echo_of_the_exchange_token_is_redacted(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    token = DEMO_SECRET["exchange_token"]  # 23 characters: too short to look like a token by itself
    httpserver.expect_request("/auth/exchange/", method="POST").respond_with_json(
        {"error": "invalid_grant", "error_description": f"token {token} is unknown"}, status=400
    )
    response = load_app("exchange").lambda_handler(load_event("exchange"), context)
    assert refused(response) == (400, "invalid_grant", "token [redacted] is unknown")
    assert token not in response["body"]


def test_exchange_needs_the_exchange_token_and_the_header_templates_keys_only() -> None:
    profile = PRESETS["bakrypt"]._replace(headers={"X-Partner": "{partner_id}", "X-Grant": "{grant_type}"})
    assert ExchangeGrant().secret_keys(profile) == ("exchange_token", "partner_id")


# -- grant_type on a single route --------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant_type", "description"),
    [
        ("client_credentials",
         "grant_type 'client_credentials' is not served by this broker. This route serves grant_type 'password' only."),
        ("made-up", "This route serves grant_type 'password' only."),
    ],
    ids=["known", "unknown"],
)  # fmt: skip
def test_the_login_route_refuses_another_grant_type_exactly(
    grant_type: str,
    description: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    body = {"grant_type": grant_type, "username": "demo", "password": "pw"}
    response = load_app("password").lambda_handler(json_event("password-json", body), context)
    assert refused(response) == (400, "unsupported_grant_type", description)
    assert httpserver.log == []


def test_the_login_route_takes_its_own_grant_type(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    body = {"grant_type": "password", "username": "demo", "password": "pw"}
    response = load_app("password").lambda_handler(json_event("password-json", body), context)
    assert response["statusCode"] == 200
    sent = httpserver.log[0][0]
    assert parse_qs(sent.get_data(as_text=True))["grant_type"] == ["password"]
    assert (sent.headers["Accept"], sent.headers["Content-Type"]) == (JSON, "application/x-www-form-urlencoded")


def test_routes_without_a_grant_type_ignore_one(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    """Exchange takes no body and RFC 7009 requests have no grant_type: one sent is ignored."""
    httpserver.expect_request("/auth/exchange/", method="POST").respond_with_json({"access_token": "at-x"})
    exchange = json_event("exchange", {"grant_type": "password"})
    assert load_app("exchange").lambda_handler(exchange, context)["statusCode"] == 200
    logout = json_event("logout-json", {"token": "rt-1", "grant_type": "client_credentials"})
    assert load_app("logout", BROKER_PROFILE="{}").lambda_handler(logout, context)["statusCode"] == 200


# -- the refresh token: from the body, or from the cookie alone in cookie mode -----------------------


def test_a_body_mode_refresh_without_a_refresh_token_is_described_exactly(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    response = load_app("refresh").lambda_handler(json_event("refresh-json", {"scope": "read"}), context)
    assert refused(response) == (400, "invalid_request", "Missing required parameter: refresh_token.")
    assert httpserver.log == []


def test_in_cookie_mode_the_cookie_wins_over_a_refresh_token_in_the_body(
    load_app: AppLoader, keyed_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({"access_token": "at-2", "token_type": "Bearer"})
    sealed = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600).seal("rt-PLANTED-cookie")
    event = cookie_refresh_event([f"{COOKIE_NAME}={sealed}"])
    event["body"] = json.dumps({"refresh_token": "rt-from-the-body"})
    event["headers"]["Content-Type"] = JSON
    response = load_app("refresh", **COOKIE_ENV).lambda_handler(event, context)
    assert response["statusCode"] == 200
    assert parse_qs(httpserver.log[0][0].get_data(as_text=True))["refresh_token"] == ["rt-PLANTED-cookie"]


# -- header values from the secret ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partner", "fit"),
    [("partner-é", True), ("line\r\nX-Injected: 1", False), ("euro-€", False), ("tab\there", False)],
    ids=["latin-1", "crlf", "not-latin-1", "control"],
)
def test_a_secret_value_unfit_for_a_header_is_the_brokers_failure(
    partner: str,
    fit: bool,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/exchange/", method="POST").respond_with_json({"access_token": "at-x"})
    secrets_manager.put({**DEMO_SECRET, "partner_id": partner})
    profile = json.dumps({"preset": "bakrypt", "headers": {"X-Partner": "{partner_id}"}})
    response = load_app("exchange", BROKER_PROFILE=profile).lambda_handler(load_event("exchange"), context)
    if fit:
        assert response["statusCode"] == 200
        assert httpserver.log[0][0].headers["X-Partner"].encode("latin-1") == partner.encode("latin-1")
    else:
        description = "The broker's secret holds a value unfit for an HTTP header."
        assert refused(response) == (503, "temporarily_unavailable", description)
        assert httpserver.log == []


# -- a client_secret_basic credential echoed by the upstream ------------------------------------------


def test_an_echoed_basic_credential_is_redacted_even_when_short(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given client credentials whose Basic form is too short to look like a token by itself
    secrets_manager.put({"client_id": "c", "client_secret": "zz"})
    basic = base64.b64encode(b"c:zz").decode()
    assert basic == "Yzp6eg=="
    # And an upstream that quotes it back
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"error": "invalid_grant", "error_description": f"refused {basic} here"}, status=400
    )
    profile = json.dumps({"preset": "bakrypt", "client_auth": "client_secret_basic"})
    response = load_app("password", BROKER_PROFILE=profile).lambda_handler(load_event("password-json"), context)
    # Then the SPA never sees it
    assert refused(response) == (400, "invalid_grant", "refused [redacted] here")
    assert httpserver.log[0][0].headers["Authorization"] == f"Basic {basic}"


# -- the token request as the profile describes it ----------------------------------------------------


def sent_login(httpserver: HTTPServer) -> Any:
    return httpserver.log[0][0]


def test_a_profile_renames_and_drops_request_fields_and_keeps_the_rest(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    profile = json.dumps({"preset": "bakrypt", "fields": {"username": "email", "client_secret": None}})
    response = load_app("password", BROKER_PROFILE=profile).lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 200
    assert parse_qs(sent_login(httpserver).get_data(as_text=True)) == {
        "grant_type": ["password"],
        "email": ["demo"],
        "password": ["demo-password"],
        "client_id": [DEMO_SECRET["client_id"]],
    }


def test_a_json_profile_posts_utf8_json(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    """Non-ASCII goes as UTF-8, as the SPA sent it, not as \\u escapes some upstreams mishandle."""
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    profile = json.dumps({"preset": "bakrypt", "encoding": "json"})
    body = {"username": "zoë", "password": "pw"}
    response = load_app("password", BROKER_PROFILE=profile).lambda_handler(json_event("password-json", body), context)
    assert response["statusCode"] == 200
    sent = sent_login(httpserver)
    assert (sent.headers["Content-Type"], sent.headers["Accept"]) == (JSON, JSON)
    assert sent.get_data() == json.dumps(
        {
            "grant_type": "password",
            "username": "zoë",
            "password": "pw",
            "client_id": DEMO_SECRET["client_id"],
            "client_secret": DEMO_SECRET["client_secret"],
        },
        ensure_ascii=False,
    ).encode("utf-8")


def test_without_an_allowlist_a_requested_scope_never_reaches_the_upstream(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    body = {"username": "demo", "password": "pw", "scope": "admin"}
    response = load_app("password").lambda_handler(json_event("password-json", body), context)
    assert response["statusCode"] == 200
    assert "scope" not in parse_qs(sent_login(httpserver).get_data(as_text=True))


@pytest.mark.parametrize(("app", "event", "sent"), [("password", "password-json", ["openid profile"]),
                                                    ("refresh", "refresh-json", None)])  # fmt: skip
def test_the_default_scope_is_sent_on_login_and_never_on_refresh(
    app: str,
    event: str,
    sent: list[str] | None,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    """RFC 6749 §6: a refresh without scope means "as originally granted"."""
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    profile = json.dumps({"preset": "bakrypt", "default_scope": "openid profile"})
    response = load_app(app, BROKER_PROFILE=profile).lambda_handler(load_event(event), context)
    assert response["statusCode"] == 200
    assert parse_qs(sent_login(httpserver).get_data(as_text=True)).get("scope") == sent


def test_a_cookie_refresh_keeps_the_sessions_claims_in_the_new_cookie(
    load_app: AppLoader, keyed_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"access_token": "at-2", "refresh_token": "rt-PLANTED-next", "token_type": "Bearer"}
    )
    jar = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600)
    claims = {"sub": "user-1", "name": "Demo User"}
    event = cookie_refresh_event([f"{COOKIE_NAME}={jar.seal('rt-PLANTED-first', claims)}"])
    response = load_app("refresh", **COOKIE_ENV).lambda_handler(event, context)
    assert response["statusCode"] == 200
    (cookie,) = response["multiValueHeaders"]["Set-Cookie"]
    assert jar.open_session(cookie.split(";", 1)[0].split("=", 1)[1]) == ("rt-PLANTED-next", claims)


def test_a_profiles_accept_header_replaces_the_default_one(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    profile = json.dumps({"preset": "bakrypt", "headers": {"Accept": "application/vnd.api+json"}})
    response = load_app("password", BROKER_PROFILE=profile).lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 200
    assert sent_login(httpserver).headers.getlist("Accept") == ["application/vnd.api+json"]


def test_an_upstream_description_is_redacted_only_where_it_quotes_what_the_broker_sent(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    """With the credentials in the body (no Authorization header) nothing else is redacted."""
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"error": "invalid_grant", "error_description": "Code XXXX or WFhYWA is not valid"}, status=400
    )
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert refused(response) == (400, "invalid_grant", "Code XXXX or WFhYWA is not valid")
