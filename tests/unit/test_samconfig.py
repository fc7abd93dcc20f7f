"""samconfig.toml: every environment deploys with parameters the template declares, builds with
them (Architecture), and `make deploy` refuses one that still holds a placeholder."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from local.samconfig import SAMCONFIG, parameters, problems
from tests.support import ROOT
from tests.unit.test_template import source

CONFIG: dict[str, Any] = tomllib.loads(SAMCONFIG.read_text())
ENVIRONMENTS = [name for name in CONFIG if name != "version"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_names_a_stack_a_region_and_declared_parameters(env: str) -> None:
    declared = source()["Parameters"]
    shared = CONFIG[env]["global"]["parameters"]
    assert shared["stack_name"].startswith("token-broker")
    assert shared["region"]
    for name, value in parameters(CONFIG, env).items():
        assert name in declared, name
        allowed = declared[name].get("AllowedValues")
        assert allowed is None or value in [str(v) for v in allowed], (name, value)
    assert CONFIG[env]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"


def test_named_environments_keep_their_parameters_where_sam_build_reads_them() -> None:
    for env in ENVIRONMENTS:
        if env != "default":
            assert "parameter_overrides" in CONFIG[env]["global"]["parameters"], env
    assert parameters(CONFIG, "bakrypt-mainnet")["Architecture"] == "arm64"


def test_guided_defaults_use_the_secret_name_the_docs_create() -> None:
    secret = parameters(CONFIG, "default")["ClientSecretName"]
    assert secret == source()["Parameters"]["ClientSecretName"]["Default"] == "token-broker/client"
    for doc in ("README.md", "docs/secret.md", "docs/deploy.md"):
        assert secret in (ROOT / doc).read_text(), doc


def test_placeholders_are_refused_and_a_ready_environment_passes() -> None:
    # Given the shipped environments
    # Then the development one is ready, the production one still holds placeholders
    assert problems(CONFIG, "bakrypt-testnet") == []
    refused = problems(CONFIG, "bakrypt-mainnet")
    assert any(p.startswith("AllowedOrigins=https://app.example.com") for p in refused)
    assert any(p.startswith("AlarmTopicArn=") for p in refused)
    # And an unknown environment is named as such
    assert problems(CONFIG, "nowhere")[0].startswith("no environment 'nowhere'")
    # And once its values are real, it passes
    edited = {**CONFIG, "x": {"global": {"parameters": {"parameter_overrides": ["AllowedOrigins=https://app.real"]}}}}
    assert problems(edited, "x") == []
