"""Django settings for the local upstream, built in code from the command line."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):  # type: ignore[misc]  # Django is untyped
    """PBKDF2 with a token work factor.

    Django's default (1.5M rounds) costs ~1 s per grant here: one hash for the client
    secret, one for the user's password. This server only holds demo credentials.
    """

    iterations = 1000


def build(
    *,
    db_path: Path,
    host: str,
    access_token_expire_seconds: int,
    allowed_hosts: Sequence[str] = (),
    oidc: bool = False,
) -> dict[str, Any]:
    """Return the keyword arguments for ``django.conf.settings.configure``."""
    settings = _base(db_path, host, access_token_expire_seconds, allowed_hosts)
    return with_oidc(settings) if oidc else settings


def with_oidc(settings: dict[str, Any]) -> dict[str, Any]:
    """OpenID Connect on: an RS256 key made at start, discovery and JWKS (DOT's own views), PKCE
    required, a login page (Django's, with sessions), RP-initiated logout."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    provider = settings["OAUTH2_PROVIDER"]
    return {
        **settings,
        "INSTALLED_APPS": [*settings["INSTALLED_APPS"], "django.contrib.sessions"],
        "MIDDLEWARE": [
            *settings["MIDDLEWARE"],
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        "MIGRATION_MODULES": {**settings["MIGRATION_MODULES"], "sessions": None},
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "OPTIONS": {"loaders": [("django.template.loaders.locmem.Loader", TEMPLATES)]},
            }
        ],
        "LOGIN_URL": "/accounts/login/",
        "OAUTH2_PROVIDER": {
            **provider,
            "OIDC_ENABLED": True,
            "OIDC_RSA_PRIVATE_KEY": pem.decode(),
            "PKCE_REQUIRED": True,
            "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
            "SCOPES": {**provider["SCOPES"], "openid": "OpenID Connect", "profile": "Profile", "email": "Email"},
            "OAUTH2_VALIDATOR_CLASS": "local.upstream.oidc.ClaimsValidator",
        },
    }


# The login page (Django's LoginView) and the logout confirmation (DOT's RP-initiated logout).
TEMPLATES = {
    "registration/login.html": (
        "<!doctype html><title>Local upstream: sign in</title><h1>Sign in to the local upstream</h1>"
        '<form method="post">{% csrf_token %}{{ form.as_p }}'
        '<input type="hidden" name="next" value="{{ next }}"><button id="sign-in">Sign in</button></form>'
    ),
    "oauth2_provider/logout_confirm.html": (
        "<!doctype html><title>Local upstream: sign out</title><h1>Sign out of the local upstream?</h1>"
        '<form method="post">{% csrf_token %}{{ form.as_p }}<button name="allow" value="1" id="sign-out">'
        "Sign out</button></form>"
    ),
}


def _base(
    db_path: Path, host: str, access_token_expire_seconds: int, allowed_hosts: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "DEBUG": False,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": sorted({"127.0.0.1", "localhost", "[::1]", host, *allowed_hosts}),
        "ROOT_URLCONF": "local.upstream.urls",
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "oauth2_provider",
        ],
        # No CsrfViewMiddleware: every view here is an API called with client credentials.
        "MIDDLEWARE": [
            "local.upstream.views.stats_middleware",
            "django.middleware.security.SecurityMiddleware",
        ],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(db_path),
                "OPTIONS": {
                    # IMMEDIATE: concurrent refreshes queue on the write lock instead of
                    # failing with "database is locked" when a read lock cannot upgrade.
                    "transaction_mode": "IMMEDIATE",
                    "timeout": 20,
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;",
                },
            }
        },
        # Tables straight from the models (``migrate --run-syncdb``) rather than replaying
        # ~40 migrations: start-up drops from ~1.4 s to ~0.1 s on a fresh database.
        "MIGRATION_MODULES": {"contenttypes": None, "auth": None, "oauth2_provider": None},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "PASSWORD_HASHERS": ["local.upstream.settings.FastPBKDF2PasswordHasher"],
        "OAUTH2_PROVIDER": {
            "ACCESS_TOKEN_EXPIRE_SECONDS": access_token_expire_seconds,
            "ROTATE_REFRESH_TOKEN": True,
            # No grace period: an old refresh token fails as soon as it has been used.
            "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
            "REFRESH_TOKEN_REUSE_PROTECTION": False,
            "SCOPES": {"read": "Read access", "introspection": "Token introspection"},
            "DEFAULT_SCOPES": ["read"],
            # Reject access tokens in query strings. (Not COMPLIANT_BCP_RFC9700_TOKEN_STORAGE:
            # DOT 3.4.1 then answers concurrent refreshes of one token with a 500.)
            "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
        },
        # Quiet: the server's own access log (method, path, status) is enough; nothing
        # here may ever log a password, secret or token.
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["stderr"], "level": "ERROR"},
            "loggers": {
                "django": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
            },
        },
    }
