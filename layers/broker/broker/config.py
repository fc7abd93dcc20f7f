"""The function's configuration: the only module that reads the environment.

Read once, at cold start, into an immutable ``Config``; anything invalid raises ``ConfigError``
there, so a misconfigured function fails its init loudly instead of a user's request.
Every default lives here, once (docs/configuration.md lists them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from broker.errors import ConfigError
from broker.profiles import URL_KEYS, Profile, check_url, parse_profile

MAX_BODY_BYTES = 16 * 1024

DEFAULT_PROFILE = "bakrypt-testnet"
SECRET_TTL = 300.0
UPSTREAM_TIMEOUT = 8.0  # below the function's 10 s timeout, below API Gateway's 29 s
COOKIE_MAX_AGE = 30 * 24 * 3600
LOGIN_MAX_FAILURES = 5
LOGIN_MAX_FAILURES_PER_IP = 50
REFRESH_GRACE = 30.0
EXTENSION_PORT = 2773  # the AWS Parameters and Secrets Lambda Extension's default
SECRETS_BACKENDS = ("sdk", "extension")
DELIVERIES = ("body", "cookie")
LOGIN_FLOWS = ("password", "code")
DEFAULT_LOGIN_FLOWS = "password"
SESSION_CLAIMS = ("sub", "name", "email", "preferred_username")
LOGIN_COOKIE_MAX_AGE = 600  # the code flow's login cookie: one trip to the upstream's login page and back
JWKS_REFETCH_INTERVAL = 60.0  # an unknown kid refetches the JWKS at most this often
ID_TOKEN_LEEWAY = 60  # seconds of clock skew tolerated on the ID token's exp and iat


class Config(NamedTuple):
    """Immutable and typed (a NamedTuple: a frozen dataclass costs ~1 ms more of cold start)."""

    secret_id: str
    profile: Profile
    allowed_origins: frozenset[str]
    secret_ttl: float = SECRET_TTL
    upstream_timeout: float = UPSTREAM_TIMEOUT
    # BFF mode: "body" hands the refresh token to the SPA, "cookie" never does.
    refresh_delivery: str = "body"
    cookie_max_age: int = COOKIE_MAX_AGE
    # Binds refresh cookies to this deployment (AES-GCM associated data).
    deployment_id: str = ""
    # Guards across instances: an empty table name turns them off.
    state_table: str = ""
    login_max_failures: int = LOGIN_MAX_FAILURES
    login_max_failures_per_ip: int = LOGIN_MAX_FAILURES_PER_IP
    refresh_grace: float = REFRESH_GRACE
    guards_fail_closed: bool = False
    secrets_backend: str = "sdk"
    extension_port: int = EXTENSION_PORT
    # The API's public base URL for the discovery document; empty: taken from each request.
    public_url: str = ""
    # The authorization code flow (needs cookie mode).
    login_flows: frozenset[str] = frozenset({DEFAULT_LOGIN_FLOWS})
    redirect_uri: str = ""  # empty: the API's own /auth/callback, from the request
    session_claims: tuple[str, ...] = SESSION_CLAIMS
    first_origin: str = ""  # where a callback without a return_to sends the browser

    @property
    def cookie_mode(self) -> bool:
        return self.refresh_delivery == "cookie"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, needs_secret: bool = True) -> Config:
        env = os.environ if env is None else env
        secret_id = _text(env, "BROKER_SECRET_ID")
        if not secret_id and needs_secret:
            raise ConfigError("BROKER_SECRET_ID is required")
        origins = _origins(env)
        delivery = _choice(env, "BROKER_REFRESH_DELIVERY", DELIVERIES)
        if delivery == "cookie" and not origins:
            raise ConfigError("cookie mode needs BROKER_ALLOWED_ORIGINS (the CSRF defence checks Origin)")
        flows = _flows(env)
        if "code" in flows and delivery != "cookie":
            raise ConfigError("the code flow (BROKER_LOGIN_FLOWS=code) needs BROKER_REFRESH_DELIVERY=cookie")
        redirect_uri = _text(env, "BROKER_REDIRECT_URI")
        if redirect_uri:
            check_url(redirect_uri, "BROKER_REDIRECT_URI")
        return cls(
            secret_id=secret_id,
            profile=_profile(env),
            allowed_origins=origins,
            secret_ttl=_number(env, "BROKER_SECRET_TTL", SECRET_TTL, minimum=0.0),
            upstream_timeout=_number(env, "BROKER_UPSTREAM_TIMEOUT", UPSTREAM_TIMEOUT, minimum=0.1, maximum=28.0),
            refresh_delivery=delivery,
            cookie_max_age=int(_number(env, "BROKER_COOKIE_MAX_AGE", COOKIE_MAX_AGE, minimum=60, maximum=400 * 86400)),
            deployment_id=_text(env, "BROKER_DEPLOYMENT_ID") or secret_id,
            state_table=_text(env, "BROKER_STATE_TABLE"),
            login_max_failures=int(
                _number(env, "BROKER_LOGIN_MAX_FAILURES", LOGIN_MAX_FAILURES, minimum=1, maximum=100)
            ),
            login_max_failures_per_ip=int(
                _number(env, "BROKER_LOGIN_MAX_FAILURES_PER_IP", LOGIN_MAX_FAILURES_PER_IP, minimum=1, maximum=1000)
            ),
            refresh_grace=_number(env, "BROKER_REFRESH_GRACE", REFRESH_GRACE, minimum=0.0, maximum=300.0),
            guards_fail_closed=_flag(env, "BROKER_GUARDS_FAIL_CLOSED"),
            secrets_backend=_choice(env, "BROKER_SECRETS_BACKEND", SECRETS_BACKENDS),
            extension_port=_port(env, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", EXTENSION_PORT),
            public_url=_public_url(env),
            login_flows=flows,
            redirect_uri=redirect_uri,
            session_claims=_names(env, "BROKER_SESSION_CLAIMS") or SESSION_CLAIMS,
            first_origin=_first_origin(env),
        )


def session_token() -> str:
    """The function's AWS session token, read per call: the runtime may renew it (SnapStart restore)."""
    return os.environ.get("AWS_SESSION_TOKEN", "")


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _profile(env: Mapping[str, str]) -> Profile:
    profile = parse_profile(_text(env, "BROKER_PROFILE") or DEFAULT_PROFILE)
    profile = profile._replace(
        token_url=_text(env, "BROKER_TOKEN_URL") or profile.token_url,
        exchange_url=_text(env, "BROKER_EXCHANGE_URL") or profile.exchange_url,
    )
    for name in URL_KEYS:
        url = getattr(profile, name)
        if url:
            check_url(url, name)
    return profile


def _public_url(env: Mapping[str, str]) -> str:
    url = _text(env, "BROKER_PUBLIC_URL").rstrip("/")
    if url:
        check_url(url, "BROKER_PUBLIC_URL")
        if any(char in url for char in "?#@\\"):
            raise ConfigError("BROKER_PUBLIC_URL is the issuer: no query, fragment, userinfo or backslash")
    return url


def _origins(env: Mapping[str, str]) -> frozenset[str]:
    raw = env.get("BROKER_ALLOWED_ORIGINS", "").split(",")
    origins = frozenset(origin.strip().rstrip("/") for origin in raw if origin.strip())
    if "*" in origins or "null" in origins:
        raise ConfigError("BROKER_ALLOWED_ORIGINS lists exact origins; '*' and 'null' are not allowed")
    return origins


def _first_origin(env: Mapping[str, str]) -> str:
    return next((o.strip().rstrip("/") for o in env.get("BROKER_ALLOWED_ORIGINS", "").split(",") if o.strip()), "")


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.strip() for item in env.get(name, "").split(",") if item.strip()))


def _flows(env: Mapping[str, str]) -> frozenset[str]:
    flows = frozenset(_names(env, "BROKER_LOGIN_FLOWS") or (DEFAULT_LOGIN_FLOWS,))
    if flows - set(LOGIN_FLOWS):
        raise ConfigError(f"BROKER_LOGIN_FLOWS lists some of: {', '.join(LOGIN_FLOWS)}")
    return flows


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = _text(env, name).lower() or allowed[0]
    if value not in allowed:
        raise ConfigError(f"{name} must be one of: {', '.join(allowed)}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float = 86400.0) -> float:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds") from exc
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _text(env, name) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a TCP port")
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = _text(env, name).lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ConfigError(f"{name} must be true or false")
