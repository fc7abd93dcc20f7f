"""The three grants, and the one flow every route follows.

parse the event -> check origin and method -> validate the parameters -> read the secret
-> call the upstream (once more with a re-read secret if it rejects the broker's own
credentials) -> RFC 6749 response.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from broker import schemas
from broker.config import Config
from broker.errors import (
    BrokerError,
    CallerRejected,
    ClientRejected,
    ConfigError,
    CsrfRejected,
    InvalidRequest,
    OriginNotAllowed,
    SchemaViolation,
    SecretUnavailable,
)
from broker.http import Cors, Request, error_response, json_response, parse_event, parse_params, preflight_response
from broker.metrics import metrics_count
from broker.observability import logger
from broker.profiles import Profile
from broker.secrets import BrokerSecret, SecretStore
from broker.upstream import UpstreamRequest, interpret, send

if TYPE_CHECKING:
    from broker.guards import Guards

Validator = Callable[[Any], Any]


class Grant:
    """One route: what the SPA sends, which secret keys it needs, how the upstream is called.

    A plain class, like the other per-request types: four dataclasses made at import would
    cost ~4 ms of every cold start (see config.Config)."""

    __slots__ = ("_validate", "forwarded", "name", "schema", "sensitive_params")

    def __init__(
        self, name: str, schema: Mapping[str, Any], forwarded: tuple[str, ...], sensitive_params: tuple[str, ...]
    ) -> None:
        self.name = name  # the upstream grant_type ("exchange" for the exchange route)
        self.schema = schema
        self.forwarded = forwarded  # SPA parameters passed upstream
        self.sensitive_params = sensitive_params
        self._validate: Validator | None = None

    def __repr__(self) -> str:
        return f"Grant({self.name!r})"

    @property
    def validate(self) -> Validator:
        """The route's schema, compiled ahead of time (broker/validators, generated from broker/schemas.py
        by fastjsonschema); loaded for the route's own grant only, in TokenBroker's init."""
        if self._validate is None:
            self._validate = importlib.import_module(f"broker.validators.{self.name}").validate
        return self._validate

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        if self.name == "exchange":
            keys = {"exchange_token"}
        elif (self.name == "logout" and not profile.revocation_url) or profile.client_auth == "none":
            keys = set()
        else:
            keys = {"client_id", "client_secret"}
        return tuple(sorted(keys | (profile.placeholders() - {"grant_type"})))

    def check(self, params: dict[str, str]) -> dict[str, str]:
        """Schema-validate the SPA's parameters; the description names a field, never a value."""
        try:
            self.validate(params)
        except SchemaViolation as exc:
            raise InvalidRequest(self._describe(exc, params)) from exc
        return params

    def _describe(self, exc: SchemaViolation, params: Mapping[str, str]) -> str:
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
    return Grant(name, schema, forwarded, sensitive)


PASSWORD = _grant("password", schemas.PASSWORD, ("username", "password", "scope"), ("password",))
REFRESH = _grant("refresh_token", schemas.REFRESH, ("refresh_token", "scope"), ("refresh_token",))
EXCHANGE = _grant("exchange", schemas.EXCHANGE, (), ())
LOGOUT = _grant("logout", schemas.LOGOUT, (), ("refresh_token",))


def build_request(grant: Grant, params: Mapping[str, str], secret: BrokerSecret, profile: Profile) -> UpstreamRequest:
    """The one upstream request for this grant, as the profile describes it."""
    headers = {"Accept": "application/json"}
    if profile.headers:
        headers.update(profile.render_headers({**secret.values, "grant_type": grant.name}))
    sensitive = secret.sensitive_values() + tuple(params[k] for k in grant.sensitive_params if k in params)
    if grant.name == "exchange":
        if not profile.exchange_url:
            raise ConfigError("the profile has no exchange_url")
        headers["Authorization"] = f"{profile.exchange_scheme} {secret.values['exchange_token']}"
        return UpstreamRequest(profile.exchange_url, _checked(headers), None, sensitive)

    if not profile.token_url:
        raise ConfigError("the profile has no token_url")
    fields: dict[str, str] = {"grant_type": grant.name}
    for key in grant.forwarded:
        if key in params:
            fields[key] = params[key]
    _authenticate_client(fields, headers, secret, profile)
    body_fields = fields
    if profile.fields:  # the profile renames (or drops, with None) some fields
        renamed = {profile.fields.get(key, key): value for key, value in fields.items()}
        body_fields = {key: value for key, value in renamed.items() if key is not None}
    if profile.encoding == "json":
        headers["Content-Type"] = "application/json"
        body = json.dumps(body_fields, ensure_ascii=False).encode("utf-8")
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = form_encode(body_fields)
    return UpstreamRequest(profile.token_url, _checked(headers), body, sensitive)


def _authenticate_client(
    fields: dict[str, str], headers: dict[str, str], secret: BrokerSecret, profile: Profile
) -> None:
    """The profile's client authentication: credentials in the body, HTTP Basic, or none."""
    client_id, client_secret = secret.values.get("client_id", ""), secret.values.get("client_secret", "")
    if profile.client_auth == "client_secret_post":
        fields.update(client_id=client_id, client_secret=client_secret)
    elif profile.client_auth == "client_secret_basic":
        # RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
        pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")


def form_encode(fields: Mapping[str, str]) -> bytes:
    """``urlencode(fields).encode("ascii")``, without quoting what has nothing to quote."""
    if _FORM_SAFE.fullmatch("".join(fields) + "".join(fields.values())):  # usually: nothing to quote
        return "&".join(f"{key}={value}" for key, value in fields.items()).encode("ascii")
    return "&".join(f"{_form_quote(key)}={_form_quote(value)}" for key, value in fields.items()).encode("ascii")


def _form_quote(text: str) -> str:
    return text if _FORM_SAFE.fullmatch(text) else quote_plus(text)


# urllib.parse's always-safe characters: quote_plus returns such a string unchanged.
_FORM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")
_HEADER_BREAK = re.compile(r"[\r\n\x00]")


def _checked(headers: dict[str, str]) -> dict[str, str]:
    """Header values come from the secret: refuse one that would split the request."""
    for value in headers.values():
        if _HEADER_BREAK.search(value):
            raise SecretUnavailable("The broker's secret holds a value unfit for an HTTP header.")
    return headers


def build_revocation(token: str, secret: BrokerSecret, profile: Profile) -> UpstreamRequest:
    """RFC 7009: revoke a refresh token with the client's own credentials (always a form)."""
    if not profile.revocation_url:
        raise ConfigError("the profile has no revocation_url")
    fields = {"token": token, "token_type_hint": "refresh_token"}
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    _authenticate_client(fields, headers, secret, profile)
    body = form_encode(fields)
    return UpstreamRequest(profile.revocation_url, _checked(headers), body, (*secret.sensitive_values(), token))


class Reply:
    __slots__ = ("body", "cookies", "status")

    def __init__(self, status: int, body: Mapping[str, Any], cookies: tuple[str, ...] = ()) -> None:
        self.status = status
        self.body = body
        self.cookies = cookies


class TokenBroker:
    """Serves one route. Created once per execution environment, at cold start."""

    def __init__(self, grant: Grant, config: Config, secrets: SecretStore | None = None) -> None:
        self.grant = grant
        grant.validate  # noqa: B018 - load this route's compiled schema now, in the init phase
        self.config = config
        self.cookie_mode = config.refresh_delivery == "cookie"
        self.cors = Cors(config.allowed_origins, credentials=self.cookie_mode)
        required = grant.secret_keys(config.profile)
        if self.cookie_mode and grant.name in ("password", "refresh_token", "logout"):
            required = (*required, "broker_keys")
        self.secrets = secrets or SecretStore(config.secret_id, config.secret_ttl, required)
        self.guards: Guards | None = None
        if config.state_table and grant.name in ("password", "refresh_token"):
            from broker.guards import Guards  # noqa: PLC0415 - only when the guards are on

            self.guards = Guards(
                config.state_table,
                max_failures=config.login_max_failures,
                max_failures_per_ip=config.login_max_failures_per_ip,
                grace=config.refresh_grace,
                fail_closed=config.guards_fail_closed,
                preload_cipher=grant.name == "refresh_token",
            )
        profile = config.profile
        endpoint = {"exchange": profile.exchange_url, "logout": "optional"}.get(grant.name, profile.token_url)
        if not endpoint:
            raise ConfigError(f"the profile has no {'exchange_url' if grant.name == 'exchange' else 'token_url'}")

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        request: Request | None = None
        started = time.perf_counter()
        cookies: tuple[str, ...] = ()
        try:
            request = parse_event(event)
            if request.origin is not None and request.origin not in self.cors.origins:
                raise OriginNotAllowed()
            if request.method == "OPTIONS":
                return preflight_response(request, self.cors)
            if request.method != "POST":
                raise InvalidRequest("Only POST is supported on this route.")
            reply = self._serve(request)
        except BrokerError as exc:
            if self.cookie_mode and isinstance(exc, CallerRejected) and exc.error == "invalid_grant":
                cookies = (clear_cookie_header(),)  # the refresh token is dead: drop the cookie too
            self._log(exc.status, exc.error, started)
            return error_response(exc, request, self.cors, cookies)
        except Exception:
            # A bug, not a user error. The traceback names code, never request values.
            logger.exception("Unexpected failure")
            return error_response(BrokerError(), request, self.cors)
        self._log(reply.status, None, started)
        return json_response(reply.status, reply.body, request, self.cors, cookies=reply.cookies)

    def _serve(self, request: Request) -> Reply:
        if self.cookie_mode and self.grant.name in ("refresh_token", "logout"):
            _check_csrf(request)
        params = self.grant.check(parse_params(request))
        if self.grant.name == "logout":
            return self._logout(request, params)
        if self.cookie_mode and self.grant.name == "refresh_token":
            params = {**params, "refresh_token": self._cookie_token(request)}
        elif self.grant.name == "refresh_token" and "refresh_token" not in params:
            raise InvalidRequest("Missing required parameter: refresh_token.")
        tokens = self._call(params) if self.guards is None else self._guarded(self.guards, request, params)
        if self.cookie_mode and "refresh_token" in tokens:
            jar = self._jar(self.secrets.get())
            cookie = jar.set_cookie(tokens.pop("refresh_token"))
            return Reply(200, tokens, (cookie,))
        return Reply(200, tokens)

    def _guarded(self, guards: Guards, request: Request, params: dict[str, str]) -> dict[str, Any]:
        """The upstream call behind the DynamoDB guards (CONTRACT.md "Guards")."""
        keys = guards.keys_for(self.secrets.get())
        call = functools.partial(self._call, params)
        if self.grant.name == "password":
            return guards.login(params["username"], request.source_ip, keys, call)
        return guards.single_flight(params["refresh_token"], keys, call)

    def _cookie_token(self, request: Request) -> str:
        value = read_cookie_value(request)
        if value is None:
            raise InvalidRequest("The refresh cookie is missing; sign in again.")
        token: str = self._jar(self.secrets.get()).open(value)
        return token

    def _logout(self, request: Request, params: Mapping[str, str]) -> Reply:
        cookies: tuple[str, ...] = ()
        token: str | None
        if self.cookie_mode:
            cookies = (clear_cookie_header(),)
            try:
                token = self._cookie_token(request)
            except BrokerError:
                token = None  # nothing valid to revoke; the cookie is cleared all the same
        else:
            token = params.get("refresh_token")
            if token is None:
                raise InvalidRequest("Missing required parameter: refresh_token.")
        if token is not None:
            self._revoke(token)
        return Reply(200, {}, cookies)

    def _revoke(self, token: str) -> None:
        """RFC 7009. A failure never blocks the logout: it is logged (no token) and counted."""
        if not self.config.profile.revocation_url:
            logger.info("The profile has no revocation_url; the refresh token was not revoked")
            return
        try:
            secret = self.secrets.get()
            request = build_revocation(token, secret, self.config.profile)
            answer = send(request, self.config.upstream_timeout)
        except BrokerError as exc:
            logger.error("Token revocation failed", extra={"error": exc.error, "status": exc.status})
            metrics_count("RevocationFailed")
            return
        if answer.status != 200:
            logger.error("Token revocation refused", extra={"upstream_status": answer.status})
            metrics_count("RevocationFailed")

    def _jar(self, secret: BrokerSecret) -> Any:
        from broker.cookies import CookieJar, parse_keys  # noqa: PLC0415 - cookie mode only

        keys = parse_keys(secret.values.get("broker_keys", ""))
        return CookieJar(keys, self.config.deployment_id, self.config.cookie_max_age)

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
        duration = round((time.perf_counter() - started) * 1000, 2)
        fields: dict[str, Any] = {"grant": self.grant.name, "status": status, "duration_ms": duration}
        if error:
            fields["error"] = error
        if status >= 500:
            logger.warning("Token request failed", extra=fields)
        else:
            logger.info("Token request finished", extra=fields)


def _check_csrf(request: Request) -> None:
    """Cookie mode: a custom header forces a CORS preflight, and the Origin must be listed."""
    if request.headers.get("x-csrf") != "1":
        raise CsrfRejected("The X-CSRF: 1 header is required.")
    if request.origin is None:
        raise CsrfRejected("An allowed Origin header is required.")


def read_cookie_value(request: Request) -> str | None:
    from broker.cookies import read_cookie  # noqa: PLC0415 - cookie mode only

    return read_cookie(request.headers, list(request.cookie_headers))


def clear_cookie_header() -> str:
    from broker.cookies import clear_cookie  # noqa: PLC0415 - cookie mode only

    return clear_cookie()
