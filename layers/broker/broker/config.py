"""Typed configuration, read from the function's environment once, at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from broker.errors import ConfigError
from broker.profiles import Profile, check_url, parse_profile

MAX_BODY_BYTES = 16 * 1024


class Config(NamedTuple):
    """Immutable and typed. A NamedTuple, not a frozen dataclass: building a frozen dataclass
    execs its generated methods, about 1 ms of every cold start for a class this size;
    a NamedTuple costs a tenth of that (bench/results.md, cold import)."""

    secret_id: str
    profile: Profile
    allowed_origins: frozenset[str]
    secret_ttl: float = 300.0
    upstream_timeout: float = 8.0
    # BFF mode (CONTRACT.md): "body" hands the refresh token to the SPA, "cookie" never does.
    refresh_delivery: str = "body"
    cookie_max_age: int = 30 * 24 * 3600
    # Binds refresh cookies to this deployment (AES-GCM associated data).
    deployment_id: str = ""
    # Guards across instances (CONTRACT.md "Guards"): an empty table name turns them off.
    state_table: str = ""
    login_max_failures: int = 5
    login_max_failures_per_ip: int = 50
    refresh_grace: float = 30.0
    guards_fail_closed: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        secret_id = env.get("BROKER_SECRET_ID", "").strip()
        if not secret_id:
            raise ConfigError("BROKER_SECRET_ID is required")
        profile = parse_profile(env.get("BROKER_PROFILE", "").strip() or "bakrypt-testnet")
        token_url = env.get("BROKER_TOKEN_URL", "").strip() or profile.token_url
        exchange_url = env.get("BROKER_EXCHANGE_URL", "").strip() or profile.exchange_url
        profile = profile._replace(token_url=token_url, exchange_url=exchange_url)
        for name in ("token_url", "exchange_url", "revocation_url"):
            url = getattr(profile, name)
            if url:
                check_url(url, name)
        origins = frozenset(
            o.strip().rstrip("/") for o in env.get("BROKER_ALLOWED_ORIGINS", "").split(",") if o.strip()
        )
        if "*" in origins or "null" in origins:
            raise ConfigError("BROKER_ALLOWED_ORIGINS lists exact origins; '*' and 'null' are not allowed")
        delivery = env.get("BROKER_REFRESH_DELIVERY", "").strip().lower() or "body"
        if delivery not in ("body", "cookie"):
            raise ConfigError("BROKER_REFRESH_DELIVERY must be body or cookie")
        if delivery == "cookie" and not origins:
            raise ConfigError("cookie mode needs BROKER_ALLOWED_ORIGINS (the CSRF defence checks Origin)")
        return cls(
            secret_id=secret_id,
            profile=profile,
            allowed_origins=origins,
            secret_ttl=_number(env, "BROKER_SECRET_TTL", 300.0, minimum=0.0),
            upstream_timeout=_number(env, "BROKER_UPSTREAM_TIMEOUT", 8.0, minimum=0.1, maximum=28.0),
            refresh_delivery=delivery,
            cookie_max_age=int(_number(env, "BROKER_COOKIE_MAX_AGE", 30 * 24 * 3600, minimum=60, maximum=400 * 86400)),
            deployment_id=env.get("BROKER_DEPLOYMENT_ID", "").strip() or secret_id,
            state_table=env.get("BROKER_STATE_TABLE", "").strip(),
            login_max_failures=int(_number(env, "BROKER_LOGIN_MAX_FAILURES", 5, minimum=1, maximum=100)),
            login_max_failures_per_ip=int(
                _number(env, "BROKER_LOGIN_MAX_FAILURES_PER_IP", 50, minimum=1, maximum=1000)
            ),
            refresh_grace=_number(env, "BROKER_REFRESH_GRACE", 30.0, minimum=0.0, maximum=300.0),
            guards_fail_closed=_flag(env, "BROKER_GUARDS_FAIL_CLOSED"),
        )


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float = 86400.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds") from exc
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ConfigError(f"{name} must be true or false")
