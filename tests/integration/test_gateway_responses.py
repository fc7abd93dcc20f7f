"""The local runner answers every HTTP method as API Gateway would, with the template's gateway
response headers on its own errors (Cache-Control: no-store, CORS for the allowed origin)."""

from __future__ import annotations

import json

import pytest
import requests

from local.runner.testing import LocalBroker
from tests.integration.test_runner import TIMEOUT, raw_request

ALLOWED_ORIGIN = "http://localhost:5173"  # the template's default AllowedOrigins
MISSING_TOKEN = {"message": "Missing Authentication Token"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("TRACE", "/auth/login"),
        ("CONNECT", "/auth/login"),
        ("PROPFIND", "/auth/refresh"),
        ("BREW", "/auth/logout"),
        ("GET", "/auth/login"),
        ("PUT", "/auth/exchange"),
        ("DELETE", "/auth/nowhere"),
        ("PATCH", "/"),
    ],
)
def test_a_method_no_resource_has_is_a_403_json_with_the_gateway_headers(
    broker: LocalBroker, method: str, path: str
) -> None:
    # When a route is asked for with a method it does not have (or a path no route has)
    response = raw_request(broker, method, path, [("Origin", ALLOWED_ORIGIN)])
    # Then API Gateway's answer: 403 Missing Authentication Token in JSON, not a 501 HTML page
    assert response.status == 403
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(response.body) == MISSING_TOKEN
    # And the template's DEFAULT_4XX headers: never cached, readable by the SPA
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert response.headers["Vary"] == "Origin"


@pytest.mark.integration
def test_a_body_over_the_gateways_limit_is_a_413_with_the_gateway_headers(broker: LocalBroker) -> None:
    response = requests.post(
        broker.url + "/auth/login",
        data=b"x" * (10 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


@pytest.mark.integration
def test_the_functions_own_answers_keep_their_own_headers(broker: LocalBroker) -> None:
    # Given a request the function answers itself (a listed origin, a malformed body)
    response = requests.post(
        broker.url + "/auth/login",
        data="{}",
        headers={"Content-Type": "application/json", "Origin": "https://evil.example"},
        timeout=TIMEOUT,
    )
    # Then the gateway's headers are not added: an unlisted origin gets no CORS header
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_request"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
