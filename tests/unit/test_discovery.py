"""GET /.well-known/oauth-authorization-server: RFC 8414 metadata built from the deployment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.discovery import base_url
from broker.errors import ConfigError, InvalidRequest
from tests.support import load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, body_of

DEPLOYED = "https://abc123defg.execute-api.us-east-1.amazonaws.com/v1"


def test_the_document_names_the_deployments_endpoints(load_app: AppLoader, context: FakeContext) -> None:
    # Given a deployment whose profile allows two scopes, and no secret at all
    profile = {"token_url": "https://idp.example/token", "scopes": ["read", "write"]}
    app = load_app("metadata", BROKER_SECRET_ID="", BROKER_PROFILE=json.dumps(profile))

    # When a library fetches the metadata through the stage URL
    response = app.lambda_handler(load_event("metadata"), context)

    # Then RFC 8414 metadata under the API's base URL, stage path included
    assert response["statusCode"] == 200
    assert body_of(response) == {
        "issuer": DEPLOYED,
        "token_endpoint": f"{DEPLOYED}/auth/token",
        "revocation_endpoint": f"{DEPLOYED}/auth/logout",
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["read", "write"],
    }
    # cacheable (it changes only with a deployment), JSON, CORS for the listed origin
    headers = response["headers"]
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert "Pragma" not in headers
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == ORIGIN


def test_a_configured_public_url_is_the_issuer(load_app: AppLoader, context: FakeContext) -> None:
    app = load_app("metadata", BROKER_PUBLIC_URL="https://auth.app.example/")
    document = body_of(app.lambda_handler(load_event("metadata"), context))
    assert document["issuer"] == "https://auth.app.example"
    assert document["token_endpoint"] == "https://auth.app.example/auth/token"
    assert document["scopes_supported"] == []  # the preset has no allowlist: no scope may be requested


@pytest.mark.parametrize(
    ("domain", "context_path", "expected"),
    [
        ("auth.app.example", "/.well-known/oauth-authorization-server", "https://auth.app.example"),  # custom domain
        ("auth.app.example", "/api/.well-known/oauth-authorization-server", "https://auth.app.example/api"),
        ("127.0.0.1:3000", "/.well-known/oauth-authorization-server", "http://127.0.0.1:3000"),  # the local runner
        ("[::1]:3000", "/.well-known/oauth-authorization-server", "http://[::1]:3000"),
        ("localhost.evil.example", "/.well-known/oauth-authorization-server", "https://localhost.evil.example"),
    ],
)
def test_the_base_url_is_the_one_the_request_came_in_on(domain: str, context_path: str, expected: str) -> None:
    event: dict[str, Any] = load_event("metadata")
    event["requestContext"].update(domainName=domain, path=context_path)
    assert base_url(event, {}, "") == expected


@pytest.mark.parametrize("domain", ["evil.example/path", "a b", "", "host:port:x"])
def test_an_unusable_host_is_refused(domain: str) -> None:
    event: dict[str, Any] = load_event("metadata")
    event["requestContext"]["domainName"] = domain
    with pytest.raises(InvalidRequest):
        base_url(event, {"host": domain}, "")


def test_other_methods_and_unlisted_origins_are_refused(load_app: AppLoader, context: FakeContext) -> None:
    app = load_app("metadata")
    posted = app.lambda_handler(load_event("metadata", httpMethod="POST"), context)
    assert posted["statusCode"] == 400
    assert posted["headers"]["Cache-Control"] == "no-store"
    event = load_event("metadata")
    event["headers"]["Origin"] = "https://evil.example"
    refused = app.lambda_handler(event, context)
    assert refused["statusCode"] == 403
    assert "Access-Control-Allow-Origin" not in refused["headers"]


@pytest.mark.parametrize("url", ["http://auth.app.example", "https://auth.app.example/?a=1", "https://u@x.example"])
def test_an_unfit_public_url_fails_the_cold_start(url: str, load_app: AppLoader) -> None:
    with pytest.raises(ConfigError):
        load_app("metadata", BROKER_PUBLIC_URL=url)


def event_at(path: str) -> dict[str, Any]:
    """The metadata event as API Gateway sends it for ``path`` on the v1 stage."""
    event = load_event("metadata", resource=path, path=path)
    event["requestContext"] = {**event["requestContext"], "resourcePath": path, "path": f"/v1{path}"}
    return event


CODE_FLOW = {
    "BROKER_SECRET_ID": "",
    "BROKER_REFRESH_DELIVERY": "cookie",
    "BROKER_LOGIN_FLOWS": "code",
    "BROKER_PROFILE": json.dumps({"token_url": "https://idp.example/token", "issuer": "https://idp.example"}),
}


def test_with_the_code_flow_on_the_document_lists_it_and_drops_a_password_grant_that_is_off(
    load_app: AppLoader, context: FakeContext
) -> None:
    # Given a deployment that signs in with the code flow only (RFC 10017)
    app = load_app("metadata", **CODE_FLOW)

    # When a client fetches the document, at either well-known name
    answers = [
        app.lambda_handler(event_at(path), context)
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
    ]

    # Then both hold the same document: authorization_code with S256, and no password grant
    assert [a["statusCode"] for a in answers] == [200, 200]
    first, second = (body_of(a) for a in answers)
    assert first == second
    assert first["grant_types_supported"] == ["refresh_token", "authorization_code"]
    assert first["authorization_endpoint"] == f"{DEPLOYED}/auth/authorize"
    assert (first["response_types_supported"], first["code_challenge_methods_supported"]) == (["code"], ["S256"])


def test_the_openid_configuration_is_404_while_the_code_flow_is_off(load_app: AppLoader, context: FakeContext) -> None:
    app = load_app("metadata", BROKER_SECRET_ID="")
    path = "/.well-known/openid-configuration"
    response = app.lambda_handler(event_at(path), context)
    assert (response["statusCode"], body_of(response)["error"]) == (404, "invalid_request")
