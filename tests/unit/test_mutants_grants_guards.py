"""``guards_for``: the deployment's guard settings (BROKER_LOGIN_MAX_FAILURES and the rest) reach
the guards a grant runs behind. The table is moto's in-process DynamoDB (tests/unit/test_guards.py)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.config import Config
from broker.errors import CallerRejected, GuardsUnavailable, TooManyAttempts
from broker.grants.base import guards_for
from broker.guards import Guards
from broker.profiles import PRESETS
from tests.unit.test_guards import (  # noqa: F401 - the guards' fixtures
    KEYS,
    PASSWORD,
    REFRESH_TOKEN,
    TABLE,
    USER,
    WRONG,
    Upstream,
    attempt,
    clock,
    table,
    upstream,
)

CONFIG = Config("token-broker/client", PRESETS["bakrypt"], frozenset(), state_table=TABLE)


def configured(**settings: Any) -> Guards:
    guards = guards_for(CONFIG._replace(**settings))
    assert guards is not None
    return guards


def test_no_table_no_guards() -> None:
    assert guards_for(CONFIG._replace(state_table="")) is None


def test_the_per_username_limit_is_the_configured_one(table: Any, upstream: Upstream) -> None:  # noqa: F811 - the fixture imported from test_guards
    guards = configured(login_max_failures=2)
    assert [type(attempt(guards, upstream, USER, WRONG)) for _ in range(2)] == [CallerRejected] * 2
    assert isinstance(attempt(guards, upstream, USER, PASSWORD), TooManyAttempts)
    assert upstream.calls == [USER] * 2


def test_the_per_ip_limit_is_the_configured_one(table: Any, upstream: Upstream) -> None:  # noqa: F811 - the fixture imported from test_guards
    guards = configured(login_max_failures_per_ip=3)
    for n in range(3):
        assert isinstance(attempt(guards, upstream, f"user{n}@example.com", WRONG), CallerRejected)
    assert isinstance(attempt(guards, upstream, "user3@example.com", PASSWORD), TooManyAttempts)
    assert len(upstream.calls) == 3


@pytest.mark.parametrize(("grace", "upstream_calls"), [(0.0, 2), (5.0, 1)])
def test_the_refresh_grace_is_the_configured_one(
    grace: float,
    upstream_calls: int,
    table: Any,  # noqa: F811 - the fixture imported from test_guards
    upstream: Upstream,  # noqa: F811 - the fixture imported from test_guards
) -> None:
    """A twin within the grace gets the first refresh's outcome; a grace of 0 turns sharing off."""
    guards = configured(refresh_grace=grace)
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    second = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert upstream.calls == ["refresh"] * upstream_calls
    assert (first == second) is (upstream_calls == 1)


@pytest.mark.parametrize("fail_closed", [False, True])
def test_an_unreachable_table_fails_as_configured(
    fail_closed: bool,
    table: Any,  # noqa: F811 - the fixture imported from test_guards
    upstream: Upstream,  # noqa: F811 - the fixture imported from test_guards
) -> None:
    guards = configured(state_table="no-such-table", guards_fail_closed=fail_closed)
    login = attempt(guards, upstream, USER, PASSWORD)
    if fail_closed:
        assert isinstance(login, GuardsUnavailable)
        assert upstream.calls == []
    else:
        assert isinstance(login, dict)
        assert upstream.calls == [USER]
