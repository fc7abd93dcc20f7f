"""BFF mode: the refresh token lives in an encrypted __Host- cookie and never reaches JavaScript."""

from __future__ import annotations

import base64
import json
import os
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer

from broker.cookies import COOKIE_NAME, CookieJar, parse_keys
from tests.support import DEMO_SECRET, ISSUED, SINK, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of

KEY_OLD = base64.urlsafe_b64encode(b"o" * 32).decode().rstrip("=")
KEY_NEW = base64.urlsafe_b64encode(b"n" * 32).decode().rstrip("=")
DEPLOYMENT = "token-broker-test"
COOKIE_ENV = {"BROKER_REFRESH_DELIVERY": "cookie", "BROKER_DEPLOYMENT_ID": DEPLOYMENT, "BROKER_COOKIE_MAX_AGE": "3600"}


@pytest.fixture
def cookie_secret(secrets_manager: SecretsManager) -> SecretsManager:
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY_OLD]})
    return secrets_manager


def cookie_app(load_app: AppLoader, name: str, **env: str) -> ModuleType:
    return load_app(name, **{**COOKIE_ENV, **env})


def set_cookies(response: dict[str, Any]) -> list[str]:
    cookies: list[str] = response["multiValueHeaders"].get("Set-Cookie", [])
    assert "Set-Cookie" not in response["headers"]
    return cookies


def cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def refresh_event(cookie: str | None, *, csrf: bool = True, origin: str | None = ORIGIN) -> dict[str, Any]:
    event = load_event("refresh-json", body=None)
    headers = {"Host": "broker.example"}
    if origin:
        headers["Origin"] = origin
    if csrf:
        headers["X-CSRF"] = "1"
    if cookie is not None:
        headers["Cookie"] = f"theme=dark; {COOKIE_NAME}={cookie}"
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    return event


def test_login_sets_the_cookie_with_exact_attributes_and_no_refresh_token_in_the_body(
    load_app: AppLoader,
    cookie_secret: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    response = cookie_app(load_app, "password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 200
    body = body_of(response)
    assert "refresh_token" not in body
    assert body["access_token"] == ISSUED["access_token"]
    (cookie,) = set_cookies(response)
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    assert name_value.startswith(f"{COOKIE_NAME}=")
    assert COOKIE_NAME.startswith("__Host-")
    assert sorted(attributes) == sorted(["Max-Age=3600", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"])
    assert "Domain" not in cookie
    assert ISSUED["refresh_token"] not in json.dumps(response)
    assert response["headers"]["Access-Control-Allow-Credentials"] == "true"


def test_refresh_with_only_the_cookie_rotates_it(
    load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a cookie holding the current refresh token
    jar = CookieJar(parse_keys(KEY_OLD), DEPLOYMENT, 3600)
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"access_token": "at-2", "refresh_token": "rt-PLANTED-second", "token_type": "Bearer"}
    )
    # When the SPA refreshes with no body, only the cookie and X-CSRF
    response = cookie_app(load_app, "refresh").lambda_handler(refresh_event(jar.seal("rt-PLANTED-first")), context)
    # Then the upstream got the token from the cookie, and the SPA a new cookie
    assert response["statusCode"] == 200
    assert body_of(response) == {"access_token": "at-2", "token_type": "Bearer"}
    assert parse_qs(httpserver.log[0][0].get_data(as_text=True))["refresh_token"] == ["rt-PLANTED-first"]
    (cookie,) = set_cookies(response)
    assert jar.open(cookie_value(cookie)) == "rt-PLANTED-second"
    assert "rt-PLANTED" not in json.dumps(response)


@pytest.mark.parametrize(
    ("csrf", "origin"), [(False, ORIGIN), (True, None), (True, "https://evil.example"), (True, "null")]
)
def test_refresh_without_csrf_header_or_allowed_origin_is_403(
    csrf: bool,
    origin: str | None,
    load_app: AppLoader,
    cookie_secret: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    jar = CookieJar(parse_keys(KEY_OLD), DEPLOYMENT, 3600)
    event = refresh_event(jar.seal("rt-x"), csrf=csrf, origin=origin)
    response = cookie_app(load_app, "refresh").lambda_handler(event, context)
    assert response["statusCode"] == 403
    assert httpserver.log == []


def _tamper(value: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    raw[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize(
    "make",
    [
        lambda jar, other, expired: _tamper(jar.seal("rt-x")),
        lambda jar, other, expired: jar.seal("rt-x")[:-10],
        lambda jar, other, expired: "not-a-cookie",
        lambda jar, other, expired: CookieJar(parse_keys(KEY_NEW), DEPLOYMENT, 3600).seal("rt-x"),  # unknown key
        lambda jar, other, expired: other.seal("rt-x"),  # another deployment, same key
        lambda jar, other, expired: expired.seal("rt-x"),
    ],
    ids=["tampered", "truncated", "garbage", "re-keyed", "other-deployment", "expired"],
)
def test_bad_cookies_are_invalid_grant_and_cleared(
    make: Any, load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    keys = parse_keys(KEY_OLD)
    jar = CookieJar(keys, DEPLOYMENT, 3600)
    other = CookieJar(keys, "someone-elses-stack", 3600)
    expired = CookieJar(keys, DEPLOYMENT, 3600, clock=lambda: 1_000_000.0)  # sealed long ago
    response = cookie_app(load_app, "refresh").lambda_handler(refresh_event(make(jar, other, expired)), context)
    assert response["statusCode"] == 400
    assert body_of(response)["error"] == "invalid_grant"
    (cleared,) = set_cookies(response)
    assert cleared.startswith(f"{COOKIE_NAME}=;")
    assert "Max-Age=0" in cleared
    assert httpserver.log == []


def test_key_rotation_keeps_old_cookies_working_and_seals_with_the_new_key(
    load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a cookie made under the old key, and a secret that now lists a new key first
    old_cookie = CookieJar(parse_keys(KEY_OLD), DEPLOYMENT, 3600).seal("rt-old")
    cookie_secret.put({**DEMO_SECRET, "broker_keys": [KEY_NEW, KEY_OLD]})
    httpserver.expect_request("/auth/token/").respond_with_json({"access_token": "at", "refresh_token": "rt-new"})
    response = cookie_app(load_app, "refresh").lambda_handler(refresh_event(old_cookie), context)
    assert response["statusCode"] == 200
    (cookie,) = set_cookies(response)
    # The new cookie opens with the new key alone
    assert CookieJar(parse_keys(KEY_NEW), DEPLOYMENT, 3600).open(cookie_value(cookie)) == "rt-new"


def test_upstream_invalid_grant_clears_the_cookie(
    load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({"error": "invalid_grant"}, status=400)
    cookie = CookieJar(parse_keys(KEY_OLD), DEPLOYMENT, 3600).seal("rt-spent")
    response = cookie_app(load_app, "refresh").lambda_handler(refresh_event(cookie), context)
    assert response["statusCode"] == 400
    assert "Max-Age=0" in set_cookies(response)[0]


def test_logout_revokes_and_clears(
    load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/revoke/").respond_with_data("", status=200)
    cookie = CookieJar(parse_keys(KEY_OLD), DEPLOYMENT, 3600).seal("rt-PLANTED-logout")
    profile = json.dumps({"preset": "bakrypt", "revocation_url": httpserver.url_for("/auth/revoke/")})
    app = cookie_app(load_app, "logout", BROKER_PROFILE=profile)
    event = refresh_event(cookie)
    event["path"] = event["resource"] = "/auth/logout"
    response = app.lambda_handler(event, context)
    assert response["statusCode"] == 200
    assert "Max-Age=0" in set_cookies(response)[0]
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True))
    assert sent == {
        "token": ["rt-PLANTED-logout"],
        "token_type_hint": ["refresh_token"],
        "client_id": [DEMO_SECRET["client_id"]],
        "client_secret": [DEMO_SECRET["client_secret"]],
    }


def test_a_failed_revocation_still_clears_the_cookie_and_is_logged_without_the_token(
    load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/revoke/").respond_with_data("boom", status=500)
    cookie = CookieJar(parse_keys(KEY_OLD), DEPLOYMENT, 3600).seal("rt-PLANTED-logout")
    profile = json.dumps({"preset": "bakrypt", "revocation_url": httpserver.url_for("/auth/revoke/")})
    before = len(SINK.lines)
    response = cookie_app(load_app, "logout", BROKER_PROFILE=profile).lambda_handler(refresh_event(cookie), context)
    assert response["statusCode"] == 200
    assert "Max-Age=0" in set_cookies(response)[0]
    lines = SINK.lines[before:]
    assert any("Token revocation refused" in line for line in lines)
    assert not any("rt-PLANTED-logout" in line for line in lines)


def test_body_mode_logout_takes_the_token_in_the_body(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/revoke/").respond_with_data("", status=200)
    profile = json.dumps({"preset": "bakrypt", "revocation_url": httpserver.url_for("/auth/revoke/")})
    app = load_app("logout", BROKER_PROFILE=profile)
    response = app.lambda_handler(load_event("logout-json"), context)
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"] == {}
    assert parse_qs(httpserver.log[0][0].get_data(as_text=True))["token"] == ["demo-refresh-token"]


def test_cookie_mode_without_broker_keys_is_503(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    response = cookie_app(load_app, "password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 503
    assert httpserver.log == []


def test_body_mode_never_imports_cryptography() -> None:
    import subprocess
    import sys

    from tests.support import ROOT

    # The Lambda runtime has no pyOpenSSL (this venv does, for moto), without which botocore's
    # optional urllib3.contrib.pyopenssl import stops before it reaches cryptography.
    code = (
        "import sys; sys.modules['OpenSSL'] = None; sys.path[:0] = ['layers/broker', 'functions/password']; "
        "import app; "
        "print(any(m.startswith('cryptography') for m in sys.modules))"
    )
    env = {**os.environ, "BROKER_SECRET_ID": "s", "BROKER_PROFILE": "bakrypt", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_logout_with_an_unreadable_cookie_still_clears_it_and_revokes_nothing(
    load_app: AppLoader, cookie_secret: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    profile = json.dumps({"preset": "bakrypt", "revocation_url": httpserver.url_for("/auth/revoke/")})
    response = cookie_app(load_app, "logout", BROKER_PROFILE=profile).lambda_handler(
        load_event("logout-cookie"), context
    )
    assert response["statusCode"] == 200
    assert "Max-Age=0" in set_cookies(response)[0]
    assert httpserver.log == []
