"""ID token validation (OpenID Connect Core §3.1.3.7) with PyJWT: no hand-written JOSE.

Only asymmetric algorithms, each bound to a key of the upstream's JWKS: ``none`` and every
HMAC are refused before a key is looked at (an HMAC "signed" with the client secret, or with
a public key read as a shared secret, proves nothing). ``iss``, ``aud`` (contains the
client_id), ``azp`` where present (required with several audiences), ``exp``, ``iat`` and
``nonce`` are checked. Imported by the callback function only: no other route loads PyJWT.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt

from broker.oidc_discovery import fetch_json

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_REQUIRED = ["iss", "aud", "exp", "iat", "sub"]


class IdTokenRejected(Exception):
    """The ID token does not validate; ``reason`` names the check, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeySet:
    """One JWKS, fetched on first use; an unknown ``kid`` refetches it at most once per ``interval``."""

    def __init__(self, url: str, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.interval = interval
        self.clock = clock
        self._keys: list[dict[str, Any]] | None = None
        self._fetched = float("-inf")
        self._lock = threading.Lock()

    def key(self, kid: str | None, alg: str, timeout: float) -> jwt.PyJWK:
        with self._lock:
            if self._keys is None:
                self._load(timeout)
            found = self._find(kid)
            if found is None and self.clock() - self._fetched >= self.interval:
                self._load(timeout)  # the upstream may have rotated its keys
                found = self._find(kid)
        if found is None:
            raise IdTokenRejected("unknown key")
        try:
            # A JWK without "alg" is bound to the token's; a key of another type does not load for it.
            return jwt.PyJWK(found, algorithm=None if "alg" in found else alg)
        except jwt.PyJWTError as exc:
            raise IdTokenRejected("key") from exc

    def _load(self, timeout: float) -> None:
        self._fetched = self.clock()
        keys = fetch_json(self.url, timeout).get("keys")
        # Symmetric ("oct") keys are never trusted for an ID token, whatever the JWKS says.
        self._keys = (
            [k for k in keys if isinstance(k, dict) and k.get("kty") != "oct"] if isinstance(keys, list) else []
        )

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        keys = [k for k in self._keys or [] if k.get("use", "sig") == "sig"]
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((k for k in keys if k.get("kid") == kid), None)


_key_sets: dict[str, KeySet] = {}


def key_set(url: str, interval: float) -> KeySet:
    """The execution environment's cache for this JWKS URL."""
    return _key_sets.setdefault(url, KeySet(url, interval))


def validate(
    token: str, keys: KeySet, *, issuer: str, client_id: str, nonce: str, leeway: int, timeout: float
) -> dict[str, Any]:
    """The ID token's claims once every check passed; ``IdTokenRejected`` otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise IdTokenRejected("malformed") from exc
    alg = header.get("alg")
    if alg not in ASYMMETRIC:
        raise IdTokenRejected("algorithm")
    kid = header.get("kid")
    key = keys.key(kid if isinstance(kid, str) else None, alg, timeout)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            leeway=leeway,
            options={"require": _REQUIRED},
        )
    except jwt.PyJWTError as exc:
        raise IdTokenRejected(type(exc).__name__) from exc
    check_claims(claims, client_id, nonce, leeway)
    return claims


def check_claims(claims: dict[str, Any], client_id: str, nonce: str, leeway: int) -> None:
    """What PyJWT leaves to the caller: azp, nonce, and an iat not in the future."""
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (azp is not None and azp != client_id) or (len(audiences) > 1 and azp is None):
        raise IdTokenRejected("azp")
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        raise IdTokenRejected("nonce")
    if not isinstance(claims["iat"], int | float) or claims["iat"] > time.time() + leeway:
        raise IdTokenRejected("iat")
