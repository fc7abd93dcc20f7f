"""The three grants, and the one flow every route follows.

parse the event -> check origin and method -> validate the parameters -> read the secret
-> call the upstream (once more with a re-read secret if it rejects the broker's own
credentials) -> RFC 6749 response.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import fastjsonschema

from broker import schemas
from broker.config import Config
from broker.errors import (
    BrokerError,
    ClientRejected,
    ConfigError,
    InvalidRequest,
    OriginNotAllowed,
    SecretUnavailable,
)
from broker.http import Request, error_response, json_response, parse_event, parse_params, preflight_response
from broker.observability import logger
from broker.profiles import Profile
from broker.secrets import BrokerSecret, SecretStore
from broker.upstream import UpstreamRequest, interpret, send

Validator = Callable[[Any], Any]


@dataclass(frozen=True)
class Grant:
    """One route: what the SPA sends, which secret keys it needs, how the upstream is called."""

    name: str  # the upstream grant_type ("exchange" for the exchange route)
    schema: Mapping[str, Any]
    validate: Validator
    forwarded: tuple[str, ...]  # SPA parameters passed upstream
    sensitive_params: tuple[str, ...]

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        if self.name == "exchange":
            keys = {"exchange_token"}
        elif profile.client_auth == "none":
            keys = set()
        else:
            keys = {"client_id", "client_secret"}
        return tuple(sorted(keys | (profile.placeholders() - {"grant_type"})))

    def check(self, params: dict[str, str]) -> dict[str, str]:
        """Schema-validate the SPA's parameters; the description names a field, never a value."""
        try:
            self.validate(params)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidRequest(self._describe(exc, params)) from exc
        return params

    def _describe(self, exc: fastjsonschema.JsonSchemaValueException, params: Mapping[str, str]) -> str:
        field = (exc.name or "").removeprefix("data.").removeprefix("data")
        if exc.rule == "required":
            missing = [key for key in self.schema.get("required", ()) if key not in params]
            return f"Missing required parameter: {', '.join(missing)}."
        if field == "grant_type":
            return f"grant_type must be {self.name!r} on this route."
        if exc.rule == "maxLength":
            return f"Parameter {field!r} is too long."
        return f"Parameter {field!r} is invalid."


def _grant(name: str, schema: Mapping[str, Any], forwarded: tuple[str, ...], sensitive: tuple[str, ...]) -> Grant:
    return Grant(name, schema, fastjsonschema.compile(dict(schema)), forwarded, sensitive)


PASSWORD = _grant("password", schemas.PASSWORD, ("username", "password", "scope"), ("password",))
REFRESH = _grant("refresh_token", schemas.REFRESH, ("refresh_token", "scope"), ("refresh_token",))
EXCHANGE = _grant("exchange", schemas.EXCHANGE, (), ())


def build_request(grant: Grant, params: Mapping[str, str], secret: BrokerSecret, profile: Profile) -> UpstreamRequest:
    """The one upstream request for this grant, as the profile describes it."""
    template_values = {**secret.values, "grant_type": grant.name}
    headers = {"Accept": "application/json", **profile.render_headers(template_values)}
    sensitive = secret.sensitive_values() + tuple(params[k] for k in grant.sensitive_params if k in params)
    if grant.name == "exchange":
        if not profile.exchange_url:
            raise ConfigError("the profile has no exchange_url")
        headers["Authorization"] = f"{profile.exchange_scheme} {secret.values['exchange_token']}"
        return UpstreamRequest(profile.exchange_url, _checked(headers), None, sensitive)

    if not profile.token_url:
        raise ConfigError("the profile has no token_url")
    fields: dict[str, str] = {"grant_type": grant.name}
    fields.update((key, params[key]) for key in grant.forwarded if key in params)
    client_id, client_secret = secret.values.get("client_id", ""), secret.values.get("client_secret", "")
    if profile.client_auth == "client_secret_post":
        fields.update(client_id=client_id, client_secret=client_secret)
    elif profile.client_auth == "client_secret_basic":
        # RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
        pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    renamed = {profile.fields.get(key, key): value for key, value in fields.items()}
    body_fields = {key: value for key, value in renamed.items() if key is not None}
    if profile.encoding == "json":
        headers["Content-Type"] = "application/json"
        body = json.dumps(body_fields, ensure_ascii=False).encode("utf-8")
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(body_fields).encode("ascii")
    return UpstreamRequest(profile.token_url, _checked(headers), body, sensitive)


def _checked(headers: dict[str, str]) -> dict[str, str]:
    """Header values come from the secret: refuse one that would split the request."""
    for value in headers.values():
        if any(c in value for c in "\r\n\x00"):
            raise SecretUnavailable("The broker's secret holds a value unfit for an HTTP header.")
    return headers


class TokenBroker:
    """Serves one route. Created once per execution environment, at cold start."""

    def __init__(self, grant: Grant, config: Config, secrets: SecretStore | None = None) -> None:
        self.grant = grant
        self.config = config
        self.secrets = secrets or SecretStore(config.secret_id, config.secret_ttl, grant.secret_keys(config.profile))
        endpoint = config.profile.exchange_url if grant.name == "exchange" else config.profile.token_url
        if not endpoint:
            raise ConfigError(f"the profile has no {'exchange_url' if grant.name == 'exchange' else 'token_url'}")

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        origins = self.config.allowed_origins
        request: Request | None = None
        started = time.perf_counter()
        try:
            request = parse_event(event)
            if request.origin is not None and request.origin not in origins:
                raise OriginNotAllowed()
            if request.method == "OPTIONS":
                return preflight_response(request, origins)
            if request.method != "POST":
                raise InvalidRequest("Only POST is supported on this route.")
            params = self.grant.check(parse_params(request))
            tokens = self._call(params)
        except BrokerError as exc:
            self._log(exc.status, exc.error, started)
            return error_response(exc, request, origins)
        except Exception:
            # A bug, not a user error. The traceback names code, never request values.
            logger.exception("Unexpected failure")
            return error_response(BrokerError(), request, origins)
        self._log(200, None, started)
        return json_response(200, tokens, request, origins)

    def _call(self, params: dict[str, str]) -> dict[str, Any]:
        secret = self.secrets.get()
        try:
            return self._once(params, secret)
        except ClientRejected:
            fresh = self.secrets.get(force=True)
            if fresh == secret:
                logger.error("Upstream rejected the broker's credentials; the secret is unchanged")
                raise
            logger.warning("Upstream rejected the broker's credentials; retrying once with the re-read secret")
            try:
                return self._once(params, fresh)
            except ClientRejected:
                logger.error("Upstream rejected the broker's credentials again after a fresh secret read")
                raise

    def _once(self, params: Mapping[str, str], secret: BrokerSecret) -> dict[str, Any]:
        request = build_request(self.grant, params, secret, self.config.profile)
        answer = send(request, self.config.upstream_timeout)
        return interpret(answer, self.config.profile, request.sensitive)

    def _log(self, status: int, error: str | None, started: float) -> None:
        fields = {
            "grant": self.grant.name,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if error:
            fields["error"] = error
        if status >= 500:
            logger.warning("Token request failed", extra=fields)
        else:
            logger.info("Token request finished", extra=fields)
