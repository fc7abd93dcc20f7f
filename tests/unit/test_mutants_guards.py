"""The guards' rules mutation testing found unpinned: logout's reach, the short life of a
shared server error, how a failing table is reported, and what an item is named.

The table is moto's in-process DynamoDB behind a client that records every call and can
fail chosen ones as DynamoDB fails them (a ``ClientError`` with its code); time is an
injected clock, so grace periods and leases pass without sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from broker.errors import BrokerError, CallerRejected, GuardsUnavailable, UpstreamFailure
from broker.guards import Guards, RefreshInProgress, TooManyAttempts, dynamodb_client
from broker.lockout import folded_username, normal_ip
from broker.secrets import BrokerSecret
from broker.singleflight import seal_outcome
from broker.state_table import Conflict, StateTable, TableFault
from tests.support import ISSUED, SINK
from tests.unit.conftest import aws_client
from tests.unit.test_guards import KEYS, PASSWORD, REFRESH_TOKEN, SECRET, T0, TABLE, USER, WRONG, Clock, Upstream

IP = "203.0.113.7"
Failing = Callable[[str, dict[str, Any]], str | BaseException | None]


class RecordingTable:
    """The DynamoDB client: records each call; ``fail(operation, params)`` naming an error
    code makes that call fail with it, as DynamoDB would (a ``ClientError``), and an
    exception makes it fail as a network would. ``before`` runs ahead of each call, ``after``
    once it succeeded; without ``all_old`` a failed condition does not give the item back
    (as some local emulators)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: Failing = lambda operation, params: None
        self.before: Callable[[str, dict[str, Any]], None] = lambda operation, params: None
        self.after: Callable[[str, dict[str, Any]], None] = lambda operation, params: None
        self.all_old = True

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(**params: Any) -> Any:
            self.calls.append((name, params))
            self.before(name, params)
            failure = self.fail(name, params)
            if isinstance(failure, BaseException):
                raise failure
            if failure is not None:
                raise ClientError({"Error": {"Code": failure, "Message": "injected"}}, name)
            try:
                answer = method(**params)
            except ClientError as exc:
                if not self.all_old:
                    answer_given: dict[str, Any] = dict(exc.response)
                    answer_given.pop("Item", None)
                    exc.response = answer_given  # type: ignore[assignment]  # botocore types it as its own TypedDict
                raise
            self.after(name, params)
            return answer

        return call

    def keys_read(self, prefix: str) -> list[dict[str, Any]]:
        """The parameters of every get_item on an item whose key starts with ``prefix``."""
        return [p for op, p in self.calls if op == "get_item" and p["Key"]["pk"]["S"].startswith(prefix)]


@pytest.fixture
def dynamo(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingTable]:
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    with mock_aws():
        client = aws_client("dynamodb")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield RecordingTable(dynamodb_client())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


def make_guards(dynamo: RecordingTable, clock: Clock, **settings: Any) -> Guards:
    options: dict[str, Any] = {"max_failures": 5, "max_failures_per_ip": 50, "grace": 30, "lease": 10, "wait": 0.3}
    return Guards(TABLE, client=dynamo, clock=clock, **{**options, **settings})


def items(dynamo: RecordingTable) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dynamo._client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return found


def logged_since(before: int, message: str) -> list[dict[str, Any]]:
    """The log records with this message logged since ``before``, as Lambda would ship them."""
    decoder = json.JSONDecoder()
    unique: dict[float, dict[str, Any]] = {}
    for line in SINK.lines[before:]:
        record, end = decoder.raw_decode(line)
        created = json.loads(line[end:])["created"]  # one record reaching the sink twice is one line
        if record.get("message") == message:
            unique.setdefault(created, record)
    return list(unique.values())


def digest(kind: bytes, value: str) -> str:
    return hmac.new(KEYS.mac, kind + b"\x00" + value.encode(), hashlib.sha256).hexdigest()


def login(guards: Guards, upstream: Upstream, password: str, ip: str = IP) -> Any:
    try:
        return guards.login(USER, ip, KEYS, upstream.login(USER, password))
    except BrokerError as exc:
        return exc


# -- logout ends the sharing for the grace period and the lease -------------------------------


def test_a_logout_outlasts_every_outcome_shared_after_it(dynamo: RecordingTable, clock: Clock) -> None:
    """A logout marks the token ended for grace + lease: an outcome stored just after the
    logout (a claimant still running) lives grace seconds more, and no twin may get it."""
    guards = make_guards(dynamo, clock)
    tokens = {**ISSUED, "token_type": "Bearer"}
    # Given a logout, then the refresh of a claimant that was already running stores its outcome
    guards.end_refresh(REFRESH_TOKEN, KEYS)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens) == tokens
    # When a twin arrives 25 s later, past grace - lease but within the outcome's 30 s
    clock.now += 25
    with pytest.raises(CallerRejected) as twin:
        guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens)
    # Then it is told the session was logged out
    assert (twin.value.status, twin.value.error) == (400, "invalid_grant")
    assert twin.value.description == "This session has been logged out."
    # And the mark carries the TTL that says so
    (ended,) = [i for i in items(dynamo) if i["pk"]["S"].startswith("ended#")]
    assert int(ended["expires_at"]["N"]) == int(T0) + 30 + 10


def test_an_ended_mark_lapses_at_its_expiry_like_every_item(dynamo: RecordingTable, clock: Clock) -> None:
    """An item counts as gone once the clock reaches its ``expires_at`` (DynamoDB's TTL is
    lazy): a twin served at that second gets the outcome stored after the logout's reach."""
    guards = make_guards(dynamo, clock)
    tokens = {**ISSUED, "token_type": "Bearer"}
    # Given a logout at T0 (its mark ends at T0 + 40) and a refresh 15 s later (outcome until T0 + 45)
    guards.end_refresh(REFRESH_TOKEN, KEYS)
    clock.now += 15
    assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens) == tokens
    # When a twin comes one second before the mark's end, it is refused
    clock.now = T0 + 39
    with pytest.raises(CallerRejected):
        guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens)
    # And at the mark's end it is served the shared outcome
    clock.now = T0 + 40
    assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: {"access_token": "not shared"}) == tokens


def test_the_logout_mark_is_read_with_a_strongly_consistent_read(dynamo: RecordingTable, clock: Clock) -> None:
    """A logout written by one instance must stop a twin on another at once: an eventually
    consistent read may miss it, so every read of an ended mark asks for ConsistentRead."""
    guards = make_guards(dynamo, clock)
    tokens = {**ISSUED, "token_type": "Bearer"}
    guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens) == tokens
    reads = dynamo.keys_read("ended#")
    assert len(reads) == 2  # the presented token and the new refresh token it was given
    assert all(read.get("ConsistentRead") is True for read in reads)


def test_the_item_keys_are_the_table_format_every_version_shares(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """Old and new versions share the table during a deployment: each key is its kind and
    the HMAC-SHA256 of ``kind NUL value``. A logout's mark and the refresh claim are named
    by the same digest of the refresh token."""
    guards = make_guards(dynamo, clock)
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    guards.end_refresh(REFRESH_TOKEN, KEYS)
    assert {i["pk"]["S"] for i in items(dynamo)} == {
        f"refresh#{digest(b'refresh', REFRESH_TOKEN)}",
        f"ended#{digest(b'refresh', REFRESH_TOKEN)}",
    }


# -- a shared server error is kept only for a few seconds --------------------------------------


@pytest.mark.parametrize(
    "failure",
    [UpstreamFailure(), BrokerError(), CallerRejected("invalid_grant", "The refresh token is invalid.")],
    ids=["502", "500", "400"],
)
def test_only_a_4xx_outcome_is_shared_for_the_whole_grace_period(
    failure: BrokerError, dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """A 400 spent the token: twins get it for the whole grace. Any 5xx, 500 included, may
    have left the token unspent: after 5 s the user's retry reaches the upstream again."""
    guards = make_guards(dynamo, clock)
    upstream.failure = failure
    with pytest.raises(BrokerError):
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    upstream.failure = None
    # Within the 5 s every twin gets the claimant's error
    clock.now += 4
    with pytest.raises(BrokerError) as twin:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert (twin.value.status, twin.value.error, twin.value.description) == (
        failure.status,
        failure.error,
        failure.description,
    )
    # After them only the 4xx is still shared
    clock.now += 2
    if failure.status < 500:
        with pytest.raises(CallerRejected):
            guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
        assert len(upstream.calls) == 1
    else:
        assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-2"


# -- a table failing after the upstream call is logged and never fails the request -------------


def test_a_logout_whose_mark_cannot_be_written_is_logged_not_raised(dynamo: RecordingTable, clock: Clock) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: "InternalServerError" if op == "put_item" else None
    before = len(SINK.lines)
    guards.end_refresh(REFRESH_TOKEN, KEYS)  # Then no exception: the logout itself goes on
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["level"], error["guards_operation"], error["guards_error"]) == (
        "ERROR",
        "single_flight_end",
        "InternalServerError",
    )


def test_a_logout_mark_that_cannot_be_read_withholds_the_tokens(dynamo: RecordingTable, clock: Clock) -> None:
    """Unable to tell whether the session was logged out, a twin gets 503, never the tokens."""
    guards = make_guards(dynamo, clock)
    tokens = {**ISSUED, "token_type": "Bearer"}
    guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens)
    dynamo.fail = lambda op, p: "InternalServerError" if str(p.get("Key", {})).find("ended#") >= 0 else None
    before = len(SINK.lines)
    with pytest.raises(GuardsUnavailable) as twin:
        guards.single_flight(REFRESH_TOKEN, KEYS, lambda: tokens)
    assert twin.value.status == 503
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("single_flight_ended", "InternalServerError")


def test_an_abandoned_login_gives_the_ips_place_back(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    """Upstream trouble is no failed password: the IP's place is released too, and the
    counters keep working (no table error, no breaker)."""
    guards = make_guards(dynamo, clock, max_failures_per_ip=1)
    before = len(SINK.lines)
    # Given a login the upstream could not answer
    upstream.failure = UpstreamFailure()
    assert isinstance(login(guards, upstream, WRONG), UpstreamFailure)
    upstream.failure = None
    # When a wrong password comes from the same IP, it reaches the upstream (the place was given back)
    assert isinstance(login(guards, upstream, WRONG), CallerRejected)
    # And it took the IP's only place: the next is refused before the upstream
    assert isinstance(login(guards, upstream, PASSWORD), TooManyAttempts)
    assert len(upstream.calls) == 2
    assert logged_since(before, "Guards table unavailable; continuing unguarded") == []


def test_an_abandoned_login_whose_release_fails_keeps_its_own_error(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: "InternalServerError" if p.get("UpdateExpression", "").startswith("DELETE") else None
    upstream.failure = UpstreamFailure()
    before = len(SINK.lines)
    # When the upstream fails and the places cannot be given back
    result = login(guards, upstream, PASSWORD)
    # Then the caller gets the upstream's 502, and the table's failure is logged
    assert isinstance(result, UpstreamFailure)
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("login_abandoned", "InternalServerError")


# -- a secret without any key ------------------------------------------------------------------


def test_a_secret_without_keys_is_logged_with_the_reason(dynamo: RecordingTable, clock: Clock) -> None:
    guards = make_guards(dynamo, clock)
    before = len(SINK.lines)
    assert guards.keys_for(BrokerSecret(MappingProxyType({"client_id": "public-spa"}))) is None
    (error,) = logged_since(before, "Guards have no key")
    assert error["level"] == "ERROR"
    assert error["guards_error"] == "The guards need broker_keys (or client_secret) in the broker's secret."
    assert guards.keys_for(SECRET) == KEYS


# -- whose failures count together ------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "zoe",
        "Zoë",
        "ZOE",
        "ＺＯＥ",
        "z\u00adoe",
        "zo\u200be",
        "z\x7foe",
        " zoe\t",
        "\u3164zoe",
        "zo\u115fe",
        "z\uffa0oe",
    ],
    ids=[
        "plain",
        "accent",
        "case",
        "width",
        "soft-hyphen",
        "zero-width",
        "control",
        "spaces",
        "filler",
        "choseong",
        "half",
    ],
)
def test_spellings_a_lenient_store_matches_fold_to_one_name(spelling: str) -> None:
    """Case, width, marks, format and control characters, whitespace and the Hangul
    fillers are dropped or folded; the letters themselves are kept."""
    assert folded_username(spelling) == "zoe"


def test_distinct_names_stay_distinct_when_folded() -> None:
    assert folded_username("alice@example.com") == "alice@example.com"
    assert folded_username("zoe") != folded_username("zoa")
    assert folded_username("Straße") == "strasse"


@pytest.mark.parametrize(
    ("source_ip", "counted_as"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:8000::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
        ("not-an-address", "not-an-address"),
        ("", ""),
        (" \t", ""),
    ],
)
def test_the_source_ip_is_counted_by_its_host(source_ip: str, counted_as: str) -> None:
    """IPv4 as is (also when IPv4-mapped), IPv6 by its /64, anything else verbatim."""
    assert normal_ip(source_ip) == counted_as


def test_a_login_without_a_source_ip_counts_against_the_username_only(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock, max_failures_per_ip=1)
    assert isinstance(login(guards, upstream, WRONG, ip=""), CallerRejected)
    assert isinstance(login(guards, upstream, WRONG, ip=" "), CallerRejected)
    assert len(upstream.calls) == 2
    assert [i["pk"]["S"].split("#")[1] for i in items(dynamo)] == ["user"]


def test_a_username_with_a_lone_surrogate_is_counted_like_any_other(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """JSON may carry a lone surrogate escape ("\\ud800"): it is hashed, never refused or crashed on."""
    guards = make_guards(dynamo, clock, max_failures=1)
    name = "eve\ud800"
    with pytest.raises(CallerRejected):
        guards.login(name, IP, KEYS, upstream.login(name, WRONG))
    with pytest.raises(TooManyAttempts):
        guards.login(name, IP, KEYS, upstream.login(name, WRONG))


def test_the_counter_items_are_the_table_format_every_version_shares(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """Counter keys hold the window and the HMAC of the folded name or normalised IP; each
    attempt id is a 16-hex-digit tag of the exact spelling, a dot, 9 random bytes base64url."""
    guards = make_guards(dynamo, clock)
    login(guards, upstream, WRONG)
    window = int(T0) // 900
    found = {i["pk"]["S"]: i["attempts"]["SS"] for i in items(dynamo)}
    user_key = f"login#user#{window}#{digest(b'user', folded_username(USER))}"
    assert set(found) == {user_key, f"login#ip#{window}#{digest(b'ip', IP)}"}
    (attempt_id,) = found[user_key]
    assert re.fullmatch(re.escape(digest(b"spelling", USER)[:16]) + r"\.[A-Za-z0-9_-]{12}", attempt_id)


# -- refusals say which limit, and when to come back ---------------------------------------------


def test_a_refusal_names_the_full_counter_in_its_log_line(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock, max_failures=1, max_failures_per_ip=2)
    before = len(SINK.lines)
    login(guards, upstream, WRONG)
    assert isinstance(login(guards, upstream, WRONG), TooManyAttempts)
    assert isinstance(login_as(guards, upstream, "bob"), CallerRejected)
    assert isinstance(login_as(guards, upstream, "carol"), TooManyAttempts)
    refusals = logged_since(before, "Login refused: too many failed attempts")
    assert [(r["level"], r["limit"]) for r in refusals] == [("WARNING", "username"), ("WARNING", "source_ip")]


def login_as(guards: Guards, upstream: Upstream, username: str) -> Any:
    try:
        return guards.login(username, IP, KEYS, upstream.login(username, WRONG))
    except BrokerError as exc:
        return exc


def test_a_throttled_counter_refuses_for_five_seconds_and_says_why(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: "ThrottlingException" if op == "update_item" else None
    before = len(SINK.lines)
    refused = login(guards, upstream, PASSWORD)
    assert isinstance(refused, TooManyAttempts)
    assert (refused.status, refused.retry_after) == (429, "5")
    assert upstream.calls == []
    assert [r["level"] for r in logged_since(before, "Login refused: the lockout counter is throttled")] == ["WARNING"]
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("check_login", "ThrottlingException")


# -- what a success and an abandoned attempt write back -------------------------------------------


def test_a_success_whose_counter_cannot_be_cleared_still_signs_in(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: "InternalServerError" if op == "get_item" else None
    before = len(SINK.lines)
    assert login(guards, upstream, PASSWORD) == {"access_token": ISSUED["access_token"], "token_type": "Bearer"}
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("login_succeeded", "InternalServerError")


def test_a_place_given_back_never_recreates_a_counter_the_ttl_deleted(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """DynamoDB's TTL may delete the counters while the upstream is called; giving the places
    back then must not write items without a TTL (they would never go)."""
    guards = make_guards(dynamo, clock)
    before = len(SINK.lines)

    def ttl_then_down() -> dict[str, Any]:
        for item in items(dynamo):
            dynamo._client.delete_item(TableName=TABLE, Key={"pk": item["pk"]})
        raise UpstreamFailure()

    with pytest.raises(UpstreamFailure):
        guards.login(USER, IP, KEYS, ttl_then_down)
    assert items(dynamo) == []
    assert logged_since(before, "Guards table unavailable; continuing unguarded") == []


def test_a_success_after_the_ttl_deleted_the_counter_leaves_nothing_behind(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    before = len(SINK.lines)

    def ttl_then_tokens() -> dict[str, Any]:
        for item in items(dynamo):
            dynamo._client.delete_item(TableName=TABLE, Key={"pk": item["pk"]})
        return {"access_token": ISSUED["access_token"]}

    assert guards.login(USER, IP, KEYS, ttl_then_tokens) == {"access_token": ISSUED["access_token"]}
    assert items(dynamo) == []
    assert logged_since(before, "Guards table unavailable; continuing unguarded") == []


# -- the guards' defaults ----------------------------------------------------------------------


def test_by_default_a_failing_table_fails_open(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    guards = Guards(TABLE, client=dynamo, clock=clock)
    dynamo.fail = lambda op, p: "InternalServerError"
    assert login(guards, upstream, PASSWORD) == {"access_token": ISSUED["access_token"], "token_type": "Bearer"}
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-2"


def test_fail_closed_refuses_with_503_and_logs_without_continuing(dynamo: RecordingTable, clock: Clock) -> None:
    guards = make_guards(dynamo, clock, fail_closed=True)
    dynamo.fail = lambda op, p: "InternalServerError"
    before = len(SINK.lines)
    with pytest.raises(GuardsUnavailable):
        guards.single_flight(REFRESH_TOKEN, KEYS, lambda: {"access_token": "never"})
    (error,) = logged_since(before, "Guards table unavailable")
    assert (error["level"], error["guards_operation"], error["guards_error"]) == (
        "ERROR",
        "single_flight",
        "InternalServerError",
    )
    assert logged_since(before, "Guards table unavailable; continuing unguarded") == []


def test_the_login_route_preloads_the_kdf_and_only_the_refresh_route_the_cipher(
    monkeypatch: pytest.MonkeyPatch, dynamo: RecordingTable, clock: Clock
) -> None:
    """Imports happen in the init phase, not in the first request; the login route never seals."""
    cipher, kdf = "cryptography.hazmat.primitives.ciphers.aead", "cryptography.hazmat.primitives.kdf.hkdf"
    for name in (cipher, kdf):
        monkeypatch.delitem(sys.modules, name, raising=False)
    Guards(TABLE, client=dynamo, clock=clock)
    assert kdf in sys.modules
    assert cipher not in sys.modules
    Guards(TABLE, client=dynamo, clock=clock, preload_cipher=True)
    assert cipher in sys.modules


def test_a_table_client_times_out_fast_and_retries_once() -> None:
    client = dynamodb_client("http://127.0.0.1:9")
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 0.5)
    assert config.retries == {"mode": "legacy", "total_max_attempts": 2}
    assert config.max_pool_connections == 4
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.service_model.service_name == "dynamodb"
    assert dynamodb_client(timeout=2.0).meta.config.read_timeout == 2.0


# -- the breaker -------------------------------------------------------------------------------


class TableDown(Exception):
    """No answer at all (a timeout, a refused connection): an exception without a response."""


def test_a_table_that_does_not_answer_is_left_alone_for_ten_seconds(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: TableDown("no route")
    before = len(SINK.lines)
    assert isinstance(login(guards, upstream, PASSWORD), dict)
    tries = len(dynamo.calls)
    # Within the ten seconds the table is not asked
    clock.now = T0 + 9.99
    assert isinstance(login(guards, upstream, PASSWORD), dict)
    assert len(dynamo.calls) == tries
    # At ten seconds it is asked again
    clock.now = T0 + 10
    dynamo.fail = lambda op, p: None
    assert isinstance(login(guards, upstream, PASSWORD), dict)
    assert len(dynamo.calls) > tries
    errors = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert [e["guards_error"] for e in errors] == ["TableDown", "breaker_open"]


def test_an_error_without_a_code_counts_as_no_answer(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: ClientError({}, "UpdateItem")
    before = len(SINK.lines)
    login(guards, upstream, PASSWORD)
    clock.now += 5
    login(guards, upstream, PASSWORD)
    errors = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert [e["guards_error"] for e in errors] == ["ClientError", "breaker_open"]


def test_an_error_with_a_code_opens_no_breaker(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: "InternalServerError"
    before = len(SINK.lines)
    login(guards, upstream, PASSWORD)
    login(guards, upstream, PASSWORD)
    errors = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert [e["guards_error"] for e in errors] == ["InternalServerError", "InternalServerError"]


def test_a_clock_near_zero_finds_the_table_up(dynamo: RecordingTable, upstream: Upstream) -> None:
    guards = make_guards(dynamo, Clock(0.5))
    for _ in range(5):
        login(guards, upstream, WRONG)
    assert isinstance(login(guards, upstream, WRONG), TooManyAttempts)


def test_table_errors_carry_their_code_and_conflicts_the_item_as_it_stands(
    dynamo: RecordingTable, clock: Clock
) -> None:
    table = StateTable(TABLE, dynamo, fail_closed=False, clock=clock)
    table.call("PutItem", Item={"pk": {"S": "x"}, "n": {"N": "1"}})
    with pytest.raises(Conflict) as conflict:
        table.call(
            "PutItem",
            Item={"pk": {"S": "x"}},
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert conflict.value.item == {"pk": {"S": "x"}, "n": {"N": "1"}}
    assert str(conflict.value) == "condition failed"
    assert str(TableFault("breaker_open")) == "breaker_open"


# -- single-flight: who shares what, and how long a twin waits -------------------------------------


class Crash(BaseException):
    """The claimant's function is killed mid-call: nothing runs after it."""


def crash() -> dict[str, Any]:
    raise Crash


def refresh_in_thread(guards: Guards, call: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(guards.single_flight(REFRESH_TOKEN, KEYS, call)))
    thread.start()
    return thread, result


def test_a_twin_waits_up_to_its_wait_for_the_claimants_outcome(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock, wait=2.0)
    upstream.delay = 0.6
    claimed = threading.Event()
    dynamo.after = lambda op, p: claimed.set() if op == "put_item" else None
    thread, first = refresh_in_thread(guards, upstream.refresh)
    assert claimed.wait(5)
    # A twin that arrives while the claimant is still at the upstream gets its tokens
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-1"
    thread.join(5)
    assert first[0]["scope"] == "call-1"
    assert upstream.calls == ["refresh"]


@pytest.mark.parametrize(("arrives", "retry_after"), [(2.0, "8"), (9.5, "1")])
def test_a_twin_that_waits_in_vain_is_told_when_the_claim_lapses(
    arrives: float, retry_after: str, dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """The claim lasts the 10 s lease: Retry-After is the whole seconds left of it, at least 1.
    The twin polls with a growing pause, not in a busy loop."""
    guards = make_guards(dynamo, clock, wait=0.3)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    clock.now = T0 + arrives
    with pytest.raises(RefreshInProgress) as pending:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert (pending.value.status, pending.value.retry_after) == (503, retry_after)
    assert upstream.calls == []
    assert 1 <= len(dynamo.keys_read("refresh#")) <= 8


def test_a_claim_that_vanishes_while_a_twin_waits_is_a_503_to_retry_at_once(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock, wait=2.0)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    clock.now += 2
    # The claim is deleted (DynamoDB's TTL) while the twin polls
    deleted = False

    def ttl(op: str, params: dict[str, Any]) -> None:
        nonlocal deleted
        if op == "get_item" and not deleted:
            deleted = True
            dynamo._client.delete_item(TableName=TABLE, Key=params["Key"])

    dynamo.before = ttl
    before = len(SINK.lines)
    started = time.monotonic()
    with pytest.raises(RefreshInProgress) as pending:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert time.monotonic() - started < 1.0
    assert pending.value.retry_after == "1"
    assert [r["level"] for r in logged_since(before, "Refresh claim lapsed without an outcome")] == ["WARNING"]


def test_a_claim_lapses_at_its_expiry_while_a_twin_waits(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock, wait=2.0)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    clock.now = T0 + 9
    # While the twin polls, the clock reaches the claim's expires_at (T0 + 10)
    dynamo.before = lambda op, p: setattr(clock, "now", T0 + 10) if op == "get_item" else None
    before = len(SINK.lines)
    started = time.monotonic()
    with pytest.raises(RefreshInProgress) as pending:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert time.monotonic() - started < 1.0
    assert pending.value.retry_after == "1"
    assert len(logged_since(before, "Refresh claim lapsed without an outcome")) == 1


def test_a_claim_that_lost_its_expiry_while_a_twin_waits_counts_as_lapsed(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """An item without ``expires_at`` (written by something else than a claim) holds no live
    claim: the twin answers 503 to retry at once, as for a claim that lapsed, not a 500."""
    guards = make_guards(dynamo, clock, wait=2.0)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    clock.now += 2

    def rewrite(op: str, params: dict[str, Any]) -> None:
        if op == "get_item":
            item = dynamo._client.get_item(TableName=TABLE, Key=params["Key"])["Item"]
            item.pop("expires_at", None)
            dynamo._client.put_item(TableName=TABLE, Item=item)

    dynamo.before = rewrite
    before = len(SINK.lines)
    started = time.monotonic()
    with pytest.raises(RefreshInProgress) as pending:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert time.monotonic() - started < 1.0
    assert (pending.value.status, pending.value.retry_after) == (503, "1")
    assert len(logged_since(before, "Refresh claim lapsed without an outcome")) == 1
    assert upstream.calls == []


def test_the_stored_outcome_keeps_the_claims_owner(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    """The outcome is written into the claim under the same owner: the SDK retrying that write
    (its first answer lost, the item already written) still matches the write's condition."""
    guards = make_guards(dynamo, clock)
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    claim, publish = [p for op, p in dynamo.calls if op == "put_item"]
    owner = claim["Item"]["owner"]
    assert publish["Item"]["owner"] == owner
    assert [item["owner"] for item in items(dynamo)] == [owner]
    dynamo._client.put_item(**publish)  # the retried write: no ConditionalCheckFailedException
    assert items(dynamo)[0]["outcome"] == publish["Item"]["outcome"]


def test_every_read_of_the_guards_items_is_strongly_consistent(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """A claim, an outcome, a logout or a failure written by another instance must be seen at
    once: every GetItem asks for a consistent read (claims without ALL_OLD, polls, marks, counters)."""
    guards = make_guards(dynamo, clock, wait=0.3)
    dynamo.all_old = False
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    with pytest.raises(RefreshInProgress):
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    clock.now += 11
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    login(guards, upstream, WRONG)
    login(guards, upstream, PASSWORD)
    reads = [p for op, p in dynamo.calls if op == "get_item"]
    kinds = {p["Key"]["pk"]["S"].split("#")[0] for p in reads}
    assert kinds == {"refresh", "ended", "login"}
    assert all(p.get("ConsistentRead") is True for p in reads)


def test_a_twin_finds_the_claimants_outcome_in_the_failed_claim_itself(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """The claim asks DynamoDB for the item it lost to (ALL_OLD): a twin served a stored
    outcome reads the claim item no more."""
    guards = make_guards(dynamo, clock)
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == first
    claims = [p for op, p in dynamo.calls if op == "put_item" and "ConditionExpression" in p and ":now" in str(p)]
    assert [p["ReturnValuesOnConditionCheckFailure"] for p in claims] == ["ALL_OLD", "ALL_OLD"]
    assert dynamo.keys_read("refresh#") == []


def test_without_all_old_a_twin_reads_the_claim_and_still_shares(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """Some local emulators do not give the item back with a failed condition: it is read."""
    guards = make_guards(dynamo, clock)
    dynamo.all_old = False
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    started = time.monotonic()
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == first
    assert len(dynamo.keys_read("refresh#")) == 1
    assert time.monotonic() - started < 0.5
    assert upstream.calls == ["refresh"]


@pytest.mark.parametrize("failure", [None, CallerRejected("invalid_grant", "The refresh token is invalid.")])
def test_twins_asking_the_same_scope_share_and_another_scope_is_refused(
    failure: BrokerError | None, dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    upstream.failure = failure

    def refresh(scope: str) -> Any:
        try:
            return guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh, scope=scope)
        except BrokerError as exc:
            return exc

    first = refresh("read")
    same = refresh("read")
    other = refresh("write")
    assert len(upstream.calls) == 1
    if failure is None:
        assert same == first
    else:
        assert isinstance(same, CallerRejected)
        assert same.description == "The refresh token is invalid."
    assert isinstance(other, CallerRejected)
    assert (other.status, other.error) == (400, "invalid_grant")
    assert other.description == "This refresh token was just used with another scope."


def test_a_refresh_without_a_scope_is_the_empty_scope(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    guards = make_guards(dynamo, clock)
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh, scope="") == first
    assert guards.single_flight("another-token", KEYS, upstream.refresh, scope="")["scope"] == "call-2"
    assert guards.single_flight("another-token", KEYS, upstream.refresh)["scope"] == "call-2"


def test_an_outcome_stored_before_scopes_is_shared_with_a_twin_without_scope(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """An outcome an older version stored (no "scope") still reaches its scope-less twins."""
    key = f"refresh#{digest(b'refresh', REFRESH_TOKEN)}"
    tokens = {"access_token": "at-old-version", "token_type": "Bearer"}
    dynamo._client.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": key},
            "owner": {"S": "older-instance"},
            "outcome": {"B": seal_outcome(KEYS, key, {"tokens": tokens})},
            "expires_at": {"N": str(int(T0) + 20)},
        },
    )
    guards = make_guards(dynamo, clock)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == tokens
    with pytest.raises(CallerRejected):
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh, scope="read")
    assert upstream.calls == []


def test_a_logout_of_the_new_refresh_token_stops_the_twins_of_the_old(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """The user logged out with the token the claimant was given: its twins get no tokens."""
    guards = make_guards(dynamo, clock)
    tokens = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    guards.end_refresh(tokens["refresh_token"], KEYS)
    with pytest.raises(CallerRejected) as twin:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert twin.value.description == "This session has been logged out."
    assert len(upstream.calls) == 1


def test_a_short_grace_still_shares(dynamo: RecordingTable, clock: Clock, upstream: Upstream) -> None:
    guards = make_guards(dynamo, clock, grace=1)
    first = guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh) == first
    assert len(upstream.calls) == 1


# -- single-flight: the outcome is stored after the upstream call, whatever the table does -------


def test_a_claimant_whose_claim_was_taken_over_keeps_its_tokens_and_says_so(
    dynamo: RecordingTable, clock: Clock
) -> None:
    guards = make_guards(dynamo, clock)
    taken_over = {"access_token": "at-second-claimant"}

    def slow_call() -> dict[str, Any]:
        # The call outlives the lease; another instance claims the token meanwhile
        clock.now += 11
        assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: taken_over) == taken_over
        return {"access_token": "at-first-claimant"}

    before = len(SINK.lines)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, slow_call) == {"access_token": "at-first-claimant"}
    assert [r["level"] for r in logged_since(before, "Refresh claim lapsed before the outcome was stored")] == [
        "WARNING"
    ]
    # The outcome twins get is the second claimant's, still in place
    assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: {"access_token": "no"}) == taken_over


def test_an_outcome_that_cannot_be_stored_is_logged_and_the_tokens_returned(
    dynamo: RecordingTable, clock: Clock
) -> None:
    guards = make_guards(dynamo, clock)
    dynamo.fail = lambda op, p: "InternalServerError" if "#owner = :owner" in str(p) else None
    before = len(SINK.lines)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, lambda: {"access_token": "at-1"}) == {"access_token": "at-1"}
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("single_flight_publish", "InternalServerError")


def test_a_twin_whose_poll_fails_goes_upstream_and_says_so(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    dynamo.fail = lambda op, p: "InternalServerError" if op == "get_item" else None
    before = len(SINK.lines)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-1"
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("single_flight_poll", "InternalServerError")


def test_an_outcome_that_does_not_open_is_logged_and_the_twin_goes_upstream(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)
    guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    (item,) = items(dynamo)
    dynamo._client.put_item(TableName=TABLE, Item={**item, "outcome": {"B": b"\x02" + item["outcome"]["B"][1:]}})
    before = len(SINK.lines)
    assert guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)["scope"] == "call-2"
    (error,) = logged_since(before, "Guards table unavailable; continuing unguarded")
    assert (error["guards_operation"], error["guards_error"]) == ("single_flight_open", "outcome_version")


def test_a_twin_polls_with_a_pause_doubling_from_25_to_400_ms(
    monkeypatch: pytest.MonkeyPatch, dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """Quick at first (a refresh takes a few hundred ms), then no more than 2.5 reads a second,
    and never past the twin's ``wait``. (Time here is a fake monotonic clock.)"""
    guards = make_guards(dynamo, clock, wait=2.0)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    now = [1000.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "sleep", sleep)
    with pytest.raises(RefreshInProgress):
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert pauses[:7] == [0.025, 0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert sum(pauses) == pytest.approx(2.0)
    assert len(dynamo.keys_read("refresh#")) == len(pauses)


def test_a_refusal_for_another_reason_than_the_password_gives_the_place_back(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """Only ``invalid_grant`` counts as a failed password: six refused scopes in a row still
    leave the user every guess (and the right password signs in)."""
    guards = make_guards(dynamo, clock)
    upstream.failure = CallerRejected("invalid_scope", "The requested scope is invalid.")
    assert [type(login(guards, upstream, WRONG)) for _ in range(6)] == [CallerRejected] * 6
    upstream.failure = None
    assert [type(login(guards, upstream, WRONG)) for _ in range(5)] == [CallerRejected] * 5
    assert isinstance(login(guards, upstream, PASSWORD), TooManyAttempts)
    assert len(upstream.calls) == 11


def test_a_twin_that_cannot_wait_and_finds_no_claim_left_retries_at_once(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    """No wait at all, and the claim it lost to gone when read back (a local emulator without
    ALL_OLD, the TTL in between): 503 with Retry-After 1, never an error of the broker's own."""
    guards = make_guards(dynamo, clock, wait=0)
    with pytest.raises(Crash):
        guards.single_flight(REFRESH_TOKEN, KEYS, crash)
    dynamo.all_old = False
    dynamo.before = lambda op, p: (
        dynamo._client.delete_item(TableName=TABLE, Key=p["Key"]) if op == "get_item" else None
    )
    with pytest.raises(RefreshInProgress) as pending:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh)
    assert (pending.value.status, pending.value.retry_after) == (503, "1")
    assert upstream.calls == []


def test_a_bug_in_the_claimant_is_shared_with_twins_asking_the_same_scope(
    dynamo: RecordingTable, clock: Clock, upstream: Upstream
) -> None:
    guards = make_guards(dynamo, clock)

    def broken() -> dict[str, Any]:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        guards.single_flight(REFRESH_TOKEN, KEYS, broken, scope="read")
    with pytest.raises(BrokerError) as twin:
        guards.single_flight(REFRESH_TOKEN, KEYS, upstream.refresh, scope="read")
    assert (twin.value.status, twin.value.error) == (500, "server_error")
    assert upstream.calls == []
