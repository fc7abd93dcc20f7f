"""The red team's HTTP-level findings, replayed through the local runner against the real
django-oauth-toolkit upstream: scope escalation, cookie tossing, and a refresh grace that
outlived logout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.cookies import COOKIE_NAME
from local.runner.testing import LocalBroker, run_broker

pytestmark = pytest.mark.integration
TIMEOUT = 30
DEMO = {"username": "demo", "password": "demo-password"}


def post(broker: LocalBroker, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{broker.url}{path}", timeout=TIMEOUT, **kwargs)


def introspect(broker: LocalBroker, bearer: str, token: str) -> requests.Response:
    assert broker.upstream_url is not None
    return requests.post(
        f"{broker.upstream_url}/auth/introspect/",
        data={"token": token},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=TIMEOUT,
    )


def test_a_browser_cannot_obtain_the_introspection_scope(broker: LocalBroker) -> None:
    # Given the default local stack, whose upstream grants "introspection" to the broker's client,
    # and a profile with no scope allowlist
    victim = post(broker, "/auth/login", json=DEMO).json()["access_token"]

    # When a browser asks the broker for it
    asked = post(broker, "/auth/login", json={**DEMO, "scope": "read introspection"})

    # Then the requested scope is dropped: the upstream's default applies, and the token
    # cannot introspect another session's (the allowlist's invalid_scope: tests/unit/test_security.py)
    assert asked.status_code == 200
    assert asked.json()["scope"] == "read"
    assert introspect(broker, asked.json()["access_token"], victim).status_code in (401, 403)


def test_logout_ends_the_refresh_grace_of_its_session(broker: LocalBroker) -> None:
    # Given a session refreshed once (rt0 -> rt1), its result shared with twins for 30 s
    rt0 = post(broker, "/auth/login", json=DEMO).json()["refresh_token"]
    refreshed = post(broker, "/auth/refresh", json={"refresh_token": rt0})
    assert refreshed.status_code == 200
    rt1 = refreshed.json()["refresh_token"]

    # When the user logs out with rt1
    assert post(broker, "/auth/logout", json={"refresh_token": rt1}).status_code == 200

    # Then a replay of the spent rt0 within the grace no longer returns the session's tokens
    replay = post(broker, "/auth/refresh", json={"refresh_token": rt0})
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "access_token" not in replay.text


@pytest.fixture(scope="module")
def cookie_broker(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with run_broker(tmp_path_factory.mktemp("tossing"), env={"BROKER_REFRESH_DELIVERY": "cookie"}) as running:
        yield running


def cookie_of(response: requests.Response) -> str:
    name, _, rest = response.headers["Set-Cookie"].partition("=")
    assert name == COOKIE_NAME
    return rest.split(";", 1)[0]


@pytest.mark.parametrize("prefix", ["\xa0", "theme=dark; \xa0"], ids=["nbsp-first", "nbsp-after-another-cookie"])
def test_a_cookie_tossed_from_a_sibling_subdomain_under_a_look_alike_name_is_ignored(
    cookie_broker: LocalBroker, prefix: str
) -> None:
    broker = cookie_broker
    headers = {"Origin": broker.url, "X-CSRF": "1"}
    # Given the victim's session, and a dead session the attacker tosses in under a look-alike name
    victim = cookie_of(post(broker, "/auth/login", json=DEMO, headers={"Origin": broker.url}))
    dead = cookie_of(post(broker, "/auth/login", json=DEMO, headers={"Origin": broker.url}))
    logged_out = post(broker, "/auth/logout", headers={**headers, "Cookie": f"{COOKIE_NAME}={dead}"})
    assert logged_out.status_code == 200

    # When the browser sends the tossed cookie first, then the victim's own
    tossed = f"{prefix}{COOKIE_NAME}={dead}; {COOKIE_NAME}={victim}".encode("latin-1")
    refreshed = requests.post(f"{broker.url}/auth/refresh", headers={**headers, "Cookie": tossed}, timeout=TIMEOUT)

    # Then the broker read the victim's cookie, byte for byte: no forced logout, no session swap
    assert refreshed.status_code == 200, refreshed.text
    assert "access_token" in refreshed.json()
