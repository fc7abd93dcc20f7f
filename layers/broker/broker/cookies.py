"""BFF mode: the refresh token travels only inside an encrypted, HttpOnly cookie.

The cookie value is a ``broker.sealing`` blob (AES-256-GCM) over ``{"rt": <refresh token>,
"exp": <epoch>}`` (plus ``"cl"``, the session's ID token claims, after a code-flow sign-in),
base64url without padding, with the deployment's id as associated data, so a cookie from
another deployment (even one sharing the keys) does not open. Keys come from the secret's
``broker_keys`` (base64url, 32 bytes, newest first): the newest seals, every listed key
opens, so keys rotate without logging anyone out. The code flow's login cookie is sealed the
same way, in its own place (associated data). Loaded in cookie mode only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker import sealing
from broker.errors import CallerRejected, SecretUnavailable
from broker.secrets import decode_broker_keys

COOKIE_NAME = "__Host-broker-refresh"
# The code flow's login cookie: Lax, since it must come back on the upstream's redirect to the callback.
LOGIN_COOKIE_NAME = "__Host-broker-login"
_KID_BYTES = 4
_ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Strict"
_LOGIN_ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Lax"


class InvalidCookie(CallerRejected):
    """A cookie that does not open, is expired, or belongs elsewhere: 400 invalid_grant."""

    def __init__(self) -> None:
        super().__init__("invalid_grant", "The refresh cookie is invalid or expired; sign in again.")


def parse_keys(joined: str) -> tuple[bytes, ...]:
    """The cookie keys, newest first; cookie mode cannot work without one."""
    keys = decode_broker_keys(joined)
    if not keys:
        raise SecretUnavailable("Cookie mode needs broker_keys in the broker's secret.")
    return keys


def _kid(key: bytes) -> bytes:
    return hashlib.sha256(b"broker-cookie-kid" + key).digest()[:_KID_BYTES]


@dataclass(frozen=True)
class CookieJar:
    """Seals and opens refresh cookies for one deployment."""

    keys: tuple[bytes, ...]
    deployment: str
    max_age: int
    clock: Callable[[], float] = time.time

    def seal(self, refresh_token: str, claims: Mapping[str, Any] | None = None) -> str:
        payload = {"rt": refresh_token, "exp": int(self.clock()) + self.max_age, **({"cl": claims} if claims else {})}
        return self._seal(payload, self._aad())

    def open(self, value: str) -> str:
        return self.open_session(value)[0]

    def open_session(self, value: str) -> tuple[str, dict[str, Any]]:
        """The refresh token and the session's claims (empty after a password login)."""
        payload = self._open(value, self._aad())
        claims = payload.get("cl", {})
        if not isinstance(payload.get("rt"), str) or not isinstance(claims, dict):
            raise InvalidCookie
        return payload["rt"], claims

    def seal_login(self, login: Mapping[str, str], max_age: int) -> str:
        """The code flow's login cookie (Set-Cookie value): state, nonce, verifier and return_to."""
        value = self._seal({**login, "exp": int(self.clock()) + max_age}, self._aad(b"broker-login-cookie|"))
        return f"{LOGIN_COOKIE_NAME}={value}; Max-Age={max_age}; {_LOGIN_ATTRIBUTES}"

    def open_login(self, value: str) -> dict[str, Any]:
        return self._open(value, self._aad(b"broker-login-cookie|"))

    def _seal(self, payload: Mapping[str, Any], aad: bytes) -> str:
        key = self.keys[0]
        blob = sealing.seal(key, json.dumps(payload).encode(), aad, kid=_kid(key))
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def _open(self, value: str, aad: bytes) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            kid = sealing.key_id(raw, _KID_BYTES)
            # Only the key the cookie names is tried: a cookie opens with one key or none.
            key = next((candidate for candidate in self.keys if _kid(candidate) == kid), None)
            if key is None:
                raise InvalidCookie
            payload = json.loads(sealing.unseal(key, raw, aad, _KID_BYTES))
        except (binascii.Error, ValueError, sealing.Unsealable) as exc:
            raise InvalidCookie from exc
        if not isinstance(payload, dict):
            raise InvalidCookie
        if not isinstance(payload.get("exp"), int) or payload["exp"] <= self.clock():
            raise InvalidCookie
        return payload

    def _aad(self, place: bytes = b"broker-refresh-cookie|") -> bytes:
        return place + self.deployment.encode()

    def set_cookie(self, refresh_token: str, claims: Mapping[str, Any] | None = None) -> str:
        return f"{COOKIE_NAME}={self.seal(refresh_token, claims)}; Max-Age={self.max_age}; {_ATTRIBUTES}"


def clear_cookie() -> str:
    return f"{COOKIE_NAME}=; Max-Age=0; {_ATTRIBUTES}"


def clear_login_cookie() -> str:
    return f"{LOGIN_COOKIE_NAME}=; Max-Age=0; {_LOGIN_ATTRIBUTES}"


def read_cookie(headers: Mapping[str, str], all_cookie_headers: list[str], name: str = COOKIE_NAME) -> str | None:
    """The refresh cookie's value from the request's Cookie header(s), if present.

    Names match byte for byte, as RFC 6265 §5.2 parses them (only SP and HTAB are trimmed):
    a cookie tossed from a sibling subdomain as "\u2000__Host-…" or "\xa0__Host-…" is not ours."""
    for header in all_cookie_headers or [headers.get("cookie", "")]:
        for part in header.split(";"):
            part_name, _, value = part.partition("=")
            if part_name.strip(" \t") == name and value.strip(" \t"):
                return value.strip(" \t")
    return None
