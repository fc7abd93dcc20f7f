"""The template's optional edge protection, read from what SAM's transform generates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_template import FUNCTIONS, resources, translated


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_no_web_acl_unless_asked_for() -> None:
    # CloudFormation evaluates conditions at deploy time: read them as it would
    template = translated()
    assert template["Parameters"]["WebAcl"]["Default"] == "Disabled"
    assert template["Conditions"]["UseWebAcl"] == {"Fn::Equals": [{"Ref": "WebAcl"}, "Enabled"]}
    for name in ("BrokerWebAcl", "BrokerWebAclAssociation"):
        assert template["Resources"][name]["Condition"] == "UseWebAcl"


def enabled() -> dict[str, Any]:
    return resources(json.dumps({"WebAcl": "Enabled", "LoginRateLimit": 120}))


def test_the_web_acl_rate_limits_each_ip_on_the_login_and_token_routes() -> None:
    # Given the WebAcl parameter turned on
    acl = enabled()["BrokerWebAcl"]["Properties"]
    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in acl["Rules"]}

    # Then a rate-based rule blocks per source IP, scoped down to /auth/login and /auth/token
    rate = rules["login-rate-per-ip"]
    assert rate["Action"] == {"Block": {}}
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP"
    assert statement["Limit"] == {"Ref": "LoginRateLimit"}
    paths = {
        s["ByteMatchStatement"]["SearchString"] for s in statement["ScopeDownStatement"]["OrStatement"]["Statements"]
    }
    assert paths == {"/auth/login", "/auth/token"}

    # And AWS's managed groups for common and known-bad inputs apply
    groups = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in acl["Rules"]
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert groups == {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"}


def test_the_web_acl_is_associated_with_the_stage() -> None:
    association = enabled()["BrokerWebAclAssociation"]["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": ["BrokerWebAcl", "Arn"]}
    arn = json.dumps(association["ResourceArn"])
    assert "/restapis/" in arn
    assert "BrokerApi" in arn
    assert "/stages/" in arn


def test_reserved_concurrency_is_off_by_default_and_applies_to_every_function_when_set() -> None:
    template = translated()
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == ""
    assert template["Conditions"]["HasReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, ""]}]
    }
    for function in FUNCTIONS:
        assert template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == {
            "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
        }
