"""Upstream profiles: a declarative description of how one authorization server is called.

A profile is either a preset name or a JSON object (docs/profiles.md).
It is parsed once, at cold start, into an immutable ``Profile``; anything invalid raises
``ConfigError`` there rather than on a user's request.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from broker.client_auth import METHODS
from broker.errors import ConfigError

Encoding = Literal["form", "json"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the broker owns: a profile may not replace them.
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "content-length", "host", "transfer-encoding"})
# Fields a grant may send upstream; a profile may rename them (or drop one with null).
REQUEST_FIELDS = frozenset(
    {"grant_type", "username", "password", "refresh_token", "scope", "client_id", "client_secret", "code",
     "redirect_uri", "code_verifier"}
)  # fmt: skip
# The URLs a profile may hold; each is checked at cold start (``check_url``).
URL_KEYS = ("token_url", "exchange_url", "revocation_url", "issuer", "authorization_url", "jwks_url", "end_session_url")
# The RFC 6749 §5.1 names the broker returns; upstream camelCase forms are recognised too.
RESPONSE_FIELDS = ("access_token", "token_type", "expires_in", "refresh_token", "scope", "id_token")
_CAMEL_RESPONSE = {"accessToken": "access_token", "tokenType": "token_type", "expiresIn": "expires_in",
                   "refreshToken": "refresh_token", "idToken": "id_token"}  # fmt: skip


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


_NO_ENTRIES: Mapping[str, Any] = _frozen({})


class Profile(NamedTuple):
    """Immutable and typed; a NamedTuple rather than a frozen dataclass for the cold start (see Config)."""

    name: str
    token_url: str | None = None
    exchange_url: str | None = None
    revocation_url: str | None = None
    client_auth: str = "client_secret_post"  # a name in broker.client_auth.METHODS
    encoding: Encoding = "form"
    # request field -> upstream name (None: not sent)
    fields: Mapping[str, str | None] = _NO_ENTRIES
    # header name -> template with {secret_key} / {grant_type} placeholders
    headers: Mapping[str, str] = _NO_ENTRIES
    # upstream response name -> RFC 6749 name
    response_fields: Mapping[str, str] = _frozen(_CAMEL_RESPONSE)
    exchange_scheme: str = "Token"
    # The scopes the SPA may request (the confidential client's privilege, not the browser's);
    # empty: a requested scope is dropped and the upstream's default applies.
    scopes: tuple[str, ...] = ()
    # Sent when the SPA requests none (space-separated).
    default_scope: str | None = None
    # The authorization code flow: OIDC discovery from ``issuer``, or the explicit URLs.
    issuer: str | None = None
    authorization_url: str | None = None
    jwks_url: str | None = None
    end_session_url: str | None = None

    @property
    def oidc(self) -> bool:
        """An OpenID Connect upstream: the code flow asks for ``openid`` and validates the ID token."""
        return bool(self.issuer or self.jwks_url)

    def placeholders(self) -> frozenset[str]:
        return frozenset(name for value in self.headers.values() for name in _PLACEHOLDER.findall(value))

    def render_headers(self, values: Mapping[str, str]) -> dict[str, str]:
        """Fill the header templates; a missing value raises ``KeyError`` with its name."""
        return {name: _PLACEHOLDER.sub(lambda m: values[m.group(1)], tpl) for name, tpl in self.headers.items()}


PRESETS: Mapping[str, Profile] = _frozen(
    {
        "bakrypt": Profile(
            name="bakrypt",
            token_url="https://bakrypt.io/auth/token/",
            exchange_url="https://bakrypt.io/auth/exchange/",
            revocation_url="https://bakrypt.io/auth/revoke_token/",
        ),
        "bakrypt-testnet": Profile(
            name="bakrypt-testnet",
            token_url="https://testnet.bakrypt.io/auth/token/",
            exchange_url="https://testnet.bakrypt.io/auth/exchange/",
            revocation_url="https://testnet.bakrypt.io/auth/revoke_token/",
        ),
        "didit": Profile(
            name="didit",
            token_url="https://apx.didit.me/auth/v2/token",
            client_auth="client_secret_basic",
        ),
    }
)


def check_url(url: str, what: str) -> str:
    """Endpoint URLs must be https, except loopback hosts (local runs and tests).

    Checked with urllib3's own parser, the one that connects: a parser that reads the URL
    differently (``http://HOST\\@localhost/``) cannot make it pass. Userinfo and backslashes,
    which parsers disagree on, are refused outright."""
    if "\\" in url or any(not char.isprintable() or char.isspace() for char in url):
        raise ConfigError(f"{what} must not hold a backslash, whitespace or a control character")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise ConfigError(f"{what} is not a valid URL") from exc
    if parts.auth is not None:
        raise ConfigError(f"{what} must not hold user information (user@)")
    host = (parts.host or "").strip("[]")
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and is_loopback(host):
        return url
    raise ConfigError(f"{what} must be an https:// URL (http:// only for loopback hosts)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _str_map(value: Any, what: str, *, allow_none: bool = False) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (isinstance(v, str) or (allow_none and v is None)) for k, v in value.items()
    ):
        raise ConfigError(f"profile {what} must be an object of strings")
    return value


def parse_profile(raw: str) -> Profile:
    """A preset name or a JSON profile object (optionally ``{"preset": ...}`` plus overrides)."""
    raw = raw.strip()
    if raw in PRESETS:
        return PRESETS[raw]
    if not raw.startswith("{"):
        raise ConfigError(f"unknown profile preset; known: {', '.join(sorted(PRESETS))}, or a JSON object")
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise ConfigError("BROKER_PROFILE is not valid JSON") from exc
    if not isinstance(spec, dict):
        raise ConfigError("BROKER_PROFILE must be a JSON object")
    unknown = set(spec) - set(_PARSERS) - {"preset"}
    if unknown:
        raise ConfigError(f"unknown profile keys: {', '.join(sorted(unknown))}")
    preset = spec.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError("profile preset is unknown")
    base = PRESETS[preset] if preset else Profile(name="custom")
    changes = {key: _PARSERS[key](value) for key, value in spec.items() if key != "preset"}
    return base._replace(name=preset or "custom", **changes)


def _url(key: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"profile {key} must be a string")
        return value

    return parse


def _choice(key: str, allowed: tuple[str, ...]) -> Callable[[Any], Any]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ConfigError(f"profile {key} must be one of: {', '.join(allowed)}")
        return str(value)

    return parse


def _exchange_scheme(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        raise ConfigError("profile exchange_scheme must be a single token such as Token or Bearer")
    return value


def _fields(value: Any) -> Mapping[str, str | None]:
    fields = _str_map(value, "fields", allow_none=True)
    if set(fields) - REQUEST_FIELDS:
        raise ConfigError(f"profile fields may rename only: {', '.join(sorted(REQUEST_FIELDS))}")
    return _frozen(fields)


def _headers(value: Any) -> Mapping[str, str]:
    headers = _str_map(value, "headers")
    for name, template in headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"profile header {name!r} is not allowed")
        if any(c in template for c in "\r\n\x00"):
            raise ConfigError(f"profile header {name!r} has a control character")
    return _frozen(headers)


def _response_fields(value: Any) -> Mapping[str, str]:
    renames = _str_map(value, "response_fields")
    if set(renames.values()) - set(RESPONSE_FIELDS):
        raise ConfigError(f"profile response_fields may map only to: {', '.join(RESPONSE_FIELDS)}")
    return _frozen({**_CAMEL_RESPONSE, **renames})


# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and _SCOPE_TOKEN.match(item) for item in value):
        raise ConfigError("profile scopes must be a list of RFC 6749 scope tokens")
    return tuple(dict.fromkeys(value))


def _default_scope(value: Any) -> str:
    if not isinstance(value, str) or not value.split() or not all(_SCOPE_TOKEN.match(item) for item in value.split()):
        raise ConfigError("profile default_scope must be a space-separated string of scope tokens")
    return " ".join(value.split())


_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "token_url": _url("token_url"),
    "exchange_url": _url("exchange_url"),
    "revocation_url": _url("revocation_url"),
    "client_auth": _choice("client_auth", tuple(METHODS)),
    "encoding": _choice("encoding", ("form", "json")),
    "exchange_scheme": _exchange_scheme,
    "fields": _fields,
    "headers": _headers,
    "response_fields": _response_fields,
    "scopes": _scopes,
    "default_scope": _default_scope,
    "issuer": _url("issuer"),
    "authorization_url": _url("authorization_url"),
    "jwks_url": _url("jwks_url"),
    "end_session_url": _url("end_session_url"),
}
