"""Planted passwords, secrets and tokens never reach a log line, an error body or a header."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from broker.observability import logger
from tests.support import DEMO_SECRET, ISSUED, PLANTED, SINK, leaked, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager


def echoing(status: int, content_type: str = "application/json") -> Callable[[Request], Response]:
    """A careless upstream that echoes every value the broker sent it in its answer."""

    def answer(request: Request) -> Response:
        sent = [value for values in parse_qs(request.get_data(as_text=True)).values() for value in values]
        sent += request.headers.get("Authorization", "").split(" ")[1:]
        body = json.dumps(
            {
                "error": "invalid_grant",
                "error_description": "Rejected: " + ", ".join(f"'{value}'" for value in sent),
                "access_token": ISSUED["access_token"],
            }
        )
        return Response(body, status=status, content_type=content_type, headers={"Retry-After": "5"})

    return answer


UPSTREAMS: dict[str, Callable[[Request], Response]] = {
    "ok": lambda _: Response(json.dumps({**ISSUED, "expires_in": 60}), content_type="application/json"),
    "echoing-400": echoing(400),
    "echoing-500": echoing(500),
    "echoing-401": echoing(401),
    "echoing-html": echoing(200, "text/html"),
    "busy": echoing(429),
}


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """The most verbose setting a user could choose for the broker's own logger."""
    previous = logger.log_level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(previous)


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
@pytest.mark.parametrize(
    ("function", "event"),
    [
        ("password", "password-json"),
        ("password", "password-form"),
        ("password", "password-wrong-password"),
        ("refresh", "refresh-json"),
        ("refresh", "refresh-form"),
        ("exchange", "exchange"),
    ],
)
def test_nothing_planted_leaks(
    upstream: str,
    function: str,
    event: str,
    debug_logging: None,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    # Given an upstream that (mis)behaves, echoing every secret it saw
    httpserver.expect_request(f"/auth/{'exchange' if function == 'exchange' else 'token'}/").respond_with_handler(
        UPSTREAMS[upstream]
    )
    before = len(SINK.lines)

    # When the function runs
    response = load_app(function).lambda_handler(load_event(event), context)

    # Then no log line holds a planted value
    lines = SINK.lines[before:]
    assert lines, "the invocation logged nothing: the sink is not attached"
    assert leaked(lines) == []
    # And no header does, and a body only holds issued tokens in a 200 token response
    headers = json.dumps(response["headers"]) + json.dumps(response.get("multiValueHeaders", {}))
    assert not [value for value in PLANTED if value in headers]
    allowed: tuple[str, ...] = tuple(ISSUED.values()) if response["statusCode"] == 200 else ()
    assert not [value for value in PLANTED if value in response["body"] and value not in allowed]
    if response["statusCode"] != 200:
        body: dict[str, Any] = json.loads(response["body"])
        assert set(body) == {"error", "error_description"}


def test_the_sink_would_catch_a_leak() -> None:
    # The check above can fail: a planted value logged anywhere is found.
    before = len(SINK.lines)
    logging.getLogger("some.library").warning("oops %s", DEMO_SECRET["client_secret"])
    found = leaked(SINK.lines[before:])
    del SINK.lines[before:]  # keep the session-wide check clean
    assert found
