"""The DynamoDB guards: brute-force limits on login, single-flight refresh, and how they fail.

The table is moto's in-process DynamoDB; time is an injected clock, so windows, grace
periods and leases pass without sleeping.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest
from moto import mock_aws

from broker.errors import BrokerError, CallerRejected, UpstreamFailure
from broker.guards import (
    LEASE_SECONDS,
    WINDOW_SECONDS,
    GuardKeys,
    Guards,
    GuardsUnavailable,
    RefreshInProgress,
    SharedError,
    TooManyAttempts,
    dynamodb_client,
)
from broker.secrets import BrokerSecret
from tests.support import DEMO_SECRET, ISSUED, ROOT, SINK
from tests.unit.conftest import aws_client

TABLE = "token-broker-state"
PASSWORD = "demo-password"
WRONG = "not-the-password"
REFRESH_TOKEN = "demo-refresh-token"
USER = "alice@example.com"
IP = "203.0.113.7"
# The start of a window, plus a little: every test begins well inside one window.
T0 = float(1_800_000_000 // WINDOW_SECONDS * WINDOW_SECONDS + 10)
KEY = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
OLD_KEY = base64.urlsafe_b64encode(bytes(range(32, 64))).rstrip(b"=").decode()
SECRET = BrokerSecret(MappingProxyType({**DEMO_SECRET, "broker_keys": f"{KEY},{OLD_KEY}"}))
KEYS = GuardKeys.from_secret(SECRET)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Upstream:
    """Stands in for the token endpoint: counts calls, knows one password."""

    calls: list[str] = field(default_factory=list)
    delay: float = 0.0
    failure: BrokerError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def login(self, username: str, password: str) -> Callable[[], dict[str, Any]]:
        def call() -> dict[str, Any]:
            with self.lock:
                self.calls.append(username)
            if self.failure is not None:
                raise self.failure
            if password != PASSWORD:
                raise CallerRejected("invalid_grant", "Invalid credentials given.")
            return {"access_token": ISSUED["access_token"], "token_type": "Bearer"}

        return call

    def refresh(self) -> dict[str, Any]:
        with self.lock:
            self.calls.append("refresh")
            number = len(self.calls)
        time.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return {**ISSUED, "token_type": "Bearer", "expires_in": 3600, "scope": f"call-{number}"}


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    with mock_aws():
        client = aws_client("dynamodb")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


class AtomicTable:
    """The DynamoDB client, one call at a time.

    DynamoDB applies each conditional write to an item atomically. moto's in-process backend
    checks the condition and writes without a lock, so two threads can both pass one
    condition (measured: 15 of 20 parallel guesses got through). Serialising the calls gives
    moto DynamoDB's guarantee back; the broker's own threads still race each other.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(**params: Any) -> Any:
            with self._lock:
                return method(**params)

        return call


class RetriedWrites(AtomicTable):
    """Every call is sent twice, as botocore does when a write's answer is lost (read timeout)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        once = super().__getattr__(name)

        def twice(**params: Any) -> Any:
            with contextlib.suppress(Exception):
                once(**params)
            return once(**params)

        return twice


@pytest.fixture
def guards(table: Any, clock: Clock) -> Guards:
    client = AtomicTable(dynamodb_client())
    return Guards(
        TABLE, max_failures=5, max_failures_per_ip=50, grace=30, fail_closed=False, client=client, clock=clock, wait=3.0
    )


def attempt(guards: Guards, upstream: Upstream, username: str, password: str, ip: str = IP) -> Any:
    """One login through the guards: the tokens, or the BrokerError it ended with."""
    try:
        return guards.login(username, ip, KEYS, upstream.login(username, password))
    except BrokerError as exc:
        return exc


def scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = table.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return items


# -- brute force --------------------------------------------------------------------------


def test_sixth_wrong_password_is_refused_before_the_upstream(guards: Guards, upstream: Upstream) -> None:
    # Given five wrong passwords for one username
    first_five = [attempt(guards, upstream, USER, WRONG) for _ in range(5)]
    # When a sixth arrives
    sixth = attempt(guards, upstream, USER, WRONG)
    # Then the five reached the upstream and were rejected by it, the sixth never did
    assert [type(r) for r in first_five] == [CallerRejected] * 5
    assert isinstance(sixth, TooManyAttempts)
    assert (sixth.status, sixth.error) == (429, "temporarily_unavailable")
    assert upstream.calls == [USER] * 5
    # And the right password is refused too until the window passes (the guard cannot know it)
    assert isinstance(attempt(guards, upstream, USER, PASSWORD), TooManyAttempts)
    assert len(upstream.calls) == 5


def test_another_username_from_the_same_ip_still_signs_in(guards: Guards, upstream: Upstream) -> None:
    # Given a username locked out from this IP
    for _ in range(6):
        attempt(guards, upstream, USER, WRONG)
    # When another user signs in from the same IP
    result = attempt(guards, upstream, "bob@example.com", PASSWORD)
    # Then the upstream is asked and the tokens come back
    assert result == {"access_token": ISSUED["access_token"], "token_type": "Bearer"}
    assert upstream.calls[-1] == "bob@example.com"


def test_case_and_width_variants_share_one_counter(guards: Guards, upstream: Upstream) -> None:
    for name in ("Alice@example.com", "ALICE@EXAMPLE.COM", "alice@example.com ", "ａｌｉｃｅ@example.com", USER):
        assert isinstance(attempt(guards, upstream, name, WRONG), CallerRejected)
    assert isinstance(attempt(guards, upstream, "aLiCe@Example.com", WRONG), TooManyAttempts)
    assert len(upstream.calls) == 5


def test_fifty_one_failures_from_one_ip_lock_that_ip(guards: Guards, upstream: Upstream) -> None:
    # Given 50 failed logins from one IP, each for a different username (password spraying)
    results = [attempt(guards, upstream, f"user{n}@example.com", WRONG) for n in range(50)]
    assert all(isinstance(r, CallerRejected) for r in results)
    # When the 51st arrives, for yet another username
    blocked = attempt(guards, upstream, "user50@example.com", PASSWORD)
    # Then the IP is refused before the upstream, and another IP is not
    assert isinstance(blocked, TooManyAttempts)
    assert blocked.status == 429
    assert len(upstream.calls) == 50
    # And the refusal did not cost user50 a place in its own counter: five tries left elsewhere
    for _ in range(5):
        assert isinstance(attempt(guards, upstream, "user50@example.com", WRONG, ip="198.51.100.9"), CallerRejected)
    assert isinstance(attempt(guards, upstream, "user50@example.com", WRONG, ip="198.51.100.9"), TooManyAttempts)
    assert isinstance(attempt(guards, upstream, "user51@example.com", PASSWORD, ip="198.51.100.9"), dict)


def test_an_ipv6_host_cannot_rotate_through_its_own_slash_64(table: Any, clock: Clock, upstream: Upstream) -> None:
    guards = Guards(TABLE, max_failures=5, max_failures_per_ip=2, grace=30, fail_closed=False, clock=clock)
    assert isinstance(attempt(guards, upstream, "a", WRONG, ip="2001:db8:1:2::1"), CallerRejected)
    assert isinstance(attempt(guards, upstream, "b", WRONG, ip="2001:db8:1:2:ffff::9"), CallerRejected)
    assert isinstance(attempt(guards, upstream, "c", WRONG, ip="2001:db8:1:2:abcd::1"), TooManyAttempts)
    assert isinstance(attempt(guards, upstream, "c", WRONG, ip="2001:db8:1:3::1"), CallerRejected)


def test_after_the_window_logins_reach_the_upstream_again(guards: Guards, upstream: Upstream, clock: Clock) -> None:
    # Given a username locked out
    for _ in range(6):
        attempt(guards, upstream, USER, WRONG)
    refused = attempt(guards, upstream, USER, PASSWORD)
    assert isinstance(refused, TooManyAttempts)
    # When the Retry-After it named has passed
    assert refused.retry_after is not None
    clock.now += int(refused.retry_after)
    # Then the right password signs in
    assert attempt(guards, upstream, USER, PASSWORD) == {"access_token": ISSUED["access_token"], "token_type": "Bearer"}
    assert len(upstream.calls) == 6


@pytest.mark.parametrize("into_window", [0.0, 10.0, 599.4, 899.2, 899.99])
def test_retry_after_is_the_time_left_in_the_window(
    table: Any, upstream: Upstream, clock: Clock, into_window: float
) -> None:
    guards = Guards(TABLE, max_failures=1, max_failures_per_ip=50, grace=30, fail_closed=False, clock=clock)
    start = T0 - 10
    clock.now = start + into_window
    attempt(guards, upstream, USER, WRONG)
    refused = attempt(guards, upstream, USER, WRONG)
    assert isinstance(refused, TooManyAttempts)
    assert refused.retry_after is not None
    retry_after = int(refused.retry_after)
    left = start + WINDOW_SECONDS - clock.now
    # The whole seconds to wait: never before the window ends, less than a second after it
    assert retry_after > 0
    assert retry_after - 1 < left <= retry_after
    assert retry_after == max(1, math.ceil(left))
    # One second earlier is still refused, at Retry-After the next attempt reaches the upstream
    clock.now = start + WINDOW_SECONDS - 0.01
    assert isinstance(attempt(guards, upstream, USER, WRONG), TooManyAttempts)
    clock.now = start + into_window + retry_after
    assert isinstance(attempt(guards, upstream, USER, WRONG), CallerRejected)


def test_a_success_clears_the_username_counter(guards: Guards, upstream: Upstream, table: Any) -> None:
    # Given four failures
    for _ in range(4):
        attempt(guards, upstream, USER, WRONG)
    # When the right password comes
    assert isinstance(attempt(guards, upstream, USER, PASSWORD), dict)
    # Then the username's counter is gone, and five more failures are allowed before the 429
    assert [i for i in scan(table) if i["pk"]["S"].startswith("login#user#")] == []
    for _ in range(5):
        assert isinstance(attempt(guards, upstream, USER, WRONG), CallerRejected)
    assert isinstance(attempt(guards, upstream, USER, WRONG), TooManyAttempts)
    assert len(upstream.calls) == 10
    # And the IP counts failures only: 9 of them, not the success
    ip_items = [i for i in scan(table) if i["pk"]["S"].startswith("login#ip#")]
    assert [len(i["attempts"]["SS"]) for i in ip_items] == [9]


def test_upstream_trouble_is_not_counted_as_a_failed_password(guards: Guards, upstream: Upstream) -> None:
    upstream.failure = UpstreamFailure()
    for _ in range(8):
        assert isinstance(attempt(guards, upstream, USER, WRONG), UpstreamFailure)
    upstream.failure = CallerRejected("invalid_scope", "The requested scope is invalid.")
    assert isinstance(attempt(guards, upstream, USER, WRONG), CallerRejected)
    upstream.failure = None
    assert isinstance(attempt(guards, upstream, USER, PASSWORD), dict)
    assert len(upstream.calls) == 10


def test_parallel_guesses_cannot_outrun_the_counter(guards: Guards, upstream: Upstream) -> None:
    # Given 20 wrong passwords for one username sent at the same moment
    start = threading.Barrier(20)

    def guess(_: int) -> Any:
        start.wait()
        return attempt(guards, upstream, USER, WRONG)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(guess, range(20)))
    # Then exactly five reached the upstream: each attempt reserved its place before the call
    assert len(upstream.calls) == 5
    assert sum(isinstance(r, TooManyAttempts) for r in results) == 15


def test_a_retried_write_never_counts_an_attempt_twice(table: Any, clock: Clock, upstream: Upstream) -> None:
    # Given a table client whose every write reaches DynamoDB twice
    guards = Guards(TABLE, max_failures=5, clock=clock, client=RetriedWrites(dynamodb_client()))
    # Then five wrong passwords still reach the upstream, and the sixth is refused
    results = [attempt(guards, upstream, USER, WRONG) for _ in range(6)]
    assert [type(r) for r in results] == [CallerRejected] * 5 + [TooManyAttempts]
    assert len(upstream.calls) == 5
    # And a retried claim is recognised as this request's own: the refresh goes upstream once
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-6"
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-6"
    assert len(upstream.calls) == 6


def test_items_carry_a_ttl_at_the_end_of_their_window(guards: Guards, upstream: Upstream, table: Any) -> None:
    attempt(guards, upstream, USER, WRONG)
    window_end = (int(T0) // WINDOW_SECONDS + 1) * WINDOW_SECONDS
    assert {int(i["expires_at"]["N"]) for i in scan(table)} == {window_end}
    ttl = table.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


# -- nothing in the clear -----------------------------------------------------------------


def _raw_values(item: dict[str, Any]) -> list[bytes]:
    values: list[bytes] = []
    for name, typed in item.items():
        values.append(name.encode())
        for kind, value in typed.items():
            values.append(value if kind == "B" else str(value).encode())
    return values


def test_the_table_holds_no_username_ip_password_or_token(guards: Guards, upstream: Upstream, table: Any) -> None:
    # Given failures, a lock-out, a success and a shared refresh
    for _ in range(6):
        attempt(guards, upstream, USER, WRONG)
    attempt(guards, upstream, "bob@example.com", PASSWORD)
    tokens = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    # When every item is read back raw
    items = scan(table)
    assert {i["pk"]["S"].split("#")[0] for i in items} == {"login", "refresh"}
    issued = [value for value in tokens.values() if isinstance(value, str) and value != "Bearer"]
    planted = [USER, "alice", "bob", IP, "203.0.113", PASSWORD, WRONG, REFRESH_TOKEN, *issued, *ISSUED.values()]
    planted += [KEY, OLD_KEY, DEMO_SECRET["client_secret"]]
    # Then no value appears, as text, base64 or hex, in any attribute
    for raw in (value for item in items for value in _raw_values(item)):
        for value in planted:
            for form in (value.encode(), base64.b64encode(value.encode()), value.encode().hex().encode()):
                assert form not in raw


def test_no_log_line_names_the_user_or_the_ip(guards: Guards, upstream: Upstream) -> None:
    SINK.lines.clear()
    for _ in range(7):
        attempt(guards, upstream, USER, WRONG)
    assert any("Login refused" in line for line in SINK.lines)
    assert not [line for line in SINK.lines if USER in line or IP in line]


# -- single-flight refresh ----------------------------------------------------------------


def refresh_concurrently(guards: Guards, upstream: Upstream, count: int = 10) -> list[Any]:
    start = threading.Barrier(count)

    def one(_: int) -> Any:
        start.wait()
        try:
            return guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
        except BrokerError as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_ten_concurrent_refreshes_make_one_upstream_call(guards: Guards, upstream: Upstream) -> None:
    # Given an upstream that takes a while
    upstream.delay = 0.3
    # When ten refreshes of one token arrive together
    results = refresh_concurrently(guards, upstream)
    # Then one reached the upstream and all ten got its tokens
    assert upstream.calls == ["refresh"]
    assert all(isinstance(r, dict) for r in results)
    assert [r["scope"] for r in results] == ["call-1"] * 10
    assert all(r == results[0] for r in results)
    assert results[0]["refresh_token"] == ISSUED["refresh_token"]


def test_another_refresh_token_is_not_held_up(guards: Guards, upstream: Upstream) -> None:
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    other = guards.single_flight("another-refresh-token", KEYS, upstream.refresh)
    assert other["scope"] == "call-2"


def test_a_twin_within_the_grace_period_gets_the_same_tokens(guards: Guards, upstream: Upstream, clock: Clock) -> None:
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    clock.now += 29
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == first
    assert len(upstream.calls) == 1


def test_a_twin_after_the_grace_period_goes_upstream(guards: Guards, upstream: Upstream, clock: Clock) -> None:
    # Given a refresh whose outcome is kept for 30 s
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    # When the same token comes back 31 s later (DynamoDB's TTL has not deleted the item yet)
    clock.now += 31
    again = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    # Then it is refreshed upstream, as without the guards
    assert again["scope"] == "call-2"
    assert len(upstream.calls) == 2


def test_the_claimants_invalid_grant_is_shared_with_its_twins(guards: Guards, upstream: Upstream) -> None:
    # Given a refresh token the upstream rejects
    upstream.delay = 0.2
    upstream.failure = CallerRejected("invalid_grant", "The refresh token is invalid.")
    # When five twins refresh it together
    results = refresh_concurrently(guards, upstream, 5)
    # Then one upstream call, and every twin answers the same 400 invalid_grant
    assert len(upstream.calls) == 1
    assert all(isinstance(r, CallerRejected) for r in results)
    assert {(r.status, r.error, r.description) for r in results} == {
        (400, "invalid_grant", "The refresh token is invalid.")
    }


def test_a_502_is_shared_with_twins_but_not_for_long(guards: Guards, upstream: Upstream, clock: Clock) -> None:
    upstream.delay = 0.2
    upstream.failure = UpstreamFailure()
    results = refresh_concurrently(guards, upstream, 5)
    assert len(upstream.calls) == 1
    assert {(r.status, r.error) for r in results} == {(502, "server_error")}
    assert sum(isinstance(r, SharedError) for r in results) == 4
    # A retry a few seconds later may find the token unspent: it reaches the upstream again
    upstream.failure, upstream.delay = None, 0.0
    clock.now += 6
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-2"


def test_a_shared_503_keeps_its_retry_after(guards: Guards, upstream: Upstream) -> None:
    upstream.delay = 0.2
    upstream.failure = SharedError(503, "temporarily_unavailable", "The upstream is busy.", "7")
    results = refresh_concurrently(guards, upstream, 3)
    assert {(r.status, r.retry_after) for r in results} == {(503, "7")}


class Crash(BaseException):
    """The function is killed mid-call (timeout, out of memory): nothing runs after it."""


def test_a_crashed_claimant_blocks_only_until_its_lease_ends(table: Any, upstream: Upstream, clock: Clock) -> None:
    guards = Guards(TABLE, grace=30, clock=clock, wait=0.3)

    def crash() -> dict[str, Any]:
        raise Crash

    # Given a claimant that died after claiming the token
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    # When a twin arrives during the lease, it waits a bounded time, then gets 503 (no upstream call)
    clock.now += 2
    started = time.monotonic()
    with pytest.raises(RefreshInProgress) as pending:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert time.monotonic() - started < 1.0
    assert (pending.value.status, pending.value.error) == (503, "temporarily_unavailable")
    assert pending.value.retry_after is not None
    assert 0 < int(pending.value.retry_after) <= LEASE_SECONDS - 2 + 1
    assert upstream.calls == []
    # Then once the lease has passed, the next refresh claims the token and goes upstream
    clock.now += LEASE_SECONDS
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-1"


def test_a_bug_in_the_claimant_is_shared_as_a_generic_server_error(guards: Guards, upstream: Upstream) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        guards.single_flight(REFRESH_TOKEN, KEYS, broken)
    with pytest.raises(BrokerError) as twin:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert (twin.value.status, twin.value.error) == (500, "server_error")
    assert upstream.calls == []


def test_after_a_key_rotation_a_refresh_goes_upstream(guards: Guards, upstream: Upstream) -> None:
    # Given an outcome sealed with the old newest key
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    # When the keys rotate and a twin with the same refresh token arrives
    rotated = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": OLD_KEY})))
    result = guards.single_flight(REFRESH_TOKEN, rotated, upstream.refresh)
    # Then it goes upstream (the new key names another item), as it would without the guards
    assert result["scope"] == "call-2"


def test_a_tampered_outcome_fails_open(guards: Guards, upstream: Upstream, table: Any) -> None:
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    (item,) = scan(table)
    blob = bytearray(item["outcome"]["B"])
    blob[-1] ^= 1
    table.put_item(TableName=TABLE, Item={**item, "outcome": {"B": bytes(blob)}})
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-2"


def test_zero_grace_turns_single_flight_off(table: Any, upstream: Upstream) -> None:
    guards = Guards(TABLE, grace=0)
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert len(upstream.calls) == 2
    assert scan(table) == []


# -- the table missing, dead or hung ------------------------------------------------------


def guard_errors() -> list[dict[str, Any]]:
    """The guards' error log lines so far, as Lambda would ship them."""
    lines = [line for line in SINK.lines if "Guards table unavailable" in line]
    return [json.JSONDecoder().raw_decode(line)[0] for line in lines]


def test_missing_table_fails_open(
    monkeypatch: pytest.MonkeyPatch, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    with mock_aws():
        guards = Guards("no-such-table", fail_closed=False)
        SINK.lines.clear()
        # When the guards cannot reach their table, login and refresh go on unguarded
        assert isinstance(attempt(guards, upstream, USER, PASSWORD), dict)
        assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-2"
    assert upstream.calls == [USER, "refresh"]
    # And an error line (with the error code, no value) and a metric say so
    errors = guard_errors()
    assert {(e["guards_operation"], e["guards_error"], e["level"]) for e in errors} == {
        ("check_login", "ResourceNotFoundException", "ERROR"),
        ("single_flight", "ResourceNotFoundException", "ERROR"),
    }
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m["GuardsUnavailable"] for m in metrics] == [[1.0], [1.0]]


def test_missing_table_fails_closed_when_asked(monkeypatch: pytest.MonkeyPatch, upstream: Upstream) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    with mock_aws():
        guards = Guards("no-such-table", fail_closed=True)
        login = attempt(guards, upstream, USER, PASSWORD)
        with pytest.raises(GuardsUnavailable) as refresh:
            guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert isinstance(login, GuardsUnavailable)
    assert (login.status, login.error) == (503, "temporarily_unavailable")
    assert refresh.value.status == 503
    assert upstream.calls == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """Accepts connections (the kernel does) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["dead", "hung"])
@pytest.mark.parametrize("fail_closed", [False, True])
def test_an_unreachable_table_never_hangs_the_function(
    endpoint: str, fail_closed: bool, hung_endpoint: str, upstream: Upstream, clock: Clock
) -> None:
    url = hung_endpoint if endpoint == "hung" else f"http://127.0.0.1:{_closed_port()}"
    guards = Guards(TABLE, fail_closed=fail_closed, client=dynamodb_client(url), clock=clock)
    # When a login meets the dead table
    started = time.monotonic()
    login = attempt(guards, upstream, USER, PASSWORD)
    first = time.monotonic() - started
    # Then it is answered in bounded time: unguarded (fail open) or 503 (fail closed)
    assert first < 3.0
    if fail_closed:
        assert isinstance(login, GuardsUnavailable)
        assert upstream.calls == []
    else:
        assert isinstance(login, dict)
        assert upstream.calls == [USER]
    # And the next calls skip the table at once (the breaker), refresh included
    started = time.monotonic()
    for _ in range(3):
        attempt(guards, upstream, USER, PASSWORD)
        try:
            guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
        except GuardsUnavailable:
            assert fail_closed
    assert time.monotonic() - started < 0.5
    assert len(upstream.calls) == (0 if fail_closed else 7)
    assert {e["guards_error"] for e in guard_errors()[-6:]} == {"breaker_open"}
    # And after the breaker's pause the table is tried again
    clock.now += 11
    attempt(guards, upstream, USER, PASSWORD)
    assert guard_errors()[-1]["guards_error"] in ("EndpointConnectionError", "ReadTimeoutError")


# -- keys ---------------------------------------------------------------------------------


def test_keys_come_from_the_newest_broker_key() -> None:
    newest_only = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": KEY})))
    older = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": OLD_KEY})))
    assert newest_only == KEYS
    assert older != KEYS
    assert KEYS.mac != KEYS.cipher
    assert len(KEYS.mac) == len(KEYS.cipher) == 32
    assert KEY not in repr(KEYS)
    assert "redacted" in repr(KEYS)


def test_without_broker_keys_the_client_secret_is_the_root() -> None:
    fallback = GuardKeys.from_secret(BrokerSecret(MappingProxyType(dict(DEMO_SECRET))))
    other = GuardKeys.from_secret(BrokerSecret(MappingProxyType({**DEMO_SECRET, "client_secret": "another"})))
    assert fallback != other
    assert fallback != KEYS


@pytest.mark.parametrize("value", ["not*base64", base64.urlsafe_b64encode(b"short").decode()])
def test_a_malformed_broker_key_is_refused(value: str) -> None:
    with pytest.raises(GuardsUnavailable):
        GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": value})))


def test_no_key_at_all_fails_open_or_closed(table: Any, upstream: Upstream) -> None:
    keyless = BrokerSecret(MappingProxyType({"client_id": "public-spa"}))
    assert Guards(TABLE, fail_closed=False).keys_for(keyless) is None
    with pytest.raises(GuardsUnavailable) as closed:
        Guards(TABLE, fail_closed=True).keys_for(keyless)
    assert closed.value.description == GuardsUnavailable.default_description  # no detail for the caller
    # None keys: the call goes on unguarded
    assert isinstance(attempt_with_keys(Guards(TABLE), upstream, None), dict)


def attempt_with_keys(guards: Guards, upstream: Upstream, keys: GuardKeys | None) -> Any:
    return guards.login(USER, IP, keys, upstream.login(USER, PASSWORD))


def test_keys_are_derived_once_per_secret(guards: Guards) -> None:
    assert guards.keys_for(SECRET) is guards.keys_for(SECRET)
    assert guards.keys_for(SECRET) == KEYS


def test_importing_the_guards_loads_no_sdk_and_no_cipher_of_its_own() -> None:
    # What the core the guards build on already loads is that module's business; the guards
    # add neither the DynamoDB client nor the cipher until a Guards is built.
    code = (
        "import json, sys, broker.errors, broker.observability, broker.secrets; before = set(sys.modules); "
        "import broker.guards; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "broker")},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    added = set(json.loads(done.stdout.splitlines()[-1]))
    assert "broker.guards" in added
    assert not {m for m in added if m.split(".")[0] in ("botocore", "boto3", "cryptography")}
