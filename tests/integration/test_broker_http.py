"""The broker driven only over HTTP through the local runner: real RIE, real moto server,
real django-oauth-toolkit upstream (and a local server speaking the partner dialect)."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from oauthlib.oauth2 import LegacyApplicationClient
from requests_oauthlib import OAuth2Session

from local.partner import PartnerUpstream
from local.runner.testing import LocalBroker, run_broker

pytestmark = pytest.mark.integration
TIMEOUT = 30
DEMO = {"username": "demo", "password": "demo-password"}
NO_STORE = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


def post(broker: LocalBroker, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{broker.url}{path}", timeout=TIMEOUT, **kwargs)


def login(broker: LocalBroker) -> dict[str, Any]:
    response = post(broker, "/auth/login", json=DEMO)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def userinfo(broker: LocalBroker, access_token: str) -> requests.Response:
    assert broker.upstream_url is not None
    return requests.get(
        f"{broker.upstream_url}/auth/userinfo/", headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT
    )


def test_login_returns_real_tokens_in_the_rfc6749_shape(broker: LocalBroker) -> None:
    response = post(broker, "/auth/login", json=DEMO, headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    for name, value in NO_STORE.items():
        assert response.headers[name] == value
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    # the token is real: the upstream accepts it
    assert userinfo(broker, body["access_token"]).json() == {"username": "demo"}


def test_refresh_rotates_and_a_replay_in_the_grace_period_gets_the_same_pair(broker: LocalBroker) -> None:
    # Given the default deployment: guards on, single-flight refresh with a 30 s grace
    first = login(broker)
    refreshed = post(broker, "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != first["refresh_token"]
    # The upstream rotated: the old refresh token is dead there
    dead = broker.upstream_refresh(first["refresh_token"])
    assert dead.status_code == 400
    assert dead.json()["error"] == "invalid_grant"
    # A twin (a second tab) replaying it within the grace gets the same new pair, not a logout
    twin = post(broker, "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert twin.status_code == 200
    assert twin.json() == refreshed.json()


@pytest.fixture(scope="module")
def unguarded(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with run_broker(tmp_path_factory.mktemp("unguarded"), parameter_overrides={"Guards": "Disabled"}) as running:
        yield running


def test_without_guards_the_old_refresh_token_is_invalid_grant(unguarded: LocalBroker) -> None:
    first = login(unguarded)
    refreshed = post(unguarded, "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    again = post(unguarded, "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_two_concurrent_refreshes_without_guards_one_200_one_400(unguarded: LocalBroker) -> None:
    token = login(unguarded)["refresh_token"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: post(unguarded, "/auth/refresh", json={"refresh_token": token}), range(2)))
    statuses = [answer.status_code for answer in answers]
    # never a 5xx; the rotating upstream gives the loser invalid_grant (or, racing inside
    # django-oauth-toolkit, the same new pair)
    assert all(status in (200, 400) for status in statuses), statuses
    assert 200 in statuses
    for answer in answers:
        if answer.status_code == 400:
            assert answer.json()["error"] == "invalid_grant"


def test_form_encoded_rfc6749_requests_work(broker: LocalBroker) -> None:
    response = post(broker, "/auth/login", data={"grant_type": "password", **DEMO, "client_id": "public-spa"})
    assert response.status_code == 200
    refreshed = post(
        broker, "/auth/refresh", data={"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200


def test_a_standard_oauth2_client_library_works_unmodified(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given requests-oauthlib's password-grant client, configured as for any token endpoint
    # (oauthlib's documented switch for plain-http local testing; deployed, the API is https)
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    session = OAuth2Session(client=LegacyApplicationClient(client_id="spa"))
    # When it logs in and refreshes against the broker's routes
    token = session.fetch_token(token_url=f"{broker.url}/auth/login", username="demo", password="demo-password")
    assert token["access_token"]
    refreshed = session.refresh_token(f"{broker.url}/auth/refresh")
    # Then it holds a new, working pair
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert userinfo(broker, refreshed["access_token"]).status_code == 200


def test_exchange_returns_a_real_token_for_a_signed_caller(broker: LocalBroker) -> None:
    # Given the template's default: the exchange route is AWS_IAM
    response = broker.signed_post("/auth/exchange")
    assert response.status_code == 200, response.text
    assert userinfo(broker, response.json()["access_token"]).status_code == 200


def test_exchange_rejects_unsigned_and_badly_signed_calls(broker: LocalBroker) -> None:
    unsigned = post(broker, "/auth/exchange")
    assert unsigned.status_code == 403
    assert unsigned.json() == {"message": "Missing Authentication Token"}
    forged = post(
        broker,
        "/auth/exchange",
        headers={
            "X-Amz-Date": "20261124T000000Z",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261124/us-east-1/execute-api/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        },
    )
    assert forged.status_code == 403
    assert "access_token" not in forged.text


def test_exchange_with_an_api_key(built_template: Path, tmp_path: Path) -> None:
    overrides = {"ExchangeAuthorization": "API_KEY"}
    with run_broker(tmp_path, parameter_overrides=overrides) as keyed:
        assert post(keyed, "/auth/exchange").status_code == 403
        assert post(keyed, "/auth/exchange", headers={"x-api-key": "guess"}).status_code == 403
        assert post(keyed, "/auth/exchange", headers={"x-api-key": keyed.api_key}).status_code == 200


def test_wrong_password_is_invalid_grant(broker: LocalBroker) -> None:
    response = post(broker, "/auth/login", json={"username": "demo", "password": "not-the-password"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "not-the-password" not in response.text


def test_bad_input_never_reaches_the_upstream(broker: LocalBroker) -> None:
    for kwargs, status in (
        ({"data": b"username=a&username=b&password=x", "headers": {"Content-Type": FORM}}, 400),
        ({"data": b"x" * 20_000, "headers": {"Content-Type": "application/json"}}, 413),
        ({"data": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": DEMO, "headers": {"Origin": "https://evil.example"}}, 403),
    ):
        response = post(broker, "/auth/login", **kwargs)
        assert response.status_code == status, response.text
        assert response.json()["error"] == "invalid_request"


FORM = "application/x-www-form-urlencoded"


def test_preflight_answers_the_configured_origin_only(broker: LocalBroker) -> None:
    def preflight(origin: str) -> requests.Response:
        return requests.options(
            f"{broker.url}/auth/login",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            timeout=TIMEOUT,
        )

    assert preflight("http://localhost:5173").status_code == 204
    refused = preflight("https://evil.example")
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_ten_concurrent_refreshes_with_guards_make_one_upstream_call(broker: LocalBroker) -> None:
    assert broker.upstream_url is not None
    token = login(broker)["refresh_token"]
    requests.post(f"{broker.upstream_url}/_control/reset-stats", timeout=TIMEOUT)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: post(broker, "/auth/refresh", json={"refresh_token": token}), range(10)))
    assert [answer.status_code for answer in answers] == [200] * 10, [a.text for a in answers]
    assert len({answer.text for answer in answers}) == 1  # the same new tokens for every twin
    stats = requests.get(f"{broker.upstream_url}/_control/stats", timeout=TIMEOUT).json()
    assert stats["token"].get("refresh_token") == 1


@pytest.fixture
def rotating_broker(built_template: Path, tmp_path: Path) -> Iterator[LocalBroker]:
    with run_broker(tmp_path) as running:
        yield running


def test_secret_rotation_needs_one_forced_reread(rotating_broker: LocalBroker) -> None:
    broker = rotating_broker
    assert broker.upstream_url is not None
    login(broker)  # warm: the secret is cached
    # When the client secret is rotated at the upstream and in Secrets Manager
    rotated = requests.post(
        f"{broker.upstream_url}/_control/client-secret", json={"client_secret": "rotated-Zq9"}, timeout=TIMEOUT
    )
    assert rotated.status_code == 200
    secret = json.loads(broker.get_secret())
    broker.put_secret({**secret, "client_secret": "rotated-Zq9"})
    # Then the next call succeeds, after one forced re-read
    assert post(broker, "/auth/login", json=DEMO).status_code == 200
    assert broker.logs().count("retrying once with the re-read secret") == 1


def test_rejected_credentials_after_a_fresh_read_are_502(rotating_broker: LocalBroker) -> None:
    broker = rotating_broker
    assert broker.upstream_url is not None
    requests.post(f"{broker.upstream_url}/_control/client-secret", json={"client_secret": "x-1"}, timeout=TIMEOUT)
    response = post(broker, "/auth/login", json=DEMO)
    assert response.status_code == 502
    assert response.json()["error"] == "server_error"
    assert "x-1" not in broker.logs()


@pytest.mark.parametrize("preset", ["bakrypt", "bakrypt-testnet", "didit"])
def test_presets_against_the_local_server(broker: LocalBroker, tmp_path: Path, preset: str) -> None:
    # Given the preset (client_secret_post for bakrypt, HTTP Basic for didit) pointed at the
    # local django-oauth-toolkit server, which accepts both
    assert broker.upstream_url is not None
    env = {"BROKER_PROFILE": preset, "BROKER_TOKEN_URL": f"{broker.upstream_url}/auth/token/"}
    with run_broker(tmp_path, env=env) as presetted:
        assert presetted.upstream_url is None  # no second upstream: the preset's URL is overridden
        # When a user logs in and refreshes, Then both work with the preset's client authentication
        first = login(presetted)
        refreshed = post(presetted, "/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text


def test_partner_json_profile_against_a_partner_dialect_server(built_template: Path, tmp_path: Path) -> None:
    with PartnerUpstream() as partner:
        profile = {
            "token_url": f"{partner.url}/v1/auth/token",
            "client_auth": "none",
            "encoding": "json",
            "fields": {"refresh_token": "refreshToken"},
            "headers": {"partnerId": "{partner_id}", "grantType": "{grant_type}"},
        }
        with run_broker(tmp_path, env={"BROKER_PROFILE": json.dumps(profile)}) as broker:
            first = login(broker)
            assert set(first) >= {"access_token", "refresh_token", "expires_in", "token_type"}
            refreshed = post(broker, "/auth/refresh", json={"refresh_token": first["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
            sent = json.loads(partner.requests[-1]["body"])
            assert sent == {"grant_type": "refresh_token", "refreshToken": first["refresh_token"]}
            assert partner.requests[-1]["headers"]["partnerId"] == "demo-partner"
