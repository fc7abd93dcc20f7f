"""POST /auth/refresh: the refresh token grant (RFC 6749 §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from broker import schemas
from broker.errors import InvalidRequest
from broker.grants.base import Call, Grant, Tokens, guards_for

if TYPE_CHECKING:
    from broker.config import Config
    from broker.guards import GuardKeys, Guards
    from broker.http import Request
    from broker.pipeline import TokenBroker


class RefreshGrant(Grant):
    """The refresh token from the body, or from the cookie in cookie mode; single-flight behind the guards."""

    name = "refresh_token"
    grant_type = "refresh_token"
    schema = schemas.REFRESH
    forwarded = ("refresh_token", "scope")
    sensitive_params = ("refresh_token",)
    csrf_protected = True
    uses_refresh_cookie = True

    def make_guards(self, config: Config) -> Guards | None:
        # the shared outcomes are sealed: load cryptography in the init phase, not on a request
        return guards_for(config, preload_cipher=True)

    def prepare(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> dict[str, str]:
        if broker.config.cookie_mode:
            return {**params, "refresh_token": broker.cookie_token(request)}
        if "refresh_token" not in params:
            raise InvalidRequest("Missing required parameter: refresh_token.")
        return params

    def cookie_claims(self, broker: TokenBroker, request: Request) -> Mapping[str, Any]:
        return broker.cookie_session(request)[1] if broker.config.cookie_mode else {}

    def guarded(
        self, guards: Guards, keys: GuardKeys | None, request: Request, params: Mapping[str, str], call: Call
    ) -> Tokens:
        return guards.single_flight(params["refresh_token"], keys, call, scope=params.get("scope", ""))
