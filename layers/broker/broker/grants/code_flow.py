"""What the code flow's routes share: the profile check, the scope, the redirect URI and the failure redirect.

The flow (RFC 6749 §4.1 with PKCE, RFC 7636, and OpenID Connect when the profile names an
issuer) is stateless across instances: ``/auth/authorize`` seals state, nonce, the PKCE
verifier and ``return_to`` in a short-lived login cookie, and ``/auth/callback`` opens it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.errors import BrokerError, ConfigError
from broker.navigation import with_params

if TYPE_CHECKING:
    from broker.grants.base import Reply
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile

# RFC 6749 §4.1.2.1: the codes an authorization error response may carry back to the SPA.
AUTHORIZATION_ERRORS = frozenset(
    {"invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type", "invalid_scope",
     "server_error", "temporarily_unavailable"}
)  # fmt: skip


def check_code_profile(profile: Profile) -> None:
    """At cold start: an issuer (discovery), or the explicit URLs the flow needs."""
    if profile.jwks_url and not profile.issuer:
        raise ConfigError("the code flow with a jwks_url needs the issuer too (the ID token's iss is checked)")
    if not profile.issuer and not (profile.authorization_url and profile.token_url):
        raise ConfigError("the code flow needs the profile's issuer, or authorization_url and token_url")


def scope_for(profile: Profile) -> str:
    """The profile's default_scope, with ``openid`` for an OpenID Connect upstream."""
    items = (profile.default_scope or "").split()
    if profile.oidc and "openid" not in items:
        items.insert(0, "openid")
    return " ".join(items)


def redirect_uri(broker: TokenBroker, request: Request) -> str:
    """``BROKER_REDIRECT_URI``, or this API's own /auth/callback (next to the route called)."""
    if broker.config.redirect_uri:
        return broker.config.redirect_uri
    if not request.url:
        raise BrokerError("The callback URL is unknown: set BROKER_REDIRECT_URI.")
    return request.url.rsplit("/", 1)[0] + "/callback"


def failure(return_to: str, error: str, cookies: tuple[str, ...] = ()) -> Reply:
    """Back to the SPA with ``?error=<code>`` and nothing set but ``cookies`` (the cleared login cookie)."""
    from broker.grants.base import Reply  # noqa: PLC0415 - base imports nothing of the code flow

    code = error if error in AUTHORIZATION_ERRORS or error == "invalid_grant" else "server_error"
    return Reply(302, {}, cookies, with_params(return_to, {"error": code}))
