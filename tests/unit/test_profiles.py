"""Each preset's exact upstream request, and JSON profiles with every capability the contract lists."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer

from broker.config import Config
from broker.errors import ConfigError
from broker.grants import ExchangeGrant, PasswordGrant, RefreshGrant
from broker.profiles import PRESETS, parse_profile
from broker.secrets import parse_secret
from tests.support import DEMO_SECRET, ISSUED, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, body_of

PASSWORD, REFRESH, EXCHANGE = PasswordGrant(), RefreshGrant(), ExchangeGrant()
SECRET = parse_secret(json.dumps(DEMO_SECRET))
PARTNER = {
    "token_url": "https://api.example.com/v1/auth/token",
    "client_auth": "none",
    "encoding": "json",
    "fields": {"refresh_token": "refreshToken"},
    "headers": {"partnerId": "{partner_id}", "grantType": "{grant_type}"},
}


@pytest.mark.parametrize(
    ("preset", "token_url", "exchange_url"),
    [
        ("bakrypt", "https://bakrypt.io/auth/token/", "https://bakrypt.io/auth/exchange/"),
        ("bakrypt-testnet", "https://testnet.bakrypt.io/auth/token/", "https://testnet.bakrypt.io/auth/exchange/"),
        ("didit", "https://apx.didit.me/auth/v2/token", None),
    ],
)
def test_presets_point_at_the_contracts_endpoints(preset: str, token_url: str, exchange_url: str | None) -> None:
    profile = parse_profile(preset)
    assert profile.token_url == token_url
    assert profile.exchange_url == exchange_url
    request = PASSWORD.upstream_request({"username": "demo", "password": "pw"}, SECRET, profile)
    assert request.url == token_url


def test_bakrypt_login_is_a_client_secret_post_form() -> None:
    request = PASSWORD.upstream_request({"username": "zoë", "password": "p&ss=1"}, SECRET, PRESETS["bakrypt"])
    assert request.headers == {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    assert request.body is not None
    assert parse_qs(request.body.decode()) == {
        "grant_type": ["password"],
        "username": ["zoë"],
        "password": ["p&ss=1"],
        "client_id": ["demo-client"],
        "client_secret": [DEMO_SECRET["client_secret"]],
    }


def test_bakrypt_exchange_is_a_token_header_and_no_body() -> None:
    request = EXCHANGE.upstream_request({}, SECRET, PRESETS["bakrypt"])
    assert request.url == "https://bakrypt.io/auth/exchange/"
    assert request.headers == {"Accept": "application/json", "Authorization": f"Token {DEMO_SECRET['exchange_token']}"}
    assert request.body is None


def test_didit_uses_http_basic_with_form_encoded_credentials() -> None:
    secret = parse_secret(json.dumps({"client_id": "id:with colon", "client_secret": "s&cret/+"}))
    request = REFRESH.upstream_request({"refresh_token": "rt"}, secret, PRESETS["didit"])
    # RFC 6749 §2.3.1: form-urlencode each part, then Basic
    expected = base64.b64encode(b"id%3Awith+colon:s%26cret%2F%2B").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.body is not None
    assert parse_qs(request.body.decode()) == {"grant_type": ["refresh_token"], "refresh_token": ["rt"]}


@pytest.mark.parametrize(
    ("preset", "client_auth"), [("bakrypt", "post"), ("bakrypt-testnet", "post"), ("didit", "basic")]
)
def test_each_preset_on_the_wire(
    preset: str,
    client_auth: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    # Given the preset pointed at a local upstream
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    app = load_app("password", BROKER_PROFILE=preset)
    # When the SPA logs in
    response = app.lambda_handler(load_event("password-json"), context)
    # Then one POST, form-encoded, with the preset's client authentication
    assert response["statusCode"] == 200
    (request, _), *rest = httpserver.log
    assert rest == []
    assert request.method == "POST"
    assert request.path == "/auth/token/"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    sent = parse_qs(request.get_data(as_text=True))
    assert sent["grant_type"] == ["password"]
    if client_auth == "post":
        assert sent["client_secret"] == [DEMO_SECRET["client_secret"]]
        assert "Authorization" not in request.headers
    else:
        assert "client_secret" not in sent
        assert request.authorization is not None
        assert request.authorization.username == DEMO_SECRET["client_id"]
        assert request.authorization.password == DEMO_SECRET["client_secret"]


def test_partner_json_profile_on_the_wire(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given the contract's "partner" dialect: JSON body, camelCase, partner id and grant type in headers
    httpserver.expect_request("/v1/auth/token", method="POST").respond_with_json(
        {"accessToken": ISSUED["access_token"], "refreshToken": ISSUED["refresh_token"], "expiresIn": 900}
    )
    profile = {**PARTNER, "token_url": httpserver.url_for("/v1/auth/token")}
    app = load_app("refresh", BROKER_PROFILE=json.dumps(profile), BROKER_TOKEN_URL="")
    # When the SPA refreshes
    response = app.lambda_handler(load_event("refresh-json"), context)
    # Then the upstream got camelCase JSON and templated headers, and the SPA got snake_case
    assert response["statusCode"] == 200
    assert body_of(response) == {
        "access_token": ISSUED["access_token"],
        "refresh_token": ISSUED["refresh_token"],
        "token_type": "Bearer",
        "expires_in": 900,
    }
    request = httpserver.log[0][0]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["partnerId"] == "partner-42"
    assert request.headers["grantType"] == "refresh_token"
    assert "Authorization" not in request.headers
    assert json.loads(request.get_data()) == {"grant_type": "refresh_token", "refreshToken": "demo-refresh-token"}


def test_json_profile_renames_drops_fields_and_maps_responses() -> None:
    profile = parse_profile(
        json.dumps(
            {
                "preset": "bakrypt",
                "encoding": "json",
                "client_auth": "client_secret_basic",
                "fields": {"grant_type": None, "username": "login"},
                "response_fields": {"jwt": "access_token", "ttl": "expires_in"},
            }
        )
    )
    request = PASSWORD.upstream_request({"username": "demo", "password": "pw"}, SECRET, profile)
    assert request.url == "https://bakrypt.io/auth/token/"
    assert request.body is not None
    assert json.loads(request.body) == {"login": "demo", "password": "pw"}
    assert profile.response_fields["jwt"] == "access_token"


def test_a_header_template_names_a_secret_key_the_secret_must_have() -> None:
    profile = parse_profile(json.dumps(PARTNER))
    assert REFRESH.secret_keys(profile) == ("partner_id",)
    assert PASSWORD.secret_keys(PRESETS["bakrypt"]) == ("client_id", "client_secret")
    assert EXCHANGE.secret_keys(PRESETS["bakrypt"]) == ("exchange_token",)


@pytest.mark.parametrize(
    "raw",
    [
        "nonexistent-preset",
        "{not json",
        "[]",
        json.dumps({"token_url": 5}),
        json.dumps({"client_auth": "private_key_jwt"}),
        json.dumps({"encoding": "xml"}),
        json.dumps({"fields": {"password": 1}}),
        json.dumps({"fields": {"client_assertion": "x"}}),
        json.dumps({"headers": {"Authorization": "x"}}),
        json.dumps({"headers": {"X-A": "a\r\nb"}}),
        json.dumps({"headers": {"bad header": "x"}}),
        json.dumps({"response_fields": {"jwt": "password"}}),
        json.dumps({"surprise": True}),
        json.dumps({"preset": "nope"}),
    ],
)
def test_invalid_profiles_fail_at_cold_start(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_profile(raw)


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({"BROKER_TOKEN_URL": "http://bakrypt.io/auth/token/"}, False),
        ({"BROKER_TOKEN_URL": "http://127.0.0.1:8000/auth/token/"}, True),
        ({"BROKER_TOKEN_URL": "http://localhost:8000/auth/token/"}, True),
        ({"BROKER_EXCHANGE_URL": "ftp://bakrypt.io/x"}, False),
        ({"BROKER_ALLOWED_ORIGINS": "*"}, False),
        ({"BROKER_UPSTREAM_TIMEOUT": "forever"}, False),
        ({"BROKER_UPSTREAM_TIMEOUT": "40"}, False),
        ({"BROKER_SECRET_ID": ""}, False),
    ],
)
def test_configuration_is_validated_once(env: dict[str, str], ok: bool) -> None:
    base = {"BROKER_SECRET_ID": "s", "BROKER_PROFILE": "bakrypt"}
    if ok:
        assert Config.from_env({**base, **env}).profile.token_url == env["BROKER_TOKEN_URL"]
    else:
        with pytest.raises(ConfigError):
            Config.from_env({**base, **env})


def test_spa_cannot_override_what_the_broker_sends() -> None:
    # Given an SPA that sends client credentials, a grant type and an upstream URL of its own
    params = {"username": "demo", "password": "pw", "client_id": "evil", "client_secret": "evil", "token_url": "x"}
    request = PASSWORD.upstream_request(params, SECRET, PRESETS["bakrypt"])
    assert request.url == "https://bakrypt.io/auth/token/"
    assert request.body is not None
    sent = parse_qs(request.body.decode())
    assert sent["client_id"] == ["demo-client"]
    assert sent["client_secret"] == [DEMO_SECRET["client_secret"]]
    assert "token_url" not in sent
