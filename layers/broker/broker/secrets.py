"""The broker's credentials from Secrets Manager: cached for a TTL, re-read on demand.

Only a secret that parsed and validated is cached; any failure leaves the cache as it was
(empty on a cold start), so the next call after the fix succeeds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from broker.errors import SecretUnavailable
from broker.observability import logger

Fetch = Callable[[str], str]


@dataclass(frozen=True, repr=False)
class BrokerSecret:
    """The parsed secret. ``repr`` names the keys only, so it is safe in a traceback or log."""

    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        return f"BrokerSecret(keys={sorted(self.values)})"

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def sensitive_values(self) -> tuple[str, ...]:
        return tuple(v for v in self.values.values() if v)


def parse_secret(raw: str) -> BrokerSecret:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SecretUnavailable("The broker's secret is not a JSON object.") from exc
    if not isinstance(data, dict):
        raise SecretUnavailable("The broker's secret is not a JSON object.")
    values: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, str):
            values[key] = value
        elif key == "broker_keys" and isinstance(value, list) and all(isinstance(k, str) for k in value):
            values[key] = ",".join(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = str(value)
    return BrokerSecret(MappingProxyType(values))


def boto3_fetch(secret_id: str) -> str:
    """GetSecretValue with the SDK; the client is created on first use and reused."""
    response = _client().get_secret_value(SecretId=secret_id)
    secret = response.get("SecretString")
    if not isinstance(secret, str):
        raise SecretUnavailable("The broker's secret has no SecretString.")
    return secret


_CLIENT: Any = None


def _client() -> Any:
    global _CLIENT
    if _CLIENT is None:
        import boto3  # noqa: PLC0415 - the SDK is loaded once, by the first secret read

        _CLIENT = boto3.client("secretsmanager")
    return _CLIENT


class SecretStore:
    """Caches one secret for ``ttl`` seconds; ``get(force=True)`` re-reads it now."""

    def __init__(
        self,
        secret_id: str,
        ttl: float,
        required: tuple[str, ...],
        fetch: Fetch = boto3_fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret_id = secret_id
        self._ttl = ttl
        self._required = required
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._value: BrokerSecret | None = None
        self._expires = 0.0
        self.reads = 0

    def get(self, *, force: bool = False) -> BrokerSecret:
        with self._lock:
            now = self._clock()
            if not force and self._value is not None and now < self._expires:
                return self._value
            secret = self._read()
            self._value, self._expires = secret, now + self._ttl
            return secret

    def clear(self) -> None:
        with self._lock:
            self._value, self._expires = None, 0.0

    def _read(self) -> BrokerSecret:
        self.reads += 1
        try:
            raw = self._fetch(self._secret_id)
        except SecretUnavailable:
            raise
        except Exception as exc:
            # botocore's ClientError names the error code; it never carries the secret value.
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            logger.error("Secret read failed", extra={"secret_error": code})
            raise SecretUnavailable() from exc
        try:
            secret = parse_secret(raw)
        except SecretUnavailable:
            logger.error("Secret is not a JSON object")
            raise
        missing = [key for key in self._required if not secret.get(key)]
        if missing:
            logger.error("Secret lacks required keys", extra={"missing_keys": missing})
            raise SecretUnavailable("The broker's secret lacks a required key.")
        return secret
