"""What the deployment gives its operators, read from the CloudFormation SAM generates:
alarms on the metrics the functions emit, a dashboard, the architecture, the logging role."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support import ROOT
from tests.unit.test_template import FUNCTIONS, resources, source

NAMESPACE = "TokenBroker"
# alarm -> (namespace, metric, condition it exists under)
ALARMS = {
    "Api5xxAlarm": ("AWS/ApiGateway", "5XXError", None),
    "UpstreamFailuresAlarm": (NAMESPACE, "UpstreamFailures", None),
    "UpstreamTimeoutsAlarm": (NAMESPACE, "UpstreamTimeouts", None),
    "GuardsUnavailableAlarm": (NAMESPACE, "GuardsUnavailable", "UseGuards"),
    "RevocationFailuresAlarm": (NAMESPACE, "RevocationFailed", None),
    "LockoutSpikeAlarm": (NAMESPACE, "Lockouts", "UseGuards"),
}
TOPIC_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
STACK = {"Ref": "AWS::StackName"}


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def broker_source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "layers" / "broker" / "broker").rglob("*.py"))


def function_environment() -> dict[str, Any]:
    variables: dict[str, Any] = source()["Globals"]["Function"]["Environment"]["Variables"]
    return variables


@pytest.mark.parametrize("name", ALARMS)
def test_each_alarm_watches_its_metric_and_notifies_the_optional_topic(name: str) -> None:
    namespace, metric, condition = ALARMS[name]
    alarm = resources()[name]
    props = alarm["Properties"]
    # Then it watches the metric the code emits (or API Gateway's own), for this stack only
    assert (props["Namespace"], props["MetricName"]) == (namespace, metric)
    dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}
    if namespace == NAMESPACE:
        assert dimensions == {"service": STACK}
        assert function_environment()["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
        assert function_environment()["POWERTOOLS_SERVICE_NAME"] == STACK
        assert f'"{metric}"' in broker_source()
    else:
        assert dimensions == {"ApiName": STACK, "Stage": {"Ref": "Stage"}}
    assert alarm.get("Condition") == condition
    # And it notifies the topic when one is given, on alarm and back to OK
    assert props["AlarmActions"] == TOPIC_ACTIONS
    assert props["OKActions"] == TOPIC_ACTIONS
    assert props["TreatMissingData"] == "notBreaching"


def test_the_5xx_alarm_is_a_rate_and_the_lockout_alarm_a_tunable_spike() -> None:
    api = resources()["Api5xxAlarm"]["Properties"]
    assert (api["Statistic"], api["Threshold"]) == ("Average", 0.05)  # 5XXError's average is the 5xx share
    lockouts = resources()["LockoutSpikeAlarm"]["Properties"]
    assert (lockouts["Statistic"], lockouts["Threshold"]) == ("Sum", {"Ref": "LockoutAlarmThreshold"})
    assert source()["Parameters"]["AlarmTopicArn"]["Default"] == ""


def dashboard_body() -> dict[str, Any]:
    template = resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(template, str)
    values = {"AWS::Region": "us-east-1", "AWS::StackName": "token-broker", "Stage": "v1"}
    text = re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], template)
    body: dict[str, Any] = json.loads(text)
    return body


def test_the_dashboard_shows_every_alarmed_figure_and_requests_by_route_and_outcome() -> None:
    widgets = dashboard_body()["widgets"]
    shown = {(m[0], m[1]) for w in widgets for m in w["properties"]["metrics"] if isinstance(m[0], str)}
    assert {(namespace, metric) for namespace, metric, _ in ALARMS.values()} <= shown
    assert (NAMESPACE, "UpstreamLatency") in shown
    assert (NAMESPACE, "SingleFlightShares") in shown
    expressions = [m[0]["expression"] for w in widgets for m in w["properties"]["metrics"] if isinstance(m[0], dict)]
    assert any('MetricName="Requests"' in e and "route" in e and "status_class" in e for e in expressions)
    assert all(m[3] == "token-broker" for w in widgets for m in w["properties"]["metrics"] if isinstance(m[0], str))


def test_the_architecture_parameter_reaches_every_function_the_layer_and_the_extension() -> None:
    params = source()["Parameters"]
    assert params["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    assert params["Architecture"]["Default"] == "x86_64"
    res = resources()
    for name in FUNCTIONS:
        props = res[name]["Properties"]
        assert props["Architectures"] == [{"Ref": "Architecture"}]
        # the extension layer (SecretsBackend=extension) is the build for that architecture
        extension = props["Layers"][1]["Fn::If"]
        assert extension[0] == "UseSecretsExtension"
        assert extension[1] == {
            "Fn::If": ["IsArm64", {"Ref": "SecretsExtensionArm64LayerArn"}, {"Ref": "SecretsExtensionLayerArn"}]
        }
    layer = next(r for r in res.values() if r["Type"] == "AWS::Lambda::LayerVersion")
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert "Arm64" in params["SecretsExtensionArm64LayerArn"]["Default"]
    assert "Arm64" not in params["SecretsExtensionLayerArn"]["Default"]


def test_the_layer_build_follows_the_architecture() -> None:
    metadata = source()["Resources"]["BrokerCoreLayer"]["Metadata"]
    assert metadata["BuildArchitecture"] == {"Ref": "Architecture"}
    context = metadata["ContextPath"]["Fn::Sub"]
    for architecture in source()["Parameters"]["Architecture"]["AllowedValues"]:
        makefile = ROOT / context.replace("${Architecture}", architecture) / "Makefile"
        assert f"ARCHITECTURE := {architecture}" in makefile.read_text()


def test_the_logging_role_when_asked_for_is_retained_and_made_before_the_api() -> None:
    # Given a stack that sets the account's API Gateway logging role
    res = resources(json.dumps({"ConfigureApiGatewayLogsRole": "true"}))
    role, account = res["ApiGatewayLogsRole"], res["ApiGatewayAccount"]
    # Then the role outlives the stack (the Region-wide setting keeps pointing at it)
    assert (role["DeletionPolicy"], role["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert role["Condition"] == account["Condition"] == "CreateApiGatewayLogsRole"
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"]}
    # And the API (so its deployment and access-logged stage) waits for the account setting
    api = next(name for name, r in res.items() if r["Type"] == "AWS::ApiGateway::RestApi")
    assert "ApiGatewayAccountReady" in res[api]["DependsOn"]
    ready = res["ApiGatewayAccountReady"]
    assert ready["Metadata"]["AccountSetting"] == {
        "Fn::If": ["CreateApiGatewayLogsRole", {"Ref": "ApiGatewayAccount"}, "none"]
    }
    stage = next(r for r in res.values() if r["Type"] == "AWS::ApiGateway::Stage")
    deployment = stage["Properties"]["DeploymentId"]["Ref"]
    assert res[deployment]["Properties"]["RestApiId"] == {"Ref": api}
    assert "AccessLogSetting" in stage["Properties"]
