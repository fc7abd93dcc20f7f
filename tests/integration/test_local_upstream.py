"""The local upstream is a real OAuth2 server: prove it over HTTP, as the broker will use it."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from local.upstream.testing import Process, running_upstream, stop_upstream

CLIENT = ("demo-client", "demo-client-secret")
USER = {"username": "demo", "password": "demo-password"}
TIMEOUT = 10


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the tests that change no server-wide state."""
    with running_upstream(tmp_path_factory.mktemp("upstream")) as (url, _):
        yield url


@pytest.fixture
def fresh_upstream(tmp_path: Path) -> Iterator[tuple[str, Process]]:
    with running_upstream(tmp_path) as started:
        yield started


def token(url: str, data: dict[str, str], *, auth: str = "post", client: tuple[str, str] = CLIENT) -> requests.Response:
    if auth == "basic":
        return requests.post(f"{url}/auth/token/", data=data, auth=client, timeout=TIMEOUT)
    form = {**data, "client_id": client[0], "client_secret": client[1]}
    return requests.post(f"{url}/auth/token/", data=form, timeout=TIMEOUT)


def login(url: str, **kwargs: Any) -> requests.Response:
    return token(url, {"grant_type": "password", **USER}, **kwargs)


def refresh(url: str, refresh_token: str) -> requests.Response:
    return token(url, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def username_for(url: str, access_token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(f"{url}/auth/userinfo/", headers=headers, timeout=TIMEOUT)


def exchange(url: str, header: str | None) -> requests.Response:
    headers = {} if header is None else {"Authorization": header}
    return requests.post(f"{url}/auth/exchange/", headers=headers, timeout=TIMEOUT)


@pytest.mark.parametrize("auth", ["post", "basic"])
def test_password_grant_returns_real_tokens_for_either_client_auth(upstream: str, auth: str) -> None:
    # Given the seeded user and client, authenticated by client_secret_post or _basic
    # When the client asks for a password grant
    response = login(upstream, auth=auth)

    # Then the upstream answers with bearer tokens, and the access token is live
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read"
    assert body["access_token"]
    assert body["refresh_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert username_for(upstream, body["access_token"]).json() == {"username": "demo"}


def test_token_endpoint_answers_without_trailing_slash(upstream: str) -> None:
    # Given a profile whose token URL has no trailing slash
    # When it posts a password grant there
    response = requests.post(
        f"{upstream}/auth/token", data={"grant_type": "password", **USER}, auth=CLIENT, timeout=TIMEOUT
    )

    # Then it is the same token endpoint, not a redirect
    assert response.status_code == 200, response.text


def test_wrong_password_is_invalid_grant(upstream: str) -> None:
    # Given the right client but a wrong password
    response = token(upstream, {"grant_type": "password", "username": "demo", "password": "nope"})

    # Then 400 invalid_grant
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("auth", ["post", "basic"])
def test_wrong_client_secret_is_invalid_client(upstream: str, auth: str) -> None:
    # Given the right user but a wrong client secret
    response = login(upstream, auth=auth, client=("demo-client", "wrong"))

    # Then 401 invalid_client
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}


def test_refresh_rotates_and_the_old_refresh_token_then_fails(upstream: str) -> None:
    # Given a fresh login
    first = login(upstream).json()

    # When the refresh token is used once
    rotated = refresh(upstream, first["refresh_token"])

    # Then new tokens come back, and they work
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert username_for(upstream, second["access_token"]).status_code == 200

    # And the old refresh token is dead at once (no grace period)
    replay = refresh(upstream, first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"

    # And the new one still refreshes
    assert refresh(upstream, second["refresh_token"]).status_code == 200


def test_revoked_refresh_token_cannot_refresh(upstream: str) -> None:
    # Given a fresh login
    tokens = login(upstream).json()

    # When the client revokes its refresh token (RFC 7009, client authenticated)
    revoked = requests.post(
        f"{upstream}/auth/revoke/",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=CLIENT,
        timeout=TIMEOUT,
    )

    # Then revocation succeeds, and the refresh token and its access token are dead
    assert revoked.status_code == 200
    after = refresh(upstream, tokens["refresh_token"])
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"
    assert username_for(upstream, tokens["access_token"]).status_code == 401


def test_revoke_requires_client_authentication(upstream: str) -> None:
    tokens = login(upstream).json()

    response = requests.post(
        f"{upstream}/auth/revoke/",
        data={"token": tokens["refresh_token"]},
        auth=("demo-client", "wrong"),
        timeout=TIMEOUT,
    )

    assert response.status_code == 401
    assert refresh(upstream, tokens["refresh_token"]).status_code == 200


def test_exchange_with_the_right_token_issues_a_real_access_token(upstream: str) -> None:
    # When the service presents its exchange token, with no body
    response = exchange(upstream, "Token demo-exchange-token")

    # Then it gets a bearer token in the bakrypt shape
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 3600, "read")

    # And the token is a real DOT token: the resource accepts it, introspection knows it
    assert username_for(upstream, body["access_token"]).json() == {"username": "exchange-service"}
    introspection = requests.post(
        f"{upstream}/auth/introspect/", data={"token": body["access_token"]}, auth=CLIENT, timeout=TIMEOUT
    )
    assert introspection.json()["active"] is True
    assert introspection.json()["client_id"] == "demo-client"


@pytest.mark.parametrize("header", ["Token wrong", "Bearer demo-exchange-token", "Token ", None])
def test_exchange_with_a_wrong_or_missing_token_is_401(upstream: str, header: str | None) -> None:
    response = exchange(upstream, header)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_userinfo_rejects_an_unknown_bearer_token(upstream: str) -> None:
    response = username_for(upstream, "not-a-token")

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}


def test_access_tokens_expire_per_option(tmp_path: Path) -> None:
    # Given a server whose access tokens live one second
    with running_upstream(tmp_path, access_token_expire_seconds=1) as (url, _):
        body = login(url).json()
        assert body["expires_in"] == 1
        assert username_for(url, body["access_token"]).status_code == 200

        # When that second has passed
        time.sleep(1.5)

        # Then the token is refused
        assert username_for(url, body["access_token"]).status_code == 401


def test_command_line_credentials_are_seeded(tmp_path: Path) -> None:
    # Given a server started with its own credentials
    options = {"client_id": "c", "client_secret": "s", "username": "u", "password": "p", "exchange_token": "x"}
    with running_upstream(tmp_path, **options) as (url, _):
        # Then those, and not the defaults, work
        logged_in = token(url, {"grant_type": "password", "username": "u", "password": "p"}, client=("c", "s"))
        assert logged_in.status_code == 200, logged_in.text
        assert username_for(url, logged_in.json()["access_token"]).json() == {"username": "u"}
        assert exchange(url, "Token x").status_code == 200
        assert login(url).status_code == 401
        assert exchange(url, "Token demo-exchange-token").status_code == 401


def test_control_rotates_the_client_secret(fresh_upstream: tuple[str, Process]) -> None:
    url, _ = fresh_upstream

    # When the test rotates the application's secret
    rotated = requests.post(f"{url}/_control/client-secret", json={"client_secret": "new"}, timeout=TIMEOUT)

    # Then the old secret is refused and the new one works, either way of sending it
    assert rotated.status_code == 200
    assert login(url).status_code == 401
    assert login(url, client=("demo-client", "new")).status_code == 200
    assert login(url, auth="basic", client=("demo-client", "new")).status_code == 200


def test_control_rotates_the_exchange_token(fresh_upstream: tuple[str, Process]) -> None:
    url, _ = fresh_upstream

    rotated = requests.post(f"{url}/_control/exchange-token", json={"exchange_token": "new"}, timeout=TIMEOUT)

    assert rotated.status_code == 200
    assert exchange(url, "Token demo-exchange-token").status_code == 401
    assert exchange(url, "Token new").status_code == 200


def test_control_rejects_a_missing_value(fresh_upstream: tuple[str, Process]) -> None:
    url, _ = fresh_upstream

    response = requests.post(f"{url}/_control/client-secret", json={}, timeout=TIMEOUT)

    assert response.status_code == 400
    assert login(url).status_code == 200


def test_stats_count_requests_per_endpoint_and_grant_type(fresh_upstream: tuple[str, Process]) -> None:
    url, _ = fresh_upstream
    # Given a known mix of calls, successful and not
    tokens = login(url).json()
    token(url, {"grant_type": "password", "username": "demo", "password": "nope"})
    refresh(url, tokens["refresh_token"])
    exchange(url, "Token demo-exchange-token")
    exchange(url, "Token wrong")
    requests.post(f"{url}/auth/revoke/", data={"token": "x"}, auth=CLIENT, timeout=TIMEOUT)

    # When the test reads the counters
    stats = requests.get(f"{url}/_control/stats", timeout=TIMEOUT)

    # Then each call was counted once, by endpoint and grant type
    assert stats.status_code == 200
    assert stats.json() == {"token": {"password": 2, "refresh_token": 1}, "exchange": 2, "revoke": 1}

    # And a reset empties them
    assert requests.post(f"{url}/_control/reset-stats", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{url}/_control/stats", timeout=TIMEOUT).json() == {"token": {}}


def test_sigterm_exits_cleanly_and_frees_the_port(tmp_path: Path) -> None:
    # Given a running server
    with running_upstream(tmp_path) as (url, process):
        address = urlsplit(url)
        assert login(url).status_code == 200

        # When it gets SIGTERM
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)

        # Then it exits 0, without a traceback, and nothing listens any more
        assert code == 0
        assert "Traceback" not in (tmp_path / "upstream.log").read_text()
        with pytest.raises(ConnectionRefusedError), socket.create_connection((address.hostname, address.port), 1):
            pass
    assert stop_upstream(process) == 0


def test_access_log_holds_no_secret(tmp_path: Path) -> None:
    with running_upstream(tmp_path) as (url, _):
        tokens = login(url).json()
        exchange(url, "Token demo-exchange-token")
        username_for(url, tokens["access_token"])

    log = (tmp_path / "upstream.log").read_text()
    assert "POST /auth/token/ 200" in log
    for secret in ("demo-password", "demo-client-secret", "demo-exchange-token", tokens["access_token"]):
        assert secret not in log
