"""Metrics in CloudWatch Embedded Metric Format: what each request and each guard event emits.

A request's metrics ride on its one log line (the ``_aws`` block); events inside a request
(lockouts, single-flight shares) are lines of their own on stdout. The names and dimensions
are what the template's alarms and dashboard read (tests/unit/test_template.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from broker import observability
from broker.guards import Guards
from tests.support import ISSUED, SINK, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager
from tests.unit.test_guards import (  # noqa: F401 - the guards' fixtures
    KEYS,
    PASSWORD,
    REFRESH_TOKEN,
    USER,
    WRONG,
    Upstream,
    attempt,
    clock,
    guards,
    table,
    upstream,
)

SERVICE = "token-broker-test"
OUTCOME_DIMENSIONS = ["route", "status_class", "error", "service"]


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template's environment: a namespace and the stack's name as the service."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    monkeypatch.setattr(observability.metrics, "namespace", "TokenBroker")
    monkeypatch.setattr(observability.metrics, "service", SERVICE)
    monkeypatch.setattr(observability, "_DOCUMENTS", {})


def request_lines(before: int) -> list[dict[str, Any]]:
    """The request lines logged since ``before``, as Lambda would ship them.

    The sink may see a record twice (once per handler it reaches): the same formatted text.
    """
    lines = [line for line in SINK.lines[before:] if "Token request" in line]
    texts = dict.fromkeys(line[: json.JSONDecoder().raw_decode(line)[1]] for line in lines)
    return [json.loads(text) for text in texts]


def directive(document: dict[str, Any]) -> dict[str, Any]:
    (found,) = document["_aws"]["CloudWatchMetrics"]
    assert isinstance(found, dict)
    return found


def metric_names(document: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in directive(document)["Metrics"]}


def stdout_metrics(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_a_login_line_is_its_request_metric_per_route_and_outcome(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    # Given an upstream that issues tokens
    httpserver.expect_request("/auth/token/").respond_with_json({**ISSUED, "token_type": "Bearer"})
    before = len(SINK.lines)
    # When a login succeeds
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    # Then its one log line is an EMF document: Requests and UpstreamLatency per route and outcome,
    # and the same in the service's totals
    assert response["statusCode"] == 200
    (line,) = request_lines(before)
    assert directive(line)["Namespace"] == "TokenBroker"
    assert directive(line)["Dimensions"] == [OUTCOME_DIMENSIONS, ["service"]]
    assert metric_names(line) == {"Requests", "UpstreamLatency"}
    assert (line["route"], line["status_class"], line["error"], line["service"]) == ("password", "2xx", "none", SERVICE)
    assert line["Requests"] == [1.0]
    (latency,) = line["UpstreamLatency"]
    assert 0 < latency < 2000
    assert abs(line["_aws"]["Timestamp"] - time.time() * 1000) < 60_000
    # And nothing secret rides along
    text = json.dumps(line)
    for value in (ISSUED["access_token"], ISSUED["refresh_token"], "demo-password"):
        assert value not in text


def test_a_wrong_password_is_a_4xx_with_its_rfc6749_code(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({"error": "invalid_grant"}, status=400)
    app = load_app("password")
    before = len(SINK.lines)
    # When two wrong passwords arrive (a millisecond apart: distinct lines)
    app.lambda_handler(load_event("password-wrong-password"), context)
    time.sleep(0.002)
    app.lambda_handler(load_event("password-wrong-password"), context)
    # Then each request is counted once (the cached document is not shared between them)
    first, second = request_lines(before)
    for line in (first, second):
        assert (line["status_class"], line["error"], line["Requests"]) == ("4xx", "invalid_grant", [1.0])
        assert metric_names(line) == {"Requests", "UpstreamLatency"}
    assert first["_aws"] is not second["_aws"]


def test_a_refused_request_has_no_upstream_latency(
    load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    event = load_event("password-json")
    event["body"] = "{}"
    before = len(SINK.lines)
    load_app("password").lambda_handler(event, context)
    (line,) = request_lines(before)
    assert (line["status_class"], line["error"]) == ("4xx", "invalid_request")
    assert metric_names(line) == {"Requests"}


def test_a_dead_upstream_counts_an_upstream_failure(
    load_app: AppLoader, secrets_manager: SecretsManager, context: FakeContext
) -> None:
    app = load_app("password", BROKER_TOKEN_URL="http://127.0.0.1:9/auth/token/")
    before = len(SINK.lines)
    assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 502
    (line,) = request_lines(before)
    assert line["level"] == "WARNING"
    assert (line["status_class"], line["error"]) == ("5xx", "server_error")
    assert metric_names(line) == {"Requests", "UpstreamLatency", "UpstreamFailures"}
    assert line["UpstreamFailures"] == [1.0]


def test_a_slow_upstream_counts_an_upstream_timeout(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/auth/token/").respond_with_handler(slow)
    app = load_app("password", BROKER_UPSTREAM_TIMEOUT="0.3")
    before = len(SINK.lines)
    assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 504
    (line,) = request_lines(before)
    assert metric_names(line) == {"Requests", "UpstreamLatency", "UpstreamTimeouts"}
    assert line["UpstreamLatency"][0] >= 300
    # (the slow answer is logged when the server finishes it: wait, so it never lands in the next test)
    deadline = time.monotonic() + 5
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.05)


def test_without_a_namespace_the_line_is_a_plain_log_line(
    monkeypatch: pytest.MonkeyPatch,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    context: FakeContext,
) -> None:
    # Given a run without the template's environment (no POWERTOOLS_METRICS_NAMESPACE)
    monkeypatch.setattr(observability.metrics, "namespace", None)
    event = load_event("password-json")
    event["body"] = "{}"
    before = len(SINK.lines)
    # When a request finishes, Then it is answered and logged, with no metric
    assert load_app("password").lambda_handler(event, context)["statusCode"] == 400
    (line,) = request_lines(before)
    assert "_aws" not in line
    assert line["status"] == 400


def test_a_lockout_is_counted(
    guards: Guards,  # noqa: F811 - the fixture imported above
    upstream: Upstream,  # noqa: F811 - the fixture imported from test_guards
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given five wrong passwords
    for _ in range(5):
        attempt(guards, upstream, USER, WRONG)
    capsys.readouterr()
    # When the sixth login is refused by the guard
    attempt(guards, upstream, USER, PASSWORD)
    # Then one Lockouts count is emitted, in the service's totals
    (metric,) = stdout_metrics(capsys.readouterr().out)
    assert metric["Lockouts"] == [1.0]
    assert directive(metric)["Dimensions"] == [["service"]]


def test_a_shared_refresh_is_counted(
    guards: Guards,  # noqa: F811 - the fixture imported above
    upstream: Upstream,  # noqa: F811 - the fixture imported from test_guards
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a refresh that went upstream
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert stdout_metrics(capsys.readouterr().out) == []
    # When its twin gets the shared outcome
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == first
    # Then one SingleFlightShares count is emitted
    (metric,) = stdout_metrics(capsys.readouterr().out)
    assert metric["SingleFlightShares"] == [1.0]


def test_without_a_namespace_a_guard_event_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch,
    guards: Guards,  # noqa: F811 - the fixtures imported above
    upstream: Upstream,  # noqa: F811 - the fixture imported from test_guards
) -> None:
    # Given a process without the template's environment (no POWERTOOLS_METRICS_NAMESPACE)
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    # When a twin is served the shared outcome (which counts SingleFlightShares)
    # Then it still gets the tokens
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == first
