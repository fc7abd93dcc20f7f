"""Requests in, responses out, and the upstream's answer read, at their edges: what an API
Gateway event is read as, which bodies and parameters are refused and how the refusal reads,
the CORS and caching headers of every answer, and what each upstream status and body means.

Written against the mutants mutation testing left alive in broker.http, broker.errors,
broker.answers and broker.upstream.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from broker.answers import interpret
from broker.config import MAX_BODY_BYTES
from broker.errors import (
    BrokerError,
    CallerRejected,
    ClientRejected,
    InvalidRequest,
    OriginNotAllowed,
    SchemaViolation,
    SharedError,
    UnsupportedMediaType,
    UpstreamFailure,
    UpstreamUnavailable,
    encodings,
    sanitise_description,
)
from broker.http import Cors, Request, error_response, json_response, parse_event, parse_params, preflight_response
from broker.profiles import PRESETS, Profile
from broker.upstream import UpstreamAnswer, UpstreamRequest

ORIGIN = "https://app.example.com"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def request(body: str | bytes = b"", content_type: str = JSON, **headers: str) -> Request:
    raw = body.encode() if isinstance(body, str) else body
    return Request("POST", {"content-type": content_type, **headers}, raw, "203.0.113.9")


def refused(body: str | bytes, content_type: str = JSON) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        parse_params(request(body, content_type))
    return info.value


# -- the event ----------------------------------------------------------------------------------


def test_an_event_is_read_into_method_headers_cookies_body_source_ip_query_and_url() -> None:
    parsed = parse_event(
        {
            "httpMethod": "post",
            "headers": {"Origin": ORIGIN, "X-List": ["first", "second"], "X-Empty": [], "X-Number": 5, 7: "x"},
            "multiValueHeaders": {
                9: ["not a name"],  # skipped, and the names after it still read
                "Cookie": ["a=1", 2, "b=2"],
                "X-Multi": ["m1", "m2"],
                "origin": ["https://other.example"],
                "X-Single": "s",
                "X-None": [],
                8: ["x"],
            },
            "body": "{}",
            "requestContext": {
                "identity": {"sourceIp": "198.51.100.7"},
                "domainName": "api.example.com",
                "path": "/prod/auth/token",
            },
            "multiValueQueryStringParameters": {"a": ["1"]},
            "queryStringParameters": {"a": "1"},
        }
    )
    assert parsed.method == "POST"
    assert parsed.origin == ORIGIN  # `headers` wins over `multiValueHeaders`
    assert parsed.headers == {
        "origin": ORIGIN,
        "x-list": "first",
        "x-empty": "",
        "cookie": "a=1",
        "x-multi": "m1",
        "x-single": "s",
        "x-none": "",
    }
    assert parsed.cookie_headers == ("a=1", "b=2")
    assert parsed.body == b"{}"
    assert parsed.source_ip == "198.51.100.7"
    assert parsed.query == {"a": ["1"]}
    assert parsed.url == "https://api.example.com/prod/auth/token"


def test_an_event_without_the_optional_parts_reads_as_empty() -> None:
    parsed = parse_event({"httpMethod": 5, "queryStringParameters": {"b": "2"}, "requestContext": {"path": "/x"}})
    assert (parsed.method, parsed.headers, parsed.cookie_headers, parsed.body) == ("", {}, (), b"")
    assert (parsed.source_ip, parsed.url) == ("", "")
    assert parsed.query == {"b": "2"}
    assert parse_event({"requestContext": {"domainName": "api.example.com"}}).url == ""
    bare = parse_event({"requestContext": "nonsense", "multiValueHeaders": {"Cookie": "c=1"}})
    assert (bare.query, bare.url, bare.source_ip, bare.cookie_headers) == ({}, "", "", ("c=1",))


@pytest.mark.parametrize(
    ("event", "description"),
    [
        ([], "The request is not an API Gateway event."),
        ({"body": 5}, "The request body is not text."),
        ({"body": "e30=!", "isBase64Encoded": True}, "The request body is not valid base64."),
        ({"body": "\ud800"}, "The request body is not valid UTF-8."),
    ],
)
def test_an_unreadable_event_is_400_saying_why(event: Any, description: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_event(event)
    assert (info.value.status, info.value.error, info.value.description) == (400, "invalid_request", description)


def test_a_base64_body_at_the_encoded_length_limit_is_judged_by_its_content() -> None:
    # 21,852 characters is the longest base64 that may decode to 16 KiB: it is decoded, not refused unread
    with pytest.raises(InvalidRequest) as info:
        parse_event({"body": "!" * ((MAX_BODY_BYTES + 2) // 3 * 4 + 4), "isBase64Encoded": True})
    assert (info.value.status, info.value.description) == (400, "The request body is not valid base64.")


def test_a_base64_body_is_decoded_only_when_flagged_true() -> None:
    encoded = base64.b64encode(b'{"a": "1"}').decode()
    assert parse_event({"body": encoded, "isBase64Encoded": True}).body == b'{"a": "1"}'
    assert parse_event({"body": encoded, "isBase64Encoded": "true"}).body == encoded.encode()


def test_a_request_repr_names_the_method_and_header_names_never_a_value() -> None:
    parsed = Request("POST", {"origin": ORIGIN, "cookie": "__Host-rt=secret"}, b"password=pw", "203.0.113.9")
    assert repr(parsed) == "Request(method='POST', headers=['cookie', 'origin'])"
    assert (parsed.query, parsed.url, parsed.cookie_headers) == ({}, "", ())  # none given


# -- the body's parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON ; charset=UTF-8",
        'application/json;charset="utf8"',
        "application/json; boundary=x",
        "application/json;",
    ],
)
def test_json_in_utf_8_or_without_a_charset_is_read(content_type: str) -> None:
    assert parse_params(request('{"username": "demo"}', content_type)) == {"username": "demo"}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json;charset=latin-1",
        "application/json; charset=utf-8=x",
        "application/json; charset=XUTF-8",
    ],
)
def test_any_other_media_type_or_charset_is_415(content_type: str) -> None:
    error = refused('{"username": "demo"}', content_type)
    assert isinstance(error, UnsupportedMediaType)
    assert (error.status, error.error) == (415, "invalid_request")
    assert error.description == "Content-Type must be application/json or application/x-www-form-urlencoded."


def test_a_body_without_a_content_type_is_415() -> None:
    without = Request("POST", {}, b'{"username": "demo"}', "203.0.113.9")
    with pytest.raises(UnsupportedMediaType):
        parse_params(without)


def test_an_empty_or_blank_body_has_no_parameters_whatever_its_type() -> None:
    assert parse_params(request(b"  \n", "text/plain")) == {}


@pytest.mark.parametrize(
    ("body", "content_type", "description"),
    [
        (b'{"a": "\xff"}', JSON, "The request body is not valid UTF-8."),
        ("[" * 100_000 + "]" * 100_000, JSON, "The JSON body is nested too deeply."),
        ('{"a": ', JSON, "The body is not valid JSON."),
        ('["a"]', JSON, "The JSON body must be an object."),
        ('{"pass.word_1-x": 1}', JSON, "Parameter 'pass.word_1-x' must be a string."),
        ('{"a": "\\ud800"}', JSON, "A parameter is not valid Unicode text."),
        ('{"\\ud800": "x"}', JSON, "A parameter is not valid Unicode text."),
        ('{"a": "1", "a": null}', JSON, "Parameter 'a' is sent more than once."),
        ('{"a": "x\\u0000"}', JSON, "Parameter 'a' holds a NUL character."),
        ('{"\\u00e9\\u00e9": "1", "\\u00e9\\u00e9": "2"}', JSON, "Parameter (unnamed) is sent more than once."),
        ("a=%ff", FORM, "A form parameter is not valid UTF-8."),
        ("&".join(f"p{i}=1" for i in range(65)), FORM, "The form body has too many parameters."),
        ("a=1&a=2", FORM, "Parameter 'a' is sent more than once."),
        ("a=&a=2", FORM, "Parameter 'a' is sent more than once."),  # an empty one still counts as sent
        ("a=x%00", FORM, "Parameter 'a' holds a NUL character."),
    ],
)
def test_a_malformed_body_is_400_saying_why_naming_only_the_parameter(
    body: str | bytes, content_type: str, description: str
) -> None:
    error = refused(body, content_type)
    assert (error.status, error.error, error.description) == (400, "invalid_request", description)


def test_a_long_parameter_name_is_cut_to_40_characters_in_the_description() -> None:
    name = "n" * 39 + "xyz"
    error = refused(f'{{"{name}": "1", "{name}": "2"}}')
    assert error.description == f"Parameter '{'n' * 39}x' is sent more than once."


def test_empty_and_null_parameters_count_as_missing() -> None:
    assert parse_params(request('{"a": "", "b": null, "c": "3"}')) == {"c": "3"}
    assert parse_params(request("a=&b=2&c", FORM)) == {"b": "2"}
    assert parse_params(request("&".join(f"p{i}=1" for i in range(64)), FORM))["p63"] == "1"


# -- the answers' headers -------------------------------------------------------------------------


def test_an_answer_is_uncacheable_json_with_cors_for_an_allowed_origin() -> None:
    cors = Cors(frozenset({ORIGIN}))
    answer = json_response(200, {"a": 1, "b": "x"}, request(origin=ORIGIN), cors)
    assert answer == {
        "statusCode": 200,
        "headers": {
            "Content-Type": JSON,
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Access-Control-Allow-Origin": ORIGIN,
            "Vary": "Origin",
        },
        "multiValueHeaders": {},
        "body": '{"a":1,"b":"x"}',
        "isBase64Encoded": False,
    }


def test_credentials_are_allowed_only_in_cookie_mode_and_only_to_an_allowed_origin() -> None:
    cors = Cors(frozenset({ORIGIN}), credentials=True)
    assert cors.headers(request(origin=ORIGIN)) == {
        "Access-Control-Allow-Origin": ORIGIN,
        "Vary": "Origin",
        "Access-Control-Allow-Credentials": "true",
    }
    assert cors.headers(request(origin="https://evil.example")) == {"Vary": "Origin"}
    assert cors.headers(request()) == {"Vary": "Origin"}
    assert cors.headers(None) == {"Vary": "Origin"}
    assert repr(cors) == "Cors(origins=['https://app.example.com'], credentials=True)"


def test_cookies_go_in_multi_value_headers_and_extra_headers_are_added() -> None:
    cors = Cors(frozenset({ORIGIN}))
    answer = json_response(200, {}, None, cors, {"X-Extra": "1"}, ("a=1; Secure", "b=2; Secure"))
    assert answer["multiValueHeaders"] == {"Set-Cookie": ["a=1; Secure", "b=2; Secure"]}
    assert answer["headers"]["X-Extra"] == "1"
    assert answer["headers"]["Vary"] == "Origin"


def test_an_error_answer_carries_its_status_code_description_and_retry_after() -> None:
    cors = Cors(frozenset({ORIGIN}))
    busy = error_response(UpstreamUnavailable(retry_after="120"), request(origin=ORIGIN), cors, ("gone=; Max-Age=0",))
    assert busy["statusCode"] == 503
    assert json.loads(busy["body"]) == {
        "error": "temporarily_unavailable",
        "error_description": "The upstream authorization server is busy; try again later.",
    }
    assert busy["headers"]["Retry-After"] == "120"
    assert busy["headers"]["Access-Control-Allow-Origin"] == ORIGIN
    assert busy["multiValueHeaders"] == {"Set-Cookie": ["gone=; Max-Age=0"]}
    assert "Retry-After" not in error_response(UpstreamFailure(), None, cors)["headers"]


def test_a_preflight_from_an_allowed_origin_is_204_naming_methods_headers_and_max_age() -> None:
    cors = Cors(frozenset({ORIGIN}), credentials=True)
    answer = preflight_response(request(origin=ORIGIN), cors, ("GET", "POST"))
    assert answer == {
        "statusCode": 204,
        "headers": {
            "Content-Type": JSON,
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Access-Control-Allow-Origin": ORIGIN,
            "Vary": "Origin",
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization, X-CSRF",
            "Access-Control-Max-Age": "600",
        },
        "multiValueHeaders": {},
        "body": "",
        "isBase64Encoded": False,
    }
    assert (
        preflight_response(request(origin=ORIGIN), cors)["headers"]["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    )


def test_a_preflight_from_another_origin_is_403() -> None:
    answer = preflight_response(request(origin="https://evil.example"), Cors(frozenset({ORIGIN})))
    assert answer["statusCode"] == 403
    assert json.loads(answer["body"]) == {
        "error": "invalid_request",
        "error_description": "This origin is not allowed.",
    }


# -- the error family -----------------------------------------------------------------------------


def test_a_schema_violation_keeps_the_validators_fields_but_never_the_value() -> None:
    error = SchemaViolation(
        "data.password must be longer", "the-password", "data.password", {"minLength": 1}, "minLength"
    )
    assert str(error) == "data.password must be longer"
    assert (error.message, error.name, error.definition, error.rule) == (
        "data.password must be longer",
        "data.password",
        {"minLength": 1},
        "minLength",
    )
    assert not hasattr(error, "value")


def test_a_replayed_error_keeps_status_code_description_and_retry_after() -> None:
    shared = SharedError(503, "temporarily_unavailable", "The upstream is busy.", "30")
    assert (shared.status, shared.error, shared.description, shared.retry_after) == (
        503,
        "temporarily_unavailable",
        "The upstream is busy.",
        "30",
    )
    assert str(shared) == "The upstream is busy."
    assert SharedError(502, "server_error", "", None).description == "The broker could not complete the request."


def test_an_error_without_a_description_uses_its_default() -> None:
    assert OriginNotAllowed().description == "This origin is not allowed."
    assert str(OriginNotAllowed("custom")) == "custom"
    rejected = CallerRejected("invalid_grant", "Wrong password.")
    assert (rejected.status, rejected.error, rejected.description) == (400, "invalid_grant", "Wrong password.")


# -- the upstream's answer ------------------------------------------------------------------------


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> UpstreamAnswer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return UpstreamAnswer(status, headers or {}, data)


def outcome(
    status: int, body: Any = None, headers: dict[str, str] | None = None, profile: Profile | None = None
) -> Any:
    try:
        return interpret(answer(status, body, headers), profile or PRESETS["bakrypt"], ("s3cret-password",))
    except BrokerError as error:
        return error


@pytest.mark.parametrize("status", [200, 201, 299])
def test_any_2xx_is_a_token_answer(status: int) -> None:
    assert outcome(status, {"access_token": "at"}) == {"access_token": "at", "token_type": "Bearer"}


@pytest.mark.parametrize("status", [300, 307, 399])
def test_any_3xx_is_a_redirect_never_followed(status: int) -> None:
    error = outcome(status, {"access_token": "at"})
    assert isinstance(error, UpstreamFailure)
    assert error.description == "The upstream authorization server answered with a redirect, which is not followed."


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_busy_with_the_retry_after_passed_on(status: int) -> None:
    error = outcome(status, {"error": "slow_down"}, {"retry-after": " 120 "})
    assert isinstance(error, UpstreamUnavailable)
    assert error.retry_after == "120"
    assert outcome(status, b"")  # no Retry-After: still busy
    assert outcome(status, b"").retry_after is None


@pytest.mark.parametrize("status", [500, 502, 504, 599])
def test_other_5xx_are_an_upstream_failure(status: int) -> None:
    error = outcome(status, {"error": "invalid_grant"})
    assert isinstance(error, UpstreamFailure)
    assert error.description == "The upstream authorization server failed."


@pytest.mark.parametrize(
    ("status", "error_code", "default"),
    [
        (400, "invalid_grant", "The authorization server rejected the grant."),
        (401, "invalid_grant", "The authorization server rejected the grant."),
        (403, "invalid_scope", "The requested scope is invalid."),
        (400, "unauthorized_client", "The client is not authorized for this grant."),
        (400, "invalid_request", "The authorization server rejected the request as malformed."),
        (400, "unsupported_grant_type", "The authorization server does not support this grant."),
    ],
)
def test_a_caller_error_passes_through_as_400_with_its_description_or_a_default(
    status: int, error_code: str, default: str
) -> None:
    error = outcome(status, {"error": error_code, "error_description": "Bad: s3cret-password was wrong"})
    assert isinstance(error, CallerRejected)
    assert (error.status, error.error, error.description) == (400, error_code, "Bad: [redacted] was wrong")
    for description in (None, 5, "", "s3cret-password"):
        error = outcome(status, {"error": error_code, "error_description": description})
        assert isinstance(error, CallerRejected)
        assert error.description == (default if description != "s3cret-password" else "[redacted]")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"error": "invalid_client"}),
        (400, {"error": "invalid_client"}),
        (401, b""),
        (401, b"[1]"),
        (401, {"error": 5}),
    ],
)
def test_invalid_client_or_a_bare_401_is_about_the_brokers_credentials(status: int, body: Any) -> None:
    assert isinstance(outcome(status, body), ClientRejected)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": "server_exploded"}),
        (401, {"error": "server_exploded"}),
        (400, {"error": 5}),
        (403, b"[1]"),
        (404, b"<html>"),
    ],
)
def test_any_other_4xx_is_an_upstream_failure_naming_the_status(status: int, body: Any) -> None:
    error = outcome(status, body)
    assert isinstance(error, UpstreamFailure)
    assert error.description == f"The upstream authorization server answered HTTP {status}."


def test_a_token_answer_keeps_the_rfc_6749_fields_renamed_and_drops_empty_ones() -> None:
    body = {
        "accessToken": "at",
        "tokenType": "DPoP",
        "expiresIn": "3600",
        "refreshToken": "rt",
        "scope": "",
        "idToken": "idt",
        "other": "x",
    }
    assert outcome(200, body) == {
        "access_token": "at",
        "token_type": "DPoP",
        "expires_in": 3600,
        "refresh_token": "rt",
        "id_token": "idt",
    }
    renamed = PRESETS["bakrypt"]._replace(response_fields={"jwt": "access_token"})
    assert outcome(200, {"jwt": "at", "token_type": "", "scope": "read"}, profile=renamed) == {
        "access_token": "at",
        "token_type": "Bearer",
        "scope": "read",
    }


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (b"<html>", "The upstream answer is not JSON."),
        (b"[1]", "The upstream answer is not a JSON object."),
        ({"token_type": "Bearer"}, "The upstream answer has no access_token."),
        ({"access_token": ""}, "The upstream answer has no access_token."),
        ({"access_token": 5}, "The upstream answer has no access_token."),
        ({"access_token": "at", "refresh_token": 5}, "The upstream answer's refresh_token is not a string."),
        ({"access_token": "at", "scope": ["a"]}, "The upstream answer's scope is not a string."),
        ({"access_token": "at", "id_token": False}, "The upstream answer's id_token is not a string."),
    ],
)
def test_a_malformed_token_answer_is_an_upstream_failure_saying_why(body: Any, description: str) -> None:
    error = outcome(200, body)
    assert isinstance(error, UpstreamFailure)
    assert (error.status, error.description) == (502, description)


@pytest.mark.parametrize(
    ("expires_in", "seconds"), [(3600, 3600), (0, 0), (3600.0, 3600), (0.0, 0), ("3600", 3600), ("0", 0)]
)
def test_expires_in_is_read_as_a_non_negative_integer(expires_in: Any, seconds: int) -> None:
    result = outcome(200, {"access_token": "at", "expires_in": expires_in})
    assert result["expires_in"] == seconds
    assert type(result["expires_in"]) is int


@pytest.mark.parametrize("expires_in", [-1, -0.5, 3600.5, True, "-1", "1e3", "", "٣", float("inf"), float("nan"), [1]])
def test_any_other_expires_in_is_an_upstream_failure(expires_in: Any) -> None:
    body = json.dumps({"access_token": "at", "expires_in": expires_in}).encode()
    error = outcome(200, body)
    assert isinstance(error, UpstreamFailure)
    assert error.description == "The upstream answer's expires_in is not a non-negative integer."


@pytest.mark.parametrize(
    ("given", "passed"),
    [
        ("0", "0"),
        ("999999", "999999"),
        ("1000000", None),
        ("-1", None),
        ("soon", None),
        ("１２", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("Wed, 21 Oct 2015 09:28:00 +0200", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT\u00e9", None),
    ],
)
def test_retry_after_is_passed_on_only_as_seconds_or_an_http_date(given: str, passed: str | None) -> None:
    error = outcome(503, b"", {"retry-after": given})
    assert isinstance(error, UpstreamUnavailable)
    assert error.retry_after == passed


def test_an_upstream_request_repr_names_the_url_and_header_names_never_a_value() -> None:
    sent = UpstreamRequest("https://idp.example.com/token", {"Authorization": "Basic c2VjcmV0"}, b"password=pw")
    assert repr(sent) == "UpstreamRequest(url='https://idp.example.com/token', headers=['Authorization'])"
    assert repr(answer(200, b"12345")) == "UpstreamAnswer(status=200, bytes=5)"


def test_a_retry_after_date_is_rewritten_in_gmt_whatever_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lambda runs in UTC; a local run (sam local, a developer's machine) may not.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        error = outcome(503, b"", {"retry-after": "Wed, 21 Oct 2015 09:28:00 +0200"})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert isinstance(error, UpstreamUnavailable)
    assert error.retry_after == "Wed, 21 Oct 2015 07:28:00 GMT"


# -- the forms a value may be echoed in -------------------------------------------------------------


def test_a_value_is_redacted_in_every_form_an_upstream_may_echo_it_in() -> None:
    value = 'a/b "é<'  # a slash, a space, a quote, a non-ASCII letter, markup; 8 bytes: padded base64
    assert encodings(value) == {
        value,
        "a%2Fb%20%22%C3%A9%3C",  # percent-encoded, nothing kept
        "a/b%20%22%C3%A9%3C",  # percent-encoded, a path
        "a%2Fb+%22%C3%A9%3C",  # form-encoded
        "a/b &quot;é&lt;",  # HTML
        'a/b \\"\\u00e9<',  # JSON, ASCII
        'a/b \\"é<',  # JSON
        "YS9iICLDqTw=",  # base64 (URL-safe is the same here), padded
        "YS9iICLDqTw",  # and not
    }
    # standard and URL-safe base64 differ; base64 without padding has nothing stripped, even an X
    assert encodings("~~~~") == {"~~~~", "fn5+fg==", "fn5+fg", "fn5-fg==", "fn5-fg"}
    assert encodings("aaW") == {"aaW", "YWFX"}
    assert encodings("") == set()
    for form in encodings(value):
        assert sanitise_description(f"you sent {form} here", (value,)) == "you sent [redacted] here"


def test_a_capped_description_never_leaves_a_space_before_its_ellipsis() -> None:
    words = "abc " * 48 + "abcd " + "efgh " * 5  # the cut at 197 characters falls right after a space
    capped = sanitise_description(words)
    assert capped == "abc " * 48 + "abcd..."
    assert len(capped) == 199
