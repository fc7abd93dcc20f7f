"""GET /auth/session: the signed-in user's claims, from the refresh cookie (the code flow)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker import schemas
from broker.errors import BrokerError, InvalidToken
from broker.grants.base import Grant, Reply

if TYPE_CHECKING:
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile


class SessionGrant(Grant):
    """The ID token's ``BROKER_SESSION_CLAIMS`` sealed in the cookie at sign-in; 401 without a valid one."""

    name = "session"
    grant_type = "authorization_code"
    schema = schemas.SESSION
    methods = ("GET",)
    flow = "code"
    endpoint = ""
    csrf_protected = True  # X-CSRF: 1 and an allowed Origin, as refresh and logout
    uses_refresh_cookie = True

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        return ()

    def read_params(self, request: Request) -> dict[str, str]:
        return {}

    def serve(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> Reply:
        try:
            claims = broker.cookie_session(request)[1]
        except BrokerError as exc:
            raise InvalidToken() from exc
        return Reply(200, {"claims": claims})
