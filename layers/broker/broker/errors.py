"""One exception family for everything the broker can answer with an RFC 6749 error.

Each exception carries its HTTP status and RFC 6749 §5.2 error code; ``http.error_response``
is the one place that turns them into API Gateway responses. Descriptions are written by
the broker (or sanitised from the upstream) and never contain a secret, password or token.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
_NOT_RFC6749_CHARS = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]+")
# A long unbroken run of token characters is a token or a hash, not prose: never pass one on.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9._~+/=-]{24,}")
MAX_DESCRIPTION = 200

# Upstream error codes that belong to the caller (the SPA) and are passed through as 400.
CALLER_ERRORS = frozenset(
    {"invalid_grant", "invalid_scope", "unauthorized_client", "invalid_request", "unsupported_grant_type"}
)


def sanitise_description(text: str, redact: tuple[str, ...] = ()) -> str:
    """Reduce an upstream description to the RFC 6749 charset, without any value in ``redact``
    in any encoding an upstream may echo it in (it may quote the form body it received)."""
    for value in redact:
        for form in sorted(encodings(value), key=len, reverse=True):
            text = re.sub(re.escape(form), "[redacted]", text, flags=re.IGNORECASE)
    text = _TOKEN_LIKE.sub("[redacted]", text)
    text = _NOT_RFC6749_CHARS.sub(" ", text).strip()
    text = " ".join(text.split())
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3].rstrip() + "..."
    return text


def encodings(value: str) -> set[str]:
    """``value`` as it may appear in an echoed request: verbatim, percent- or form-encoded,
    JSON-escaped, HTML-escaped, base64 (standard or URL-safe, padded or not)."""
    import html  # noqa: PLC0415 - error path only: html.entities costs ~8 ms of a cold start

    if not value:
        return set()
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value), html.escape(value)}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    raw = value.encode("utf-8", "surrogatepass")
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms |= {encoded.decode("ascii"), encoded.decode("ascii").rstrip("=")}
    return {form for form in forms if form}


class SchemaViolation(ValueError):
    """What the generated validators (broker/validators) raise: fastjsonschema's
    ``JsonSchemaValueException`` interface, minus the offending value (it may be a password,
    and an exception that never holds one cannot leak it)."""

    def __init__(
        self,
        message: str,
        value: object = None,
        name: str | None = None,
        definition: object = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.definition = definition
        self.rule = rule


class BrokerError(Exception):
    """An error the broker answers with ``{"error", "error_description"}``."""

    status: int = 500
    error: str = "server_error"
    default_description: str = "The broker could not complete the request."

    def __init__(self, description: str | None = None, *, retry_after: str | None = None) -> None:
        self.description = description or self.default_description
        self.retry_after = retry_after
        super().__init__(self.description)


class InvalidRequest(BrokerError):
    status = 400
    error = "invalid_request"
    default_description = "The request is malformed."


class PayloadTooLarge(InvalidRequest):
    status = 413
    default_description = "The request body is larger than 16 KiB."


class UnsupportedMediaType(InvalidRequest):
    status = 415
    default_description = "Content-Type must be application/json or application/x-www-form-urlencoded."


class OriginNotAllowed(InvalidRequest):
    status = 403
    default_description = "This origin is not allowed."


class CsrfRejected(InvalidRequest):
    """Cookie mode: a refresh or logout without X-CSRF: 1 or without an allowed Origin."""

    status = 403


class RouteOff(InvalidRequest):
    """A route of a login flow this deployment does not offer (``BROKER_LOGIN_FLOWS``)."""

    status = 404
    default_description = "This login flow is not enabled on this deployment."


class InvalidToken(BrokerError):
    """No valid session (``/auth/session``): RFC 6750's code, as a protected resource answers."""

    status = 401
    error = "invalid_token"
    default_description = "There is no valid session; sign in again."


class UnsupportedGrantType(InvalidRequest):
    """A ``grant_type`` this route does not serve (RFC 6749 §5.2)."""

    error = "unsupported_grant_type"
    default_description = "This grant type is not served on this route."


class InvalidScope(InvalidRequest):
    """A requested scope outside the profile's allowlist: refused before any upstream call."""

    error = "invalid_scope"
    default_description = "The requested scope is not allowed."


class CallerRejected(BrokerError):
    """The upstream refused the caller's grant (wrong password, spent refresh token...)."""

    status = 400

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        super().__init__(description)


class ClientRejected(BrokerError):
    """The upstream refused the broker's own credentials (client secret or exchange token)."""

    status = 502
    error = "server_error"
    default_description = "The upstream rejected the broker's client credentials."


class UpstreamFailure(BrokerError):
    """5xx, malformed answer, TLS/DNS/connect failure or a redirect: the upstream is broken."""

    status = 502
    error = "server_error"
    default_description = "The upstream authorization server failed."


class UpstreamTimeout(BrokerError):
    status = 504
    error = "temporarily_unavailable"
    default_description = "The upstream authorization server did not answer in time."


class UpstreamUnavailable(BrokerError):
    """The upstream said 429 or 503: pass its Retry-After on."""

    status = 503
    error = "temporarily_unavailable"
    default_description = "The upstream authorization server is busy; try again later."


class SecretUnavailable(BrokerError):
    status = 503
    error = "temporarily_unavailable"
    default_description = "The broker's credentials are unavailable."


class ConfigError(Exception):
    """The function's configuration is invalid: raised at cold start, so the init fails loudly."""


# -- the DynamoDB guards (broker.guards re-exports these) ----------------------------------


class TooManyAttempts(BrokerError):
    status = 429
    error = "temporarily_unavailable"
    default_description = "Too many failed sign-in attempts; try again later."


class GuardsUnavailable(BrokerError):
    """The guards' table failed and ``BROKER_GUARDS_FAIL_CLOSED`` is set."""

    status = 503
    error = "temporarily_unavailable"
    default_description = "The broker's state store is unavailable; try again later."


class RefreshInProgress(BrokerError):
    """A twin waited ``WAIT_SECONDS`` and the claimant has not finished yet."""

    status = 503
    error = "temporarily_unavailable"
    default_description = "This refresh token is being refreshed by another request; try again shortly."


class SharedError(BrokerError):
    """The claimant's error, replayed for a twin (a 400 comes back as ``CallerRejected``)."""

    def __init__(self, status: int, error: str, description: str, retry_after: str | None) -> None:
        self.status = status
        self.error = error
        super().__init__(description, retry_after=retry_after)
