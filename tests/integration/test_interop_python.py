"""Python OAuth2 client libraries, unmodified, configured from discovery only, against the broker
over HTTP (local runner) and the real local upstream: login, their own automatic refresh through
the one token endpoint, RFC 7009 revocation that really revokes, unsupported_grant_type as their
own error."""

from __future__ import annotations

import time
from typing import Any

import pytest
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from authlib.integrations.requests_client import OAuthError
from oauthlib.oauth2 import BackendApplicationClient, LegacyApplicationClient, UnsupportedGrantTypeError
from requests_oauthlib import OAuth2Session

from local.runner.testing import LocalBroker
from tests.integration.interop import DEMO, TIMEOUT, discover, refresh_is_revoked, userinfo

pytestmark = pytest.mark.integration
CLIENT_ID = "spa"  # a public client's id: the broker ignores it


@pytest.fixture
def insecure_local_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """oauthlib refuses http:// unless told it is a local test (the runner has no TLS)."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def test_authlib_logs_in_refreshes_by_itself_and_revokes(broker: LocalBroker) -> None:
    # Given authlib configured from the discovery document alone
    metadata = discover(broker)
    updates: list[dict[str, Any]] = []
    session = AuthlibSession(
        CLIENT_ID,
        token_endpoint=metadata["token_endpoint"],
        token_endpoint_auth_method="none",
        update_token=lambda token, refresh_token=None, access_token=None: updates.append(token),
    )

    # When the user logs in with the password grant
    token = session.fetch_token(metadata["token_endpoint"], timeout=TIMEOUT, **DEMO)
    assert token["token_type"] == "Bearer"
    first_refresh = token["refresh_token"]
    assert userinfo(broker, token["access_token"]) == 200

    # And the access token expires: authlib's automatic refresh goes to the same token endpoint
    session.token["expires_at"] = int(time.time()) - 10
    resource = session.get(f"{broker.upstream_url}/auth/userinfo", timeout=TIMEOUT)
    assert resource.status_code == 200
    assert resource.json() == {"username": "demo"}
    assert len(updates) == 1
    refreshed = updates[0]
    assert refreshed["refresh_token"] != first_refresh
    assert refresh_is_revoked(broker, first_refresh)  # rotated upstream

    # When the user logs out with authlib's RFC 7009 call
    revoked = session.revoke_token(
        metadata["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
    )

    # Then 200, and the refresh token is dead at the upstream
    assert revoked.status_code == 200
    assert refresh_is_revoked(broker, refreshed["refresh_token"])


def test_authlib_surfaces_unsupported_grant_type_as_its_own_error(broker: LocalBroker) -> None:
    metadata = discover(broker)
    session = AuthlibSession(CLIENT_ID, token_endpoint_auth_method="none")
    with pytest.raises(OAuthError) as raised:
        session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials", timeout=TIMEOUT)
    assert raised.value.error == "unsupported_grant_type"
    assert "not served by this broker" in str(raised.value.description)


@pytest.mark.usefixtures("insecure_local_transport")
def test_requests_oauthlib_logs_in_refreshes_by_itself_and_revokes(broker: LocalBroker) -> None:
    # Given requests-oauthlib configured from the discovery document alone
    metadata = discover(broker)
    client = LegacyApplicationClient(client_id=CLIENT_ID)
    updates: list[dict[str, Any]] = []
    session = OAuth2Session(client=client, auto_refresh_url=metadata["token_endpoint"], token_updater=updates.append)

    # When the user logs in (requests-oauthlib sends the client id as an empty-password Basic header)
    token = session.fetch_token(metadata["token_endpoint"], timeout=TIMEOUT, **DEMO)
    first_refresh = token["refresh_token"]
    assert userinfo(broker, token["access_token"]) == 200

    # And the access token expires: its automatic refresh goes to the same token endpoint
    session.token = {**session.token, "expires_at": time.time() - 10}
    resource = session.get(f"{broker.upstream_url}/auth/userinfo", timeout=TIMEOUT)
    assert resource.status_code == 200
    assert len(updates) == 1
    refreshed = updates[0]
    assert refreshed["refresh_token"] != first_refresh

    # When the user logs out with oauthlib's RFC 7009 request
    url, headers, body = client.prepare_token_revocation_request(
        metadata["revocation_endpoint"], refreshed["refresh_token"], token_type_hint="refresh_token"
    )
    revoked = session.post(url, data=body, headers=headers, timeout=TIMEOUT, withhold_token=True)

    # Then 200, and the refresh token is dead at the upstream
    assert revoked.status_code == 200
    assert refresh_is_revoked(broker, refreshed["refresh_token"])


@pytest.mark.usefixtures("insecure_local_transport")
def test_requests_oauthlib_surfaces_unsupported_grant_type_as_its_own_error(broker: LocalBroker) -> None:
    metadata = discover(broker)
    session = OAuth2Session(client=BackendApplicationClient(client_id=CLIENT_ID))
    with pytest.raises(UnsupportedGrantTypeError) as raised:
        session.fetch_token(metadata["token_endpoint"], timeout=TIMEOUT)
    assert "not served by this broker" in str(raised.value.description)
