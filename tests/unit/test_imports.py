"""Each function imports only what it uses: checked in a fresh interpreter, as Lambda starts one.

No Powertools package (its ``__init__`` pulls in Metrics and the Tracer module), no X-Ray SDK,
no boto3 (whose import drags in s3transfer); with the extension backend, no SDK at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

NEVER = ("aws_lambda_powertools", "aws_xray_sdk", "boto3", "s3transfer", "requests")
SDK = ("botocore",)


def modules_after_import(function: str, backend: str) -> set[str]:
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
    }
    code = "import json, sys, app; print(json.dumps(sorted(sys.modules)))"
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


@pytest.mark.parametrize("function", ["password", "refresh", "exchange"])
def test_sdk_backend_imports_botocore_and_nothing_it_does_not_use(function: str) -> None:
    modules = modules_after_import(function, "sdk")
    assert "botocore.client" in modules  # the client is made at import, in the init phase
    assert "urllib3" in modules
    assert sorted(m for m in modules if m.split(".")[0] in NEVER) == []


@pytest.mark.parametrize("function", ["password", "refresh", "exchange"])
def test_extension_backend_never_imports_the_sdk(function: str) -> None:
    modules = modules_after_import(function, "extension")
    assert "urllib3" in modules
    assert sorted(m for m in modules if m.split(".")[0] in NEVER + SDK) == []


def test_the_check_would_catch_a_broad_powertools_import() -> None:
    # The check above can fail: the smallest Powertools import brings in Metrics and the Tracer.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, aws_lambda_powertools.logging; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules = set(json.loads(done.stdout))
    assert {"aws_lambda_powertools.tracing.tracer", "aws_lambda_powertools.metrics"} <= modules
