"""JSON Schemas of what the SPA may send, one per route, kept as data.

They are compiled ahead of time with fastjsonschema (the engine Powertools' validation uses)
into broker/validators (layers/broker/generate_validators.py, ``make validators``): compiling
on every call costs milliseconds, and even once per cold start ~7 ms with the import.
Unknown parameters are allowed (RFC 6749 §3.2: ignored), so no additionalProperties.
``grant_type`` is not in them: a grant type the route does not serve is RFC 6749's
``unsupported_grant_type``, checked before the schema (``Grant.check``).
"""

from __future__ import annotations

from typing import Any

_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 4096}
_SCOPE: dict[str, Any] = {"type": "string", "maxLength": 1024, "pattern": r"^[\x21\x23-\x5b\x5d-\x7e ]*$"}

PASSWORD: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "username": {**_TEXT, "maxLength": 1024},
        "password": _TEXT,
        "scope": _SCOPE,
    },
}

REFRESH: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "refresh_token": _TEXT,
        "scope": _SCOPE,
    },
}

EXCHANGE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
}

# Body mode sends RFC 7009's {"token", "token_type_hint"} (or {"refresh_token"}, an alias);
# cookie mode sends nothing (the cookie carries it).
LOGOUT: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "token": _TEXT,
        "refresh_token": _TEXT,
        "token_type_hint": {"type": "string", "maxLength": 64},
    },
}

# The code flow: GET query strings (broker.navigation). /auth/session reads nothing.
AUTHORIZE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"return_to": {"type": "string", "maxLength": 2048}},
}

CALLBACK: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "code": _TEXT,
        "state": {"type": "string", "maxLength": 512},
        "error": {"type": "string", "maxLength": 128},
    },
}

SESSION: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
}
