"""GET /auth/callback: the code exchanged, the ID token validated, the session sealed in the refresh cookie.

Every failure sends the browser back to ``return_to`` (or the first allowed origin) with
``?error=<code>`` and sets nothing but the cleared login cookie.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from broker import schemas
from broker.config import ID_TOKEN_LEEWAY, JWKS_REFETCH_INTERVAL
from broker.cookies import LOGIN_COOKIE_NAME, clear_login_cookie, read_cookie
from broker.errors import BrokerError, CallerRejected, InvalidRequest, SchemaViolation, UpstreamFailure
from broker.grants.base import Grant, Reply, Tokens
from broker.grants.code_flow import AUTHORIZATION_ERRORS, check_code_profile, failure, redirect_uri
from broker.id_token import IdTokenRejected, key_set, validate
from broker.navigation import parse_query
from broker.observability import logger
from broker.oidc_discovery import Endpoints, endpoints

if TYPE_CHECKING:
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile

_MAX_CLAIM_CHARS = 512  # the claims ride in the refresh cookie: keep it well under 4 KiB


class CallbackGrant(Grant):
    """The upstream's redirect back: state checked, code exchanged (PKCE), ID token validated."""

    name = "callback"
    grant_type = "authorization_code"
    schema = schemas.CALLBACK
    forwarded = ("code", "redirect_uri", "code_verifier")
    sensitive_params = ("code", "code_verifier")
    methods = ("GET",)
    flow = "code"
    uses_refresh_cookie = True

    def check_profile(self, profile: Profile) -> None:
        check_code_profile(profile)

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        return tuple(sorted({"client_id", *super().secret_keys(profile)}))

    def read_params(self, request: Request) -> dict[str, str]:
        return {}  # read in serve, where a malformed query is a redirect like any other failure

    def serve(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> Reply:
        cleared = (clear_login_cookie(),)
        login = self.login(broker, request)
        return_to = str(login["return_to"]) if login else broker.config.first_origin
        try:
            cookie = self.finish(broker, request, login)
        except BrokerError as exc:
            logger.warning("Sign-in failed", extra={"error": exc.error, "status": exc.status})
            return failure(return_to, exc.error, cleared)
        except IdTokenRejected as exc:
            logger.warning("Sign-in failed: the ID token does not validate", extra={"reason": exc.reason})
            return failure(return_to, "access_denied", cleared)
        return Reply(302, {}, (cookie, *cleared), return_to)

    def login(self, broker: TokenBroker, request: Request) -> dict[str, Any] | None:
        """The login cookie's contents; None when it is missing, expired or forged."""
        value = read_cookie(request.headers, list(request.cookie_headers), LOGIN_COOKIE_NAME)
        try:
            login = broker.jar().open_login(value) if value else None
        except BrokerError:
            return None
        keys = ("state", "nonce", "verifier", "return_to")
        return login if login and all(isinstance(login.get(k), str) for k in keys) else None

    def finish(self, broker: TokenBroker, request: Request, login: dict[str, Any] | None) -> str:
        """The new refresh cookie; a ``BrokerError`` or ``IdTokenRejected`` for any failure."""
        query = parse_query(request)
        try:
            self.validate(query)
        except SchemaViolation as exc:
            raise InvalidRequest("The callback's parameters are malformed.") from exc
        if "error" in query:
            code = query["error"] if query["error"] in AUTHORIZATION_ERRORS else "access_denied"
            raise CallerRejected(code, "The authorization server did not grant the sign-in.")
        if login is None:
            raise InvalidRequest("The login cookie is missing or expired; start the sign-in again.")
        if not hmac.compare_digest(query.get("state", "").encode(), login["state"].encode()) or "code" not in query:
            raise InvalidRequest("The callback's state does not match this browser's sign-in.")
        profile = broker.config.profile
        found = endpoints(profile, broker.config.upstream_timeout)
        params = {
            "code": query["code"],
            "redirect_uri": redirect_uri(broker, request),
            "code_verifier": login["verifier"],
        }
        tokens = broker.call(self, params, profile._replace(token_url=found.token_url))
        claims = self.claims(broker, tokens, login["nonce"], found) if profile.oidc else {}
        if "refresh_token" not in tokens:
            raise UpstreamFailure("The upstream issued no refresh token: the session cannot be kept.")
        return broker.refresh_cookie(tokens["refresh_token"], claims)

    def claims(self, broker: TokenBroker, tokens: Tokens, nonce: str, found: Endpoints) -> dict[str, Any]:
        """The ID token validated; the configured session claims from it (scalars, capped)."""
        if "id_token" not in tokens:
            raise IdTokenRejected("missing")
        config = broker.config
        keys = key_set(str(found.jwks_url), JWKS_REFETCH_INTERVAL)
        claims = validate(
            tokens["id_token"],
            keys,
            issuer=str(config.profile.issuer),
            client_id=broker.secrets.get().values["client_id"],
            nonce=nonce,
            leeway=ID_TOKEN_LEEWAY,
            timeout=config.upstream_timeout,
        )
        kept = {name: claims[name] for name in config.session_claims if isinstance(claims.get(name), str | int | bool)}
        return {k: v[:_MAX_CLAIM_CHARS] if isinstance(v, str) else v for k, v in kept.items()}
