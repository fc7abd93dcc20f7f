"""How the broker authenticates itself to the upstream (RFC 6749 §2.3): one class per method.

A profile names its method (``client_auth``); ``METHODS`` maps each name to its class. A new
method is one more class here, added to ``METHODS``: the profile parser, the secret's required
keys and the upstream request all follow from it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import quote_plus


class ClientAuthMethod:
    """Puts the client's credentials into an upstream request (form fields or headers)."""

    name = "none"
    secret_keys: frozenset[str] = frozenset()

    def apply(self, fields: dict[str, str], headers: dict[str, str], secret: Mapping[str, str]) -> None:
        """Add the credentials to ``fields`` (the request body) or ``headers``."""


class ClientSecretPost(ClientAuthMethod):
    """``client_id`` and ``client_secret`` in the request body."""

    name = "client_secret_post"
    secret_keys = frozenset({"client_id", "client_secret"})

    def apply(self, fields: dict[str, str], headers: dict[str, str], secret: Mapping[str, str]) -> None:
        fields.update(client_id=secret.get("client_id", ""), client_secret=secret.get("client_secret", ""))


class ClientSecretBasic(ClientAuthMethod):
    """HTTP Basic, each part form-urlencoded first (RFC 6749 §2.3.1)."""

    name = "client_secret_basic"
    secret_keys = frozenset({"client_id", "client_secret"})

    def apply(self, fields: dict[str, str], headers: dict[str, str], secret: Mapping[str, str]) -> None:
        pair = f"{quote_plus(secret.get('client_id', ''))}:{quote_plus(secret.get('client_secret', ''))}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")


METHODS: Mapping[str, ClientAuthMethod] = {
    method.name: method for method in (ClientSecretPost(), ClientSecretBasic(), ClientAuthMethod())
}
