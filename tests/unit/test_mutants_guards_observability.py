"""The request line's EMF document, as mutation testing found it unpinned: the units CloudWatch
reads, a document per route and outcome (built once, stamped per request), the latency's
precision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from broker import observability
from tests.support import SINK

SERVICE = "token-broker-test"


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The template's environment (a namespace, the stack's name), and no upstream time left over."""
    monkeypatch.setattr(observability.metrics, "namespace", "TokenBroker")
    monkeypatch.setattr(observability.metrics, "service", SERVICE)
    monkeypatch.setattr(observability, "_DOCUMENTS", {})
    observability._Upstream.milliseconds = None
    yield
    observability._Upstream.milliseconds = None


def finished(route: str, status: int, error: str | None, *, upstream_seconds: float | None = None) -> dict[str, Any]:
    """``request_finished``'s one log line, as Lambda would ship it."""
    if upstream_seconds is not None:
        observability.upstream_timed(upstream_seconds)
    before = len(SINK.lines)
    observability.request_finished(route, status, error, 1.5)
    # (the sink may see a record twice, once per handler it reaches: the same formatted text)
    texts = {line[: json.JSONDecoder().raw_decode(line)[1]] for line in SINK.lines[before:]}
    assert len(texts) == 1
    record: dict[str, Any] = json.loads(texts.pop())
    return record


def directive(document: dict[str, Any]) -> dict[str, Any]:
    (found,) = document["_aws"]["CloudWatchMetrics"]
    assert isinstance(found, dict)
    return found


def test_every_metric_carries_the_unit_cloudwatch_records() -> None:
    """Requests and the status counts are Counts, the latency Milliseconds: CloudWatch keeps
    a metric's unit from its document, and the alarms compare against those units."""
    line = finished("password", 502, "server_error", upstream_seconds=0.25)
    assert directive(line)["Metrics"] == [
        {"Name": "Requests", "Unit": "Count"},
        {"Name": "UpstreamLatency", "Unit": "Milliseconds"},
        {"Name": "UpstreamFailures", "Unit": "Count"},
    ]
    assert (line["Requests"], line["UpstreamLatency"], line["UpstreamFailures"]) == ([1.0], [250.0], [1.0])


def test_each_route_and_outcome_has_its_own_document() -> None:
    """Documents are built once per route, outcome and shape: a later request of another
    route or outcome never reports the dimensions of an earlier one."""
    first = finished("password", 200, None, upstream_seconds=0.01)
    second = finished("refresh", 400, "invalid_grant")
    third = finished("password", 200, None)
    assert (first["route"], first["status_class"], first["error"]) == ("password", "2xx", "none")
    assert (second["route"], second["status_class"], second["error"]) == ("refresh", "4xx", "invalid_grant")
    assert {m["Name"] for m in directive(first)["Metrics"]} == {"Requests", "UpstreamLatency"}
    assert {m["Name"] for m in directive(third)["Metrics"]} == {"Requests"}
    assert "UpstreamLatency" not in third


def test_a_document_is_built_once_per_route_outcome_and_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building and validating a document costs a tenth of a warm request: the second request
    of one route and outcome reuses it (Powertools is asked to build it once)."""
    built: list[int] = []
    serialize = observability.metrics.serialize_metric_set

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return serialize(*args, **kwargs)

    monkeypatch.setattr(observability.metrics, "serialize_metric_set", counting)
    for _ in range(3):
        assert finished("password", 200, None, upstream_seconds=0.01)["Requests"] == [1.0]
    assert len(built) == 1
    finished("password", 200, None)  # another shape: no upstream call
    assert len(built) == 2


def test_a_reused_document_is_stamped_with_its_own_requests_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudWatch files a metric under the document's ``_aws.Timestamp``: a request served
    from a cached document carries its own time, not the time the document was built."""
    finished("password", 200, None)
    later = time.time() + 86_400
    with monkeypatch.context() as frozen:
        frozen.setattr(time, "time", lambda: later)
        line = finished("password", 200, None)
    assert line["_aws"]["Timestamp"] == int(later * 1000)
    assert set(line["_aws"]) == {"Timestamp", "CloudWatchMetrics"}
    assert directive(line)["Namespace"] == "TokenBroker"


def test_the_upstream_latency_is_in_milliseconds_to_two_decimals() -> None:
    line = finished("password", 200, None, upstream_seconds=0.0123456)
    assert line["UpstreamLatency"] == [12.35]


@pytest.mark.parametrize(
    ("status", "error", "level", "message"),
    [
        (200, None, "INFO", "Token request finished"),
        (499, "invalid_request", "INFO", "Token request finished"),
        (500, "server_error", "WARNING", "Token request failed"),
        (503, "temporarily_unavailable", "WARNING", "Token request failed"),
    ],
)
def test_the_request_line_is_a_warning_from_500_up(status: int, error: str | None, level: str, message: str) -> None:
    line = finished("refresh", status, error)
    assert (line["level"], line["message"]) == (level, message)
    assert (line["grant"], line["status"], line["duration_ms"]) == ("refresh", status, 1.5)
    assert (line["status_class"], line["error"]) == (f"{status // 100}xx", error or "none")


def test_the_request_line_without_an_error_says_none_in_its_dimension() -> None:
    line = finished("password", 200, None)
    assert line["error"] == "none"
    assert directive(line)["Dimensions"] == [["route", "status_class", "error", "service"], ["service"]]


def test_without_a_namespace_the_line_has_the_request_fields_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No metrics: the line names the grant, status, duration, and the error when there is one."""
    monkeypatch.setattr(observability.metrics, "namespace", None)
    failed = finished("password", 400, "invalid_grant")
    assert (failed["grant"], failed["status"], failed["duration_ms"], failed["error"]) == (
        "password",
        400,
        1.5,
        "invalid_grant",
    )
    served = finished("password", 200, None, upstream_seconds=0.1)
    assert (served["grant"], served["status"], served["duration_ms"]) == ("password", 200, 1.5)
    assert "error" not in served
    assert "_aws" not in served
    assert "UpstreamLatency" not in served


def test_the_service_dimension_is_the_stacks_name_else_the_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert finished("password", 200, None)["service"] == SERVICE
    monkeypatch.setattr(observability, "_DOCUMENTS", {})
    monkeypatch.setattr(observability.metrics, "service", None)
    assert finished("password", 200, None)["service"] == observability.logger.service


def test_an_event_count_is_one_count_in_the_service_totals(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    observability.metrics_count("Lockouts")
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines() if '"_aws"' in text]
    assert directive(line)["Metrics"] == [{"Name": "Lockouts", "Unit": "Count"}]
    assert directive(line)["Dimensions"] == [["service"]]
    assert (line["Lockouts"], line["service"]) == ([1.0], observability.logger.service)
