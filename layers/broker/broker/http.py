"""API Gateway REST proxy events in, API Gateway proxy responses out.

Parsing follows RFC 6749 §3.2 for the body: JSON or form-encoded, unrecognised
parameters ignored, a parameter sent twice is an error, an empty one counts as missing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from broker.config import MAX_BODY_BYTES
from broker.errors import BrokerError, InvalidRequest, OriginNotAllowed, PayloadTooLarge, UnsupportedMediaType

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
# Base64 inflates by 4/3: anything longer cannot decode to 16 KiB or less.
_MAX_B64_CHARS = (MAX_BODY_BYTES + 2) // 3 * 4 + 4

_NO_STORE = {"Content-Type": JSON_TYPE, "Cache-Control": "no-store", "Pragma": "no-cache"}
PREFLIGHT_HEADERS = "Content-Type, Authorization, X-CSRF"


class Request:
    """The parts of an API Gateway event the broker reads."""

    __slots__ = ("body", "cookie_headers", "headers", "method", "query", "source_ip", "url")

    def __init__(
        self,
        method: str,
        headers: Mapping[str, str],  # lower-case names, first value
        body: bytes,
        source_ip: str,
        cookie_headers: tuple[str, ...] = (),
        query: Mapping[str, Any] | None = None,  # API Gateway's query string map (broker.navigation)
        url: str = "",  # https://{domainName}{requestContext.path}: the URL the browser called
    ) -> None:
        self.query, self.url = query or {}, url
        self.method = method
        self.headers = headers
        self.body = body
        self.source_ip = source_ip
        self.cookie_headers = cookie_headers

    def __repr__(self) -> str:  # never the body, a cookie or a header value
        return f"Request(method={self.method!r}, headers={sorted(self.headers)})"

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_event(event: Mapping[str, Any]) -> Request:
    """The parts of a REST proxy event the broker uses; raises InvalidRequest on nonsense."""
    if not isinstance(event, Mapping):
        raise InvalidRequest("The request is not an API Gateway event.")
    headers, cookies = _headers(event)
    method = event.get("httpMethod")
    context = event.get("requestContext")
    identity = context.get("identity") if isinstance(context, Mapping) else None
    source_ip = identity.get("sourceIp") if isinstance(identity, Mapping) else None
    domain, path = (context.get("domainName"), context.get("path")) if isinstance(context, Mapping) else ("", "")
    url = f"https://{domain}{path}" if isinstance(domain, str) and domain and isinstance(path, str) else ""
    return Request(
        method.upper() if isinstance(method, str) else "",
        headers,
        _body(event),
        source_ip if isinstance(source_ip, str) else "",
        cookies,
        event.get("multiValueQueryStringParameters") or event.get("queryStringParameters") or {},
        url,
    )


def _headers(event: Mapping[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Lower-case header names to their first value, and every Cookie header's value."""
    headers: dict[str, str] = {}
    single = event.get("headers")
    if isinstance(single, Mapping):
        for name, raw in single.items():
            value = (raw[0] if raw else "") if isinstance(raw, list) else raw
            if isinstance(name, str) and isinstance(value, str):
                headers.setdefault(name.lower(), value)
    cookies: list[str] = []
    multi = event.get("multiValueHeaders")
    for name, raw in multi.items() if isinstance(multi, Mapping) else ():
        if not isinstance(name, str):
            continue
        values = raw if isinstance(raw, list) else [raw]
        if name.lower() == "cookie":
            cookies.extend(value for value in values if isinstance(value, str))
        value = values[0] if values else ""
        if isinstance(value, str):
            headers.setdefault(name.lower(), value)
    return headers, tuple(cookies)


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise InvalidRequest("The request body is not text.")
    if event.get("isBase64Encoded") is True:
        if len(body) > _MAX_B64_CHARS:
            raise PayloadTooLarge()
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("The request body is not valid base64.") from exc
    else:
        if len(body) > MAX_BODY_BYTES:  # cheap pre-check before encoding
            raise PayloadTooLarge()
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidRequest("The request body is not valid UTF-8.") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    return raw


def parse_params(request: Request) -> dict[str, str]:
    """The body's parameters, non-empty strings only; a duplicate is an error."""
    if not request.body.strip():
        return {}
    content_type = request.content_type
    raw_type = request.headers.get("content-type", "")
    charset = _charset(raw_type) if ";" in raw_type else ""
    if content_type not in (JSON_TYPE, FORM_TYPE) or charset not in ("", "utf-8", "utf8"):
        raise UnsupportedMediaType()
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The request body is not valid UTF-8.") from exc
    return collect(_json_pairs(text) if content_type == JSON_TYPE else _form_pairs(text))


def collect(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise InvalidRequest(f"Parameter {_safe_name(name)} is sent more than once.")
        seen.add(name)
        if "\x00" in value:
            raise InvalidRequest(f"Parameter {_safe_name(name)} holds a NUL character.")
        if value != "":
            params[name] = value
    return params


def _json_pairs(text: str) -> list[tuple[str, str]]:
    try:
        document = json.loads(text, object_pairs_hook=_keep_pairs)
    except RecursionError as exc:
        raise InvalidRequest("The JSON body is nested too deeply.") from exc
    except ValueError as exc:
        raise InvalidRequest("The body is not valid JSON.") from exc
    if not isinstance(document, _Pairs):
        raise InvalidRequest("The JSON body must be an object.")
    pairs: list[tuple[str, str]] = []
    for name, value in document.pairs:
        if value is None:  # null counts as missing, but still as sent (a duplicate is an error)
            pairs.append((name, ""))
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"Parameter {_safe_name(name)} must be a string.")
        _check_text(name, value)
        pairs.append((name, value))
    return pairs


class _Pairs(dict[str, Any]):
    """A JSON object that remembers its key order and duplicates."""

    pairs: list[tuple[str, Any]]


def _keep_pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(pairs)
    obj.pairs = pairs
    return obj


def _form_pairs(text: str) -> list[tuple[str, str]]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=64)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("A form parameter is not valid UTF-8.") from exc
    except ValueError as exc:
        raise InvalidRequest("The form body has too many parameters.") from exc
    for name, value in pairs:
        _check_text(name, value)
    return pairs


def _check_text(name: str, value: str) -> None:
    try:
        name.encode("utf-8")
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates from a \ud800 escape
        raise InvalidRequest("A parameter is not valid Unicode text.") from exc


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _safe_name(name: str) -> str:
    """A parameter name fit for an error description (never a value)."""
    cleaned = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "_-."))[:40]
    return repr(cleaned) if cleaned else "(unnamed)"


class Cors:
    """The allowed origins, and whether the browser may send cookies (BFF mode)."""

    __slots__ = ("_allowed", "credentials", "origins")

    def __init__(self, origins: frozenset[str], credentials: bool = False) -> None:
        self.origins = origins
        self.credentials = credentials
        self._allowed = (
            {"Vary": "Origin", "Access-Control-Allow-Credentials": "true"} if credentials else {"Vary": "Origin"}
        )

    def __repr__(self) -> str:
        return f"Cors(origins={sorted(self.origins)}, credentials={self.credentials})"

    def headers(self, request: Request | None) -> dict[str, str]:
        origin = request.origin if request else None
        if origin and origin in self.origins:
            return {"Access-Control-Allow-Origin": origin, **self._allowed}
        return {"Vary": "Origin"}


def json_response(
    status: int,
    body: Mapping[str, Any],
    request: Request | None,
    cors: Cors,
    extra_headers: Mapping[str, str] | None = None,
    cookies: tuple[str, ...] = (),
) -> dict[str, Any]:
    headers = {**_NO_STORE, **cors.headers(request)}
    if extra_headers:
        headers.update(extra_headers)
    # Set-Cookie goes in multiValueHeaders: API Gateway would keep only one from `headers`.
    return {
        "statusCode": status,
        "headers": headers,
        "multiValueHeaders": {"Set-Cookie": list(cookies)} if cookies else {},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def error_response(
    error: BrokerError, request: Request | None, cors: Cors, cookies: tuple[str, ...] = ()
) -> dict[str, Any]:
    extra = {"Retry-After": error.retry_after} if error.retry_after else None
    body = {"error": error.error, "error_description": error.description}
    return json_response(error.status, body, request, cors, extra, cookies)


def preflight_response(request: Request, cors: Cors, methods: tuple[str, ...] = ("POST",)) -> dict[str, Any]:
    """CORS preflight: 204 for an allowed origin, 403 otherwise."""
    if request.origin not in cors.origins:
        return error_response(OriginNotAllowed(), request, cors)
    headers = {
        **_NO_STORE,
        **cors.headers(request),
        "Access-Control-Allow-Methods": ", ".join((*methods, "OPTIONS")),
        "Access-Control-Allow-Headers": PREFLIGHT_HEADERS,
        "Access-Control-Max-Age": "600",
    }
    return {"statusCode": 204, "headers": headers, "multiValueHeaders": {}, "body": "", "isBase64Encoded": False}
