"""The broker's credentials from Secrets Manager: cached for a TTL, re-read on demand.

Only a secret that parsed and validated is cached; any failure leaves the cache as it was
(empty on a cold start), so the next call after the fix succeeds. The secret is read either
with the SDK (``BROKER_SECRETS_BACKEND=sdk``, the default) or from the AWS Parameters and
Secrets Lambda Extension (``extension``), which keeps the SDK out of the function entirely.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from broker.config import session_token
from broker.errors import SecretUnavailable
from broker.observability import logger
from broker.snapstart import after_restore

if TYPE_CHECKING:
    from broker.config import Config

Fetch = Callable[[str], str]


class BrokerSecret(NamedTuple):
    """The parsed secret. ``repr`` names the keys only, so it is safe in a traceback or log.

    Immutable; a NamedTuple rather than a frozen dataclass for the cold start (see Config)."""

    values: Mapping[str, str] = MappingProxyType({})

    def __repr__(self) -> str:
        return f"BrokerSecret(keys={sorted(self.values)})"

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def sensitive_values(self) -> tuple[str, ...]:
        return tuple(filter(None, self.values.values()))


def decode_broker_keys(joined: str) -> tuple[bytes, ...]:
    """``broker_keys`` as ``parse_secret`` flattens it (base64url 32-byte keys joined by commas),
    newest first; empty when there are none."""
    keys = []
    for text in (part.strip() for part in joined.split(",")):
        if not text:
            continue
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise SecretUnavailable("The broker's secret holds a malformed broker_keys entry.") from exc
        if len(key) != 32:
            raise SecretUnavailable("Each broker_keys entry must be 32 bytes (base64url).")
        keys.append(key)
    return tuple(keys)


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


def fetcher_for(config: Config) -> Fetch:
    """The secret reader ``BROKER_SECRETS_BACKEND`` names, made ready at cold start.

    ``sdk``: GetSecretValue through botocore (the client is created now, in the init phase,
    which Lambda runs at full CPU and SnapStart snapshots). ``extension``: the AWS Parameters
    and Secrets Lambda Extension on localhost, read with urllib3, so the SDK is never imported.
    """
    if config.secrets_backend == "extension":
        return ExtensionFetch(config.extension_port)
    _client()
    return sdk_fetch


def sdk_fetch(secret_id: str) -> str:
    """GetSecretValue with the SDK's one client."""
    response = _client().get_secret_value(SecretId=secret_id)
    secret = response.get("SecretString")
    if not isinstance(secret, str):
        raise SecretUnavailable("The broker's secret has no SecretString.")
    return secret


_CLIENT: Any = None
_SESSION: Any = None


def botocore_session() -> Any:
    """The one botocore session of the execution environment, shared by every client.

    A client made on a fresh session loads the SDK's endpoint and default-configuration data
    again: the guards' DynamoDB client costs ~72 ms of cold start on its own session and ~14 ms
    on the one the Secrets Manager client already set up (bench/results.md, guards on).
    """
    global _SESSION
    if _SESSION is None:
        import botocore.session  # noqa: PLC0415 - only when a client is needed

        _SESSION = botocore.session.get_session()
    return _SESSION


def _client() -> Any:
    """The one Secrets Manager client, created through botocore, boto3's own core.

    ``import boto3`` also imports s3transfer (through boto3.compat), which a Secrets Manager
    client never uses; botocore makes the same client (same credential chain, region and
    AWS_ENDPOINT_URL_SECRETS_MANAGER) without it. The cost is measured in bench/results.md.
    """
    global _CLIENT
    if _CLIENT is None:  # only the sdk backend loads the SDK
        _CLIENT = botocore_session().create_client("secretsmanager")
    return _CLIENT


class ExtensionError(Exception):
    """The extension answered something other than a secret (the status is logged, never the body)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = {"Error": {"Code": f"extension HTTP {status}"}}


class ExtensionFetch:
    """``GET /secretsmanager/get?secretId=…`` on the AWS Parameters and Secrets Lambda Extension.

    The extension caches the secret itself (SECRETS_MANAGER_TTL, 300 s by default), so a
    forced re-read after a rejected client secret sees a rotation only once that cache expires.
    https://docs.aws.amazon.com/secretsmanager/latest/userguide/retrieving-secrets_lambda.html
    """

    def __init__(self, port: int) -> None:
        import urllib3  # noqa: PLC0415 - already loaded by broker.upstream; no SDK import

        # The extension answers only in the invoke phase: nothing is sent from here.
        self._pool = urllib3.HTTPConnectionPool(
            "localhost", port, maxsize=1, retries=False, timeout=urllib3.Timeout(connect=1.0, read=5.0)
        )

    def __call__(self, secret_id: str) -> str:
        response = self._pool.request(
            "GET",
            "/secretsmanager/get",
            fields={"secretId": secret_id},
            headers={"X-Aws-Parameters-Secrets-Token": session_token()},
        )
        if response.status != 200:
            raise ExtensionError(response.status)
        try:
            secret = json.loads(response.data).get("SecretString")
        except (ValueError, AttributeError) as exc:
            raise SecretUnavailable("The extension's answer is not a GetSecretValue result.") from exc
        if not isinstance(secret, str):
            raise SecretUnavailable("The broker's secret has no SecretString.")
        return secret


class SecretStore:
    """Caches one secret for ``ttl`` seconds; ``get(force=True)`` re-reads it now."""

    def __init__(
        self,
        secret_id: str,
        ttl: float,
        required: tuple[str, ...],
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret_id = secret_id
        self._ttl = ttl
        self._required = required
        self._fetch = fetch or sdk_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._value: BrokerSecret | None = None
        self._expires = 0.0
        # the cache's monotonic-clock expiry means nothing across a SnapStart restore
        after_restore(self.clear)
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
