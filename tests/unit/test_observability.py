"""The log lines keep Powertools' shape: JSON, Lambda context fields, the API Gateway request id
as correlation id, cold_start true only on the first invocation."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from broker.observability import API_GATEWAY_REST, Logger
from tests.support import load_event
from tests.unit.conftest import FakeContext


def test_lines_carry_the_context_and_the_correlation_id(context: FakeContext) -> None:
    # Given a logger writing to a buffer, around a handler that logs
    log = Logger(service="token-broker", level="INFO")
    out = io.StringIO()
    log.handlers[0].setStream(out)  # type: ignore[attr-defined]

    @log.inject_lambda_context(correlation_id_path=API_GATEWAY_REST)
    def handler(event: dict[str, Any], context: Any) -> str:
        log.info("Token request finished", extra={"status": 200})
        log.debug("not at INFO")
        return "done"

    # When it runs twice
    event = load_event("password-json")
    assert handler(event, context) == "done"
    assert handler(event, context) == "done"

    # Then each INFO line is one JSON object with Powertools' keys
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert list(first)[:5] == ["level", "location", "message", "timestamp", "service"]
    assert first["level"] == "INFO"
    assert first["location"].startswith("handler:")
    assert first["message"] == "Token request finished"
    assert first["service"] == "token-broker"
    assert first["status"] == 200
    assert first["correlation_id"] == event["requestContext"]["requestId"]
    assert first["function_request_id"] == context.aws_request_id
    assert first["function_name"] == context.function_name
    assert first["function_memory_size"] == context.memory_limit_in_mb
    assert first["function_arn"] == context.invoked_function_arn
    assert (first["cold_start"], second["cold_start"]) == (True, False)


def test_an_exception_is_one_line_with_its_name(context: FakeContext) -> None:
    log = Logger(service="token-broker", level=logging.INFO)
    out = io.StringIO()
    log.handlers[0].setStream(out)  # type: ignore[attr-defined]
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("Unexpected failure")
    line = json.loads(out.getvalue())
    assert line["level"] == "ERROR"
    assert line["exception_name"] == "ValueError"
    assert "Traceback" in line["exception"]


def test_a_missing_request_id_leaves_no_correlation_id(context: FakeContext) -> None:
    log = Logger(service="token-broker")
    out = io.StringIO()
    log.handlers[0].setStream(out)  # type: ignore[attr-defined]
    log.inject_lambda_context(correlation_id_path=API_GATEWAY_REST)(lambda e, c: log.info("x"))({"body": None}, context)
    assert "correlation_id" not in json.loads(out.getvalue())
