"""Guards that hold across Lambda instances, with their state in one DynamoDB table.

Brute force (``/auth/login``): each attempt first *reserves* a place in two counters, the
username's and the source IP's, for the current 15-minute window: one conditional
``UpdateItem ADD`` each of a random attempt id to a string set (``size(attempts) < limit``).
The reservation is what makes the limit hold under concurrency: fifty parallel guesses
cannot all pass a read-then-write check before the first failure is written. A set, not a
number, so that every write is idempotent: botocore retrying a write whose answer was lost
cannot count one attempt twice. An upstream ``invalid_grant`` keeps the reservation (it is
the failure count); a success deletes the username's counter and gives the IP's place back;
any other outcome (upstream down, bad scope...) gives both places back. A full counter
answers 429 with a ``Retry-After`` of the seconds left in the window, and the upstream is
never called.

Single-flight refresh (``/auth/refresh``): the first request for a refresh token claims it
with a conditional ``PutItem``; its twins (other tabs, other instances) poll that item and
receive the claimant's outcome, tokens or error, AES-256-GCM sealed in the item for
``grace`` seconds. A claimant that dies leaves a claim that lapses after ``lease`` seconds.

The table holds no username, IP, password or token in the clear: keys are HMAC-SHA256
digests and outcomes are sealed. The HMAC and AES keys are derived (HKDF-SHA256, RFC 5869)
from the newest of the secret's ``broker_keys``; a secret without ``broker_keys`` falls back
to its ``client_secret`` (the upstream knows that one too, so prefer ``broker_keys``).
Rotating the newest key starts every counter afresh and orphans the (30 s) shared outcomes.

The table unreachable or failing: log an error, count ``GuardsUnavailable``, and go on
unguarded; or, with ``fail_closed``, answer 503. After a timeout or connection failure the
table is left alone for ``BREAKER_SECONDS``, so a dead table costs one short wait, not one per
call.

botocore and cryptography are imported only when a ``Guards`` is built (guards enabled).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import math
import os
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.errors import (
    BrokerError,
    CallerRejected,
    GuardsUnavailable,
    RefreshInProgress,
    SecretUnavailable,
    SharedError,
    TooManyAttempts,
)
from broker.observability import logger
from broker.secrets import BrokerSecret, botocore_session, decode_broker_keys

WINDOW_SECONDS = 900  # the brute-force window (fixed windows: the key holds the window number)
LEASE_SECONDS = 10.0  # a claim outlives no Lambda invocation (the function timeout)
WAIT_SECONDS = 5.0  # how long a twin polls for the claimant's outcome
TRANSIENT_ERROR_SECONDS = 5.0  # a 5xx outcome is shared only this long: the token may be unspent
BREAKER_SECONDS = 10.0  # after the table did not answer, skip it this long
TABLE_TIMEOUT = 0.5  # connect and read, per try (DynamoDB answers in milliseconds)
_FIRST_POLL, _MAX_POLL = 0.025, 0.4

_BLOB_VERSION = b"\x01"
_NONCE_BYTES = 12
_HKDF_SALT = b"token-broker/guards/v1"
_CONDITION_FAILED = "ConditionalCheckFailedException"

Call = Callable[[], dict[str, Any]]


class _TableFault(Exception):
    """The table failed (or the breaker is open); ``code`` names why, never a value."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, repr=False)
class GuardKeys:
    """The HMAC key for item keys and the AES-256-GCM key for shared outcomes."""

    mac: bytes
    cipher: bytes

    def __repr__(self) -> str:
        return "GuardKeys(<redacted>)"

    @classmethod
    def from_secret(cls, secret: BrokerSecret) -> GuardKeys:
        """Derive both keys from the newest ``broker_keys`` entry, else from ``client_secret``.

        Raises ``GuardsUnavailable`` when the secret holds neither (or a malformed key).
        """
        try:
            keys = decode_broker_keys(secret.get("broker_keys") or "")
        except SecretUnavailable as exc:
            raise GuardsUnavailable(exc.description) from exc
        if keys:
            root, salt = keys[0], _HKDF_SALT + b"/broker_keys"
        else:
            client_secret = secret.get("client_secret") or ""
            if not client_secret:
                raise GuardsUnavailable("The guards need broker_keys (or client_secret) in the broker's secret.")
            root, salt = client_secret.encode("utf-8"), _HKDF_SALT + b"/client_secret"
        return cls(mac=hkdf_sha256(root, salt, b"item-key-hmac"), cipher=hkdf_sha256(root, salt, b"outcome-aes-gcm"))


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 with a 32-byte output (one expand block), on the stdlib alone."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True)
class LoginAttempt:
    """The counter places one login attempt reserved; hand it back with the outcome."""

    user_key: str
    ip_key: str | None
    id: str


def dynamodb_client(endpoint_url: str | None = None, timeout: float = TABLE_TIMEOUT) -> Any:
    """A low-level DynamoDB client that gives up fast: a dead table must not hang the function.

    Made through botocore, like the Secrets Manager client (``import boto3`` would also load
    s3transfer); it honours ``AWS_ENDPOINT_URL_DYNAMODB`` as boto3 would. Legacy retries keep
    DynamoDB's 50 ms retry base, so a hung table costs at most about 2 x 0.5 s + 50 ms: with
    the upstream's 8 s that stays inside a 10 s function timeout.
    """
    import botocore.config  # noqa: PLC0415 - only when the guards are enabled

    config = botocore.config.Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "legacy", "total_max_attempts": 2},
        max_pool_connections=4,
    )
    return botocore_session().create_client("dynamodb", endpoint_url=endpoint_url, config=config)


class Guards:
    """Brute-force limits and single-flight refresh over one DynamoDB table (``pk`` S, TTL ``expires_at``)."""

    def __init__(
        self,
        table_name: str,
        *,
        max_failures: int = 5,
        max_failures_per_ip: int = 50,
        grace: float = 30.0,
        fail_closed: bool = False,
        client: Any | None = None,
        clock: Callable[[], float] = time.time,
        lease: float = LEASE_SECONDS,
        wait: float = WAIT_SECONDS,
        preload_cipher: bool = False,
    ) -> None:
        self.table_name = table_name
        self.max_failures = max_failures
        self.max_failures_per_ip = max_failures_per_ip
        self.grace = grace
        self.fail_closed = fail_closed
        self.lease = lease
        self.wait = wait
        self._clock = clock
        # Created now, in the init phase (full CPU, before the first request's clock starts).
        self._client = client if client is not None else dynamodb_client()
        self._down_until = 0.0
        self._keys: tuple[BrokerSecret, GuardKeys] | None = None
        if preload_cipher:
            _aesgcm()

    # -- keys -------------------------------------------------------------------------------

    def keys_for(self, secret: BrokerSecret) -> GuardKeys | None:
        """The keys for this secret (cached while the secret is); None: go on unguarded."""
        cached = self._keys
        if cached is not None and cached[0] is secret:
            return cached[1]
        try:
            keys = GuardKeys.from_secret(secret)
        except GuardsUnavailable as exc:
            logger.error("Guards have no key", extra={"guards_error": exc.description})
            _count_unavailable()
            if self.fail_closed:
                raise GuardsUnavailable() from exc  # the caller is told no more than "unavailable"
            return None
        self._keys = (secret, keys)
        return keys

    # -- brute force ------------------------------------------------------------------------

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
        user_key = f"login#user#{window}#{_digest(keys, b'user', _normal_username(username))}"
        ip = _normal_ip(source_ip)
        ip_key = f"login#ip#{window}#{_digest(keys, b'ip', ip)}" if ip else None
        attempt = LoginAttempt(user_key, ip_key, base64.urlsafe_b64encode(os.urandom(9)).decode("ascii"))
        try:
            if not self._reserve(user_key, attempt.id, self.max_failures, window_end):
                raise self._too_many("username", window_end, now)
            ip_full = ip_key is not None and not self._reserve(ip_key, attempt.id, self.max_failures_per_ip, window_end)
        except _TableFault as exc:
            self._degrade("check_login", exc)
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
            self._call("DeleteItem", Key={"pk": {"S": attempt.user_key}})
            if attempt.ip_key is not None:
                self._release(attempt.ip_key, attempt.id)
        except _TableFault as exc:
            self._note_fault("login_succeeded", exc)

    def login_abandoned(self, attempt: LoginAttempt | None) -> None:
        """Neither success nor a wrong password (upstream down, bad scope...): give both places back."""
        if attempt is None:
            return
        try:
            self._release(attempt.user_key, attempt.id)
            if attempt.ip_key is not None:
                self._release(attempt.ip_key, attempt.id)
        except _TableFault as exc:
            self._note_fault("login_abandoned", exc)

    def _reserve(self, key: str, attempt_id: str, limit: int, window_end: int) -> bool:
        try:
            self._call(
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
        except _Conflict:
            return False
        return True

    def _release(self, key: str, attempt_id: str) -> None:
        # The condition keeps UpdateItem from creating an item (without a TTL) a success deleted.
        with contextlib.suppress(_Conflict):
            self._call(
                "UpdateItem",
                Key={"pk": {"S": key}},
                UpdateExpression="DELETE attempts :id",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":id": {"SS": [attempt_id]}},
            )

    def _too_many(self, which: str, window_end: int, now: float) -> TooManyAttempts:
        logger.warning("Login refused: too many failed attempts", extra={"limit": which})
        return TooManyAttempts(retry_after=str(max(1, math.ceil(window_end - now))))

    # -- single-flight refresh --------------------------------------------------------------

    def single_flight(self, refresh_token: str, keys: GuardKeys | None, call: Call) -> dict[str, Any]:
        """``call()`` once across instances for this refresh token; twins get the same outcome.

        The claimant's ``BrokerError`` is re-raised for every twin within the grace period
        (a 400 as ``CallerRejected``); a twin that waits ``wait`` seconds in vain gets 503.
        """
        if keys is None or self.grace <= 0:
            return call()
        key = f"refresh#{_digest(keys, b'refresh', refresh_token)}"
        owner = os.urandom(16).hex()
        try:
            current = self._claim(key, owner)
        except _TableFault as exc:
            self._degrade("single_flight", exc)
            return call()
        if current is None:
            return self._run_claimed(key, owner, keys, call)
        return self._await(key, keys, current, call)

    def _claim(self, key: str, owner: str) -> dict[str, Any] | None:
        """None: this request holds the claim now. Otherwise the live item someone else holds."""
        now = self._clock()
        try:
            self._call(
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
        except _Conflict as conflict:
            item = conflict.item
            if item is None:  # ALL_OLD not given back (some local emulators): read it
                item = self._call("GetItem", Key={"pk": {"S": key}}, ConsistentRead=True).get("Item") or {}
            if item.get("owner", {}).get("S") == owner:
                return None  # the SDK retried our own claim after a timeout: it is ours
            return dict(item)
        return None

    def _await(self, key: str, keys: GuardKeys, current: dict[str, Any], call: Call) -> dict[str, Any]:
        """A twin: poll until the claimant's outcome is there.

        A twin never takes over a lapsed claim after waiting: the upstream call would then
        start too late for the function's timeout. It answers 503 and the client's retry claims.
        """
        deadline = time.monotonic() + self.wait
        pause = _FIRST_POLL
        while True:
            sealed = current.get("outcome", {}).get("B")
            if sealed is not None:
                try:
                    return _replay(_open(keys, key, sealed))
                except _TableFault as exc:  # sealed under a key rotated since, or tampered with
                    self._degrade("single_flight_open", exc)
                    return call()
            left = deadline - time.monotonic()
            if left <= 0:
                expires = float(current.get("expires_at", {}).get("N", "0"))
                raise RefreshInProgress(retry_after=str(max(1, math.ceil(expires - self._clock()))))
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL)
            try:
                item = self._call("GetItem", Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
            except _TableFault as exc:
                self._degrade("single_flight_poll", exc)
                return call()
            if not isinstance(item, dict) or float(item.get("expires_at", {}).get("N", "0")) <= self._clock():
                logger.warning("Refresh claim lapsed without an outcome")
                raise RefreshInProgress(retry_after="1")
            current = item

    def _run_claimed(self, key: str, owner: str, keys: GuardKeys, call: Call) -> dict[str, Any]:
        try:
            tokens = call()
        except BrokerError as exc:
            outcome = {"error": [exc.status, exc.error, exc.description, exc.retry_after]}
            self._publish(key, owner, keys, outcome, self._share_error_for(exc.status))
            raise
        except Exception:
            generic = BrokerError()
            outcome = {"error": [generic.status, generic.error, generic.description, None]}
            self._publish(key, owner, keys, outcome, self._share_error_for(generic.status))
            raise
        self._publish(key, owner, keys, {"tokens": tokens}, self.grace)
        return tokens

    def _share_error_for(self, status: int) -> float:
        # A 400 means the token is spent or invalid: share it. A 5xx may have left it unspent,
        # so the user's own retry a few seconds later should reach the upstream again.
        return self.grace if status < 500 else min(self.grace, TRANSIENT_ERROR_SECONDS)

    def _publish(self, key: str, owner: str, keys: GuardKeys, outcome: dict[str, Any], seconds: float) -> None:
        """Seal the outcome into our claim. Never raises: the upstream call has happened."""
        try:
            self._call(
                "PutItem",
                Item={
                    "pk": {"S": key},
                    "owner": {"S": owner},
                    "outcome": {"B": _seal(keys, key, outcome)},
                    "expires_at": {"N": str(math.ceil(self._clock() + seconds))},
                },
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except _Conflict:
            logger.warning("Refresh claim lapsed before the outcome was stored")
        except _TableFault as exc:
            self._note_fault("single_flight_publish", exc)

    # -- the table --------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One table operation. ``_Conflict`` for a failed condition, ``_TableFault`` for the rest."""
        if self._clock() < self._down_until:
            raise _TableFault("breaker_open")
        method = getattr(self._client, _SNAKE[operation])
        try:
            response: dict[str, Any] = method(TableName=self.table_name, **params)
        except Exception as exc:
            error = getattr(exc, "response", None)
            code = error.get("Error", {}).get("Code", "") if isinstance(error, dict) else ""
            if code == _CONDITION_FAILED:
                item = error.get("Item") if isinstance(error, dict) else None
                raise _Conflict(item if isinstance(item, dict) else None) from exc
            if not code:  # no answer at all (timeout, connection): each try costs time, so pause
                self._down_until = self._clock() + BREAKER_SECONDS
            raise _TableFault(code or type(exc).__name__) from exc
        return response

    def _degrade(self, operation: str, fault: _TableFault) -> None:
        """Before the upstream call: fail open (log, count, go on) or closed (503)."""
        self._note_fault(operation, fault)
        if self.fail_closed:
            raise GuardsUnavailable() from fault

    def _note_fault(self, operation: str, fault: _TableFault) -> None:
        logger.error(
            "Guards table unavailable; continuing unguarded" if not self.fail_closed else "Guards table unavailable",
            extra={"guards_error": fault.code, "guards_operation": operation},
        )
        _count_unavailable()


class _Conflict(Exception):
    """A condition failed; ``item`` is the item as it stands, when DynamoDB gave it back."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


_SNAKE = {"GetItem": "get_item", "PutItem": "put_item", "UpdateItem": "update_item", "DeleteItem": "delete_item"}


def _digest(keys: GuardKeys, kind: bytes, value: str) -> str:
    return hmac.new(keys.mac, kind + b"\x00" + value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _normal_username(username: str) -> str:
    # "Alice", "alice" and "ａｌｉｃｅ" share one counter: case and width variants buy no extra guesses.
    return unicodedata.normalize("NFKC", username).casefold().strip()


def _normal_ip(source_ip: str) -> str:
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


def _aesgcm() -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 - guards enabled only

    return AESGCM


def _seal(keys: GuardKeys, key: str, outcome: dict[str, Any]) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps(outcome, separators=(",", ":")).encode("utf-8")
    sealed: bytes = _aesgcm()(keys.cipher).encrypt(nonce, plain, key.encode("ascii"))
    return _BLOB_VERSION + nonce + sealed


def _open(keys: GuardKeys, key: str, blob: bytes) -> dict[str, Any]:
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - guards enabled only

    if blob[:1] != _BLOB_VERSION:
        raise _TableFault("outcome_version")
    nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        plain = _aesgcm()(keys.cipher).decrypt(nonce, sealed, key.encode("ascii"))
    except InvalidTag as exc:
        raise _TableFault("outcome_does_not_open") from exc
    outcome: dict[str, Any] = json.loads(plain)
    return outcome


def _replay(outcome: dict[str, Any]) -> dict[str, Any]:
    tokens = outcome.get("tokens")
    if isinstance(tokens, dict):
        return tokens
    status, error, description, retry_after = outcome["error"]
    if status == 400:
        raise CallerRejected(error, description)
    raise SharedError(status, error, description, retry_after)


def _count_unavailable() -> None:
    from broker.metrics import metrics_count  # noqa: PLC0415 - failure path only

    metrics_count("GuardsUnavailable")
