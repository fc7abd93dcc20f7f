"""Each function imports only what it uses: checked in a fresh interpreter, as Lambda starts one.

Powertools' logger only: no Tracer initialised (so no X-Ray SDK), no Powertools utility or
event handler pulled in by a broad import, no boto3 (whose import drags in s3transfer), no
cryptography outside cookie mode, no fastjsonschema (the schemas are compiled ahead of time,
broker/validators); with the extension backend, no SDK at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

NEVER = ("aws_xray_sdk", "boto3", "s3transfer", "requests", "cryptography", "fastjsonschema", "jwt")
# Powertools' package __init__ imports its logging, metrics and tracing modules (the Tracer
# class, not an instance: X-Ray stays unloaded). Anything beyond those is a broad import.
POWERTOOLS_ALLOWED = ("logging", "metrics", "tracing", "shared", "package_logger", "exceptions", "warnings")


def broad_powertools(modules: set[str]) -> list[str]:
    prefix = "aws_lambda_powertools."
    return sorted(
        m
        for m in modules
        if m.startswith(prefix)
        and not m.removeprefix(prefix).startswith(POWERTOOLS_ALLOWED)
        # the logger's own needs: the correlation id is read with jmespath_utils
        and m not in ("aws_lambda_powertools.utilities", "aws_lambda_powertools.utilities.jmespath_utils")
        and not m.startswith("aws_lambda_powertools.utilities.typing")
    )


SDK = ("botocore",)


def modules_after_import(function: str, backend: str, **extra: str) -> set[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "POWERTOOLS_", "AWS_"))},
        "PYTHONPATH": str(ROOT / "layers" / "broker"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "BROKER_SECRET_ID": "token-broker/client",
        "BROKER_PROFILE": "bakrypt",
        "BROKER_TOKEN_URL": "http://127.0.0.1:9/auth/token/",
        "BROKER_EXCHANGE_URL": "http://127.0.0.1:9/auth/exchange/",
        "BROKER_ALLOWED_ORIGINS": "http://localhost:5173",
        "BROKER_SECRETS_BACKEND": backend,
        "POWERTOOLS_SERVICE_NAME": "token-broker",
        **extra,
    }
    # As in the Lambda runtime, which has neither pyOpenSSL nor awscrt (this venv does, through
    # moto and sam-cli, and botocore imports them when present).
    code = (
        "import json, sys; sys.modules.update(OpenSSL=None, awscrt=None); "
        "import app; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "functions" / function,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("function", ["password", "refresh", "exchange", "logout"])
def test_sdk_backend_imports_botocore_and_nothing_it_does_not_use(function: str) -> None:
    modules = modules_after_import(function, "sdk")
    assert "botocore.client" in modules  # the client is made at import, in the init phase
    assert "urllib3" in modules
    assert sorted(m for m in modules if m.split(".")[0] in NEVER) == []
    assert broad_powertools(modules) == []
    assert "aws_lambda_powertools.logging.logger" in modules


@pytest.mark.parametrize("function", ["password", "refresh", "exchange", "logout"])
def test_extension_backend_never_imports_the_sdk(function: str) -> None:
    modules = modules_after_import(function, "extension")
    assert "urllib3" in modules
    assert sorted(m for m in modules if m.split(".")[0] in NEVER) == []
    # Powertools' user-agent hook imports the bare ``botocore`` package (a few ms, no client):
    # nothing of the SDK's machinery may follow.
    assert sorted(m for m in modules if m.startswith(tuple(f"{sdk}." for sdk in SDK))) == []
    assert broad_powertools(modules) == []


CODE_FLOW = {
    "BROKER_REFRESH_DELIVERY": "cookie",
    "BROKER_LOGIN_FLOWS": "password,code",
    "BROKER_PROFILE": '{"preset": "bakrypt", "issuer": "http://127.0.0.1:9/issuer"}',
}


@pytest.mark.parametrize("function", ["password", "refresh", "exchange", "logout"])
def test_the_existing_routes_never_import_the_jose_library_even_with_the_code_flow_on(function: str) -> None:
    modules = modules_after_import(function, "extension", **CODE_FLOW)
    assert sorted(m for m in modules if m.split(".")[0] == "jwt") == []


@pytest.mark.parametrize(("function", "jose"), [("authorize", False), ("callback", True), ("session", False)])
def test_only_the_callback_imports_the_jose_library(function: str, jose: bool) -> None:
    # Given the code flow on (its routes refuse to start without it), nothing fetched at import
    modules = modules_after_import(function, "sdk", **CODE_FLOW)
    assert ("jwt" in modules) is jose
    assert (
        sorted(m for m in modules if m.split(".")[0] in NEVER and m.split(".")[0] not in ("jwt", "cryptography")) == []
    )
    assert broad_powertools(modules) == []


def test_the_check_would_catch_a_broad_powertools_import() -> None:
    # The check above can fail: a utility import (validation, say) or a Tracer shows up.
    code = (
        "import json, sys; from aws_lambda_powertools.utilities.validation import validate; "
        "from aws_lambda_powertools import Tracer; Tracer(disabled=False); print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert broad_powertools(modules)
    assert any(m.startswith("aws_xray_sdk") for m in modules)
