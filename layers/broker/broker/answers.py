"""What the upstream's answer means: the RFC 6749 §5.1 body, or the matching ``BrokerError``."""

from __future__ import annotations

import json
import math
from datetime import UTC
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from broker.errors import (
    CALLER_ERRORS,
    CallerRejected,
    ClientRejected,
    UpstreamFailure,
    UpstreamUnavailable,
    sanitise_description,
)
from broker.profiles import Profile
from broker.upstream import UpstreamAnswer


def interpret(answer: UpstreamAnswer, profile: Profile, sensitive: tuple[str, ...]) -> dict[str, Any]:
    """The RFC 6749 §5.1 body for a success; the matching BrokerError otherwise."""
    status = answer.status
    if 200 <= status < 300:
        return _token_body(answer.data, profile)
    if 300 <= status < 400:
        raise UpstreamFailure("The upstream authorization server answered with a redirect, which is not followed.")
    if status in (429, 503):
        raise UpstreamUnavailable(retry_after=_retry_after(answer.headers.get("retry-after")))
    if status >= 500:
        raise UpstreamFailure()
    # The RFC 6749 error code first, the status second: Keycloak answers a wrong password with
    # 401 invalid_grant, Auth0 with 403; only invalid_client (or a bare 401) is about our credentials.
    error, description = _error_fields(answer.data)
    if error in CALLER_ERRORS:
        text = sanitise_description(description, sensitive) or _DEFAULT_DESCRIPTIONS[error]
        raise CallerRejected(error, text)
    if error == "invalid_client" or (status == 401 and not error):
        raise ClientRejected()
    raise UpstreamFailure(f"The upstream authorization server answered HTTP {status}.")


_DEFAULT_DESCRIPTIONS = {
    "invalid_grant": "The authorization server rejected the grant.",
    "invalid_scope": "The requested scope is invalid.",
    "unauthorized_client": "The client is not authorized for this grant.",
    "invalid_request": "The authorization server rejected the request as malformed.",
    "unsupported_grant_type": "The authorization server does not support this grant.",
}


def _error_fields(data: bytes) -> tuple[str, str]:
    try:
        body = json.loads(data)
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, description = body.get("error"), body.get("error_description")
    return (error if isinstance(error, str) else "", description if isinstance(description, str) else "")


def _token_body(data: bytes, profile: Profile) -> dict[str, Any]:
    try:
        body = json.loads(data)  # UTF-8, -16 or -32, as RFC 8259 allows
    except ValueError as exc:
        raise UpstreamFailure("The upstream answer is not JSON.") from exc
    if not isinstance(body, dict):
        raise UpstreamFailure("The upstream answer is not a JSON object.")
    names = profile.response_fields
    renamed = {names.get(key, key): value for key, value in body.items()}
    access_token = renamed.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamFailure("The upstream answer has no access_token.")
    token_type = renamed.get("token_type")
    result: dict[str, Any] = {
        "access_token": access_token,
        "token_type": token_type if isinstance(token_type, str) and token_type else "Bearer",
    }
    expires_in = renamed.get("expires_in")
    if expires_in is not None:
        result["expires_in"] = _seconds(expires_in)
    for key in ("refresh_token", "scope", "id_token"):
        value = renamed.get(key)
        if value is not None and not isinstance(value, str):
            raise UpstreamFailure(f"The upstream answer's {key} is not a string.")
        if value:
            result[key] = value
    return result


def _seconds(value: object) -> int:
    """``expires_in`` as RFC 6749 §5.1 means it: a non-negative integer (3600, 3600.0 or "3600")."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    raise UpstreamFailure("The upstream answer's expires_in is not a non-negative integer.")


def _retry_after(value: str | None) -> str | None:
    """Pass on a Retry-After only in one of its two RFC 9110 forms."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 6:
        return value
    if not value.isascii():
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # Rewritten, never passed as given: only the date itself reaches the browser.
    return format_datetime(when.astimezone(UTC), usegmt=True) if when.tzinfo else None
