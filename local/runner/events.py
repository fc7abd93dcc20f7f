"""API Gateway REST proxy integration: HTTP request → event (format 1.0), result → HTTP response.

https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.runner.template import ACCOUNT_ID

STAGE = "local"
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload quota
_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")
_TEXT_SUFFIXES = ("+json", "+xml", "/javascript")
# Set by the HTTP layer itself; a function's value for them would corrupt the framing.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path and query, as on the request line
    headers: Sequence[tuple[str, str]]  # in order, names as sent, repeated names kept
    body: bytes
    source_ip: str
    host: str
    protocol: str = "HTTP/1.1"

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path) or "/"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    # API Gateway's own answer (not a function's): its gateway response type, whose headers
    # the template may set (GatewayResponses; DEFAULT_4XX/DEFAULT_5XX when the type has none).
    gateway_type: str | None = None

    @classmethod
    def message(cls, status: int, message: str, error_type: str | None = None, gateway_type: str = "") -> HttpResponse:
        """API Gateway's own answer: ``{"message": ...}``."""
        headers = [("Content-Type", "application/json")]
        if error_type:
            headers.append(("x-amzn-ErrorType", error_type))
        kind = gateway_type or f"DEFAULT_{status // 100}XX"
        return cls(status, headers, json.dumps({"message": message}).encode(), kind)

    def with_gateway_headers(self, responses: Mapping[str, Sequence[tuple[str, str]]]) -> HttpResponse:
        """The headers the template's gateway responses add (a function's own answer: unchanged)."""
        if self.gateway_type is None:
            return self
        fallback = f"DEFAULT_{self.status // 100}XX"
        added = responses.get(self.gateway_type, responses.get(fallback, ()))
        present = {name.lower() for name, _ in self.headers}
        return replace(self, headers=[*self.headers, *((n, v) for n, v in added if n.lower() not in present)])


# Bad gateway: what API Gateway answers when the integration (the function) fails.
INTERNAL_ERROR = HttpResponse.message(502, "Internal server error", gateway_type="DEFAULT_5XX")
# An unknown resource, or a method the resource does not have (TRACE, or any other).
MISSING_TOKEN = HttpResponse.message(
    403, "Missing Authentication Token", "MissingAuthenticationTokenException", "MISSING_AUTHENTICATION_TOKEN"
)
TOO_LARGE = HttpResponse.message(413, "Request Too Long", gateway_type="REQUEST_TOO_LARGE")


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True  # API Gateway treats a body without a media type as text
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith(_TEXT_TYPES) or media.endswith(_TEXT_SUFFIXES)


def _utf8(body: bytes) -> str | None:
    if not body:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _multi(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """API Gateway's pair of maps: last value per name, and every value per name (None when empty)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return (single or None), (multi or None)


def build_event(request: HttpRequest, resource: str, path_parameters: Mapping[str, str]) -> dict[str, Any]:
    headers, multi_headers = _multi(request.headers)
    query, multi_query = _multi(parse_qsl(urlsplit(request.target).query, keep_blank_values=True))
    content_type = next((v for n, v in request.headers if n.lower() == "content-type"), None)
    body = _utf8(request.body) if _is_text(content_type) else None
    is_base64 = bool(request.body) and body is None
    if is_base64:
        body = base64.b64encode(request.body).decode("ascii")
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    user_agent = next((v for n, v in request.headers if n.lower() == "user-agent"), None)
    return {
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": request.method,
            # The path as the client sent it, as API Gateway reports it on a custom domain with an
            # empty base path: the runner serves the routes at its root, without the stage.
            "path": request.path,
            "stage": STAGE,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": request.protocol,
            "domainName": request.host,
            "identity": {
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "apiKey": None,
                "accessKey": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
            },
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


class _Malformed(Exception):
    pass


_TIMED_OUT = re.compile(rb"Task timed out after [0-9.]+ seconds")


def map_response(payload: bytes) -> tuple[HttpResponse, str | None]:
    """The function's proxy result as HTTP, and what went wrong when it is API Gateway's 502.

    The problem names the error type only: an error message may quote the event.
    """
    timed_out = _TIMED_OUT.fullmatch(payload.strip())
    if timed_out:
        return INTERNAL_ERROR, timed_out.group(0).decode()
    try:
        result = json.loads(payload)
    except ValueError:
        return INTERNAL_ERROR, "the result is not JSON"
    if isinstance(result, dict) and "errorType" in result:
        return INTERNAL_ERROR, f"the function failed: {result['errorType']}"
    try:
        return _proxy_result(result), None
    except _Malformed:
        return INTERNAL_ERROR, "malformed Lambda proxy response"


def _proxy_result(result: Any) -> HttpResponse:
    if not isinstance(result, dict):
        raise _Malformed
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise _Malformed
    headers = _response_headers(result.get("headers"), result.get("multiValueHeaders"))
    body = result.get("body")
    if body is None:
        return HttpResponse(status, headers, b"")
    if not isinstance(body, str):
        raise _Malformed
    if not result.get("isBase64Encoded"):
        return HttpResponse(status, headers, body.encode("utf-8"))
    try:
        return HttpResponse(status, headers, base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise _Malformed from exc


def _response_headers(single: Any, multi: Any) -> list[tuple[str, str]]:
    """Merge as API Gateway does: every multi value, then single values not already there."""
    if not isinstance(single, dict | None) or not isinstance(multi, dict | None):
        raise _Malformed
    merged: list[tuple[str, str]] = []
    for name, values in (multi or {}).items():
        if not isinstance(values, list):
            raise _Malformed
        merged += [(str(name), _scalar(v)) for v in values]
    seen = {(n.lower(), v) for n, v in merged}
    for name, value in (single or {}).items():
        if (str(name).lower(), _scalar(value)) not in seen:
            merged.append((str(name), _scalar(value)))
    return [(n, v) for n, v in merged if n.lower() not in _HOP_BY_HOP]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
