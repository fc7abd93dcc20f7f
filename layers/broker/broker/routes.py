"""The API's routes, as clients see them (relative to its base URL), and which grant each serves."""

from __future__ import annotations

from collections.abc import Mapping

LOGIN = "/auth/login"
REFRESH = "/auth/refresh"
TOKEN_ENDPOINT = "/auth/token"  # noqa: S105 - a route, not a credential
LOGOUT = "/auth/logout"
METADATA = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION = "/.well-known/openid-configuration"  # the same document, with the code flow on
AUTHORIZE = "/auth/authorize"

# Where each grant type the broker serves is answered (a wrong route's error names them).
SERVED_AT: Mapping[str, str] = {
    "password": f"POST {LOGIN} or POST {TOKEN_ENDPOINT}",
    "refresh_token": f"POST {REFRESH} or POST {TOKEN_ENDPOINT}",
}
