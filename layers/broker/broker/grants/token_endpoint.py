"""POST /auth/token: RFC 6749's one token endpoint, for OAuth2 client libraries.

Libraries keep one token endpoint for every grant and for their automatic refresh, so this
route serves the password and refresh grants, chosen by ``grant_type``. It is a dispatcher:
every hook is the chosen grant's own, so a request gets the same answer, guards and cookies
here as on ``/auth/login`` or ``/auth/refresh``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from broker.errors import UnsupportedGrantType
from broker.grants.base import Grant, Reply, guards_for, wrong_grant_type
from broker.grants.password import PasswordGrant
from broker.grants.refresh import RefreshGrant

if TYPE_CHECKING:
    from broker.config import Config
    from broker.guards import Guards
    from broker.http import Request
    from broker.pipeline import TokenBroker
    from broker.profiles import Profile


class TokenEndpointGrant(Grant):
    """Dispatches on ``grant_type`` to the grants it serves; anything else is ``unsupported_grant_type``."""

    name = "token"
    grant_type = ""  # none of its own: each request's is the chosen grant's
    schema = MappingProxyType({})  # each grant validates with its own
    uses_refresh_cookie = True

    def __init__(self, grants: tuple[Grant, ...] | None = None) -> None:
        super().__init__()
        served = grants if grants is not None else (PasswordGrant(), RefreshGrant())
        self.grants = {grant.grant_type: grant for grant in served}

    def __repr__(self) -> str:
        return f"TokenEndpointGrant({', '.join(self.grants)})"

    def grant_for(self, params: Mapping[str, str]) -> Grant:
        sent = params.get("grant_type")
        grant = self.grants.get(sent or "")
        if grant is None:
            served = " or ".join(repr(name) for name in self.grants)
            otherwise = f"grant_type must be {served} on this route."
            raise UnsupportedGrantType(otherwise if sent is None else wrong_grant_type(sent, otherwise))
        return grant

    # -- set-up: what every served grant needs ------------------------------------------------

    def check_profile(self, profile: Profile) -> None:
        for grant in self.grants.values():
            grant.check_profile(profile)

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        return tuple(sorted({key for grant in self.grants.values() for key in grant.secret_keys(profile)}))

    def make_guards(self, config: Config) -> Guards | None:
        # One Guards object (one table client) serves both grants' guards: the refresh grant's,
        # which seals shared outcomes and so loads cryptography in the init phase.
        return guards_for(config, preload_cipher=True)

    @property
    def validate(self) -> Callable[[Any], Any]:
        for grant in self.grants.values():
            grant.validate  # noqa: B018 - load each grant's compiled schema in the init phase
        return self._dispatch_validate

    def _dispatch_validate(self, params: Mapping[str, str]) -> Any:
        return self.grant_for(params).validate(params)

    # -- per request: the chosen grant's hooks ------------------------------------------------

    def check(self, params: dict[str, str]) -> dict[str, str]:
        return self.grant_for(params).check(params)

    def serve(self, broker: TokenBroker, request: Request, params: dict[str, str]) -> Reply:
        grant = self.grant_for(params)
        if grant.flow is not None and grant.flow not in broker.config.login_flows:
            # BROKER_LOGIN_FLOWS turned the password grant off (RFC 10017): not here either
            raise UnsupportedGrantType(f"grant_type {grant.grant_type!r} is turned off in this deployment.")
        if broker.config.cookie_mode and grant.csrf_protected:
            from broker.pipeline import check_csrf  # noqa: PLC0415 - the pipeline imports the grants' types

            check_csrf(request)  # known only now: the pipeline checks it before parsing
        return grant.serve(broker, request, params)
