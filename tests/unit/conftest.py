"""Unit fixtures: in-process Secrets Manager (moto), a local upstream (pytest-httpserver),
and each function's ``app.py`` imported the way Lambda imports it, with a fresh environment."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pytest_httpserver import HTTPServer

import broker.secrets
from tests.support import DEMO_SECRET, ISSUED, ROOT

SECRET_ID = "token-broker/client"
ORIGIN = "http://localhost:5173"

# The tests' own SDK clients come from one boto3 session. moto resets boto3's default session
# each time a mock starts, and a client on a fresh session loads the SDK's endpoint data again
# (~70 ms a test, most of a unit test's time).
_SDK: Any = boto3.session.Session()


def aws_client(service: str) -> Any:
    """A client for the tests' own calls to the (moto) AWS services."""
    return _SDK.client(service, region_name="us-east-1")


@dataclass
class SecretsManager:
    """The moto-backed secret, with a count of GetSecretValue calls the broker made."""

    client: Any
    reads: list[str] = field(default_factory=list)

    def put(self, value: dict[str, Any] | str) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        self.client.put_secret_value(SecretId=SECRET_ID, SecretString=text)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "token-broker")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")


@pytest.fixture
def secrets_manager() -> Iterator[SecretsManager]:
    with mock_aws():
        client = aws_client("secretsmanager")
        client.create_secret(Name=SECRET_ID, SecretString=json.dumps(DEMO_SECRET))
        broker.secrets._CLIENT = None  # the broker creates its own client inside this mock
        manager = SecretsManager(client)
        original = broker.secrets._client

        def counting_client() -> Any:
            fresh = broker.secrets._CLIENT is None
            made = original()
            if fresh:
                made.meta.events.register(
                    "before-parameter-build.secrets-manager.GetSecretValue",
                    lambda **kwargs: manager.reads.append(kwargs["params"]["SecretId"]),
                )
            return made

        broker.secrets._client = counting_client  # instrumented, same behaviour
        try:
            yield manager
        finally:
            broker.secrets._client = original
            broker.secrets._CLIENT = None


@pytest.fixture
def token_answer() -> dict[str, Any]:
    return {**ISSUED, "token_type": "Bearer", "expires_in": 3600, "scope": "read write"}


AppLoader = Callable[..., ModuleType]


@pytest.fixture
def load_app(monkeypatch: pytest.MonkeyPatch, httpserver: HTTPServer) -> AppLoader:
    """Import functions/<name>/app.py as Lambda would, after setting its environment."""

    def load(name: str, **env: str) -> ModuleType:
        defaults = {
            "BROKER_SECRET_ID": SECRET_ID,
            "BROKER_PROFILE": "bakrypt",
            "BROKER_TOKEN_URL": httpserver.url_for("/auth/token/"),
            "BROKER_EXCHANGE_URL": httpserver.url_for("/auth/exchange/"),
            "BROKER_ALLOWED_ORIGINS": f"{ORIGIN},https://app.example.com",
            "BROKER_UPSTREAM_TIMEOUT": "2",
        }
        for key, value in {**defaults, **env}.items():
            monkeypatch.setenv(key, value)
        path = ROOT / "functions" / name / "app.py"
        spec = importlib.util.spec_from_file_location(f"app_{name}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load


class FakeContext:
    function_name = "PasswordFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:PasswordFunction"
    aws_request_id = "5f1f2a3b-0000-4000-8000-000000000000"
    function_version = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(response["body"])
    return parsed
