"""Single-flight refresh (``/auth/refresh``) across Lambda instances, in the guards' table.

The first request for a refresh token claims it with a conditional ``PutItem``; its twins
(other tabs, other instances) poll that item and receive the claimant's outcome, tokens or
error, AES-256-GCM sealed (``broker.sealing``) in the item for ``grace`` seconds, bound to
the item's key. A claimant that dies leaves a claim that lapses after ``lease`` seconds.

An outcome is shared only with twins that ask for the same scope; a twin asking for another
gets ``invalid_grant``, as a rotating upstream would answer a spent token. Logout ends the
sharing: it marks the token it revokes as ended, and a twin whose presented token or whose
shared new refresh token is marked gets ``invalid_grant`` instead of the tokens.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from broker import sealing
from broker.errors import BrokerError, CallerRejected, GuardsUnavailable, RefreshInProgress, SharedError
from broker.observability import logger, metrics_count
from broker.state_table import Call, Clock, Conflict, GuardKeys, StateTable, TableFault, item_digest

LEASE_SECONDS = 10.0  # a claim outlives no Lambda invocation (the function timeout)
WAIT_SECONDS = 5.0  # how long a twin polls for the claimant's outcome
TRANSIENT_ERROR_SECONDS = 5.0  # a 5xx outcome is shared only this long: the token may be unspent
_FIRST_POLL, _MAX_POLL = 0.025, 0.4


class SingleFlight:
    """One upstream refresh per refresh token at a time; twins share its outcome."""

    def __init__(self, table: StateTable, *, grace: float, lease: float, wait: float, clock: Clock) -> None:
        self.grace = grace
        self.lease = lease
        self.wait = wait
        self._table = table
        self._clock = clock

    def run(self, refresh_token: str, scope: str, keys: GuardKeys | None, call: Call) -> dict[str, Any]:
        """``call()`` once across instances for this refresh token; twins get the same outcome.

        The claimant's ``BrokerError`` is re-raised for every twin within the grace period
        (a 400 as ``CallerRejected``); a twin that waits ``wait`` seconds in vain gets 503.
        """
        if keys is None or self.grace <= 0:
            return call()
        key = f"refresh#{item_digest(keys, b'refresh', refresh_token)}"
        owner = os.urandom(16).hex()
        try:
            current = self._claim(key, owner)
        except TableFault as exc:
            self._table.degrade("single_flight", exc)
            return call()
        if current is None:
            return self._run_claimed(key, owner, keys, scope, call)
        outcome = self._await(key, keys, current)
        if outcome is None:
            return call()
        return self._replay(keys, refresh_token, scope, outcome)

    def end(self, refresh_token: str, keys: GuardKeys | None) -> None:
        """Logout: no twin may receive tokens through ``refresh_token`` from now on."""
        if keys is None:
            return
        try:
            self._table.call(
                "PutItem",
                Item={
                    "pk": {"S": _ended_key(keys, refresh_token)},
                    "expires_at": {"N": str(math.ceil(self._clock() + self.grace + self.lease))},
                },
            )
        except TableFault as exc:
            self._table.note_fault("single_flight_end", exc)

    def _replay(self, keys: GuardKeys, presented: str, scope: str, outcome: dict[str, Any]) -> dict[str, Any]:
        if outcome.get("scope", "") != scope:
            raise CallerRejected("invalid_grant", "This refresh token was just used with another scope.")
        tokens = replay(outcome)
        issued = tokens.get("refresh_token")
        if self._ended(keys, presented) or (isinstance(issued, str) and self._ended(keys, issued)):
            raise CallerRejected("invalid_grant", "This session has been logged out.")
        return tokens

    def _ended(self, keys: GuardKeys, refresh_token: str) -> bool:
        key = {"pk": {"S": _ended_key(keys, refresh_token)}}
        try:
            item = self._table.call("GetItem", Key=key, ConsistentRead=True)
        except TableFault as exc:
            self._table.note_fault("single_flight_ended", exc)
            # cannot tell: never hand out tokens that may have been logged out
            raise GuardsUnavailable() from exc
        expires = float(item.get("Item", {}).get("expires_at", {}).get("N", "0"))
        return expires > self._clock()

    def _claim(self, key: str, owner: str) -> dict[str, Any] | None:
        """None: this request holds the claim now. Otherwise the live item someone else holds."""
        now = self._clock()
        try:
            self._table.call(
                "PutItem",
                Item={
                    "pk": {"S": key},
                    "owner": {"S": owner},
                    "expires_at": {"N": str(math.ceil(now + self.lease))},
                },
                # DynamoDB's TTL deletes lazily: an item past its own expires_at counts as gone.
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": {"N": str(math.floor(now))}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Conflict as conflict:
            item = conflict.item
            if item is None:  # ALL_OLD not given back (some local emulators): read it
                item = self._table.call("GetItem", Key={"pk": {"S": key}}, ConsistentRead=True).get("Item") or {}
            if item.get("owner", {}).get("S") == owner:
                return None  # the SDK retried our own claim after a timeout: it is ours
            return dict(item)
        return None

    def _await(self, key: str, keys: GuardKeys, current: dict[str, Any]) -> dict[str, Any] | None:
        """A twin: poll until the claimant's outcome is there (None: the table failed, go on unguarded).

        A twin never takes over a lapsed claim after waiting: the upstream call would then
        start too late for the function's timeout. It answers 503 and the client's retry claims.
        """
        deadline = time.monotonic() + self.wait
        pause = _FIRST_POLL
        while True:
            sealed = current.get("outcome", {}).get("B")
            if sealed is not None:
                metrics_count("SingleFlightShares")
                try:
                    return open_outcome(keys, key, sealed)
                except TableFault as exc:  # sealed under a key rotated since, or tampered with
                    self._table.degrade("single_flight_open", exc)
                    return None
            left = deadline - time.monotonic()
            if left <= 0:
                expires = float(current.get("expires_at", {}).get("N", "0"))
                raise RefreshInProgress(retry_after=str(max(1, math.ceil(expires - self._clock()))))
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL)
            try:
                item = self._table.call("GetItem", Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
            except TableFault as exc:
                self._table.degrade("single_flight_poll", exc)
                return None
            if not isinstance(item, dict) or float(item.get("expires_at", {}).get("N", "0")) <= self._clock():
                logger.warning("Refresh claim lapsed without an outcome")
                raise RefreshInProgress(retry_after="1")
            current = item

    def _run_claimed(self, key: str, owner: str, keys: GuardKeys, scope: str, call: Call) -> dict[str, Any]:
        try:
            tokens = call()
        except BrokerError as exc:
            outcome = {"error": [exc.status, exc.error, exc.description, exc.retry_after], "scope": scope}
            self._publish(key, owner, keys, outcome, self._share_error_for(exc.status))
            raise
        except Exception:
            generic = BrokerError()
            outcome = {"error": [generic.status, generic.error, generic.description, None], "scope": scope}
            self._publish(key, owner, keys, outcome, self._share_error_for(generic.status))
            raise
        self._publish(key, owner, keys, {"tokens": tokens, "scope": scope}, self.grace)
        return tokens

    def _share_error_for(self, status: int) -> float:
        # A 400 means the token is spent or invalid: share it. A 5xx may have left it unspent,
        # so the user's own retry a few seconds later should reach the upstream again.
        return self.grace if status < 500 else min(self.grace, TRANSIENT_ERROR_SECONDS)

    def _publish(self, key: str, owner: str, keys: GuardKeys, outcome: dict[str, Any], seconds: float) -> None:
        """Seal the outcome into our claim. Never raises: the upstream call has happened."""
        try:
            self._table.call(
                "PutItem",
                Item={
                    "pk": {"S": key},
                    "owner": {"S": owner},
                    "outcome": {"B": seal_outcome(keys, key, outcome)},
                    "expires_at": {"N": str(math.ceil(self._clock() + seconds))},
                },
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except Conflict:
            logger.warning("Refresh claim lapsed before the outcome was stored")
        except TableFault as exc:
            self._table.note_fault("single_flight_publish", exc)


def _ended_key(keys: GuardKeys, refresh_token: str) -> str:
    return f"ended#{item_digest(keys, b'refresh', refresh_token)}"


def seal_outcome(keys: GuardKeys, key: str, outcome: dict[str, Any]) -> bytes:
    """The outcome as a sealed blob, bound to the item ``key`` it is stored under."""
    plain = json.dumps(outcome, separators=(",", ":")).encode("utf-8")
    return sealing.seal(keys.cipher, plain, key.encode("ascii"))


def open_outcome(keys: GuardKeys, key: str, blob: bytes) -> dict[str, Any]:
    """The outcome ``seal_outcome`` sealed; ``TableFault`` when it does not open."""
    try:
        plain = sealing.unseal(keys.cipher, blob, key.encode("ascii"))
    except sealing.Unsealable as exc:
        raise TableFault("outcome_version" if exc.reason == "version" else "outcome_does_not_open") from exc
    outcome: dict[str, Any] = json.loads(plain)
    return outcome


def replay(outcome: dict[str, Any]) -> dict[str, Any]:
    """The claimant's tokens, or its error raised again (a 400 as ``CallerRejected``)."""
    tokens = outcome.get("tokens")
    if isinstance(tokens, dict):
        return tokens
    status, error, description, retry_after = outcome["error"]
    if status == 400:
        raise CallerRejected(error, description)
    raise SharedError(status, error, description, retry_after)
