"""Guards that hold across Lambda instances, with their state in one DynamoDB table.

The facade the routes use: brute-force limits on login (``broker.lockout``), single-flight
refresh (``broker.singleflight``), over one table whose client, keys and failure policy
(fail open, or closed with 503; a breaker) live in ``broker.state_table``; shared outcomes
are sealed with ``broker.sealing``. botocore and cryptography are imported only when a
``Guards`` is built (guards enabled).
"""

from __future__ import annotations

import time
from typing import Any

from broker import config, sealing
from broker.errors import GuardsUnavailable, RefreshInProgress, SharedError, TooManyAttempts
from broker.lockout import WINDOW_SECONDS, Lockout
from broker.observability import logger
from broker.secrets import BrokerSecret
from broker.singleflight import LEASE_SECONDS, TRANSIENT_ERROR_SECONDS, WAIT_SECONDS, SingleFlight
from broker.state_table import (
    BREAKER_SECONDS,
    TABLE_TIMEOUT,
    Call,
    Clock,
    GuardKeys,
    StateTable,
    count_unavailable,
    dynamodb_client,
)

__all__ = [
    "BREAKER_SECONDS",
    "LEASE_SECONDS",
    "TABLE_TIMEOUT",
    "TRANSIENT_ERROR_SECONDS",
    "WAIT_SECONDS",
    "WINDOW_SECONDS",
    "GuardKeys",
    "Guards",
    "GuardsUnavailable",
    "RefreshInProgress",
    "SharedError",
    "TooManyAttempts",
    "dynamodb_client",
]


class Guards:
    """Brute-force limits and single-flight refresh over one DynamoDB table (``pk`` S, TTL ``expires_at``)."""

    def __init__(
        self,
        table_name: str,
        *,
        max_failures: int = config.LOGIN_MAX_FAILURES,
        max_failures_per_ip: int = config.LOGIN_MAX_FAILURES_PER_IP,
        grace: float = config.REFRESH_GRACE,
        fail_closed: bool = False,
        client: Any | None = None,
        clock: Clock = time.time,
        lease: float = LEASE_SECONDS,
        wait: float = WAIT_SECONDS,
        preload_cipher: bool = False,
    ) -> None:
        self.fail_closed = fail_closed
        # Created now, in the init phase (full CPU, before the first request's clock starts).
        client = client if client is not None else dynamodb_client()
        table = StateTable(table_name, client, fail_closed=fail_closed, clock=clock)
        self._lockout = Lockout(table, max_failures=max_failures, max_failures_per_ip=max_failures_per_ip, clock=clock)
        self._single_flight = SingleFlight(table, grace=grace, lease=lease, wait=wait, clock=clock)
        self._keys: tuple[BrokerSecret, GuardKeys] | None = None
        # Every guarded request derives keys; only the refresh route seals (preload_cipher).
        sealing.preload(cipher=preload_cipher)

    def keys_for(self, secret: BrokerSecret) -> GuardKeys | None:
        """The keys for this secret (cached while the secret is); None: go on unguarded."""
        cached = self._keys
        if cached is not None and cached[0] is secret:
            return cached[1]
        try:
            keys = GuardKeys.from_secret(secret)
        except GuardsUnavailable as exc:
            logger.error("Guards have no key", extra={"guards_error": exc.description})
            count_unavailable()
            if self.fail_closed:
                raise GuardsUnavailable() from exc  # the caller is told no more than "unavailable"
            return None
        self._keys = (secret, keys)
        return keys

    def login(self, username: str, source_ip: str, keys: GuardKeys | None, call: Call) -> dict[str, Any]:
        """``call()`` (the upstream password grant) unless a counter is full; counts the outcome."""
        return self._lockout.login(username, source_ip, keys, call)

    def single_flight(
        self, refresh_token: str, keys: GuardKeys | None, call: Call, *, scope: str = ""
    ) -> dict[str, Any]:
        """``call()`` once across instances for this refresh token; twins with the same scope share its outcome."""
        return self._single_flight.run(refresh_token, scope, keys, call)

    def end_refresh(self, refresh_token: str, keys: GuardKeys | None) -> None:
        """Logout: the shared outcomes of ``refresh_token`` (and of the token that produced it) end now."""
        self._single_flight.end(refresh_token, keys)
