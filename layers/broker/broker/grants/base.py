"""What every grant shares, in the shape of authlib's ``rfc6749/grants``: one class per grant.

A grant owns what differs between routes: its schema, the secret keys it needs, its upstream
request, how the guards wrap its call, and what it does with the refresh cookie. The request
pipeline (``broker.pipeline.TokenBroker``) runs every grant the same way and never asks which
one it has. A new route is one more subclass.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from broker.client_auth import METHODS
from broker.errors import ConfigError, InvalidRequest, SchemaViolation, SecretUnavailable, UnsupportedGrantType
from broker.http import parse_params
from broker.routes import SERVED_AT
from broker.scopes import scoped
from broker.upstream import UpstreamRequest

if TYPE_CHECKING:
    from broker.config import Config
    from broker.guards import GuardKeys, Guards
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile
    from broker.secrets import BrokerSecret

Tokens = dict[str, Any]
Call = Callable[[], Tokens]

# Grant types a description may name when a caller sends one the broker does not serve;
# any other value is never echoed (it could be anything the caller typed).
KNOWN_GRANT_TYPES = frozenset(
    {
        *SERVED_AT,
        "authorization_code",
        "client_credentials",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
    }
)


class Reply:
    """What a grant answers: the pipeline turns it into the API Gateway response."""

    __slots__ = ("body", "cookies", "location", "status")

    def __init__(
        self, status: int, body: Mapping[str, Any], cookies: tuple[str, ...] = (), location: str | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.cookies = cookies
        self.location = location  # a 302 to this URL (the code flow's browser navigations)


class Grant:
    """A token-endpoint grant: the SPA's parameters, plus the client's credentials, POSTed upstream."""

    name: ClassVar[str]  # the route's grant: its compiled schema (broker.validators) and its log name
    schema: ClassVar[Mapping[str, Any]]
    grant_type: ClassVar[str]  # sent upstream, and the only grant_type the SPA may send
    # Whether a grant_type the SPA sends must be this grant's (False: the route has no grant_type).
    checks_grant_type: ClassVar[bool] = True
    forwarded: ClassVar[tuple[str, ...]] = ()  # SPA parameters passed upstream
    sensitive_params: ClassVar[tuple[str, ...]] = ()  # never echoed back, whatever the upstream says
    endpoint: ClassVar[str] = "token_url"  # the profile URL it calls ("" when it needs none)
    # Cookie mode: the route needs X-CSRF: 1 and an allowed Origin (it acts on the cookie).
    csrf_protected: ClassVar[bool] = False
    # Cookie mode: the route seals or opens the refresh cookie, so the secret needs broker_keys.
    uses_refresh_cookie: ClassVar[bool] = False
    # The profile's default_scope is sent when the SPA asks for none (broker.scopes).
    uses_default_scope: ClassVar[bool] = False
    methods: ClassVar[tuple[str, ...]] = ("POST",)  # the HTTP methods the route serves
    # The login flow the route belongs to (BROKER_LOGIN_FLOWS); off, the route answers 404.
    flow: ClassVar[str | None] = None

    def __init__(self) -> None:
        self._validate: Callable[[Any], Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- set-up, at cold start --------------------------------------------------------------

    def check_profile(self, profile: Profile) -> None:
        if self.endpoint and not getattr(profile, self.endpoint):
            raise ConfigError(f"the profile has no {self.endpoint}")

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        """The secret keys this grant's upstream request needs, sorted."""
        return tuple(sorted(METHODS[profile.client_auth].secret_keys | header_keys(profile)))

    def make_guards(self, config: Config) -> Guards | None:
        """The DynamoDB guards around this grant's call (only when a table is configured)."""
        return None

    @property
    def validate(self) -> Callable[[Any], Any]:
        """The schema compiled ahead of time (broker/validators, ``make validators``)."""
        if self._validate is None:
            self._validate = importlib.import_module(f"broker.validators.{self.name}").validate
        return self._validate

    # -- per request ------------------------------------------------------------------------

    def read_params(self, request: Request) -> dict[str, str]:
        """The caller's parameters: the body's (a GET route reads its query string)."""
        return parse_params(request)

    def check(self, params: dict[str, str]) -> dict[str, str]:
        """Schema-validate the SPA's parameters; the description names a field, never a value."""
        sent = params.get("grant_type")
        if self.checks_grant_type and sent is not None and sent != self.grant_type:
            raise UnsupportedGrantType(
                wrong_grant_type(sent, f"This route serves grant_type {self.grant_type!r} only.")
            )
        try:
            self.validate(params)
        except SchemaViolation as exc:
            raise InvalidRequest(self.describe(exc, params)) from exc
        return params

    def describe(self, exc: SchemaViolation, params: Mapping[str, str]) -> str:
        field = (exc.name or "").removeprefix("data.").removeprefix("data")
        if exc.rule == "required":
            missing = [key for key in self.schema.get("required", ()) if key not in params]
            return f"Missing required parameter: {', '.join(missing)}."
        if exc.rule == "maxLength":
            return f"Parameter {field!r} is too long."
        return f"Parameter {field!r} is invalid."

    def serve(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> Reply:
        """Obtain tokens upstream (behind the guards, if any) and deliver them."""
        params = self.prepare(broker, request, params)
        if "scope" in self.forwarded:
            params = scoped(params, broker.config.profile, use_default=self.uses_default_scope)
        call = functools.partial(broker.call, self, params)
        guards = broker.guards
        tokens = call() if guards is None else self.guarded(guards, broker.guard_keys(guards), request, params, call)
        if broker.config.cookie_mode and self.uses_refresh_cookie and "refresh_token" in tokens:
            claims = self.cookie_claims(broker, request)
            return Reply(200, tokens, (broker.refresh_cookie(tokens.pop("refresh_token"), claims),))
        return Reply(200, tokens)

    def cookie_claims(self, broker: TokenBroker, request: Request) -> Mapping[str, Any]:
        """The session claims the new refresh cookie carries (a refresh keeps the old cookie's)."""
        return {}

    def prepare(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> dict[str, str]:
        """The parameters the upstream request is built from (a grant may add to them)."""
        return params

    def guarded(
        self, guards: Guards, keys: GuardKeys | None, request: Request, params: Mapping[str, str], call: Call
    ) -> Tokens:
        """Run ``call`` behind this grant's guard."""
        return call()

    def upstream_request(self, params: Mapping[str, str], secret: BrokerSecret, profile: Profile) -> UpstreamRequest:
        """The one token-endpoint request for this grant, as the profile describes it."""
        headers = profile_headers(profile, secret, self.grant_type)
        fields = {"grant_type": self.grant_type, **{key: params[key] for key in self.forwarded if key in params}}
        METHODS[profile.client_auth].apply(fields, headers, secret.values)
        if profile.fields:  # the profile renames (or drops, with None) some fields
            renamed = {profile.fields.get(key, key): value for key, value in fields.items()}
            fields = {key: value for key, value in renamed.items() if key is not None}
        if profile.encoding == "json":
            headers["Content-Type"] = "application/json"
            body = json.dumps(fields, ensure_ascii=False).encode("utf-8")
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(fields).encode("ascii")
        sensitive = secret.sensitive_values() + tuple(params[k] for k in self.sensitive_params if k in params)
        return UpstreamRequest(
            str(getattr(profile, self.endpoint)), checked(headers), body, sensitive + credentials(headers)
        )


def wrong_grant_type(sent: str, otherwise: str) -> str:
    """RFC 6749 §5.2 unsupported_grant_type: name the route that serves ``sent``, where one does."""
    if sent in SERVED_AT:
        return f"grant_type {sent!r} is served at {SERVED_AT[sent]}."
    if sent in KNOWN_GRANT_TYPES:
        return f"grant_type {sent!r} is not served by this broker. {otherwise}"
    return otherwise


def header_keys(profile: Profile) -> frozenset[str]:
    """The secret keys the profile's header templates name."""
    return profile.placeholders() - {"grant_type"}


def profile_headers(profile: Profile, secret: BrokerSecret, grant_type: str) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if profile.headers:
        headers.update(profile.render_headers({**secret.values, "grant_type": grant_type}))
    return headers


def checked(headers: dict[str, str]) -> dict[str, str]:
    """Header values come from the secret: refuse one that would split the request or that
    HTTP/1.1 cannot carry (urllib3 sends header values as Latin-1)."""
    for value in headers.values():
        if not value.isprintable() or not _latin1(value):
            raise SecretUnavailable("The broker's secret holds a value unfit for an HTTP header.")
    return headers


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def credentials(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The Authorization header's credentials (a Basic pair is base64 of both parts together)."""
    value = headers.get("Authorization", "")
    return (value, value.partition(" ")[2]) if value else ()


def guards_for(config: Config, *, preload_cipher: bool = False) -> Guards | None:
    """The guards over ``config.state_table``; None when no table is configured."""
    if not config.state_table:
        return None
    from broker.guards import Guards  # noqa: PLC0415 - botocore and cryptography only when the guards are on

    return Guards(
        config.state_table,
        max_failures=config.login_max_failures,
        max_failures_per_ip=config.login_max_failures_per_ip,
        grace=config.refresh_grace,
        fail_closed=config.guards_fail_closed,
        preload_cipher=preload_cipher,
    )
