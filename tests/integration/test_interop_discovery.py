"""The RFC 8414 metadata document, as a library fetches it from the local runner."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from local.runner.testing import LocalBroker
from tests.integration.interop import METADATA_PATH, TIMEOUT, discover

pytestmark = pytest.mark.integration


def test_the_metadata_has_rfc8414s_required_fields_and_the_runners_urls(broker: LocalBroker) -> None:
    # When a library fetches the metadata from the runner's base URL
    response = requests.get(f"{broker.url}{METADATA_PATH}", timeout=TIMEOUT)

    # Then it is JSON, cacheable, and names the runner's own endpoints
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=3600"
    document = response.json()
    assert document["issuer"] == broker.url
    assert document["token_endpoint"] == f"{broker.url}/auth/token"
    assert document["revocation_endpoint"] == f"{broker.url}/auth/logout"
    assert document["grant_types_supported"] == ["password", "refresh_token"]
    assert document["token_endpoint_auth_methods_supported"] == ["none"]
    assert document["revocation_endpoint_auth_methods_supported"] == ["none"]

    # RFC 8414 §2: the required members; no authorization endpoint, so none is required,
    # and response_types_supported (required) is present and, honestly, empty
    issuer = urlsplit(document["issuer"])
    assert (issuer.scheme, issuer.hostname) == ("http", "127.0.0.1")  # http only on a loopback host
    assert issuer.query == issuer.fragment == ""
    assert "authorization_endpoint" not in document
    assert document["response_types_supported"] == []

    # and every other member passes authlib's RFC 8414 validators
    metadata = AuthorizationServerMetadata(document)
    members = ("scopes_supported", "grant_types_supported", "token_endpoint_auth_methods_supported",
               "revocation_endpoint_auth_methods_supported", "revocation_endpoint_auth_signing_alg_values_supported",
               "response_modes_supported", "code_challenge_methods_supported")  # fmt: skip
    for member in members:
        getattr(metadata, f"validate_{member}")()


def test_the_openid_location_is_not_served_while_the_code_flow_is_off(broker: LocalBroker) -> None:
    missing = requests.get(f"{broker.url}/.well-known/openid-configuration", timeout=TIMEOUT)
    # the route exists (the same document where the code flow is on): 404 while it is off
    assert (missing.status_code, missing.json()["error"]) == (404, "invalid_request")
    assert discover(broker)["issuer"] == broker.url
