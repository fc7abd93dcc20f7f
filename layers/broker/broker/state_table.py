"""The guards' DynamoDB table: its client, the keys its items are written under, and how it fails.

The table holds no username, IP, password or token in the clear: item keys are HMAC-SHA256
digests and outcomes are sealed (``broker.sealing``). Both keys are derived (HKDF-SHA256,
RFC 5869) from the newest of the secret's ``broker_keys``; a secret without ``broker_keys``
falls back to its ``client_secret`` (the upstream knows that one too, so prefer
``broker_keys``). Rotating the newest key starts every counter afresh and orphans the (30 s)
shared outcomes.

The table unreachable or failing: log an error, count ``GuardsUnavailable``, and go on
unguarded; or, with ``fail_closed``, answer 503. After a timeout or connection failure the
table is left alone for ``BREAKER_SECONDS``, so a dead table costs one short wait, not one per
call. botocore is imported only when a client is made.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker import sealing
from broker.errors import GuardsUnavailable, SecretUnavailable
from broker.observability import logger, metrics_count
from broker.secrets import BrokerSecret, botocore_session, decode_broker_keys

BREAKER_SECONDS = 10.0  # after the table did not answer, skip it this long
TABLE_TIMEOUT = 0.5  # connect and read, per try (DynamoDB answers in milliseconds)

_HKDF_SALT = b"token-broker/guards/v1"
_CONDITION_FAILED = "ConditionalCheckFailedException"
_SNAKE = {"GetItem": "get_item", "PutItem": "put_item", "UpdateItem": "update_item", "DeleteItem": "delete_item"}

Call = Callable[[], dict[str, Any]]  # the guarded upstream call
Clock = Callable[[], float]


class TableFault(Exception):
    """The table failed (or the breaker is open); ``code`` names why, never a value."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Conflict(Exception):
    """A condition failed; ``item`` is the item as it stands, when DynamoDB gave it back."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


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
        return cls(
            mac=sealing.derive_key(root, salt, b"item-key-hmac"),
            cipher=sealing.derive_key(root, salt, b"outcome-aes-gcm"),
        )


def item_digest(keys: GuardKeys, kind: bytes, value: str) -> str:
    """The keyed digest that stands for ``value`` in an item key (``kind`` separates uses)."""
    return hmac.new(keys.mac, kind + b"\x00" + value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


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


class StateTable:
    """One table (``pk`` S, TTL ``expires_at``): its operations, breaker and failure policy."""

    def __init__(self, table_name: str, client: Any, *, fail_closed: bool, clock: Clock) -> None:
        self.table_name = table_name
        self.fail_closed = fail_closed
        self._client = client
        self._clock = clock
        self._down_until = 0.0

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One table operation. ``Conflict`` for a failed condition, ``TableFault`` for the rest."""
        if self._clock() < self._down_until:
            raise TableFault("breaker_open")
        method = getattr(self._client, _SNAKE[operation])
        try:
            response: dict[str, Any] = method(TableName=self.table_name, **params)
        except Exception as exc:
            error = getattr(exc, "response", None)
            code = error.get("Error", {}).get("Code", "") if isinstance(error, dict) else ""
            if code == _CONDITION_FAILED:
                item = error.get("Item") if isinstance(error, dict) else None
                raise Conflict(item if isinstance(item, dict) else None) from exc
            if not code:  # no answer at all (timeout, connection): each try costs time, so pause
                self._down_until = self._clock() + BREAKER_SECONDS
            raise TableFault(code or type(exc).__name__) from exc
        return response

    def degrade(self, operation: str, fault: TableFault) -> None:
        """Before the upstream call: fail open (log, count, go on) or closed (503)."""
        self.note_fault(operation, fault)
        if self.fail_closed:
            raise GuardsUnavailable() from fault

    def note_fault(self, operation: str, fault: TableFault) -> None:
        logger.error(
            "Guards table unavailable; continuing unguarded" if not self.fail_closed else "Guards table unavailable",
            extra={"guards_error": fault.code, "guards_operation": operation},
        )
        count_unavailable()


def count_unavailable() -> None:
    metrics_count("GuardsUnavailable")
