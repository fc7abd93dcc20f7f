"""GET /auth/authorize: the start of the authorization code flow (RFC 6749 §4.1, PKCE S256, OIDC)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING

from broker import schemas
from broker.config import LOGIN_COOKIE_MAX_AGE
from broker.errors import BrokerError
from broker.grants.base import Grant, Reply
from broker.grants.code_flow import check_code_profile, failure, redirect_uri, scope_for
from broker.navigation import checked_return_to, parse_query, with_params
from broker.observability import logger
from broker.oidc_discovery import endpoints

if TYPE_CHECKING:
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(verifier)), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


class AuthorizeGrant(Grant):
    """Checks ``return_to``, seals the login in a cookie, and sends the browser to the upstream."""

    name = "authorize"
    grant_type = "authorization_code"
    schema = schemas.AUTHORIZE
    methods = ("GET",)
    flow = "code"
    endpoint = ""
    uses_refresh_cookie = True  # the login cookie is sealed with broker_keys

    def check_profile(self, profile: Profile) -> None:
        check_code_profile(profile)

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        return ("client_id",)

    def read_params(self, request: Request) -> dict[str, str]:
        return parse_query(request)

    def serve(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> Reply:
        # Before anything else: a return_to elsewhere is 400, never a redirect (an open redirector).
        return_to = checked_return_to(params.get("return_to"), broker.config.allowed_origins)
        profile = broker.config.profile
        try:
            found = endpoints(profile, broker.config.upstream_timeout)
            client_id = broker.secrets.get().values["client_id"]
            callback = redirect_uri(broker, request)
        except BrokerError as exc:
            logger.warning("Sign-in could not start", extra={"error": exc.error, "status": exc.status})
            return failure(return_to, exc.error)
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        query = {"response_type": "code", "client_id": client_id, "redirect_uri": callback, "state": state}
        if scope := scope_for(profile):
            query["scope"] = scope
        if profile.oidc:
            query["nonce"] = nonce
        query.update(code_challenge=s256(verifier), code_challenge_method="S256")
        login = {"state": state, "nonce": nonce, "verifier": verifier, "return_to": return_to}
        cookie = broker.jar().seal_login(login, LOGIN_COOKIE_MAX_AGE)
        return Reply(302, {}, (cookie,), with_params(found.authorization_url, query))
