"""What the interoperability tests share: discovery, and checks made straight at the local upstream."""

from __future__ import annotations

from typing import Any

import requests

from local.runner.testing import LocalBroker

TIMEOUT = 30
DEMO = {"username": "demo", "password": "demo-password"}
METADATA_PATH = "/.well-known/oauth-authorization-server"


def discover(broker: LocalBroker) -> dict[str, Any]:
    """The broker's RFC 8414 metadata: the only configuration the libraries get."""
    response = requests.get(f"{broker.url}{METADATA_PATH}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def userinfo(broker: LocalBroker, access_token: str) -> int:
    """The upstream's protected resource: 200 while the access token is live."""
    assert broker.upstream_url is not None
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(f"{broker.upstream_url}/auth/userinfo", headers=headers, timeout=TIMEOUT).status_code


def refresh_is_revoked(broker: LocalBroker, refresh_token: str) -> bool:
    """The refresh token, sent straight to the upstream, is refused there."""
    answer = broker.upstream_refresh(refresh_token)
    return answer.status_code == 400 and answer.json().get("error") == "invalid_grant"
