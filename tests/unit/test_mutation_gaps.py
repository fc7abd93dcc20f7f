"""The rules mutation testing found untested (mutation/report.md), each at its limit.

Every test here failed on the bug it names: the body limit counted in characters, a base64
body decoding past it, invalid_client refused only with 401, a 16- to 31-byte or oversized
broker key, the redaction threshold and the description cap off by one, an empty parameter
kept, a 1 MiB answer refused or 1 MiB + 1 accepted, a preflight without Origin answered 204.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from broker.config import MAX_BODY_BYTES
from broker.cookies import parse_keys
from broker.errors import MAX_DESCRIPTION, GuardsUnavailable, InvalidRequest, SecretUnavailable, sanitise_description
from broker.guards import GuardKeys
from broker.http import Request as BrokerRequest
from broker.http import parse_params
from broker.secrets import BrokerSecret, decode_broker_keys
from broker.upstream import MAX_ANSWER_BYTES
from tests.support import DEMO_SECRET, ISSUED, SINK, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, body_of

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def login_with(app: Any, context: FakeContext, body: str, *, b64: bool = False) -> dict[str, Any]:
    event = load_event("password-json", body=body, isBase64Encoded=b64)
    response: dict[str, Any] = app.lambda_handler(event, context)
    return response


@pytest.fixture(autouse=True)
def settled_upstream(httpserver: HTTPServer) -> None:
    """pytest-httpserver logs a request once its answer is sent: an answer an earlier test
    abandoned (a refused 1 MiB stream, a timeout) can land in the next test's log. Let it
    land, then start this test from an empty log, so "no upstream call" means this test's."""
    time.sleep(0.05)
    httpserver.clear_log()


# -- the 16 KiB body limit is in bytes -------------------------------------------------------


def padded_login(size: int, filler: str = "x") -> str:
    """A valid login body of exactly ``size`` UTF-8 bytes (the padding in an ignored parameter)."""
    head = '{"username": "demo", "password": "pw", "pad": "'
    room = size - len(head.encode()) - len(b'"}')
    count, rest = divmod(room, len(filler.encode()))
    return head + filler * count + "x" * rest + '"}'


def test_a_body_of_16_kib_in_characters_but_more_in_bytes_is_413(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a body of fewer than 16 KiB characters that is more than 16 KiB in UTF-8 ("é" is 2 bytes)
    body = padded_login(MAX_BODY_BYTES + 2, filler="é")
    assert len(body) <= MAX_BODY_BYTES < len(body.encode())

    # When it is sent, as text or as base64
    as_text = login_with(load_app("password"), context, body)
    as_base64 = login_with(load_app("password"), context, base64.b64encode(body.encode()).decode(), b64=True)

    # Then both are 413 and the upstream is not called
    for response in (as_text, as_base64):
        assert (response["statusCode"], body_of(response)["error"]) == (413, "invalid_request")
        assert "16 KiB" in body_of(response)["error_description"]
    assert httpserver.log == []


def test_a_base64_body_that_decodes_one_byte_past_16_kib_is_413(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a base64 body short enough for the encoded-length pre-check, decoding to 16 KiB + 1
    raw = padded_login(MAX_BODY_BYTES + 1).encode()
    encoded = base64.b64encode(raw).decode()
    assert len(encoded) <= (MAX_BODY_BYTES + 2) // 3 * 4 + 4
    # When it is sent, Then 413 without an upstream call
    response = login_with(load_app("password"), context, encoded, b64=True)
    assert (response["statusCode"], body_of(response)["error"]) == (413, "invalid_request")
    assert httpserver.log == []


@pytest.mark.parametrize("b64", [False, True], ids=["text", "base64"])
@pytest.mark.parametrize("filler", ["x", "é"], ids=["ascii", "two-byte"])
def test_a_body_of_exactly_16_kib_is_served(
    b64: bool,
    filler: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    # Given a login body of exactly 16 KiB in UTF-8
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    body = padded_login(MAX_BODY_BYTES, filler)
    sent = base64.b64encode(body.encode()).decode() if b64 else body
    # When it is sent, Then it is served
    response = login_with(load_app("password"), context, sent, b64=b64)
    assert response["statusCode"] == 200
    assert len(httpserver.log) == 1


# -- invalid_client with 400 (RFC 6749 §5.2 allows 400 or 401) ---------------------------------


def test_invalid_client_with_400_forces_a_reread_and_one_retry(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an upstream that answers a stale client secret with 400 invalid_client
    current = {"secret": DEMO_SECRET["client_secret"]}

    def upstream(request: Request) -> Response:
        if parse_qs(request.get_data(as_text=True))["client_secret"] != [current["secret"]]:
            return Response(json.dumps({"error": "invalid_client"}), status=400, content_type=JSON)
        return Response(json.dumps({"access_token": ISSUED["access_token"]}), content_type=JSON)

    httpserver.expect_request("/auth/token/").respond_with_handler(upstream)
    app = load_app("password")
    assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 200

    # When the secret is rotated
    current["secret"] = "rotated-secret-Zx1"
    secrets_manager.put({**DEMO_SECRET, "client_secret": "rotated-secret-Zx1"})
    response = app.lambda_handler(load_event("password-json"), context)

    # Then one forced re-read and one retry make it a success, not the caller's 400
    assert response["statusCode"] == 200
    assert body_of(response)["access_token"] == ISSUED["access_token"]
    assert len(secrets_manager.reads) == 2
    assert len(httpserver.log) == 3
    assert logged("Upstream rejected the broker's credentials; retrying once with the re-read secret")

    # And when the re-read secret is refused too, the broker says so and answers 502
    current["secret"] = "rotated-again-Zx2"
    secrets_manager.put({**DEMO_SECRET, "client_secret": "rotated-secret-Zx3"})
    response = app.lambda_handler(load_event("password-json"), context)
    assert (response["statusCode"], body_of(response)["error"]) == (502, "server_error")
    assert logged("Upstream rejected the broker's credentials again after a fresh secret read")


def test_invalid_client_with_400_and_an_unchanged_secret_is_502_after_one_reread(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"error": "invalid_client", "error_description": "bad client"}, status=400
    )
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert (response["statusCode"], body_of(response)["error"]) == (502, "server_error")
    assert "bad client" not in response["body"]
    assert len(secrets_manager.reads) == 2
    assert len(httpserver.log) == 1
    assert logged("Upstream rejected the broker's credentials; the secret is unchanged")


def logged(message: str) -> bool:
    """Whether the last request logged ``message`` (a Powertools JSON line)."""
    return any(f'"message":{json.dumps(message)}' in line for line in SINK.lines[-5:])


# -- broker_keys: exactly 32 bytes --------------------------------------------------------------


def key_text(size: int) -> str:
    return base64.urlsafe_b64encode(bytes(range(size))).rstrip(b"=").decode()


@pytest.mark.parametrize("size", [10, 16, 24, 31, 33, 48, 64])
def test_a_broker_key_of_any_length_but_32_bytes_is_refused(size: int) -> None:
    # too short (10 bytes: 14 characters, which need two padding characters), an AES-128 or
    # AES-192 key, one byte short, one byte over, or two keys run together
    with pytest.raises(SecretUnavailable, match="32 bytes"):
        decode_broker_keys(key_text(size))
    with pytest.raises(SecretUnavailable):
        parse_keys(f"{key_text(32)},{key_text(size)}")
    with pytest.raises(GuardsUnavailable):
        GuardKeys.from_secret(BrokerSecret({"broker_keys": key_text(size)}))


def test_32_byte_broker_keys_are_read_newest_first() -> None:
    newest, older = key_text(32), base64.urlsafe_b64encode(bytes(range(32, 64))).decode()  # padded or not
    assert decode_broker_keys(f" {newest} ,, {older}") == (bytes(range(32)), bytes(range(32, 64)))
    assert decode_broker_keys("") == ()


def test_cookie_mode_with_a_16_byte_broker_key_is_503_and_never_hands_out_the_refresh_token(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    secrets_manager.put({**DEMO_SECRET, "broker_keys": [key_text(16)]})
    app = load_app("password", BROKER_REFRESH_DELIVERY="cookie")
    response = app.lambda_handler(load_event("password-json"), context)
    assert (response["statusCode"], body_of(response)["error"]) == (503, "temporarily_unavailable")
    assert ISSUED["refresh_token"] not in json.dumps(response)


# -- error descriptions: the token-like threshold and the 200-character cap ------------------------


@pytest.mark.parametrize(
    ("run", "redacted"),
    [("a" * 23, False), ("a" * 24, True), ("Ab3._~+/=-" * 2 + "xyz", False), ("Ab3._~+/=-" * 2 + "wxyz", True)],
    ids=["23", "24", "23-token-chars", "24-token-chars"],
)
def test_a_run_of_24_token_characters_is_redacted_and_23_is_not(run: str, redacted: bool) -> None:
    text = sanitise_description(f"refused: {run} here")
    assert text == ("refused: [redacted] here" if redacted else f"refused: {run} here")


@pytest.mark.parametrize(
    ("length", "expected"),
    [(MAX_DESCRIPTION - 1, None), (MAX_DESCRIPTION, None), (MAX_DESCRIPTION + 1, MAX_DESCRIPTION)],
)
def test_an_error_description_is_capped_at_200_characters(length: int, expected: int | None) -> None:
    words = ("word " * length)[: length - 1] + "."  # short words: nothing token-like
    text = sanitise_description(words)
    if expected is None:
        assert text == words
    else:
        assert len(text) == expected
        assert text == words[: MAX_DESCRIPTION - 3].rstrip() + "..."


@pytest.mark.parametrize(
    ("echoed", "expected"),
    [
        # padded base64 of the value: the unpadded form is a prefix of it, so the longest goes first
        ("got " + base64.b64encode(b"pw-1").decode() + " here", "got [redacted] here"),
        # percent-escapes echoed in lower case
        ("got pw-1%2f%c3%a9 here", "got [redacted] here"),
        ("got PW-1/\u00e9 here", "got [redacted] here"),
    ],
    ids=["padded-base64", "lower-case-escapes", "upper-case"],
)
def test_every_echoed_form_of_a_value_is_redacted_whole(echoed: str, expected: str) -> None:
    value = "pw-1/é" if "%" in echoed or "PW" in echoed else "pw-1"
    assert sanitise_description(echoed, (value,)) == expected


def test_characters_outside_rfc_6749_become_one_space() -> None:
    assert sanitise_description('user "demo"\tis\x7f\\locked \u00e9 now') == "user demo is locked now"


def test_an_upstream_description_reaches_the_spa_redacted_and_capped(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an invalid_grant whose description holds a 24-character run and goes on past 200 characters
    long = "Token " + "q" * 24 + " is not valid; " + "see the docs " * 20 + "x" * 23
    httpserver.expect_request("/auth/token/").respond_with_json(
        {"error": "invalid_grant", "error_description": long}, status=400
    )
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    description = body_of(response)["error_description"]
    assert (response["statusCode"], body_of(response)["error"]) == (400, "invalid_grant")
    assert description.startswith("Token [redacted] is not valid; see the docs")
    assert len(description) == MAX_DESCRIPTION
    assert description.endswith("...")


# -- an empty parameter counts as missing -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("username=demo&password=pw&scope=", FORM),
        ('{"username": "demo", "password": "pw", "scope": ""}', JSON),
    ],
    ids=["form", "json"],
)
def test_an_empty_parameter_is_not_a_parameter(body: str, content_type: str) -> None:
    request = BrokerRequest("POST", {"content-type": content_type}, body.encode(), "198.51.100.7")
    assert parse_params(request) == {"username": "demo", "password": "pw"}


def test_an_empty_token_type_hint_is_not_forwarded(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given an upstream with a revocation endpoint
    httpserver.expect_request("/auth/revoke_token/", method="POST").respond_with_data("")
    profile = {
        "token_url": httpserver.url_for("/auth/token/"),
        "revocation_url": httpserver.url_for("/auth/revoke_token/"),
    }
    event = load_event("logout-rfc7009-form", body="token=rt-1&token_type_hint=")
    # When a logout sends an empty hint
    response = load_app("logout", BROKER_PROFILE=json.dumps(profile)).lambda_handler(event, context)
    # Then the upstream gets the token without any hint
    assert response["statusCode"] == 200
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True), keep_blank_values=True)
    assert sent["token"] == ["rt-1"]
    assert "token_type_hint" not in sent


# -- the 1 MiB answer limit -------------------------------------------------------------------


def answer_of(size: int) -> bytes:
    head = b'{"access_token": "at-1", "token_type": "Bearer", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "no-length"])
@pytest.mark.parametrize(("size", "status"), [(MAX_ANSWER_BYTES, 200), (MAX_ANSWER_BYTES + 1, 502)])
def test_an_answer_of_1_mib_is_read_and_one_byte_more_is_502(
    size: int,
    status: int,
    streamed: bool,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    data = answer_of(size)
    assert len(data) == size
    answer = Response(chunks(data) if streamed else data, content_type=JSON)
    httpserver.expect_request("/auth/token/").respond_with_response(answer)
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    # The server logs a request once it has sent the whole answer, the refused rest included:
    # wait for it, so that it cannot land in the next test's log.
    deadline = time.monotonic() + 10
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(httpserver.log) == 1
    assert response["statusCode"] == status
    if status == 200:
        assert body_of(response) == {"access_token": "at-1", "token_type": "Bearer"}
    else:
        assert body_of(response) == {"error": "server_error", "error_description": "The upstream answer is too large."}


# -- CORS preflight ---------------------------------------------------------------------------


def without_origin(event: Mapping[str, Any]) -> dict[str, Any]:
    changed = dict(event)
    changed["headers"] = {k: v for k, v in event["headers"].items() if k.lower() != "origin"}
    changed["multiValueHeaders"] = {k: v for k, v in event["multiValueHeaders"].items() if k.lower() != "origin"}
    return changed


@pytest.mark.parametrize("route", ["password", "refresh", "logout", "token"])
def test_a_preflight_without_origin_is_403(route: str, load_app: AppLoader, context: FakeContext) -> None:
    response = load_app(route).lambda_handler(without_origin(load_event("password-preflight")), context)
    assert body_of(response) == {"error": "invalid_request", "error_description": "This origin is not allowed."}
    assert response["statusCode"] == 403
    assert response["headers"]["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in response["headers"]
    assert "Access-Control-Allow-Methods" not in response["headers"]


def test_a_preflight_from_a_listed_origin_is_answered_exactly(load_app: AppLoader, context: FakeContext) -> None:
    response = load_app("password").lambda_handler(load_event("password-preflight"), context)
    assert response == {
        "statusCode": 204,
        "headers": {
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Access-Control-Allow-Origin": "http://localhost:5173",
            "Vary": "Origin",
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization, X-CSRF",
            "Access-Control-Max-Age": "600",
        },
        "multiValueHeaders": {},
        "body": "",
        "isBase64Encoded": False,
    }


# -- the upstream's status, at each boundary -----------------------------------------------------

REDIRECT = "The upstream authorization server answered with a redirect, which is not followed."


@pytest.mark.parametrize(
    ("status", "answer", "description"),
    [
        (300, {"access_token": "at-1"}, REDIRECT),
        (302, {}, REDIRECT),
        (399, {}, REDIRECT),
        (500, {"error": "invalid_client"}, "The upstream authorization server failed."),
        (400, {"detail": "no RFC 6749 code"}, "The upstream authorization server answered HTTP 400."),
        (403, {"error": "access_denied"}, "The upstream authorization server answered HTTP 403."),
    ],
)
def test_an_upstream_failure_is_502_with_its_own_description_and_no_retry(
    status: int,
    answer: dict[str, Any],
    description: str,
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    # Given an upstream answering a redirect, a 5xx, or a 4xx that is not about the broker's client
    # (on a path of its own: a request another test left in flight cannot count as this one's)
    path = f"/status-{status}/"
    httpserver.expect_request(path).respond_with_json(answer, status=status, headers={"Location": "/x"})
    app = load_app("password", BROKER_TOKEN_URL=httpserver.url_for(path))
    response = app.lambda_handler(load_event("password-json"), context)
    # Then 502 with the broker's own description, the secret read once, the upstream asked once
    assert response["statusCode"] == 502
    assert body_of(response) == {"error": "server_error", "error_description": description}
    assert len(secrets_manager.reads) == 1
    assert [request.path for request, _ in httpserver.log if request.path == path] == [path]


def test_a_299_answer_is_a_success(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json({"access_token": "at-1"}, status=299)
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert (response["statusCode"], body_of(response)) == (200, {"access_token": "at-1", "token_type": "Bearer"})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("not*base64", "The broker's secret holds a malformed broker_keys entry."),
        (base64.urlsafe_b64encode(bytes(16)).decode(), "Each broker_keys entry must be 32 bytes (base64url)."),
    ],
)
def test_a_bad_broker_key_is_described_exactly(keys: str, message: str) -> None:
    with pytest.raises(SecretUnavailable) as refused:
        decode_broker_keys(keys)
    assert refused.value.description == message


# -- parsing: what is accepted, and what each refusal says ----------------------------------------


def parsed(body: bytes, content_type: str = JSON) -> dict[str, str]:
    return parse_params(BrokerRequest("POST", {"content-type": content_type}, body, "198.51.100.7"))


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json; charset=UTF8",
        'Application/JSON; Charset="UTF-8"',
        "application/json;charset=utf-8;foo=bar",
    ],
)
def test_a_utf_8_charset_in_any_spelling_is_accepted(content_type: str) -> None:
    assert parsed(b'{"username": "d\xc3\xa9mo"}', content_type) == {"username": "démo"}


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (b'{"a": "x", "a": "y"}', "Parameter 'a' is sent more than once."),
        (b'{"password": "a\\u0000b"}', "Parameter 'password' holds a NUL character."),
        (b'{"\\u00e9\\u00e9": 1}', "Parameter (unnamed) must be a string."),
        (b'{"pass word": null, "pass word": "x"}', "Parameter 'password' is sent more than once."),
        (b"[1]", "The JSON body must be an object."),
        (b'{"a": ', "The body is not valid JSON."),
        (b'{"a": "\xff"}', "The request body is not valid UTF-8."),
    ],
)
def test_each_json_refusal_names_the_parameter_never_the_value(body: bytes, description: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parsed(body)
    assert refused.value.description == description


def test_a_base64_body_with_a_character_outside_the_alphabet_is_400(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a login's base64 with a "*" inside (a lenient decoder would drop it and read the login)
    encoded = base64.b64encode(b'{"username": "demo", "password": "pw"}').decode()
    response = login_with(load_app("password"), context, encoded[:8] + "*" + encoded[8:], b64=True)
    assert response["statusCode"] == 400
    assert body_of(response)["error_description"] == "The request body is not valid base64."
    assert httpserver.log == []


def test_a_body_that_is_not_text_is_400(load_app: AppLoader, context: FakeContext) -> None:
    event = load_event("password-json", body={"username": "demo"})
    response = load_app("password").lambda_handler(event, context)
    assert response["statusCode"] == 400
    assert body_of(response)["error_description"] == "The request body is not text."


def test_a_text_body_with_a_lone_surrogate_is_400(load_app: AppLoader, context: FakeContext) -> None:
    # API Gateway never sends one, but a str can hold it: it has no UTF-8 form
    response = login_with(load_app("password"), context, '{"username": "\ud800", "password": "pw"}')
    assert response["statusCode"] == 400
    assert body_of(response)["error_description"] == "The request body is not valid UTF-8."


def test_the_base64_length_cap_is_the_longest_encoding_of_16_kib(load_app: AppLoader, context: FakeContext) -> None:
    # At the cap the body is still decoded (and this one is not base64); one character more is 413 unread
    cap = (MAX_BODY_BYTES + 2) // 3 * 4 + 4
    at_cap = login_with(load_app("password"), context, "*" * cap, b64=True)
    over = login_with(load_app("password"), context, "*" * (cap + 1), b64=True)
    assert (at_cap["statusCode"], body_of(at_cap)["error_description"]) == (
        400,
        "The request body is not valid base64.",
    )
    assert over["statusCode"] == 413
