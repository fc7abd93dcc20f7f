"""The secret is read once per TTL in a warm function, and re-read (once) on rejection."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from broker import guards
from broker import secrets as broker_secrets
from broker.secrets import BrokerSecret, SecretStore, parse_secret
from tests.support import DEMO_SECRET, ISSUED, load_event
from tests.unit.conftest import AppLoader, FakeContext, SecretsManager, body_of


def test_one_secret_read_across_many_warm_invocations(
    load_app: AppLoader,
    secrets_manager: SecretsManager,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    httpserver.expect_request("/auth/token/").respond_with_json(token_answer)
    app = load_app("password")
    for _ in range(25):
        assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 200
    assert secrets_manager.reads == ["token-broker/client"]
    assert len(httpserver.log) == 25


def test_ttl_expiry_reads_again() -> None:
    now = [0.0]
    calls: list[str] = []

    def fetch(secret_id: str) -> str:
        calls.append(secret_id)
        return json.dumps(DEMO_SECRET)

    store = SecretStore("s", ttl=300, required=("client_id",), fetch=fetch, clock=lambda: now[0])
    store.get()
    now[0] = 299.0
    store.get()
    assert len(calls) == 1
    now[0] = 300.0
    store.get()
    assert len(calls) == 2


def test_rotation_forces_one_reread_and_one_retry(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    # Given a warm function that cached the old client secret
    current = {"secret": DEMO_SECRET["client_secret"]}

    def upstream(request: Request) -> Response:
        sent = parse_qs(request.get_data(as_text=True))
        if sent["client_secret"] != [current["secret"]]:
            return Response(json.dumps({"error": "invalid_client"}), status=401, content_type="application/json")
        return Response(json.dumps({"access_token": ISSUED["access_token"]}), content_type="application/json")

    httpserver.expect_request("/auth/token/").respond_with_handler(upstream)
    app = load_app("password")
    assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 200

    # When the secret is rotated at the upstream and in Secrets Manager
    current["secret"] = "rotated-secret-Zx1"
    secrets_manager.put({**DEMO_SECRET, "client_secret": "rotated-secret-Zx1"})
    response = app.lambda_handler(load_event("password-json"), context)

    # Then the call succeeds after one forced re-read and one retry
    assert response["statusCode"] == 200
    assert body_of(response)["access_token"] == ISSUED["access_token"]
    assert len(secrets_manager.reads) == 2
    assert len(httpserver.log) == 3
    # And the new secret is cached from then on
    assert app.lambda_handler(load_event("password-json"), context)["statusCode"] == 200
    assert len(secrets_manager.reads) == 2


def test_exchange_token_rotation_is_reread_too(
    load_app: AppLoader, secrets_manager: SecretsManager, httpserver: HTTPServer, context: FakeContext
) -> None:
    def upstream(request: Request) -> Response:
        if request.headers.get("Authorization") != "Token new-exchange-token-Qq":
            return Response(json.dumps({"detail": "Invalid token."}), status=401, content_type="application/json")
        return Response(json.dumps({"access_token": ISSUED["access_token"]}), content_type="application/json")

    httpserver.expect_request("/auth/exchange/").respond_with_handler(upstream)
    app = load_app("exchange")
    assert app.lambda_handler(load_event("exchange"), context)["statusCode"] == 502
    secrets_manager.put({**DEMO_SECRET, "exchange_token": "new-exchange-token-Qq"})
    assert app.lambda_handler(load_event("exchange"), context)["statusCode"] == 200


def test_the_secret_never_shows_its_values_in_repr() -> None:
    secret = parse_secret(json.dumps(DEMO_SECRET))
    assert isinstance(secret, BrokerSecret)
    for value in (repr(secret), str(secret)):
        assert DEMO_SECRET["client_secret"] not in value
        assert "client_secret" in value


def test_the_botocore_session_is_made_once_on_first_use(monkeypatch: Any) -> None:
    import botocore.session

    monkeypatch.setattr(broker_secrets, "_SESSION", None)
    session = broker_secrets.botocore_session()
    assert isinstance(session, botocore.session.Session)
    assert broker_secrets.botocore_session() is session


def test_the_secrets_and_guards_clients_come_from_one_botocore_session(monkeypatch: Any) -> None:
    # Given a recording stand-in for the execution environment's botocore session
    made: list[tuple[str, int]] = []

    class Session:
        def create_client(self, service: str, **options: Any) -> str:
            made.append((service, id(self)))
            return f"{service} client"

    session = Session()
    monkeypatch.setattr(broker_secrets, "_SESSION", session)
    monkeypatch.setattr(broker_secrets, "_CLIENT", None)

    # When the Secrets Manager client and the guards' DynamoDB client are made
    broker_secrets._client()
    guards.dynamodb_client("http://127.0.0.1:1")

    # Then both came from that one session
    assert made == [("secretsmanager", id(session)), ("dynamodb", id(session))]
    assert broker_secrets.botocore_session() is session
