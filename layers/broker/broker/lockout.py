"""Brute-force limits on ``/auth/login``, held across Lambda instances in the guards' table.

Each attempt first *reserves* a place in two counters, the username's and the source IP's,
for the current 15-minute window: one conditional ``UpdateItem ADD`` each of a random
attempt id to a string set (``size(attempts) < limit``). The reservation is what makes the
limit hold under concurrency: fifty parallel guesses cannot all pass a read-then-write check
before the first failure is written. A set, not a number, so that every write is idempotent:
botocore retrying a write whose answer was lost cannot count one attempt twice. An upstream
``invalid_grant`` keeps the reservation (it is the failure count); a success deletes the
username's counter and gives the IP's place back; any other outcome (upstream down, bad
scope...) gives both places back. A full counter answers 429 with a ``Retry-After`` of the
seconds left in the window, and the upstream is never called.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import math
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

from broker.errors import CallerRejected, TooManyAttempts
from broker.observability import logger, metrics_count
from broker.state_table import Call, Clock, Conflict, GuardKeys, StateTable, TableFault, item_digest

WINDOW_SECONDS = 900  # the brute-force window (fixed windows: the key holds the window number)


@dataclass(frozen=True)
class LoginAttempt:
    """The counter places one login attempt reserved; hand it back with the outcome."""

    user_key: str
    ip_key: str | None
    id: str


class Lockout:
    """The username and source-IP failure counters."""

    def __init__(self, table: StateTable, *, max_failures: int, max_failures_per_ip: int, clock: Clock) -> None:
        self.max_failures = max_failures
        self.max_failures_per_ip = max_failures_per_ip
        self._table = table
        self._clock = clock

    def login(self, username: str, source_ip: str, keys: GuardKeys | None, call: Call) -> dict[str, Any]:
        """``call()`` (the upstream password grant) unless a counter is full; counts the outcome."""
        attempt = self.check_login(username, source_ip, keys)
        try:
            tokens = call()
        except CallerRejected as exc:
            if exc.error == "invalid_grant":
                self.login_failed(attempt)
            else:
                self.login_abandoned(attempt)
            raise
        except Exception:
            self.login_abandoned(attempt)
            raise
        self.login_succeeded(attempt)
        return tokens

    def check_login(self, username: str, source_ip: str, keys: GuardKeys | None) -> LoginAttempt | None:
        """Reserve one attempt for the username and the IP, or raise ``TooManyAttempts`` (429).

        Returns None when the guards are off for this call (no key, or the table failed and
        the guards fail open); ``GuardsUnavailable`` when they fail closed.
        """
        if keys is None:
            return None
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        window_end = (window + 1) * WINDOW_SECONDS
        user_key = f"login#user#{window}#{item_digest(keys, b'user', normal_username(username))}"
        ip = normal_ip(source_ip)
        ip_key = f"login#ip#{window}#{item_digest(keys, b'ip', ip)}" if ip else None
        attempt = LoginAttempt(user_key, ip_key, base64.urlsafe_b64encode(os.urandom(9)).decode("ascii"))
        try:
            if not self._reserve(user_key, attempt.id, self.max_failures, window_end):
                raise self._too_many("username", window_end, now)
            ip_full = ip_key is not None and not self._reserve(ip_key, attempt.id, self.max_failures_per_ip, window_end)
        except TableFault as exc:
            self._table.degrade("check_login", exc)
            return None
        if ip_full:
            self.login_abandoned(LoginAttempt(user_key, None, attempt.id))  # the username's place is unused
            raise self._too_many("source_ip", window_end, now)
        return attempt

    def login_failed(self, attempt: LoginAttempt | None) -> None:
        """The upstream said ``invalid_grant``: the reserved places stay taken (they are the count)."""
        del attempt  # nothing to write: the reservation made in check_login is the failure count

    def login_succeeded(self, attempt: LoginAttempt | None) -> None:
        """Clear the username's counter; give the IP's place back (the IP counts failures only)."""
        if attempt is None:
            return
        try:
            self._table.call("DeleteItem", Key={"pk": {"S": attempt.user_key}})
            if attempt.ip_key is not None:
                self._release(attempt.ip_key, attempt.id)
        except TableFault as exc:
            self._table.note_fault("login_succeeded", exc)

    def login_abandoned(self, attempt: LoginAttempt | None) -> None:
        """Neither success nor a wrong password (upstream down, bad scope...): give both places back."""
        if attempt is None:
            return
        try:
            self._release(attempt.user_key, attempt.id)
            if attempt.ip_key is not None:
                self._release(attempt.ip_key, attempt.id)
        except TableFault as exc:
            self._table.note_fault("login_abandoned", exc)

    def _reserve(self, key: str, attempt_id: str, limit: int, window_end: int) -> bool:
        try:
            self._table.call(
                "UpdateItem",
                Key={"pk": {"S": key}},
                UpdateExpression="ADD attempts :id SET expires_at = :expires",
                # contains(): a retried write finds its own id in a now full set, and succeeds.
                ConditionExpression="attribute_not_exists(attempts) OR size(attempts) < :limit "
                "OR contains(attempts, :same)",
                ExpressionAttributeValues={
                    ":id": {"SS": [attempt_id]},
                    ":same": {"S": attempt_id},
                    ":limit": {"N": str(limit)},
                    ":expires": {"N": str(window_end)},
                },
            )
        except Conflict:
            return False
        return True

    def _release(self, key: str, attempt_id: str) -> None:
        # The condition keeps UpdateItem from creating an item (without a TTL) a success deleted.
        with contextlib.suppress(Conflict):
            self._table.call(
                "UpdateItem",
                Key={"pk": {"S": key}},
                UpdateExpression="DELETE attempts :id",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":id": {"SS": [attempt_id]}},
            )

    def _too_many(self, which: str, window_end: int, now: float) -> TooManyAttempts:
        logger.warning("Login refused: too many failed attempts", extra={"limit": which})
        metrics_count("Lockouts")
        return TooManyAttempts(retry_after=str(max(1, math.ceil(window_end - now))))


def normal_username(username: str) -> str:
    # "Alice", "alice" and "ａｌｉｃｅ" share one counter: case and width variants buy no extra guesses.
    return unicodedata.normalize("NFKC", username).casefold().strip()


def normal_ip(source_ip: str) -> str:
    """IPv4 as is; IPv6 by its /64 (one host holds a whole /64); anything else verbatim."""
    text = source_ip.strip()
    if not text:
        return ""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
