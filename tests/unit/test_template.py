"""The deployment's security properties, read from the CloudFormation SAM generates.

The template is translated the way CloudFormation's SAM transform would (samtranslator),
so policy templates are expanded into the IAM statements that are really deployed.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from typing import Any

import pytest
from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

from tests.support import ROOT

FUNCTIONS = (
    "PasswordFunction",
    "RefreshFunction",
    "ExchangeFunction",
    "LogoutFunction",
    "TokenFunction",
    "AuthorizeFunction",
    "CallbackFunction",
    "SessionFunction",
)
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
SECRET_ACTIONS = {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}
# Each function's item actions on the guards' table, and the key prefix each is confined to.
# login: reserve, give back, read its counter to clear one spelling's failures, delete an empty one
LOGIN_ITEMS = ({"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem"}, ["login#*"])
# refresh: claim and publish, poll, and read logout marks
REFRESH_ITEMS = ({"dynamodb:PutItem", "dynamodb:GetItem"}, ["refresh#*", "ended#*"])
# logout: mark the token it revokes
LOGOUT_ITEMS = ({"dynamodb:PutItem"}, ["ended#*"])
TABLE_ACTIONS = {
    "PasswordFunction": [LOGIN_ITEMS],
    "RefreshFunction": [REFRESH_ITEMS],
    "TokenFunction": [LOGIN_ITEMS, REFRESH_ITEMS],  # both grants, each guard's own items
    "LogoutFunction": [LOGOUT_ITEMS],
}


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def source() -> dict[str, Any]:
    text = (ROOT / "template.yaml").read_text()
    # The transform wants S3 locations; sam build/package would put them there.
    text = text.replace("CodeUri: functions/", "CodeUri: s3://bucket/functions/")
    text = text.replace("ContentUri: layers/", "ContentUri: s3://bucket/layers/")
    parsed: dict[str, Any] = yaml_parse(text)
    return parsed


@cache
def translated(params: str = "{}") -> dict[str, Any]:
    result: dict[str, Any] = transform(source(), json.loads(params), _NoManagedPolicies())
    return result


def resources(params: str = "{}") -> dict[str, Any]:
    found: dict[str, Any] = translated(params)["Resources"]
    return found


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_sam_validate_accepts_the_template() -> None:
    result = subprocess.run(
        [str(ROOT / ".venv/bin/sam"), "validate", "--lint", "--template", str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "HOME": "/tmp"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def role_statements(function: str) -> list[dict[str, Any]]:
    role = resources()[f"{function}Role"]["Properties"]
    assert role.get("ManagedPolicyArns") == [BASIC_EXECUTION]
    statements: list[dict[str, Any]] = []
    for policy in role.get("Policies", []):
        statements.extend(in_force(listed) for listed in policy["PolicyDocument"]["Statement"])
    return statements


def in_force(statement: dict[str, Any]) -> dict[str, Any]:
    """A statement listed only when the guards are on is checked as it is then."""
    if "Fn::If" not in statement:
        return statement
    condition, when_on, when_off = statement["Fn::If"]
    assert condition == "UseGuards"
    assert when_off == {"Ref": "AWS::NoValue"}
    on: dict[str, Any] = when_on
    return on


def secret_name_of(resource: Any) -> str:
    """The Fn::Sub behind a secret ARN, reduced to the parameter it names."""
    text = json.dumps(resource)
    for name in ("ExchangeSecretName", "ClientSecretName"):
        if name in text:
            return name
    raise AssertionError(f"no secret parameter in {text}")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_role_reads_only_its_secret_and_its_own_table_items(function: str) -> None:
    statements = role_statements(function)
    assert statements, "the function needs to read its secret"
    table_statements = []
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = set(statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
        assert statement["Resource"] != "*"
        assert "*" not in json.dumps(statement["Resource"]).replace("-??????", "")
        if actions <= SECRET_ACTIONS:
            continue
        # the guards' table: exactly the item actions this function uses, on its own key prefix
        assert statement["Resource"] == {"Fn::GetAtt": ["BrokerStateTable", "Arn"]}
        prefixes = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        table_statements.append((actions, prefixes))
    assert table_statements == TABLE_ACTIONS.get(function, [])


def test_the_metadata_function_reads_no_secret_and_no_table() -> None:
    role = resources()["MetadataFunctionRole"]["Properties"]
    assert role.get("ManagedPolicyArns") == [BASIC_EXECUTION]
    assert role.get("Policies", []) == []


def test_the_guards_table_is_on_demand_expiring_recoverable_and_encrypted() -> None:
    table = source()["Resources"]["BrokerStateTable"]
    assert table["Condition"] == "UseGuards"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}


def test_login_and_refresh_cannot_read_a_separate_exchange_secret() -> None:
    for function in FUNCTIONS:
        if function == "ExchangeFunction":
            continue
        names = {secret_name_of(s["Resource"]) for s in role_statements(function) if "secretsmanager" in str(s)}
        assert names == {"ClientSecretName"}
    exchange = json.dumps(role_statements("ExchangeFunction"))
    assert "SeparateExchangeSecret" in exchange  # the exchange secret when one is named


def test_functions_time_out_between_the_upstream_deadline_and_api_gateways() -> None:
    params = source()["Parameters"]
    upstream, function = params["UpstreamTimeout"], params["FunctionTimeout"]
    assert function["Default"] > upstream["Default"]
    assert function["MaxValue"] < 29
    assert upstream["MaxValue"] < function["MaxValue"]
    for name in FUNCTIONS:
        assert resources()[name]["Properties"]["Timeout"] == {"Ref": "FunctionTimeout"}


def test_every_function_logs_to_a_group_with_retention() -> None:
    res = resources()
    for name in FUNCTIONS:
        group = res[name]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert res[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_stage_is_throttled_and_access_logged_without_bodies_or_auth() -> None:
    stage = next(r for r in resources().values() if r["Type"] == "AWS::ApiGateway::Stage")["Properties"]
    (settings,) = stage["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurstLimit"}
    log_format = stage["AccessLogSetting"]["Format"]
    json.loads(log_format.replace("\n", ""))
    for forbidden in ("$context.requestBody", "$input.body", "Authorization", "authorization", "$context.authorizer"):
        assert forbidden not in log_format


def test_gateway_errors_carry_cors_headers() -> None:
    body = next(r for r in resources().values() if r["Type"] == "AWS::ApiGateway::RestApi")["Properties"]["Body"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        headers = body["x-amazon-apigateway-gateway-responses"][kind]["responseParameters"]
        assert "gatewayresponse.header.Access-Control-Allow-Origin" in headers
        assert "'*'" not in json.dumps(headers)


@pytest.mark.parametrize(
    ("setting", "auth_type", "api_key"),
    [("AWS_IAM", "AWS_IAM", False), ("API_KEY", "NONE", True), ("NONE", "NONE", False)],
)
def test_exchange_authorization_follows_the_parameter(setting: str, auth_type: str, api_key: bool) -> None:
    body = next(r for r in resources().values() if r["Type"] == "AWS::ApiGateway::RestApi")["Properties"]["Body"]
    post = body["paths"]["/auth/exchange"]["post"]
    auth = post["x-amazon-apigateway-auth"]["type"]["Fn::If"]
    assert auth[0] == "ExchangeIam"
    chosen = auth[1] if setting == "AWS_IAM" else auth[2]
    assert chosen == auth_type
    security = post["security"]["Fn::If"]
    assert security[0] == "ExchangeApiKey"
    assert (security[1] if setting == "API_KEY" else security[2]) == ([{"api_key": []}] if api_key else [])
    # login and refresh stay public (the SPA calls them), preflight never needs auth
    for path in ("/auth/login", "/auth/refresh"):
        assert "x-amazon-apigateway-auth" not in body["paths"][path]["post"]
    assert "x-amazon-apigateway-auth" not in body["paths"]["/auth/exchange"]["options"]


def test_the_default_exchange_authorization_is_iam() -> None:
    assert source()["Parameters"]["ExchangeAuthorization"]["Default"] == "AWS_IAM"
