"""The authorization code flow: authorize → callback → session, and every refusal at the callback.

The upstream is pytest-httpserver on loopback: a discovery document, a JWKS with one RSA key,
and a token endpoint answering with ID tokens signed (or forged) per test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_httpserver import HTTPServer
from werkzeug import Request as WerkzeugRequest
from werkzeug import Response

import broker.id_token
import broker.oidc_discovery
from broker.config import Config
from broker.cookies import COOKIE_NAME, LOGIN_COOKIE_NAME, CookieJar, parse_keys
from broker.errors import ConfigError
from tests.support import DEMO_SECRET, ISSUED, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of

KEY = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
DEPLOYMENT = "token-broker-test"
CLIENT_ID = DEMO_SECRET["client_id"]
RETURN_TO = f"{ORIGIN}/app?tab=1"
SIGNER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return {**public, "kid": kid, "use": "sig", "alg": "RS256"}


class Upstream:
    """The fake OIDC upstream's knobs and counters."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.issuer = server.url_for("/issuer")
        self.id_token: str | None = None
        self.token_error: tuple[int, dict[str, str]] | None = None  # the token endpoint's refusal, if any
        self.jwks_fetches = 0
        self.keys = [jwk(SIGNER, "k1")]
        self.token_bodies: list[dict[str, list[str]]] = []

    def claims(self, nonce: str, /, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.issuer, "sub": "user-1", "aud": CLIENT_ID, "azp": CLIENT_ID, "iat": now,
                "exp": now + 300, "nonce": nonce, "name": "Demo User", "email": "demo@example.com",
                "preferred_username": "demo", "groups": ["not", "kept"]}  # fmt: skip
        return {k: v for k, v in {**base, **changes}.items() if v is not None}

    def token(self, request: WerkzeugRequest) -> Response:
        self.token_bodies.append(parse_qs(request.get_data(as_text=True)))
        if self.token_error is not None:
            return Response(
                json.dumps(self.token_error[1]), status=self.token_error[0], content_type="application/json"
            )
        body = {**ISSUED, "token_type": "Bearer", "expires_in": 300, "id_token": self.id_token}
        return Response(json.dumps({k: v for k, v in body.items() if v is not None}), content_type="application/json")

    def jwks(self, request: WerkzeugRequest) -> Response:
        self.jwks_fetches += 1
        return Response(json.dumps({"keys": self.keys}), content_type="application/json")


@pytest.fixture
def upstream(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Upstream:
    return oidc_upstream(httpserver, monkeypatch)


def oidc_upstream(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Upstream:
    """The fake OIDC upstream, in a new execution environment: nothing discovered, no JWKS cached."""
    monkeypatch.setattr(broker.oidc_discovery, "_documents", {})
    monkeypatch.setattr(broker.id_token, "_key_sets", {})
    fake = Upstream(httpserver)
    document = {
        "issuer": fake.issuer,
        "authorization_endpoint": httpserver.url_for("/authorize"),
        "token_endpoint": httpserver.url_for("/discovered-token"),
        "jwks_uri": httpserver.url_for("/jwks"),
        "end_session_endpoint": httpserver.url_for("/logout"),
    }
    httpserver.expect_request("/issuer/.well-known/openid-configuration").respond_with_json(document)
    httpserver.expect_request("/jwks").respond_with_handler(fake.jwks)
    httpserver.expect_request("/auth/token/").respond_with_handler(fake.token)
    httpserver.expect_request("/discovered-token").respond_with_handler(fake.token)
    return fake


@pytest.fixture
def keyed_secret(secrets_manager: SecretsManager) -> SecretsManager:
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    return secrets_manager


def code_env(upstream: Upstream, **changes: str) -> dict[str, str]:
    profile = {
        "preset": "bakrypt",
        "issuer": upstream.issuer,
        "revocation_url": upstream.server.url_for("/auth/revoke_token/"),
        "default_scope": "profile email",
    }
    return {
        "BROKER_PROFILE": json.dumps(profile),
        "BROKER_REFRESH_DELIVERY": "cookie",
        "BROKER_DEPLOYMENT_ID": DEPLOYMENT,
        "BROKER_LOGIN_FLOWS": "password,code",
        "BROKER_REDIRECT_URI": "https://api.example.com/v1/auth/callback",
        **changes,
    }


def jar() -> CookieJar:
    return CookieJar(parse_keys(KEY), DEPLOYMENT, 3600)


def with_cookie(event: dict[str, Any], cookie: str | None) -> dict[str, Any]:
    headers = {k: v for k, v in event["headers"].items() if k != "Cookie"}
    if cookie is not None:
        headers["Cookie"] = cookie
    return {**event, "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()}}


def with_query(event: dict[str, Any], **query: str) -> dict[str, Any]:
    return {
        **event,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
    }


def set_cookies(response: dict[str, Any]) -> list[str]:
    cookies: list[str] = response["multiValueHeaders"].get("Set-Cookie", [])
    return cookies


class Login:
    """What /auth/authorize handed the browser: the login cookie, and the upstream URL's query."""

    def __init__(self, response: dict[str, Any]) -> None:
        assert response["statusCode"] == 302, response
        self.location = response["headers"]["Location"]
        self.query = {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}
        (self.set_cookie,) = set_cookies(response)
        self.cookie = self.set_cookie.split(";", 1)[0]
        self.sealed = jar().open_login(self.cookie.split("=", 1)[1])

    @property
    def state(self) -> str:
        return str(self.query["state"])

    @property
    def nonce(self) -> str:
        return str(self.query["nonce"])


def authorize(load_app: AppLoader, context: FakeContext, upstream: Upstream, **env: str) -> Login:
    event = with_query(load_event("authorize"), return_to=RETURN_TO)
    return Login(load_app("authorize", **code_env(upstream, **env)).lambda_handler(event, context))


def callback(
    load_app: AppLoader, context: FakeContext, upstream: Upstream, cookie: str | None, **query: str
) -> dict[str, Any]:
    event = with_cookie(with_query(load_event("callback"), **query), cookie)
    response: dict[str, Any] = load_app("callback", **code_env(upstream)).lambda_handler(event, context)
    return response


def assert_refused(response: dict[str, Any], error: str) -> None:
    """302 back to return_to with ?error=, and nothing set but the cleared login cookie."""
    assert response["statusCode"] == 302
    location = urlsplit(response["headers"]["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ORIGIN}/app"
    assert parse_qs(location.query) == {"tab": ["1"], "error": [error]}
    assert set_cookies(response) == [f"{LOGIN_COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"]
    assert ISSUED["refresh_token"] not in json.dumps(response)


def sign(claims: dict[str, Any], key: Any = SIGNER, kid: str | None = "k1", alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


# -- authorize -------------------------------------------------------------------------------


def test_authorize_sends_the_browser_upstream_with_pkce_state_and_nonce_sealed_in_a_lax_cookie(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = authorize(load_app, context, upstream)
    assert login.location.startswith(upstream.server.url_for("/authorize") + "?")  # found by discovery
    assert login.query["response_type"] == "code"
    assert login.query["client_id"] == CLIENT_ID
    assert login.query["redirect_uri"] == "https://api.example.com/v1/auth/callback"
    assert login.query["scope"] == "openid profile email"
    assert login.query["code_challenge_method"] == "S256"
    verifier = login.sealed["verifier"]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert login.query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert verifier not in login.location
    assert (login.sealed["state"], login.sealed["nonce"]) == (login.state, login.nonce)
    assert login.sealed["return_to"] == RETURN_TO
    name, *attributes = [part.strip() for part in login.set_cookie.split(";")]
    assert name.startswith(f"{LOGIN_COOKIE_NAME}=")
    assert sorted(attributes) == sorted(["Max-Age=600", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"])


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.example/", f"{ORIGIN}@evil.example/", "http://localhost:51730/", f"{ORIGIN}\\@evil.example", ""],
)
def test_authorize_refuses_a_return_to_off_the_allowed_origins_before_anything_else(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext, return_to: str
) -> None:
    event = with_query(load_event("authorize"), return_to=return_to)
    response = load_app("authorize", **code_env(upstream)).lambda_handler(event, context)
    assert response["statusCode"] == 400
    assert body_of(response)["error"] == "invalid_request"
    assert "Location" not in response["headers"]
    assert set_cookies(response) == []
    assert upstream.server.log == []  # not even discovery


def test_the_code_flow_routes_answer_404_while_the_flow_is_off(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    # (with a profile the code flow could not use: a route that is off does not check it)
    off = {**code_env(upstream, BROKER_LOGIN_FLOWS="password"), "BROKER_PROFILE": "bakrypt"}
    for name in ("authorize", "callback", "session"):
        response = load_app(name, **off).lambda_handler(load_event(name), context)
        assert response["statusCode"] == 404, name
        assert body_of(response)["error"] == "invalid_request"
    login = load_app("password", **code_env(upstream, BROKER_LOGIN_FLOWS="code"))
    assert login.lambda_handler(load_event("password-json"), context)["statusCode"] == 404


def test_the_code_flow_needs_cookie_mode() -> None:
    env = {"BROKER_SECRET_ID": "s", "BROKER_ALLOWED_ORIGINS": ORIGIN, "BROKER_LOGIN_FLOWS": "code"}
    with pytest.raises(ConfigError, match="cookie"):
        Config.from_env(env)


# -- callback: success ---------------------------------------------------------------------------


def test_a_valid_callback_sets_the_refresh_cookie_with_the_session_claims_and_returns_to_the_spa(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = authorize(load_app, context, upstream)
    upstream.id_token = sign(upstream.claims(login.nonce))
    response = callback(load_app, context, upstream, login.cookie, code="the-code", state=login.state)
    assert response["statusCode"] == 302
    assert response["headers"]["Location"] == RETURN_TO
    refresh, cleared = set_cookies(response)
    assert cleared.startswith(f"{LOGIN_COOKIE_NAME}=; Max-Age=0")
    token, claims = jar().open_session(refresh.split(";", 1)[0].split("=", 1)[1])
    assert token == ISSUED["refresh_token"]
    assert claims == {"sub": "user-1", "name": "Demo User", "email": "demo@example.com", "preferred_username": "demo"}
    (sent,) = upstream.token_bodies
    assert sent["grant_type"] == ["authorization_code"]
    assert sent["code"] == ["the-code"]
    assert sent["code_verifier"] == [login.sealed["verifier"]]
    assert sent["redirect_uri"] == ["https://api.example.com/v1/auth/callback"]

    # Then /auth/session answers the claims from the cookie, and a refresh keeps them
    session_event = with_cookie(load_event("session"), refresh.split(";", 1)[0])
    session = load_app("session", **code_env(upstream)).lambda_handler(session_event, context)
    assert session["statusCode"] == 200
    assert body_of(session) == {"claims": claims}
    refresh_event = with_cookie(load_event("refresh-json", body=None), refresh.split(";", 1)[0])
    refresh_event["headers"]["X-CSRF"] = "1"
    refresh_event["multiValueHeaders"]["X-CSRF"] = ["1"]
    refreshed = load_app("refresh", **code_env(upstream)).lambda_handler(refresh_event, context)
    assert refreshed["statusCode"] == 200, refreshed
    (rotated,) = set_cookies(refreshed)
    assert jar().open_session(rotated.split(";", 1)[0].split("=", 1)[1])[1] == claims


def test_session_without_a_valid_cookie_is_401_invalid_token(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    app = load_app("session", **code_env(upstream))
    for cookie in (None, f"{COOKIE_NAME}=forged"):
        response = app.lambda_handler(with_cookie(load_event("session"), cookie), context)
        assert response["statusCode"] == 401
        assert body_of(response)["error"] == "invalid_token"


def test_session_needs_x_csrf_and_refuses_an_unlisted_origin(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    cookie = f"{COOKIE_NAME}={jar().seal(ISSUED['refresh_token'], {'sub': 'user-1'})}"
    app = load_app("session", **code_env(upstream))
    event = with_cookie(load_event("session"), cookie)
    assert body_of(app.lambda_handler(event, context)) == {"claims": {"sub": "user-1"}}
    no_csrf = {**event, "headers": {k: v for k, v in event["headers"].items() if k != "X-CSRF"}}
    no_csrf["multiValueHeaders"] = {k: [v] for k, v in no_csrf["headers"].items()}
    assert app.lambda_handler(no_csrf, context)["statusCode"] == 403
    elsewhere = {**event, "headers": {**event["headers"], "Origin": "https://evil.example"}}
    elsewhere["multiValueHeaders"] = {k: [v] for k, v in elsewhere["headers"].items()}
    assert app.lambda_handler(elsewhere, context)["statusCode"] == 403


def test_logout_in_the_code_flow_offers_the_end_session_url(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    upstream.server.expect_request("/auth/revoke_token/").respond_with_data("")
    event = load_event("logout-cookie")
    response = load_app("logout", **code_env(upstream)).lambda_handler(event, context)
    assert response["statusCode"] == 200
    url = urlsplit(body_of(response)["end_session_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == upstream.server.url_for("/logout")
    origin = event["headers"]["Origin"]
    assert parse_qs(url.query) == {"client_id": [CLIENT_ID], "post_logout_redirect_uri": [f"{origin}/"]}


# -- callback: each refusal ---------------------------------------------------------------------


def test_a_wrong_state_is_refused(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = authorize(load_app, context, upstream)
    upstream.id_token = sign(upstream.claims(login.nonce))
    assert_refused(callback(load_app, context, upstream, login.cookie, code="c", state="other"), "invalid_request")
    assert upstream.token_bodies == []


def test_a_replayed_callback_is_refused(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    # Given a callback that succeeded, after which the upstream holds the code as spent
    login = authorize(load_app, context, upstream)
    upstream.id_token = sign(upstream.claims(login.nonce))
    first = callback(load_app, context, upstream, login.cookie, code="c", state=login.state)
    assert first["statusCode"] == 302
    assert first["headers"]["Location"] == RETURN_TO
    upstream.token_error = (400, {"error": "invalid_grant"})
    # When the browser (cookie cleared) or an attacker (cookie kept) replays it
    replayed = callback(load_app, context, upstream, None, code="c", state=login.state)
    assert replayed["headers"]["Location"] == f"{ORIGIN}?error=invalid_request"
    assert_refused(callback(load_app, context, upstream, login.cookie, code="c", state=login.state), "invalid_grant")


def test_a_missing_or_forged_login_cookie_is_refused(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = authorize(load_app, context, upstream)
    response = callback(load_app, context, upstream, None, code="c", state=login.state)
    # No cookie, no return_to: back to the first allowed origin
    assert response["headers"]["Location"] == f"{ORIGIN}?error=invalid_request"
    assert set_cookies(response) == [f"{LOGIN_COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"]
    # A refresh cookie's sealed value under the login cookie's name does not open (another place)
    for value in ("forged", jar().seal(ISSUED["refresh_token"])):
        cookie = f"{LOGIN_COOKIE_NAME}={value}"
        forged = callback(load_app, context, upstream, cookie, code="c", state=login.state)
        assert forged["headers"]["Location"] == f"{ORIGIN}?error=invalid_request"
    assert upstream.token_bodies == []


def test_the_upstreams_access_denied_is_passed_back(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = authorize(load_app, context, upstream)
    response = callback(load_app, context, upstream, login.cookie, error="access_denied", state=login.state)
    assert_refused(response, "access_denied")
    assert upstream.token_bodies == []


Forgery = Callable[[Upstream, str], str | None]
FORGERIES: dict[str, Forgery] = {
    "wrong signature": lambda up, nonce: sign(up.claims(nonce))[:-8] + "AAAAAAAA",
    "unknown key": lambda up, nonce: sign(up.claims(nonce), STRANGER, kid="k2"),
    "signed by a stranger under our kid": lambda up, nonce: sign(up.claims(nonce), STRANGER),
    "alg none": lambda up, nonce: jwt.encode(up.claims(nonce), "", algorithm="none"),
    "HMAC with the client secret": lambda up, nonce: jwt.encode(
        up.claims(nonce), DEMO_SECRET["client_secret"], algorithm="HS256", headers={"kid": "k1"}
    ),
    "wrong iss": lambda up, nonce: sign(up.claims(nonce, iss="https://evil.example")),
    "wrong aud": lambda up, nonce: sign(up.claims(nonce, aud="another-client", azp=None)),
    "wrong azp": lambda up, nonce: sign(up.claims(nonce, azp="another-client")),
    "wrong nonce": lambda up, nonce: sign(up.claims("another-nonce")),
    "no nonce": lambda up, nonce: sign(up.claims(nonce, nonce=None)),
    "expired": lambda up, nonce: sign(up.claims(nonce, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)),
    "issued in the future": lambda up, nonce: sign(up.claims(nonce, iat=int(time.time()) + 3600)),
    "no ID token": lambda up, nonce: None,
}


@pytest.mark.filterwarnings("ignore:The HMAC key")  # the forgery's own short key
@pytest.mark.parametrize("forgery", FORGERIES)
def test_an_id_token_that_does_not_validate_is_refused(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext, forgery: str
) -> None:
    login = authorize(load_app, context, upstream)
    upstream.id_token = FORGERIES[forgery](upstream, login.nonce)
    response = callback(load_app, context, upstream, login.cookie, code="c", state=login.state)
    assert_refused(response, "access_denied")
    assert len(upstream.token_bodies) == 1


def test_unknown_kids_within_the_interval_fetch_the_jwks_once(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    for _ in range(3):
        login = authorize(load_app, context, upstream)
        upstream.id_token = sign(upstream.claims(login.nonce), STRANGER, kid="rotated")
        response = callback(load_app, context, upstream, login.cookie, code="c", state=login.state)
        assert_refused(response, "access_denied")
    assert upstream.jwks_fetches == 1  # a flood of made-up kids does not become a flood of fetches


def test_an_unknown_kid_refetches_the_jwks_once_the_interval_has_passed(upstream: Upstream) -> None:
    # Given a key set loaded at t=0, and an upstream that then rotates to a new key
    now = [0.0]
    keys = broker.id_token.KeySet(upstream.server.url_for("/jwks"), 60.0, clock=lambda: now[0])
    assert keys.key("k1", "RS256", 2).key_id == "k1"
    upstream.keys = [jwk(STRANGER, "k2")]
    # When the new kid shows up within the interval, it is unknown; after it, one refetch finds it
    now[0] = 59.0
    with pytest.raises(broker.id_token.IdTokenRejected, match="unknown key"):
        keys.key("k2", "RS256", 2)
    assert upstream.jwks_fetches == 1
    now[0] = 61.0
    assert keys.key("k2", "RS256", 2).key_id == "k2"
    assert upstream.jwks_fetches == 2


def test_an_upstream_that_is_down_is_refused_with_server_error(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = authorize(load_app, context, upstream)
    upstream.token_error = (500, {})
    assert_refused(callback(load_app, context, upstream, login.cookie, code="c", state=login.state), "server_error")
