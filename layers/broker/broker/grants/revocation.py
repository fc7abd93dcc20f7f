"""POST /auth/logout: RFC 7009 revocation, and the refresh cookie cleared.

Body mode takes RFC 7009's ``token`` and optional ``token_type_hint`` (forwarded as given), as
every OAuth2 library sends them; ``refresh_token`` is an alias. A public client's
``client_id`` is ignored like any unrecognised parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from broker import schemas
from broker.client_auth import METHODS
from broker.errors import BrokerError, InvalidRequest
from broker.grants.base import Grant, Reply, checked, credentials, guards_for, header_keys
from broker.observability import logger, metrics_count
from broker.upstream import UpstreamRequest, send

if TYPE_CHECKING:
    from broker.config import Config
    from broker.guards import Guards
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile
    from broker.secrets import BrokerSecret


class RevocationGrant(Grant):
    """Revokes at the profile's ``revocation_url`` (when it has one); a failure never blocks the logout."""

    name = "logout"
    grant_type = "refresh_token"  # the hint sent with the refresh cookie's (or refresh_token's) token
    checks_grant_type = False  # RFC 7009 requests have no grant_type
    schema = schemas.LOGOUT
    sensitive_params = ("token", "refresh_token")
    endpoint = ""  # a profile without revocation_url only clears the cookie
    csrf_protected = True
    uses_refresh_cookie = True

    def make_guards(self, config: Config) -> Guards | None:
        return guards_for(config)

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        if not profile.revocation_url:
            return tuple(sorted(header_keys(profile)))
        return super().secret_keys(profile)

    def serve(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> Reply:
        cookies: tuple[str, ...] = ()
        token: str | None
        hint: str | None = self.grant_type
        if broker.config.cookie_mode:
            cookies = (broker.cleared_cookie(),)
            try:
                token = broker.cookie_token(request)
            except BrokerError:
                token = None  # nothing valid to revoke; the cookie is cleared all the same
        else:
            token, hint = self.token_and_hint(params)
        if token is not None:
            if broker.guards is not None:  # no twin may receive this session's tokens from now on
                broker.guards.end_refresh(token, broker.guard_keys(broker.guards))
            self.revoke(broker, token, hint)
        return Reply(200, self.end_session(broker, request), cookies)

    def end_session(self, broker: TokenBroker, request: Request) -> dict[str, str]:
        """The code flow: the upstream's end-session URL for the SPA to navigate to (OIDC RP-initiated
        logout), back to the calling origin afterwards. Never blocks the logout."""
        if "code" not in broker.config.login_flows or request.origin is None:
            return {}
        from broker.navigation import with_params  # noqa: PLC0415 - code flow only
        from broker.oidc_discovery import endpoints  # noqa: PLC0415 - code flow only

        try:
            found = endpoints(broker.config.profile, broker.config.upstream_timeout)
            client_id = broker.secrets.get().values.get("client_id", "")
        except BrokerError as exc:
            logger.error("The upstream's end-session endpoint is unknown", extra={"error": exc.error})
            return {}
        if not found.end_session_url:
            return {}
        params = {"client_id": client_id, "post_logout_redirect_uri": f"{request.origin}/"}
        return {"end_session_url": with_params(found.end_session_url, params)}

    def token_and_hint(self, params: dict[str, str]) -> tuple[str, str | None]:
        """RFC 7009's ``token`` (its hint as given, if any), or the ``refresh_token`` alias."""
        token, alias = params.get("token"), params.get("refresh_token")
        if token is not None and alias is not None and token != alias:
            raise InvalidRequest("Send token or refresh_token, not both.")
        if token is not None:
            return token, params.get("token_type_hint")
        if alias is not None:
            return alias, params.get("token_type_hint", self.grant_type)
        raise InvalidRequest("Missing required parameter: token.")

    def revoke(self, broker: TokenBroker, token: str, hint: str | None) -> None:
        """RFC 7009. A failure is logged (never the token) and counted, and the logout goes on."""
        profile = broker.config.profile
        if not profile.revocation_url:
            logger.info("The profile has no revocation_url; the refresh token was not revoked")
            return
        try:
            request = self.revocation_request(token, hint, broker.secrets.get(), profile)
            answer = send(request, broker.config.upstream_timeout)
        except BrokerError as exc:
            logger.error("Token revocation failed", extra={"error": exc.error, "status": exc.status})
            metrics_count("RevocationFailed")
            return
        if answer.status != 200:
            logger.error("Token revocation refused", extra={"upstream_status": answer.status})
            metrics_count("RevocationFailed")

    def revocation_request(
        self, token: str, hint: str | None, secret: BrokerSecret, profile: Profile
    ) -> UpstreamRequest:
        """RFC 7009 §2.1: the token and its hint, with the client's own credentials, as a form."""
        fields = {"token": token} if hint is None else {"token": token, "token_type_hint": hint}
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        METHODS[profile.client_auth].apply(fields, headers, secret.values)
        body = urlencode(fields).encode("ascii")
        return UpstreamRequest(
            str(profile.revocation_url),
            checked(headers),
            body,
            (*secret.sensitive_values(), token, *credentials(headers)),
        )
