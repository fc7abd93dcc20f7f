"""POST /auth/login: the resource owner password credentials grant (RFC 6749 §4.3)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING

from broker import schemas
from broker.errors import InvalidRequest
from broker.grants.base import Call, Grant, Tokens, guards_for

if TYPE_CHECKING:
    from broker.config import Config
    from broker.guards import GuardKeys, Guards
    from broker.http import Request


class PasswordGrant(Grant):
    """Username and password, behind the brute-force lockout; the refresh token may go in the cookie."""

    name = "password"
    grant_type = "password"
    schema = schemas.PASSWORD
    forwarded = ("username", "password", "scope")
    sensitive_params = ("password",)
    uses_refresh_cookie = True
    uses_default_scope = True
    flow = "password"

    def check(self, params: dict[str, str]) -> dict[str, str]:
        params = super().check(params)
        # No user store has a use for a control character in a name; a folding one may drop it.
        if any(unicodedata.category(char) == "Cc" for char in params["username"]):
            raise InvalidRequest("Parameter 'username' holds a control character.")
        return params

    def make_guards(self, config: Config) -> Guards | None:
        return guards_for(config)

    def guarded(
        self, guards: Guards, keys: GuardKeys | None, request: Request, params: Mapping[str, str], call: Call
    ) -> Tokens:
        return guards.login(params["username"], request.source_ip, keys, call)
