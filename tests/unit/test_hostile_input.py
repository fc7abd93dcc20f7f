"""Property-based: whatever a caller sends, the handler answers a 4xx from the contract's
table or a well-formed 200 — never a 5xx, never an exception, never an injected upstream header."""

from __future__ import annotations

import base64
import json
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import broker.pipeline
from broker.secrets import SecretStore
from broker.upstream import UpstreamAnswer, UpstreamRequest
from tests.support import DEMO_SECRET, ISSUED, load_event
from tests.unit.conftest import AppLoader, FakeContext

EXAMPLES = 400  # per route and property; SECURITY.md reports the total
CONTRACT_4XX = {400, 403, 413, 415}
EXPECTED_HEADERS = {"accept", "content-type", "authorization"}

ugly_text = st.text(
    alphabet=st.characters(codec=None, categories=None, blacklist_categories=()),  # incl. surrogates, NUL
    max_size=64,
)
header_values = st.one_of(ugly_text, st.sampled_from(["\r\nX-Injected: 1", "a\nb", "\x00", "é" * 10]))
# Values that have broken parsers before: lone surrogates, NUL, CR/LF, long and non-ASCII text.
hostile_values = st.one_of(
    ugly_text.filter(bool),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\r\nX-Injected: 1", "é" * 10, "x" * 5000, "%zz", "a&b=c"]),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "APPLICATION/JSON; charset=UTF-8",
            "application/json; charset=latin-1",
            "text/plain",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    ugly_text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ugly_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ugly_text, children, max_size=4),
    max_leaves=20,
)
names = st.sampled_from(
    ["username", "password", "refresh_token", "grant_type", "GRANT_TYPE", "client_id", "client_secret", "scope"]
)


def _json_body(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(names | ugly_text, json_values | ugly_text), max_size=6))
    # duplicate keys survive because the object is written by hand
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


SHAPED_TYPES = {"{": "application/json", "": "application/x-www-form-urlencoded"}


def _shaped(draw: st.DrawFn) -> str:
    """The route's real fields with hostile values, well-formed enough to reach the upstream call."""
    fields = {name: draw(hostile_values) for name in ("username", "password", "refresh_token")}
    if draw(st.booleans()):
        return json.dumps(fields)
    return "&".join(f"{k}={quote(v, safe='', errors='surrogatepass')}" for k, v in fields.items())


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str | None, bool]:
    kind = draw(st.sampled_from(["none", "bytes", "text", "json", "form", "deep", "huge", "shaped", "shaped"]))
    if kind == "shaped":
        return _shaped(draw), False
    if kind == "none":
        return None, False
    if kind == "bytes":
        return base64.b64encode(draw(st.binary(max_size=256))).decode(), True
    if kind == "json":
        return _json_body(draw), draw(st.booleans())
    if kind == "form":
        pairs = draw(st.lists(st.tuples(names | ugly_text, ugly_text), max_size=6))
        return "&".join(f"{k}={v}" for k, v in pairs), False
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=20_000))
        return "[" * depth + "]" * depth, False
    if kind == "huge":
        return "x" * draw(st.integers(min_value=16 * 1024 - 8, max_value=2 * 1024 * 1024)), False
    return draw(ugly_text), False


@st.composite
def events(draw: st.DrawFn, base: str) -> dict[str, Any]:
    event = load_event(base)
    headers = draw(st.dictionaries(ugly_text, header_values, max_size=5))
    headers["Content-Type"] = draw(content_types)
    if draw(st.booleans()):
        headers["Origin"] = draw(st.sampled_from(["http://localhost:5173", "null", "https://evil.example", ""]))
    event["headers"] = headers
    event["multiValueHeaders"] = draw(st.sampled_from([{k: [v] for k, v in headers.items()}, {}, None]))
    event["httpMethod"] = draw(st.sampled_from(["POST", "post", "GET", "PUT", "OPTIONS", "DELETE"]) | ugly_text)
    if draw(st.integers(0, 2)):  # two thirds: a well-formed POST, so hostile values reach the upstream call
        event["httpMethod"] = "POST"
        headers.pop("Origin", None)
        shaped = _shaped(draw)
        headers["Content-Type"] = SHAPED_TYPES.get(shaped[:1], SHAPED_TYPES[""])
        event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        event["body"], event["isBase64Encoded"] = shaped, False
        return event
    body, b64 = draw(bodies())
    if b64 and body is not None and not _is_base64(body):
        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    event["body"], event["isBase64Encoded"] = body, b64
    return event


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


class RecordingUpstream:
    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []

    def __call__(self, request: UpstreamRequest, timeout: float) -> UpstreamAnswer:
        self.requests.append(request)
        body = json.dumps({**ISSUED, "token_type": "Bearer", "expires_in": 60}).encode()
        return UpstreamAnswer(200, {"content-type": "application/json"}, body)


@pytest.fixture
def armed(load_app: AppLoader, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[ModuleType, RecordingUpstream]]:
    """Each function with an in-memory secret and an upstream that records what it is sent."""
    apps = {}
    for name in ("password", "refresh", "exchange"):
        app = load_app(name)
        app.broker.secrets = SecretStore(
            "s", 300, app.broker.grant.secret_keys(app.broker.config.profile), fetch=lambda _: json.dumps(DEMO_SECRET)
        )
        apps[name] = app
    upstream = RecordingUpstream()
    monkeypatch.setattr(broker.pipeline, "send", upstream)
    return {name: (app, upstream) for name, app in apps.items()}


def check_response(response: dict[str, Any]) -> None:
    status = response["statusCode"]
    assert status in CONTRACT_4XX | {200, 204}, response
    assert response["headers"]["Cache-Control"] == "no-store"
    if status == 204:
        return
    body = json.loads(response["body"])
    if status == 200:
        assert body["access_token"] == ISSUED["access_token"]
    else:
        assert body["error"] == "invalid_request"
        assert isinstance(body["error_description"], str)


def check_upstream(upstream: RecordingUpstream) -> None:
    for request in upstream.requests:
        assert {name.lower() for name in request.headers} <= EXPECTED_HEADERS
        for value in request.headers.values():
            assert not any(c in value for c in "\r\n\x00")
        assert request.url.startswith("http://localhost:")


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    ("name", "base"), [("password", "password-json"), ("refresh", "refresh-json"), ("exchange", "exchange")]
)
@SETTINGS
@given(data=st.data())
def test_any_request_gets_a_contract_answer(
    name: str,
    base: str,
    data: st.DataObject,
    armed: dict[str, tuple[ModuleType, RecordingUpstream]],
    context: FakeContext,
) -> None:
    app, upstream = armed[name]
    event = data.draw(events(base))
    response = app.lambda_handler(event, context)  # an exception here fails the test
    check_response(response)
    check_upstream(upstream)


@SETTINGS
@given(
    # control characters in a username, and NUL anywhere, are refused (tests/unit/test_security.py)
    username=st.text(st.characters(exclude_categories=["Cc"]), min_size=1, max_size=40).filter(
        lambda s: s.strip() != ""
    ),
    password=st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40),
)
def test_non_ascii_credentials_reach_the_upstream_byte_exact(
    username: str, password: str, armed: dict[str, tuple[ModuleType, RecordingUpstream]], context: FakeContext
) -> None:
    try:
        username.encode("utf-8")
        password.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are not valid text: covered by the property above
    app, upstream = armed["password"]
    upstream.requests.clear()
    for event in (
        load_event("password-json", body=json.dumps({"username": username, "password": password})),
        load_event("password-form", body=urlencode({"username": username, "password": password})),
    ):
        response = app.lambda_handler(event, context)
        assert response["statusCode"] == 200
        body = upstream.requests[-1].body
        assert body is not None
        sent = parse_qs(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
        assert sent["username"] == [username]
        assert sent["password"] == [password]


@SETTINGS
@given(
    extra=st.dictionaries(
        st.sampled_from(
            ["client_id", "client_secret", "grant_type", "token_url", "GRANT_TYPE", "url", "Authorization"]
        ),
        # lone surrogates are refused as text (test_any_request_gets_a_contract_answer covers them)
        st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=20),
        min_size=1,
    )
)
def test_the_spa_cannot_override_credentials_grant_or_url(
    extra: dict[str, str], armed: dict[str, tuple[ModuleType, RecordingUpstream]], context: FakeContext
) -> None:
    app, upstream = armed["password"]
    upstream.requests.clear()
    body = {"username": "demo", "password": "demo-password", **extra}
    response = app.lambda_handler(load_event("password-json", body=json.dumps(body)), context)
    if "grant_type" in extra and extra["grant_type"] != "password":
        assert response["statusCode"] == 400
        assert upstream.requests == []
        return
    assert response["statusCode"] == 200
    request = upstream.requests[-1]
    assert request.url.endswith("/auth/token/")
    assert request.body is not None
    sent = parse_qs(request.body.decode())
    assert sent["client_id"] == [DEMO_SECRET["client_id"]]
    assert sent["client_secret"] == [DEMO_SECRET["client_secret"]]
    assert sent["grant_type"] == ["password"]
    assert set(sent) == {"grant_type", "username", "password", "client_id", "client_secret"}
