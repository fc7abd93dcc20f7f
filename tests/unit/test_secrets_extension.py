"""BROKER_SECRETS_BACKEND=extension: the secret comes from the AWS Parameters and Secrets Lambda
Extension's documented localhost API, here a local server that follows it:
``GET /secretsmanager/get?secretId=…`` with ``X-Aws-Parameters-Secrets-Token: $AWS_SESSION_TOKEN``,
answering the GetSecretValue JSON.
https://docs.aws.amazon.com/secretsmanager/latest/userguide/retrieving-secrets_lambda.html
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer

from broker.errors import ConfigError
from tests.support import DEMO_SECRET, load_event
from tests.unit.conftest import SECRET_ID, AppLoader, FakeContext, body_of

SESSION_TOKEN = "session-token-for-the-extension"


@pytest.fixture
def extension(monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.start()
    monkeypatch.setenv("BROKER_SECRETS_BACKEND", "extension")
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(server.port))
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    yield server
    server.clear()
    server.stop()


def get_secret_value_answer(secret: dict[str, Any]) -> dict[str, Any]:
    return {
        "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{SECRET_ID}-AbCdEf",
        "Name": SECRET_ID,
        "SecretString": json.dumps(secret),
        "VersionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": "2025-01-01T00:00:00.000Z",
    }


def test_login_reads_the_secret_from_the_extension_once(
    extension: HTTPServer,
    load_app: AppLoader,
    httpserver: HTTPServer,
    token_answer: dict[str, Any],
    context: FakeContext,
) -> None:
    # Given the extension holds the secret, for callers presenting the session token
    extension.expect_request(
        "/secretsmanager/get",
        method="GET",
        query_string={"secretId": SECRET_ID},
        headers={"X-Aws-Parameters-Secrets-Token": SESSION_TOKEN},
    ).respond_with_json(get_secret_value_answer(DEMO_SECRET))
    httpserver.expect_request("/auth/token/", method="POST").respond_with_json(token_answer)
    app = load_app("password")

    # When the SPA logs in three times in a warm function
    responses = [app.lambda_handler(load_event("password-json"), context) for _ in range(3)]

    # Then every login succeeds with the client secret the extension gave, read once
    assert [r["statusCode"] for r in responses] == [200, 200, 200]
    assert body_of(responses[0]) == token_answer
    sent = parse_qs(httpserver.log[0][0].get_data(as_text=True))
    assert sent["client_secret"] == [DEMO_SECRET["client_secret"]]
    assert len(extension.log) == 1


@pytest.mark.parametrize(
    ("status", "answer"),
    [(401, {"message": "unauthorized"}), (404, {"message": "not found"}), (200, {"Name": SECRET_ID}), (200, [1])],
)
def test_an_extension_failure_is_503_temporarily_unavailable(
    status: int,
    answer: Any,
    extension: HTTPServer,
    load_app: AppLoader,
    httpserver: HTTPServer,
    context: FakeContext,
) -> None:
    extension.expect_request("/secretsmanager/get").respond_with_json(answer, status=status)
    response = load_app("password").lambda_handler(load_event("password-json"), context)
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "temporarily_unavailable"
    assert len(httpserver.log) == 0


def test_an_unknown_backend_fails_the_cold_start(monkeypatch: pytest.MonkeyPatch, load_app: AppLoader) -> None:
    monkeypatch.setenv("BROKER_SECRETS_BACKEND", "vault")
    with pytest.raises(ConfigError, match="BROKER_SECRETS_BACKEND"):
        load_app("password")


def test_a_snapstart_restore_forgets_the_cached_secret() -> None:
    import snapshot_restore_py

    from broker.secrets import SecretStore

    # Given a store that has cached its secret (as in a SnapStart snapshot)
    reads: list[str] = []

    def fetch(secret_id: str) -> str:
        reads.append(secret_id)
        return json.dumps(DEMO_SECRET)

    store = SecretStore("s", ttl=300, required=("client_id",), fetch=fetch)
    store.get()

    # When the runtime runs the after-restore hooks
    for func, args, kwargs in snapshot_restore_py.get_after_restore():
        if func == store.clear:
            func(*args, **kwargs)

    # Then the next read goes to the source again
    store.get()
    assert reads == ["s", "s"]
