"""Session-wide: every log line of the run goes to one sink, and the session fails if a
planted password, secret or token appears in any of them."""

from __future__ import annotations

import logging

import pytest

from tests.support import SINK, LogSink, leaked


@pytest.fixture(scope="session", autouse=True)
def log_sink() -> LogSink:
    logging.getLogger().addHandler(SINK)
    # Powertools' logger does not propagate to the root logger: attach to it directly.
    from broker.observability import logger

    logger.addHandler(SINK)
    SINK.setFormatter(logger.registered_formatter)  # the exact JSON lines Lambda would ship
    return SINK


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = leaked(SINK.lines)
    if found:
        value, line = found[0]
        print(f"\nLEAK: a planted value ({value[:4]}...) appeared in {len(found)} log line(s), e.g.:\n{line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
