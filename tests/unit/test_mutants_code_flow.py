"""The code flow's routes (authorize, callback, session) at the edges mutation testing found untested.

The upstream is pytest-httpserver on loopback, as in test_code_flow.py: a discovery document,
a JWKS and a token endpoint. Each group pins one rule: the redirect's exact shape, the
upstream URL's parameters, the flow without OpenID Connect, what a failure logs and where it
sends the browser, the ID token's session claims, and the login cookie's contents.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_httpserver import HTTPServer

import broker.id_token
import broker.oidc_discovery
from broker.cookies import LOGIN_COOKIE_NAME
from broker.errors import BrokerError, ConfigError
from broker.http import parse_event
from tests.support import DEMO_SECRET, ISSUED, SINK, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, SecretsManager, body_of
from tests.unit.test_code_flow import (
    CLIENT_ID,
    KEY,
    RETURN_TO,
    Login,
    Upstream,
    code_env,
    jar,
    oidc_upstream,
    set_cookies,
    sign,
    with_cookie,
    with_query,
)

CLEARED = f"{LOGIN_COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@pytest.fixture
def upstream(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Upstream:
    return oidc_upstream(httpserver, monkeypatch)


@pytest.fixture
def keyed_secret(secrets_manager: SecretsManager) -> SecretsManager:
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    return secrets_manager


def logged(before: int, message: str, *fields: str) -> set[tuple[Any, ...]]:
    """``fields`` of each JSON log record with ``message`` written since ``before``."""
    decoded = [json.JSONDecoder().raw_decode(line)[0] for line in SINK.lines[before:] if line.startswith("{")]
    return {tuple(r.get(f) for f in fields) for r in decoded if r.get("message") == message}


def plain_env(upstream: Upstream, **profile: Any) -> dict[str, str]:
    """The code flow against a plain OAuth 2 upstream: explicit URLs, no issuer, no ID token."""
    urls = {
        "token_url": upstream.server.url_for("/auth/token/"),
        "authorization_url": upstream.server.url_for("/authorize"),
        **profile,
    }
    return code_env(upstream, BROKER_PROFILE=json.dumps(urls))


def start(load_app: AppLoader, context: FakeContext, env: dict[str, str], return_to: str = RETURN_TO) -> Any:
    event = with_query(load_event("authorize"), return_to=return_to)
    return load_app("authorize", **env).lambda_handler(event, context)


def finish(
    load_app: AppLoader, context: FakeContext, env: dict[str, str], cookie: str | None, **query: str
) -> dict[str, Any]:
    event = with_cookie(with_query(load_event("callback"), **query), cookie)
    response: dict[str, Any] = load_app("callback", **env).lambda_handler(event, context)
    return response


def location_query(response: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(urlsplit(response["headers"]["Location"]).query)


# -- authorize: the redirect upstream ---------------------------------------------------------------


def test_authorize_answers_a_bare_302_with_the_login_cookie_and_logs_it(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """A navigation answer: 302, Location, no-store, the one cookie, an empty body, no CORS."""
    before = len(SINK.lines)
    response = start(load_app, context, code_env(upstream))
    login = Login(response)
    assert response == {
        "statusCode": 302,
        "headers": {"Location": login.location, **NO_STORE},
        "multiValueHeaders": {"Set-Cookie": [login.set_cookie]},
        "body": "",
        "isBase64Encoded": False,
    }
    # the upstream URL's query: exactly the code flow's parameters
    assert sorted(login.query) == sorted(
        [
            "response_type",
            "client_id",
            "redirect_uri",
            "state",
            "scope",
            "nonce",
            "code_challenge",
            "code_challenge_method",
        ]
    )
    assert (login.query["response_type"], login.query["code_challenge_method"]) == ("code", "S256")
    # state, nonce and verifier: 32 random bytes each, base64url (43 characters), all different
    values = [login.sealed["state"], login.sealed["nonce"], login.sealed["verifier"]]
    assert [len(v) for v in values] == [43, 43, 43]
    assert len(set(values)) == 3
    assert sorted(login.sealed) == ["exp", "nonce", "return_to", "state", "verifier"]
    assert logged(before, "Token request finished", "grant", "status") == {("authorize", 302)}


def test_without_a_configured_redirect_uri_the_callback_is_next_to_the_authorize_route(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    env = code_env(upstream, BROKER_REDIRECT_URI="")
    login = Login(start(load_app, context, env))
    assert login.query["redirect_uri"] == "https://api.example.com/v1/auth/callback"


def test_without_the_requests_url_and_no_configured_redirect_uri_sign_in_cannot_start(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    event = with_query(load_event("authorize"), return_to=RETURN_TO)
    event["requestContext"] = {k: v for k, v in event["requestContext"].items() if k != "domainName"}
    before = len(SINK.lines)
    response = load_app("authorize", **code_env(upstream, BROKER_REDIRECT_URI="")).lambda_handler(event, context)
    assert response["headers"]["Location"] == f"{RETURN_TO}&error=server_error"
    assert response["multiValueHeaders"] == {}
    assert logged(before, "Sign-in could not start", "level", "error", "status") == {("WARNING", "server_error", 500)}


def test_when_discovery_fails_the_browser_goes_back_with_server_error_and_no_cookie(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """A sign-in that cannot start is a redirect to return_to with ?error=, logged; never a cookie."""
    env = code_env(upstream, BROKER_PROFILE=json.dumps({"issuer": upstream.server.url_for("/down")}))
    upstream.server.expect_request("/down/.well-known/openid-configuration").respond_with_data("", status=500)
    before = len(SINK.lines)
    response = start(load_app, context, env, return_to=f"{ORIGIN}/")
    assert response == {
        "statusCode": 302,
        "headers": {"Location": f"{ORIGIN}/?error=server_error", **NO_STORE},
        "multiValueHeaders": {},
        "body": "",
        "isBase64Encoded": False,
    }
    assert logged(before, "Sign-in could not start", "level", "error", "status") == {("WARNING", "server_error", 502)}
    assert logged(before, "Token request finished", "status") == {(302,)}


@pytest.mark.parametrize(
    ("default_scope", "expected"),
    [(None, "openid"), ("openid profile", "openid profile"), ("profile openid", "profile openid")],
)
def test_an_oidc_upstream_is_always_asked_for_openid_once(
    load_app: AppLoader,
    keyed_secret: SecretsManager,
    upstream: Upstream,
    context: FakeContext,
    default_scope: str | None,
    expected: str,
) -> None:
    profile = {"preset": "bakrypt", "issuer": upstream.issuer, "default_scope": default_scope}
    env = code_env(upstream, BROKER_PROFILE=json.dumps({k: v for k, v in profile.items() if v is not None}))
    assert Login(start(load_app, context, env)).query["scope"] == expected


# -- the code flow without OpenID Connect ----------------------------------------------------------


def test_a_plain_oauth_upstream_gets_no_nonce_no_openid_and_no_discovery(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """No issuer: the explicit URLs, the default scope as configured, and no ID token expected."""
    login = Login(start(load_app, context, plain_env(upstream, default_scope="read write")))
    assert login.location.startswith(upstream.server.url_for("/authorize") + "?")
    assert login.query["scope"] == "read write"
    assert "nonce" not in login.query
    without_scope = Login(start(load_app, context, plain_env(upstream)))
    assert "scope" not in without_scope.query
    # Then the callback exchanges the code at the configured token URL and keeps no claims
    response = finish(load_app, context, plain_env(upstream), login.cookie, code="the-code", state=login.state)
    assert response["headers"]["Location"] == RETURN_TO
    refresh, cleared = set_cookies(response)
    assert cleared == CLEARED
    assert jar().open_session(refresh.split(";", 1)[0].split("=", 1)[1]) == (ISSUED["refresh_token"], {})
    assert upstream.token_bodies[0]["code"] == ["the-code"]
    assert [entry[0].path for entry in upstream.server.log] == ["/auth/token/"]


NEEDS_ISSUER = "the code flow needs the profile's issuer, or authorization_url and token_url"
NEEDS_ISSUER_TOO = "the code flow with a jwks_url needs the issuer too (the ID token's iss is checked)"


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"authorization_url": "https://idp.example/authorize"}, NEEDS_ISSUER),
        ({"token_url": "https://idp.example/token"}, NEEDS_ISSUER),
        (
            {
                "token_url": "https://idp.example/t",
                "authorization_url": "https://idp.example/a",
                "jwks_url": "https://idp.example/j",
            },
            NEEDS_ISSUER_TOO,
        ),
    ],
)
def test_a_profile_the_code_flow_cannot_use_fails_the_cold_start(
    load_app: AppLoader, upstream: Upstream, profile: dict[str, str], message: str
) -> None:
    for route in ("authorize", "callback"):
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            load_app(route, **code_env(upstream, BROKER_PROFILE=json.dumps(profile), BROKER_TOKEN_URL=""))


def test_an_issuer_with_explicit_urls_and_jwks_needs_no_discovery(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    urls = {"issuer": upstream.issuer, "jwks_url": upstream.server.url_for("/jwks")}
    login = Login(start(load_app, context, plain_env(upstream, **urls)))
    assert login.location.startswith(upstream.server.url_for("/authorize") + "?")
    assert "nonce" in login.query
    assert upstream.server.log == []


# -- callback: where the browser goes back, and what is logged --------------------------------------


def test_the_callback_exchanges_the_code_at_the_discovered_token_endpoint(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    env = code_env(upstream, BROKER_PROFILE=json.dumps({"issuer": upstream.issuer}), BROKER_TOKEN_URL="")
    login = Login(start(load_app, context, env))
    upstream.id_token = sign(upstream.claims(login.nonce))
    before = len(SINK.lines)
    response = finish(load_app, context, env, login.cookie, code="the-code", state=login.state)
    assert response["headers"]["Location"] == RETURN_TO
    assert len(set_cookies(response)) == 2
    assert [e[0].path for e in upstream.server.log if "token" in e[0].path] == ["/discovered-token"]
    assert logged(before, "Token request finished", "grant", "status") == {("callback", 302)}


def test_a_missing_id_token_is_logged_as_missing(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = Login(start(load_app, context, code_env(upstream)))
    before = len(SINK.lines)
    response = finish(load_app, context, code_env(upstream), login.cookie, code="c", state=login.state)
    assert location_query(response)["error"] == ["access_denied"]
    assert set_cookies(response) == [CLEARED]
    assert logged(before, "Sign-in failed: the ID token does not validate", "level", "reason") == {
        ("WARNING", "missing")
    }


def test_an_id_token_refusal_logs_the_check_that_failed(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = Login(start(load_app, context, code_env(upstream)))
    upstream.id_token = sign(upstream.claims("another-nonce"))
    before = len(SINK.lines)
    finish(load_app, context, code_env(upstream), login.cookie, code="c", state=login.state)
    assert logged(before, "Sign-in failed: the ID token does not validate", "reason") == {("nonce",)}


def test_a_refused_callback_logs_the_error_and_status(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = Login(start(load_app, context, code_env(upstream)))
    before = len(SINK.lines)
    response = finish(load_app, context, code_env(upstream), login.cookie, code="c", state="other")
    assert response == {
        "statusCode": 302,
        "headers": {"Location": f"{RETURN_TO}&error=invalid_request", **NO_STORE},
        "multiValueHeaders": {"Set-Cookie": [CLEARED]},
        "body": "",
        "isBase64Encoded": False,
    }
    assert logged(before, "Sign-in failed", "level", "error", "status") == {("WARNING", "invalid_request", 400)}
    assert logged(before, "Token request finished", "grant", "status") == {("callback", 302)}


def test_the_right_state_without_a_code_is_refused_before_any_upstream_call(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = Login(start(load_app, context, code_env(upstream)))
    response = finish(load_app, context, code_env(upstream), login.cookie, state=login.state)
    assert location_query(response) == {"tab": ["1"], "error": ["invalid_request"]}
    assert upstream.token_bodies == []


@pytest.mark.parametrize(
    ("sent", "passed_back"),
    [
        ("temporarily_unavailable", "temporarily_unavailable"),
        ("invalid_scope", "invalid_scope"),
        ("login_required", "access_denied"),  # an OIDC code outside RFC 6749 §4.1.2.1
        ("made-up", "access_denied"),
    ],
)
def test_the_upstreams_error_is_passed_back_only_when_rfc_6749_lists_it(
    load_app: AppLoader,
    keyed_secret: SecretsManager,
    upstream: Upstream,
    context: FakeContext,
    sent: str,
    passed_back: str,
) -> None:
    login = Login(start(load_app, context, code_env(upstream)))
    before = len(SINK.lines)
    response = finish(load_app, context, code_env(upstream), login.cookie, error=sent, state=login.state)
    assert location_query(response) == {"tab": ["1"], "error": [passed_back]}
    assert set_cookies(response) == [CLEARED]
    assert logged(before, "Sign-in failed", "error", "status") == {(passed_back, 400)}
    assert upstream.token_bodies == []


def test_a_callback_with_a_malformed_query_goes_back_with_invalid_request(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    login = Login(start(load_app, context, code_env(upstream)))
    for query in ({"code": ["a", "b"], "state": [login.state]}, {"code": "c", "state": "s" * 513}):
        event = with_cookie(load_event("callback"), login.cookie)
        event["multiValueQueryStringParameters"] = query
        response = load_app("callback", **code_env(upstream)).lambda_handler(event, context)
        assert location_query(response) == {"tab": ["1"], "error": ["invalid_request"]}
    assert upstream.token_bodies == []


def test_an_upstream_that_issues_no_refresh_token_is_a_server_error(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """The session lives in the refresh cookie: without a refresh token there is none to keep."""
    env = plain_env(upstream)
    login = Login(start(load_app, context, env))
    upstream.server.clear_all_handlers()
    upstream.server.expect_request("/auth/token/").respond_with_json(
        {"access_token": ISSUED["access_token"], "token_type": "Bearer", "expires_in": 300}
    )
    before = len(SINK.lines)
    response = finish(load_app, context, env, login.cookie, code="c", state=login.state)
    assert location_query(response) == {"tab": ["1"], "error": ["server_error"]}
    assert set_cookies(response) == [CLEARED]
    assert logged(before, "Sign-in failed", "error", "status") == {("server_error", 502)}


# -- the login cookie ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["state", "nonce", "verifier", "return_to"])
def test_a_login_cookie_lacking_a_field_counts_as_missing(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext, field: str
) -> None:
    """Each of state, nonce, verifier and return_to must be text, or the cookie is no login."""
    login = {"state": "s", "nonce": "n", "verifier": "v" * 43, "return_to": RETURN_TO, field: 42}
    sealed = jar().seal_login(login, 600).split(";", 1)[0]  # type: ignore[arg-type]  # a field of the wrong type on purpose
    response = finish(load_app, context, code_env(upstream), sealed, code="c", state="s")
    assert response["headers"]["Location"] == f"{ORIGIN}?error=invalid_request"
    assert upstream.token_bodies == []


# -- the session claims ------------------------------------------------------------------------------


def test_only_the_configured_scalar_claims_are_kept_each_capped_at_512_characters(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    env = code_env(upstream, BROKER_SESSION_CLAIMS="sub,name,email_verified,age,groups,absent")
    login = Login(start(load_app, context, env))
    claims = upstream.claims(login.nonce, name="n" * 600, email_verified=True, age=42, groups=["a", "b"])
    upstream.id_token = sign(claims)
    response = finish(load_app, context, env, login.cookie, code="c", state=login.state)
    refresh, _ = set_cookies(response)
    kept = jar().open_session(refresh.split(";", 1)[0].split("=", 1)[1])[1]
    assert kept == {"sub": "user-1", "name": "n" * 512, "email_verified": True, "age": 42}


# -- session ---------------------------------------------------------------------------------------


def test_the_session_route_needs_no_client_credentials_in_the_secret(
    load_app: AppLoader, secrets_manager: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """/auth/session only opens the cookie: the secret needs broker_keys, nothing else."""
    secrets_manager.put({"broker_keys": [KEY]})
    cookie = f"__Host-broker-refresh={jar().seal(ISSUED['refresh_token'], {'sub': 'user-1'})}"
    app = load_app("session", **code_env(upstream))
    response = app.lambda_handler(with_cookie(load_event("session"), cookie), context)
    assert (response["statusCode"], body_of(response)) == (200, {"claims": {"sub": "user-1"}})
    assert response["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    assert upstream.server.log == []


def test_a_session_without_a_cookie_is_invalid_token_with_its_description(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    app = load_app("session", **code_env(upstream))
    response = app.lambda_handler(with_cookie(load_event("session"), None), context)
    assert (response["statusCode"], body_of(response)) == (
        401,
        {"error": "invalid_token", "error_description": "There is no valid session; sign in again."},
    )
    assert CLIENT_ID not in json.dumps(response)


# -- the callback's refusals, as the grant raises them -----------------------------------------------


def test_each_callback_refusal_raises_its_error_with_a_description_naming_the_cause(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """``finish`` raises the BrokerError the redirect's ?error= is made of; its description says why."""
    login = Login(start(load_app, context, code_env(upstream)))
    app = load_app("callback", **code_env(upstream))
    sealed = app.broker.grant.login(app.broker, parse_event(with_cookie(load_event("callback"), login.cookie)))
    assert sealed == login.sealed

    def refusal(opened: dict[str, Any] | None, **query: Any) -> tuple[str, str]:
        event = with_query(load_event("callback"), **query)
        with pytest.raises(BrokerError) as caught:
            app.broker.grant.finish(app.broker, parse_event(event), opened)
        return caught.value.error, caught.value.description

    assert refusal(sealed, code="c", state="s" * 513) == (
        "invalid_request",
        "The callback's parameters are malformed.",
    )
    assert refusal(sealed, error="invalid_scope", state=login.state) == (
        "invalid_scope",
        "The authorization server did not grant the sign-in.",
    )
    assert refusal(None, code="c", state=login.state) == (
        "invalid_request",
        "The login cookie is missing or expired; start the sign-in again.",
    )
    for query in ({"code": "c", "state": "other"}, {"state": login.state}, {"code": "c"}):
        assert refusal(sealed, **query) == (
            "invalid_request",
            "The callback's state does not match this browser's sign-in.",
        )
    upstream.server.clear_all_handlers()
    answer = {"access_token": "at", "token_type": "Bearer", "id_token": sign(upstream.claims(login.nonce))}
    upstream.server.expect_request("/auth/token/").respond_with_json(answer)
    upstream.server.expect_request("/jwks").respond_with_handler(upstream.jwks)
    assert refusal(sealed, code="c", state=login.state) == (
        "server_error",
        "The upstream issued no refresh token: the session cannot be kept.",
    )


def test_the_login_cookie_is_found_in_any_of_the_requests_cookie_headers(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """API Gateway keeps every Cookie header in multiValueHeaders: the login cookie may be in the second."""
    login = Login(start(load_app, context, code_env(upstream)))
    upstream.id_token = sign(upstream.claims(login.nonce))
    event = with_query(load_event("callback"), code="c", state=login.state)
    event["headers"] = {**event["headers"], "Cookie": "theme=dark"}
    event["multiValueHeaders"] = {**event["multiValueHeaders"], "Cookie": ["theme=dark", login.cookie]}
    response = load_app("callback", **code_env(upstream)).lambda_handler(event, context)
    assert response["headers"]["Location"] == RETURN_TO
    assert len(upstream.token_bodies) == 1


def test_a_secret_that_cannot_be_read_sends_the_browser_back_temporarily_unavailable(
    load_app: AppLoader, secrets_manager: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """The failure carries the error's own code: a secret without client_id is 503 temporarily_unavailable."""
    secrets_manager.put({"broker_keys": [KEY]})
    before = len(SINK.lines)
    response = start(load_app, context, code_env(upstream))
    assert response["headers"]["Location"] == f"{RETURN_TO}&error=temporarily_unavailable"
    assert response["multiValueHeaders"] == {}
    assert logged(before, "Sign-in could not start", "error", "status") == {("temporarily_unavailable", 503)}


def test_without_a_configured_redirect_uri_the_code_is_exchanged_with_the_one_authorize_sent(
    load_app: AppLoader, keyed_secret: SecretsManager, upstream: Upstream, context: FakeContext
) -> None:
    """RFC 6749 §4.1.3: the token request's redirect_uri is identical to the authorization request's."""
    env = code_env(upstream, BROKER_REDIRECT_URI="")
    login = Login(start(load_app, context, env))
    upstream.id_token = sign(upstream.claims(login.nonce))
    response = finish(load_app, context, env, login.cookie, code="c", state=login.state)
    assert response["headers"]["Location"] == RETURN_TO
    (sent,) = upstream.token_bodies
    assert sent["redirect_uri"] == [login.query["redirect_uri"]] == ["https://api.example.com/v1/auth/callback"]


def test_a_callback_landing_on_a_fresh_execution_environment_discovers_the_endpoints_itself(
    load_app: AppLoader,
    keyed_secret: SecretsManager,
    upstream: Upstream,
    context: FakeContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow is stateless across instances: the callback's instance need not be authorize's."""
    login = Login(start(load_app, context, code_env(upstream)))
    monkeypatch.setattr(broker.oidc_discovery, "_documents", {})  # another instance: nothing discovered
    upstream.id_token = sign(upstream.claims(login.nonce))
    response = finish(load_app, context, code_env(upstream), login.cookie, code="c", state=login.state)
    assert response["headers"]["Location"] == RETURN_TO
    discoveries = [e for e in upstream.server.log if e[0].path.endswith("/openid-configuration")]
    assert len(discoveries) == 2
