"""The metadata endpoint (broker.discovery) at the edges mutation testing found untested.

The base URL from the Host header when API Gateway names no domain, a base path's trailing
slash, a route that is not the end of the request path, the refusals' descriptions and CORS,
cookie mode's credentialed CORS, and the endpoint's one log line (status and duration).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

import broker.discovery
from broker.discovery import base_url
from tests.support import SINK, load_event
from tests.unit.conftest import ORIGIN, AppLoader, FakeContext, body_of

ROUTE = "/.well-known/oauth-authorization-server"
CODE_FLOW = {
    "BROKER_SECRET_ID": "",
    "BROKER_REFRESH_DELIVERY": "cookie",
    "BROKER_LOGIN_FLOWS": "code",
    "BROKER_PROFILE": json.dumps({"token_url": "https://idp.example/token", "issuer": "https://idp.example"}),
}


def logged(before: int, message: str, *fields: str) -> set[tuple[Any, ...]]:
    """``fields`` of each JSON log record with ``message`` written since ``before``."""
    decoded = [json.JSONDecoder().raw_decode(line)[0] for line in SINK.lines[before:] if line.startswith("{")]
    return {tuple(r.get(f) for f in fields) for r in decoded if r.get("message") == message}


def event_with(*, domain: str | None, host: str | None = None, context_path: str | None = None) -> dict[str, Any]:
    """The metadata event, with API Gateway's domainName and path (None: absent) and Host header."""
    event: dict[str, Any] = load_event("metadata")
    context = {k: v for k, v in event["requestContext"].items() if k not in ("domainName", "path")}
    if domain is not None:
        context["domainName"] = domain
    if context_path is not None:
        context["path"] = context_path
    headers = {k: v for k, v in event["headers"].items() if k != "Host"}
    if host is not None:
        headers["Host"] = host
    event.update(requestContext=context, headers=headers, multiValueHeaders={k: [v] for k, v in headers.items()})
    return event


# -- the base URL ---------------------------------------------------------------------------------


def test_without_a_domain_name_the_host_header_names_the_base_url(load_app: AppLoader, context: FakeContext) -> None:
    """API Gateway's domainName first; without it, the Host header the request came with."""
    app = load_app("metadata", BROKER_SECRET_ID="")
    event = event_with(domain=None, host="auth.app.example", context_path=f"/v1{ROUTE}")
    response = app.lambda_handler(event, context)
    assert response["statusCode"] == 200
    assert body_of(response)["issuer"] == "https://auth.app.example/v1"


@pytest.mark.parametrize(
    ("base_path", "expected"), [("/api/", "/api"), ("/api//", "/api"), ("/BOX", "/BOX"), ("/v1/X", "/v1/X")]
)
def test_a_base_path_keeps_no_trailing_slash_and_nothing_else_is_trimmed(base_path: str, expected: str) -> None:
    event = event_with(domain="auth.app.example", context_path=f"{base_path}{ROUTE}")
    assert base_url(event, {}, "") == f"https://auth.app.example{expected}"


@pytest.mark.parametrize(
    "context_path", [None, f"{ROUTE}/", f"/stage/other{ROUTE}x", "/v1/auth/a-much-longer-path-than-the-route-itself"]
)
def test_a_request_path_that_does_not_end_with_the_route_gives_no_base_path(context_path: str | None) -> None:
    """Only a request path ending with the route has a base path before it; any other has none."""
    event = event_with(domain="auth.app.example", context_path=context_path)
    assert base_url(event, {}, "") == "https://auth.app.example"


def test_without_a_route_there_is_no_base_path() -> None:
    event = event_with(domain="auth.app.example", context_path=f"/v1{ROUTE}")
    del event["path"]
    assert base_url(event, {}, "") == "https://auth.app.example"


def test_an_unusable_host_or_path_is_400_with_its_description(load_app: AppLoader, context: FakeContext) -> None:
    app = load_app("metadata", BROKER_SECRET_ID="")
    no_host = app.lambda_handler(event_with(domain=None, host="evil.example/x", context_path=f"/v1{ROUTE}"), context)
    bad_path = app.lambda_handler(event_with(domain="auth.app.example", context_path=f"/v 1{ROUTE}"), context)
    assert (no_host["statusCode"], body_of(no_host)) == (
        400,
        {"error": "invalid_request", "error_description": "The request names no usable host."},
    )
    assert (bad_path["statusCode"], body_of(bad_path)) == (
        400,
        {"error": "invalid_request", "error_description": "The request path is not usable."},
    )


# -- the refusals, and CORS -------------------------------------------------------------------------


def test_another_method_is_400_naming_get_with_cors_for_the_listed_origin(
    load_app: AppLoader, context: FakeContext
) -> None:
    app = load_app("metadata", BROKER_SECRET_ID="")
    response = app.lambda_handler(load_event("metadata", httpMethod="POST"), context)
    assert body_of(response) == {
        "error": "invalid_request",
        "error_description": "Only GET is supported on this route.",
    }
    assert response["headers"]["Access-Control-Allow-Origin"] == ORIGIN


def test_in_cookie_mode_the_document_allows_credentials(load_app: AppLoader, context: FakeContext) -> None:
    """Cookie mode's CORS is credentialed on every route, the metadata's included."""
    body_mode = load_app("metadata", BROKER_SECRET_ID="").lambda_handler(load_event("metadata"), context)
    cookie_mode = load_app("metadata", **CODE_FLOW).lambda_handler(load_event("metadata"), context)
    assert cookie_mode["headers"]["Access-Control-Allow-Credentials"] == "true"
    assert cookie_mode["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in body_mode["headers"]


# -- the log line -----------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint's perf_counter: 10 s at the start of a request, 12.3456 ms later at its end."""
    readings = iter([10.0, 10.0123456])
    monkeypatch.setattr(broker.discovery, "time", SimpleNamespace(perf_counter=lambda: next(readings)))


def test_each_request_logs_its_status_and_duration_in_milliseconds(
    load_app: AppLoader, context: FakeContext, clock: None
) -> None:
    app = load_app("metadata", BROKER_SECRET_ID="")
    before = len(SINK.lines)
    assert app.lambda_handler(load_event("metadata"), context)["statusCode"] == 200
    assert logged(before, "Metadata request finished", "level", "status", "duration_ms") == {("INFO", 200, 12.35)}


def test_a_refused_request_logs_its_status(load_app: AppLoader, context: FakeContext, clock: None) -> None:
    app = load_app("metadata", BROKER_SECRET_ID="")
    before = len(SINK.lines)
    assert app.lambda_handler(load_event("metadata", httpMethod="POST"), context)["statusCode"] == 400
    assert logged(before, "Metadata request finished", "status", "duration_ms") == {(400, 12.35)}
