"""The broker logger's handler: one line per record on its stream, flushed; nothing to the root logger."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from broker.observability import LineHandler, logger


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    """The broker logger's own handler, pointed at a stream the test can read."""
    handler = logger.registered_handler
    sink = CountingStream()
    previous = handler.setStream(sink)  # type: ignore[attr-defined]
    try:
        yield sink
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


def test_the_broker_logger_writes_through_a_line_handler() -> None:
    # Given the logger every function uses
    # Then its one handler is the LineHandler
    assert type(logger.registered_handler) is LineHandler


def test_each_record_is_one_formatted_line_written_and_flushed(stream: CountingStream) -> None:
    # Given the broker logger writing to a stream
    # When it logs one record
    logger.info("Token request finished", extra={"grant": "password", "status": 200})

    # Then the stream holds exactly the formatter's line and a newline, flushed once
    assert stream.getvalue().endswith("\n")
    assert stream.getvalue().count("\n") == 1
    assert '"message":"Token request finished"' in stream.getvalue()
    assert '"status":200' in stream.getvalue()
    assert stream.getvalue().startswith('{"level":"INFO"')
    assert stream.flushes == 1


def test_a_filter_on_the_handler_is_honoured(stream: CountingStream) -> None:
    # Given a filter on the handler that drops every record
    handler = logger.registered_handler

    def drop(record: logging.LogRecord) -> bool:
        return False

    handler.addFilter(drop)
    try:
        # When the broker logger logs
        logger.info("dropped by the filter")
    finally:
        handler.removeFilter(drop)

    # Then nothing was written
    assert stream.getvalue() == ""


def test_a_record_that_cannot_be_formatted_is_reported_not_raised(
    stream: CountingStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a formatter that fails
    def broken(record: logging.LogRecord) -> str:
        raise ValueError("cannot format")

    monkeypatch.setattr(logger.registered_formatter, "format", broken)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(logger.registered_handler, "handleError", reported.append)

    # When the broker logger logs, then the caller sees no error, the handler reports it, nothing is written
    logger.info("unformattable")
    assert [r.getMessage() for r in reported] == ["unformattable"]
    assert stream.getvalue() == ""


def test_broker_records_stop_at_the_broker_logger(stream: CountingStream) -> None:
    # Given a handler on the root logger (as awslambdaric installs one in Lambda)
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root_handler = Collect()
    logging.getLogger().addHandler(root_handler)
    try:
        # When the broker logger logs
        logger.info("only once")
    finally:
        logging.getLogger().removeHandler(root_handler)

    # Then the line is written once, by the broker's handler, and the root handler never sees it
    assert stream.getvalue().count("only once") == 1
    assert seen == []
