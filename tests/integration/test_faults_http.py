"""Upstream faults through the local runner (real RIE, real moto): the broker fails closed,
on time, and nothing planted leaks into any log line or response body."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.faulty import FaultyUpstream
from local.runner.testing import LocalBroker, run_broker

pytestmark = pytest.mark.integration
UPSTREAM_TIMEOUT = 2.0
MARGIN = 1.0  # the RIE and the runner's own hop on a shared machine
PASSWORD = "pw-PLANTED-f4ult"
SECRET = {
    "client_id": "faulty-client",
    "client_secret": "cs-PLANTED-f4ult",
    "exchange_token": "xt-PLANTED-f4ult",
    "partner_id": "p",
}
PLANTED = (PASSWORD, SECRET["client_secret"], SECRET["exchange_token"], "rt-PLANTED-f4ult")


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def broker(
    built_template: Path, faulty: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker]:
    env = {
        "BROKER_PROFILE": "bakrypt",
        "BROKER_TOKEN_URL": f"{faulty.url}/auth/token/",
        "BROKER_EXCHANGE_URL": f"{faulty.url}/auth/exchange/",
        "BROKER_UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT),
    }
    with run_broker(tmp_path_factory.mktemp("faults"), env=env, secret=SECRET) as running:
        yield running
    # Nothing planted in any log line of the whole module: the runner's, the functions'
    # (Powertools, urllib3, botocore, the runtime's), moto's.
    logs = running.logs()
    assert [value for value in PLANTED if value in logs] == []


def login(broker: LocalBroker, faulty: FaultyUpstream, mode: str) -> tuple[requests.Response, float]:
    faulty.mode = mode
    started = time.monotonic()
    response = requests.post(
        f"{broker.url}/auth/login", json={"username": "demo", "password": PASSWORD}, timeout=UPSTREAM_TIMEOUT + 20
    )
    elapsed = time.monotonic() - started
    for value in PLANTED:
        assert value not in response.text
        assert value not in json.dumps(dict(response.headers))
    return response, elapsed


def test_warm_up(broker: LocalBroker, faulty: FaultyUpstream) -> None:
    # The first call pays the cold start; the timing assertions below are about warm calls.
    response, _ = login(broker, faulty, "/ok")
    assert response.status_code == 200


@pytest.mark.parametrize("mode", ["/trickle", "/slow-headers", "/hang"])
def test_slow_upstreams_are_504_within_the_deadline(broker: LocalBroker, faulty: FaultyUpstream, mode: str) -> None:
    response, elapsed = login(broker, faulty, mode)
    assert response.status_code == 504
    assert response.json()["error"] == "temporarily_unavailable"
    assert elapsed < UPSTREAM_TIMEOUT + MARGIN


@pytest.mark.parametrize("mode", ["/status/500", "/status/502", "/status/504", "/huge", "/drop", "/status/404"])
def test_broken_upstreams_are_502_without_their_body(broker: LocalBroker, faulty: FaultyUpstream, mode: str) -> None:
    response, _ = login(broker, faulty, mode)
    assert response.status_code == 502
    assert response.json()["error"] == "server_error"
    assert "upstream page" not in response.text


@pytest.mark.parametrize("mode", ["/status/429", "/status/503"])
def test_busy_upstreams_are_503_with_retry_after(broker: LocalBroker, faulty: FaultyUpstream, mode: str) -> None:
    response, _ = login(broker, faulty, mode)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"


@pytest.mark.parametrize("mode", ["/redirect-307", "/redirect-308"])
def test_redirects_are_not_followed(broker: LocalBroker, faulty: FaultyUpstream, mode: str) -> None:
    before = len(faulty.seen)
    response, _ = login(broker, faulty, mode)
    assert response.status_code == 502
    assert [seen.path for seen in faulty.seen[before:]] == ["/auth/token/"]  # the target got nothing


def test_a_dropped_refresh_is_never_retried(broker: LocalBroker, faulty: FaultyUpstream) -> None:
    faulty.mode = "/drop"
    before = len(faulty.seen)
    response = requests.post(f"{broker.url}/auth/refresh", json={"refresh_token": "rt-PLANTED-f4ult"}, timeout=30)
    assert response.status_code == 502
    assert len(faulty.seen) - before == 1


@pytest.mark.parametrize("tls", ["self-signed", "wrong-host"])
def test_untrusted_tls_is_502_and_nothing_is_sent(built_template: Path, tmp_path: Path, tls: str) -> None:
    with FaultyUpstream(tls=tls) as server:  # type: ignore[arg-type]  # the parametrized literal
        env = {"BROKER_PROFILE": "bakrypt", "BROKER_TOKEN_URL": f"https://localhost:{server.port}/auth/token/"}
        with run_broker(tmp_path, env=env, secret=SECRET) as broker:
            response = requests.post(
                f"{broker.url}/auth/login", json={"username": "demo", "password": PASSWORD}, timeout=30
            )
        assert response.status_code == 502
        assert server.seen == []


def test_secret_faults_are_503_uncached_then_recover(built_template: Path, tmp_path: Path) -> None:
    with FaultyUpstream() as server:
        server.mode = "/ok"
        # TTL 0: every call reads the secret, so each breakage is seen at once
        env = {"BROKER_PROFILE": "bakrypt", "BROKER_TOKEN_URL": f"{server.url}/auth/token/", "BROKER_SECRET_TTL": "0"}
        with run_broker(tmp_path, env=env, secret=SECRET) as broker:
            url = f"{broker.url}/auth/login"
            body = {"username": "demo", "password": PASSWORD}
            for broken in ("not json", json.dumps({"client_id": "x"}), None):
                if broken is None:
                    broker.delete_secret()
                else:
                    broker.put_secret(broken)
                response = requests.post(url, json=body, timeout=30)
                assert response.status_code == 503
                assert response.json()["error"] == "temporarily_unavailable"
                broker.put_secret(SECRET)  # fixed (re-created after the deletion)
                assert requests.post(url, json=body, timeout=30).status_code == 200
            logs = broker.logs()
        assert [value for value in PLANTED if value in logs] == []
