"""Brute-force limits on ``/auth/login``, held across Lambda instances in the guards' table.

Each attempt first *reserves* a place in two counters, the username's and the source IP's,
for the current 15-minute window: one conditional ``UpdateItem ADD`` each of a random
attempt id to a string set (``size(attempts) < limit``). The reservation is what makes the
limit hold under concurrency: fifty parallel guesses cannot all pass a read-then-write check
before the first failure is written. A set, not a number, so that every write is idempotent:
botocore retrying a write whose answer was lost cannot count one attempt twice. An upstream
``invalid_grant`` keeps the reservation (it is the failure count); a success removes the
failures made with that exact spelling of the username (and gives the IP's place back); any
other outcome (upstream down, bad scope...) gives both places back. A full counter answers
429 with a ``Retry-After`` of the seconds left in the window, and the upstream is never called.

Whose failures count together: the username counter is keyed by the name folded as a lenient
user store might match it (case, width, accents and other marks, default-ignorable characters,
whitespace), so spellings of one account share one budget. Each attempt id starts with a keyed
tag of the exact spelling, so a success clears only failures made with that spelling: logging
in to "Demo" never clears the guesses made at "demo".

A throttled table is an attack signal on a login counter, not an outage: that login is refused.
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
THROTTLED = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
THROTTLED_RETRY_SECONDS = "5"
# Hangul fillers: letters by category, but invisible and default-ignorable.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


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
        user_key = f"login#user#{window}#{item_digest(keys, b'user', folded_username(username))}"
        ip = normal_ip(source_ip)
        ip_key = f"login#ip#{window}#{item_digest(keys, b'ip', ip)}" if ip else None
        attempt = LoginAttempt(user_key, ip_key, f"{spelling_tag(keys, username)}.{_random_id()}")
        try:
            if not self._reserve(user_key, attempt.id, self.max_failures, window_end):
                raise self._too_many("username", window_end, now)
            ip_full = ip_key is not None and not self._reserve(ip_key, attempt.id, self.max_failures_per_ip, window_end)
        except TableFault as exc:
            if exc.code in THROTTLED:
                self._table.note_fault("check_login", exc)
                logger.warning("Login refused: the lockout counter is throttled")
                raise TooManyAttempts(retry_after=THROTTLED_RETRY_SECONDS) from exc
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
        """Clear the failures made with this exact spelling; give the IP's place back (the IP counts failures only)."""
        if attempt is None:
            return
        try:
            self._clear_spelling(attempt)
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

    def _clear_spelling(self, attempt: LoginAttempt) -> None:
        """Remove this attempt and every earlier one made with the same exact spelling."""
        item = self._table.call("GetItem", Key={"pk": {"S": attempt.user_key}}, ConsistentRead=True).get("Item") or {}
        tag = attempt.id.partition(".")[0] + "."
        ours = {member for member in item.get("attempts", {}).get("SS", []) if member.startswith(tag)}
        for attempt_id in ours | {attempt.id}:
            self._release(attempt.user_key, attempt_id)
        with contextlib.suppress(Conflict):  # an empty counter goes; one with others' failures stays
            self._table.call(
                "DeleteItem", Key={"pk": {"S": attempt.user_key}}, ConditionExpression="attribute_not_exists(attempts)"
            )

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


def folded_username(username: str) -> str:
    """The username as the most lenient user store might match it: "Zoë", "zoe", "ＺＯＥ",
    "z\u00adoe" and " zoe " share one counter, so none buys extra guesses."""
    decomposed = unicodedata.normalize("NFKD", username)
    kept = "".join(char for char in decomposed if not _ignorable(char))
    return unicodedata.normalize("NFKC", kept.casefold())


def _ignorable(char: str) -> bool:
    # marks (accents), format and control characters (soft hyphen, zero-width), whitespace
    category = unicodedata.category(char)
    return category[0] == "M" or category in ("Cf", "Cc") or char.isspace() or char in _FILLERS


def spelling_tag(keys: GuardKeys, username: str) -> str:
    """A keyed tag of the exact spelling (never the name itself: the table holds no username)."""
    return item_digest(keys, b"spelling", username)[:16]


def _random_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")


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
