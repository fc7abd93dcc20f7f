"""The local stand-ins for what the functions call: Secrets Manager (moto) and the upstream (DOT)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from local.runner.logs import LogSink
from local.runner.processes import Supervisor, pump, read_ready_line
from local.runner.template import REGION, Table

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
DEMO_SECRET: dict[str, str] = {
    "client_id": "demo-client",
    "client_secret": "demo-client-secret",
    "exchange_token": "demo-exchange-token",
    "partner_id": "demo-partner",
}


def demo_secret() -> dict[str, object]:
    """The demo secret, with a fresh cookie key (BFF mode) for this run."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return {**DEMO_SECRET, "broker_keys": [key]}


FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _python_env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}


def start_python_service(
    supervisor: Supervisor, sink: LogSink, name: str, module: str, arguments: Iterable[str] = ()
) -> str:
    """Start ``python -m module``, wait for its ready line, stream its output to the sink; its URL."""
    process = supervisor.start(
        [sys.executable, "-m", module, *arguments],
        env=_python_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    pump(process.stderr, lambda line: sink.line(name, line))
    ready = read_ready_line(process, 60.0, name, on_line=lambda line: sink.line(name, line))
    return str(ready["url"])


def start_moto(supervisor: Supervisor, sink: LogSink) -> str:
    return start_python_service(supervisor, sink, "moto", "local.runner.moto_server")


def start_upstream(
    supervisor: Supervisor,
    sink: LogSink,
    state_dir: Path,
    secret: Mapping[str, str],
    allowed_hosts: Iterable[str] = (),
    oidc: bool = False,
) -> str:
    """The django-oauth-toolkit server, seeded with the demo user and the secret's client
    (with ``oidc``: for the authorization code flow, with OpenID Connect)."""
    arguments = ["--port", "0", "--state-dir", str(state_dir), *(["--oidc"] if oidc else [])]
    for host in allowed_hosts:
        arguments += ["--allowed-host", host]
    arguments += ["--username", DEMO_USERNAME, "--password", DEMO_PASSWORD]
    for option, key in (("--client-id", "client_id"), ("--client-secret", "client_secret")):
        arguments += [option, secret.get(key) or DEMO_SECRET[key]]
    arguments += ["--exchange-token", secret.get("exchange_token") or DEMO_SECRET["exchange_token"]]
    return start_python_service(supervisor, sink, "upstream", "local.upstream", arguments)


def local_profile(upstream_url: str, oidc: bool = False) -> str:
    """``BROKER_PROFILE`` for the local upstream: the bakrypt dialect on loopback URLs (with ``oidc``,
    its issuer for discovery, and the scope the code flow asks for)."""
    code_flow = {"issuer": f"{upstream_url}/o", "default_scope": "read profile email"} if oidc else {}
    return json.dumps(
        {
            "preset": "bakrypt",
            "token_url": f"{upstream_url}/auth/token/",
            "exchange_url": f"{upstream_url}/auth/exchange/",
            "revocation_url": f"{upstream_url}/auth/revoke/",
            **code_flow,
        }
    )


def function_services_env(moto_url: str) -> dict[str, str]:
    """What points a function's SDK at moto (Secrets Manager and DynamoDB)."""
    return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_url, "AWS_ENDPOINT_URL_DYNAMODB": moto_url}


def secrets_client(moto_url: str) -> SecretsManagerClient:
    import boto3

    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_table(moto_url: str, table: Table) -> None:
    import boto3

    client = boto3.client(
        "dynamodb",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_table(
        TableName=table.name,
        KeySchema=table.key_schema,  # type: ignore[arg-type]
        AttributeDefinitions=table.attributes,  # type: ignore[arg-type]
        BillingMode="PAY_PER_REQUEST",
    )
    if table.ttl_attribute:
        client.update_time_to_live(
            TableName=table.name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
        )


def put_secret(moto_url: str, secret_id: str, value: Mapping[str, object] | str) -> None:
    """Create the secret, or store a new version of it."""
    text = value if isinstance(value, str) else json.dumps(value)
    client = secrets_client(moto_url)
    try:
        client.put_secret_value(SecretId=secret_id, SecretString=text)
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name=secret_id, SecretString=text)
