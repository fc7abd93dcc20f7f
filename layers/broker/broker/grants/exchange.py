"""POST /auth/exchange: machine-to-machine exchange with the deployment's own exchange token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from broker import schemas
from broker.grants.base import Grant, checked, header_keys, profile_headers
from broker.upstream import UpstreamRequest

if TYPE_CHECKING:
    from broker.profiles import Profile
    from broker.secrets import BrokerSecret


class ExchangeGrant(Grant):
    """``Authorization: <scheme> <exchange_token>`` to the exchange endpoint, no body."""

    name = "exchange"
    grant_type = "exchange"  # fills a profile's {grant_type} header template; never sent as a field
    checks_grant_type = False  # the route takes no body
    schema = schemas.EXCHANGE
    endpoint = "exchange_url"

    def secret_keys(self, profile: Profile) -> tuple[str, ...]:
        return tuple(sorted({"exchange_token"} | header_keys(profile)))

    def upstream_request(self, params: Mapping[str, str], secret: BrokerSecret, profile: Profile) -> UpstreamRequest:
        headers = profile_headers(profile, secret, self.grant_type)
        headers["Authorization"] = f"{profile.exchange_scheme} {secret.values['exchange_token']}"
        return UpstreamRequest(str(profile.exchange_url), checked(headers), None, secret.sensitive_values())
