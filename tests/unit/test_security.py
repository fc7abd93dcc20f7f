"""What a red team broke, each now a rule with its test (SECURITY.md lists them).

Handler-level tests run each function in-process against moto (Secrets Manager, DynamoDB)
and a scripted upstream; guard-level tests drive ``Guards`` with a controlled clock.
"""

from __future__ import annotations

import base64
import json
import math
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import pytest
from botocore.exceptions import ClientError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from broker.cookies import COOKIE_NAME, read_cookie
from broker.errors import BrokerError, CallerRejected, ConfigError, TooManyAttempts
from broker.guards import GuardKeys, Guards, dynamodb_client
from broker.profiles import check_url
from broker.secrets import BrokerSecret
from tests.support import DEMO_SECRET, ISSUED, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, aws_client, body_of

TABLE = "token-broker-state"
KEY = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
GUARDED = {"BROKER_STATE_TABLE": TABLE}


@pytest.fixture
def state_table(secrets_manager: SecretsManager, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The guards' table, in the same moto backend as the secret."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [KEY]})
    client = aws_client("dynamodb")
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return client


def login(app: Any, context: FakeContext, username: str, password: str, **extra: str) -> dict[str, Any]:
    body = json.dumps({"username": username, "password": password, **extra})
    response: dict[str, Any] = app.lambda_handler(load_event("password-json", body=body), context)
    return response


class Accounts:
    """A scripted user store: which spellings it matches to which account, and the RFC 6749 dialect."""

    def __init__(self, match: Callable[[str], str], passwords: dict[str, str], status: int = 400) -> None:
        self.match = match
        self.passwords = passwords
        self.status = status
        self.calls: list[str] = []

    def __call__(self, request: Request) -> Response:
        form = request.form
        self.calls.append(form["username"])
        account = self.match(form["username"])
        if self.passwords.get(account) == form["password"]:
            return Response(json.dumps({**ISSUED, "token_type": "Bearer"}), content_type="application/json")
        answer = {"error": "invalid_grant", "error_description": "Invalid user credentials"}
        return Response(json.dumps(answer), status=self.status, content_type="application/json")


def exact(name: str) -> str:
    return name


def lenient(name: str) -> str:
    """An accent-, case- and width-insensitive store that ignores invisible characters and
    surrounding spaces (as MySQL's default collation does)."""
    decomposed = unicodedata.normalize("NFKD", name)
    kept = "".join(c for c in decomposed if unicodedata.category(c)[0] != "M" and unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", kept).casefold().strip()


# -- the lockout's idea of an account ---------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403], ids=["rfc6749-400", "keycloak-401", "auth0-403"])
def test_invalid_grant_with_any_4xx_is_the_callers_400_and_counts_toward_the_lockout(
    status: int, load_app: AppLoader, state_table: Any, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an upstream that answers a wrong password with invalid_grant and this status
    accounts = Accounts(exact, {"demo": "right"}, status=status)
    httpserver.expect_request("/auth/token/").respond_with_handler(accounts)
    app = load_app("password", **GUARDED)

    # When five wrong passwords come, then a sixth, then the right one
    first = [login(app, context, "demo", "wrong") for _ in range(5)]
    sixth = login(app, context, "demo", "wrong")
    right = login(app, context, "demo", "right")

    # Then each wrong one is the caller's 400 invalid_grant (never 502), the secret is not re-read,
    # and after five the upstream is not asked again, not even with the right password
    assert [(r["statusCode"], body_of(r)["error"]) for r in first] == [(400, "invalid_grant")] * 5
    assert (sixth["statusCode"], body_of(sixth)["error"]) == (429, "temporarily_unavailable")
    assert right["statusCode"] == 429
    assert "Retry-After" in sixth["headers"]
    assert accounts.calls == ["demo"] * 5


def test_a_bare_401_is_still_the_brokers_own_credentials(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an upstream that answers 401 with no RFC 6749 code, and invalid_client with 400
    httpserver.expect_request("/auth/token/").respond_with_json({"detail": "Unauthorized"}, status=401)
    app = load_app("password")
    # Then both are the broker's credentials: 502 after one forced re-read
    assert login(app, context, "demo", "pw")["statusCode"] == 502
    httpserver.clear()
    httpserver.expect_request("/auth/token/").respond_with_json({"error": "invalid_client"}, status=400)
    assert login(app, context, "demo", "pw")["statusCode"] == 502


SPELLINGS = ["demo", "Démo", "DEMO", "de\u00admo", "ｄｅｍｏ", " demo ", "de\u200bmo", "dem\u0301o"]


def test_every_spelling_one_lenient_account_answers_to_shares_one_budget(
    load_app: AppLoader, state_table: Any, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an accent-, case- and width-insensitive user store with one account
    accounts = Accounts(lenient, {"demo": "right"})
    httpserver.expect_request("/auth/token/").respond_with_handler(accounts)
    app = load_app("password", **GUARDED)

    # When guesses rotate through spellings it treats as that one account
    statuses = [login(app, context, name, "wrong")["statusCode"] for name in SPELLINGS]

    # Then the account got five guesses in the window, not five per spelling
    assert statuses == [400] * 5 + [429] * (len(SPELLINGS) - 5)
    assert len(accounts.calls) == 5


def test_a_success_on_another_account_never_clears_the_victims_failures(
    load_app: AppLoader, state_table: Any, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a case-sensitive store with two accounts, "demo" (the victim) and "Demo" (the attacker's own)
    accounts = Accounts(exact, {"demo": "victim-pw", "Demo": "attacker-pw"})
    httpserver.expect_request("/auth/token/").respond_with_handler(accounts)
    app = load_app("password", **GUARDED)

    # When the attacker guesses four times at "demo", then logs in to "Demo"
    guesses = [login(app, context, "demo", f"guess-{i}")["statusCode"] for i in range(4)]
    own = login(app, context, "Demo", "attacker-pw")
    after = [login(app, context, "demo", f"guess-{i}")["statusCode"] for i in range(4, 7)]

    # Then the success cleared only "Demo"'s failures: "demo" has one guess left, then 429
    assert guesses == [400] * 4
    assert own["statusCode"] == 200
    assert after == [400, 429, 429]


def test_a_success_clears_the_failures_made_with_that_exact_spelling(
    load_app: AppLoader, state_table: Any, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a user who mistyped four times, then got it right
    accounts = Accounts(exact, {"demo": "right"})
    httpserver.expect_request("/auth/token/").respond_with_handler(accounts)
    app = load_app("password", **GUARDED)
    assert [login(app, context, "demo", "typo")["statusCode"] for _ in range(4)] == [400] * 4
    assert login(app, context, "demo", "right")["statusCode"] == 200
    # Then five more typos are allowed before the 429
    assert [login(app, context, "demo", "typo")["statusCode"] for _ in range(6)] == [400] * 5 + [429]


@pytest.mark.parametrize("username", ["de\x00mo", "demo\n", "\x1bdemo", "de\x7fmo", "demo\x85"])
def test_a_control_character_in_a_username_is_400_without_an_upstream_call(
    username: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    app = load_app("password")
    response = login(app, context, username, "pw")
    assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_request")
    assert httpserver.log == []


def test_a_nul_in_any_parameter_is_400_without_an_upstream_call(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    app = load_app("password")
    for extra in ({"password": "p\x00w"}, {"scope": "read\x00"}, {"client_id": "x\x00"}):
        body = json.dumps({"username": "demo", "password": "pw", **extra})
        response = app.lambda_handler(load_event("password-json", body=body), context)
        assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_request")
    assert httpserver.log == []


class Throttled:
    """A DynamoDB client whose writes are throttled (a raised ThrottlingRateLimit, an incident)."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.calls = 0

    def update_item(self, **params: Any) -> Any:
        self.calls += 1
        raise ClientError({"Error": {"Code": self.code, "Message": "Rate exceeded"}}, "UpdateItem")


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_throttled_login_counter_refuses_the_login(code: str, fail_closed: bool) -> None:
    # Given guards whose table throttles every write
    guards = Guards(TABLE, client=Throttled(code), fail_closed=fail_closed)
    keys = GuardKeys.from_secret(BrokerSecret({**DEMO_SECRET, "broker_keys": KEY}))
    calls: list[str] = []

    def upstream() -> dict[str, Any]:
        calls.append("login")
        return {"access_token": "a"}

    # When a login comes, then it is refused with 429 and never reaches the upstream
    with pytest.raises(TooManyAttempts) as refused:
        guards.login("demo", "203.0.113.7", keys, upstream)
    assert refused.value.status == 429
    assert refused.value.retry_after
    assert calls == []


# -- the browser does not choose the confidential client's privileges --------------------------

SCOPED = json.dumps({"preset": "bakrypt", "scopes": ["read", "write"], "default_scope": "read"})


def test_a_scope_outside_the_allowlist_is_invalid_scope_without_an_upstream_call(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    app = load_app("password", BROKER_PROFILE=SCOPED)
    response = login(app, context, "demo", "pw", scope="read introspection")
    assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_scope")
    assert "introspection" in body_of(response)["error_description"]
    assert httpserver.log == []


def test_an_allowed_scope_is_forwarded_and_the_default_fills_an_empty_one(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    app = load_app("password", BROKER_PROFILE=SCOPED)
    assert login(app, context, "demo", "pw", scope="write  read")["statusCode"] == 200
    assert login(app, context, "demo", "pw")["statusCode"] == 200
    sent = [parse_qs(request.get_data(as_text=True)) for request, _ in httpserver.log]
    assert [form["scope"] for form in sent] == [["write read"], ["read"]]


def test_without_an_allowlist_a_requested_scope_is_dropped(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    app = load_app("password")  # the bakrypt preset: no scopes
    assert login(app, context, "demo", "pw", scope="introspection")["statusCode"] == 200
    assert "scope" not in parse_qs(httpserver.log[0][0].get_data(as_text=True))


def test_the_exchange_token_is_in_its_own_secret_by_default() -> None:
    from tests.unit.test_template import source

    params = source()["Parameters"]
    assert params["ExchangeSecretName"]["Default"] not in ("", params["ClientSecretName"]["Default"])


# -- nothing secret leaves, in any encoding -----------------------------------------------------

ODD_SECRET = {**DEMO_SECRET, "client_secret": 'Zq8/s3cr+t=&"é x'}


def encodings_of(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote(value, safe="").lower(),
        quote_plus(value),
        json.dumps(value)[1:-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def echoing(request: Request) -> Response:
    """An upstream that quotes what it received in its error description, in several encodings."""
    body = request.get_data(as_text=True)
    auth = request.headers.get("Authorization", "")
    secret = parse_qs(body).get("client_secret", [""])[0]
    description = (
        f"bad request {body} json={json.dumps(secret)} b64={base64.b64encode(secret.encode()).decode()} auth={auth}"
    )
    return Response(
        json.dumps({"error": "invalid_request", "error_description": description}),
        status=400,
        content_type="application/json",
    )


@pytest.mark.parametrize("profile", ["bakrypt", "didit"], ids=["client_secret_post", "client_secret_basic"])
def test_an_upstream_echoing_the_request_never_hands_the_client_secret_to_the_spa(
    profile: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a client secret with characters every encoding changes, and an echoing upstream
    secrets_manager.put(ODD_SECRET)
    httpserver.expect_request("/auth/token/").respond_with_handler(echoing)
    app = load_app("password", BROKER_PROFILE=profile)

    # When a login fails there
    response = login(app, context, "demo", "demo-password")

    # Then the description is passed on, without the secret or the password in any encoding
    assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_request")
    text = response["body"]
    basic = base64.b64encode(f"{quote_plus('demo-client')}:{quote_plus(ODD_SECRET['client_secret'])}".encode())
    for value in (ODD_SECRET["client_secret"], "demo-password"):
        for form in encodings_of(value):
            assert form not in text, form
    assert basic.decode() not in text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("120", "120"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT"),
        ("Wed, 21 Oct 2026 09:28:00 +0200", "Wed, 21 Oct 2026 07:28:00 GMT"),
        ("\xb9\xb2", None),  # superscript digits: str.isdigit() says yes
        ("120 seconds", None),
        ("soon", None),
    ],
)
def test_only_a_delta_or_an_http_date_retry_after_reaches_the_browser(
    given: str,
    expected: str | None,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_response(
        Response("{}", status=503, headers={"Retry-After": given}, content_type="application/json")
    )
    response = login(load_app("password"), context, "demo", "pw")
    assert response["statusCode"] == 503
    assert response["headers"].get("Retry-After") == expected


# -- cookies, replays, parsers ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["\u2000", "\xa0", "\u3000", "\ufeff"])
def test_a_cookie_tossed_under_a_look_alike_name_is_never_read(prefix: str) -> None:
    # Given a sibling subdomain's cookie named with Unicode whitespace before ours, sent first
    header = f"{prefix}{COOKIE_NAME}=attacker; {COOKIE_NAME}=victim"
    # Then ours is read, byte for byte
    assert read_cookie({"cookie": header}, [header]) == "victim"
    assert read_cookie({"cookie": f"{prefix}{COOKIE_NAME}=attacker"}, []) is None
    # And RFC 6265's own whitespace (SP, HTAB) around a name is still trimmed
    assert read_cookie({}, [f"theme=dark;\t{COOKIE_NAME}=ours"]) == "ours"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guards(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guards]:
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    with mock_aws():
        aws_client("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield Guards(TABLE, client=dynamodb_client(), grace=30, clock=Clock(), wait=1.0)


KEYS = GuardKeys.from_secret(BrokerSecret({**DEMO_SECRET, "broker_keys": KEY}))


def rotating(issued: list[str]) -> Callable[[], dict[str, Any]]:
    def call() -> dict[str, Any]:
        issued.append(f"rt-{len(issued) + 1}")
        return {"access_token": f"at-{len(issued)}", "token_type": "Bearer", "refresh_token": issued[-1]}

    return call


def outcome(run: Callable[[], dict[str, Any]]) -> dict[str, Any] | BrokerError:
    try:
        return run()
    except BrokerError as exc:
        return exc


def test_logout_ends_the_grace_of_the_token_it_revokes_and_of_its_parent(guards: Guards) -> None:
    # Given a refresh of rt-0 that issued rt-1 (shared with twins for 30 s)
    issued: list[str] = []
    first = guards.single_flight("rt-0", KEYS, rotating(issued))
    assert first["refresh_token"] == "rt-1"
    assert guards.single_flight("rt-0", KEYS, rotating(issued)) == first  # a twin, within the grace

    # When the user logs out with rt-1
    guards.end_refresh("rt-1", KEYS)

    # Then a replay of the spent rt-0 within the grace gets invalid_grant, not rt-1
    replayed = outcome(lambda: guards.single_flight("rt-0", KEYS, rotating(issued)))
    assert isinstance(replayed, CallerRejected)
    assert replayed.error == "invalid_grant"
    assert issued == ["rt-1"]  # and the upstream was never asked again


def test_a_twin_asking_for_another_scope_gets_no_shared_tokens(guards: Guards) -> None:
    issued: list[str] = []
    guards.single_flight("rt-0", KEYS, rotating(issued), scope="read")
    other = outcome(lambda: guards.single_flight("rt-0", KEYS, rotating(issued), scope="read write"))
    assert isinstance(other, CallerRejected)
    assert other.error == "invalid_grant"
    assert issued == ["rt-1"]


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example\\@localhost/token",
        "http://evil.example\\@127.0.0.1/token",
        "http://user@localhost/token",
        "https://user:pw@auth.example/token",
        "https:///token",
        "http://10.0.0.5/token",
        "http://192.168.1.10/token",
        "http://auth.example/token",
        "https://auth.example/tok en",
    ],
)
def test_an_endpoint_url_the_http_client_would_read_differently_is_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        check_url(url, "token_url")


@pytest.mark.parametrize("url", ["https://auth.example/token", "http://127.0.0.1:8000/t", "http://[::1]/t"])
def test_https_and_loopback_urls_are_accepted(url: str) -> None:
    assert check_url(url, "token_url") == url


def test_a_non_latin1_secret_value_in_a_header_template_is_503_not_500(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    secrets_manager.put({**DEMO_SECRET, "partner_id": "partner-€"})
    profile = json.dumps({"preset": "bakrypt", "headers": {"partnerId": "{partner_id}"}})
    response = login(load_app("password", BROKER_PROFILE=profile), context, "demo", "pw")
    assert (response["statusCode"], body_of(response)["error"]) == (503, "temporarily_unavailable")
    assert httpserver.log == []


@pytest.mark.parametrize(
    "answer",
    [
        {"expires_in": math.inf},
        {"expires_in": -5},
        {"expires_in": 1.5},
        {"expires_in": "²"},
        {"expires_in": "3600s"},
        {"refresh_token": 42},
        {"scope": ["read"]},
        {"access_token": ""},
    ],
    ids=["inf", "negative", "fraction", "superscript", "suffix", "numeric-refresh-token", "list-scope", "empty-at"],
)
def test_an_upstream_success_with_a_malformed_field_is_502(
    answer: dict[str, Any],
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    body = json.dumps({**ISSUED, "token_type": "Bearer", **answer}, allow_nan=True)
    httpserver.expect_request("/auth/token/").respond_with_data(body, content_type="application/json")
    response = login(load_app("password"), context, "demo", "pw")
    assert (response["statusCode"], body_of(response)["error"]) == (502, "server_error")
    assert ISSUED["access_token"] not in response["body"]


@pytest.mark.parametrize("text", ["NaN", "1e400", '"3600"'])
def test_expires_in_as_json_nan_or_overflow_is_502_and_a_digit_string_is_read(
    text: str, load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    body = '{"access_token": "at-1", "token_type": "Bearer", "expires_in": ' + text + "}"
    httpserver.expect_request("/auth/token/").respond_with_data(body, content_type="application/json")
    response = login(load_app("password"), context, "demo", "pw")
    if text == '"3600"':
        assert body_of(response)["expires_in"] == 3600
    else:
        assert response["statusCode"] == 502


def test_a_json_parameter_repeated_as_null_is_a_duplicate(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    body = '{"username": "demo", "password": "a", "password": null}'
    response = load_app("password").lambda_handler(load_event("password-json", body=body), context)
    assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_request")
    assert "more than once" in body_of(response)["error_description"]
    assert httpserver.log == []
