"""The local runner itself: template → routes, API Gateway event and response mapping, the RIE pool, cleanup.

Most tests drive a throwaway app (``echo``) whose function reports what it received, so the
runner's behaviour is asserted directly; the last tests go through the real broker.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from local.runner.main import parse_origins
from local.runner.server import render_page
from local.runner.services import DEMO_SECRET, REPO_ROOT
from local.runner.template import TemplateError, load_app
from local.runner.testing import LocalBroker, run_broker

TIMEOUT = 30
INVOKE = [sys.executable, "-m", "local.invoke"]
NOT_LOCAL_PROFILE = "bakrypt"  # any profile: the echo app needs no upstream, so none is started

ECHO_APP = """
import base64, json, os, sys, time

import echo_helper  # from the layer: proves layer python/ dirs are on the path


def handler(event, context):
    path = event["path"]
    if path == "/cookies":
        return {
            "statusCode": 200,
            "headers": {"X-Single": "one", "Set-Cookie": "c=3"},
            "multiValueHeaders": {"Set-Cookie": ["a=1; Path=/", "b=2; Path=/"]},
            "body": "",
        }
    if path == "/binary":
        body = base64.b64encode(bytes(range(256))).decode()
        return {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"},
                "body": body, "isBase64Encoded": True}
    if path == "/fail":
        raise RuntimeError("boom-in-handler")
    if path == "/slow":
        time.sleep(10)
    if path == "/malformed":
        return {"body": "no status code"}
    if path == "/sleep":
        time.sleep(0.5)
        return _json({"pid": os.getpid()})
    if path == "/env":
        return _json({"env": dict(os.environ), "cwd": os.getcwd(), "helper": echo_helper.NAME,
                      "remaining_ms": context.get_remaining_time_in_millis()})
    if path == "/secret":
        import boto3
        value = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["BROKER_SECRET_ID"])
        return _json(json.loads(value["SecretString"]))
    if path == "/table":
        import boto3
        table = os.environ["STATE_TABLE"]
        client = boto3.client("dynamodb")
        client.put_item(TableName=table, Item={"pk": {"S": "k"}, "v": {"S": "stored"}})
        item = client.get_item(TableName=table, Key={"pk": {"S": "k"}})["Item"]
        ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        return _json({"table": table, "v": item["v"]["S"], "ttl": ttl.get("AttributeName")})
    return _json(event)


def _json(value):
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(value)}
"""

ECHO_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
  Mode:
    Type: String
    Default: quiet
Conditions:
  Loud: !Equals [!Ref Mode, loud]
  NotLoud: !Not [!Condition Loud]
Globals:
  Function:
    Runtime: python3.13
    Timeout: 2
    MemorySize: 128
    Layers: [!Ref EchoLayer]
    Environment:
      Variables:
        GREETING: !Ref Greeting
        STACK: !Sub "${AWS::StackName}-${AWS::Region}"
        MODE: !If [Loud, LOUD, !If [NotLoud, quiet, never]]
        BROKER_SECRET_ID: !Sub "${AWS::StackName}/echo"
        STATE_TABLE: !Ref StateTable
Resources:
  StateTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      TimeToLiveSpecification: {AttributeName: expires, Enabled: true}
  EchoLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Environment:
        Variables:
          OWN: own
      Events:
        Echo: {Type: Api, Properties: {Path: /echo, Method: any}}
        Item: {Type: Api, Properties: {Path: "/items/{id}", Method: get}}
        Cookies: {Type: Api, Properties: {Path: /cookies, Method: get}}
        Binary: {Type: Api, Properties: {Path: /binary, Method: get}}
        Fail: {Type: Api, Properties: {Path: /fail, Method: get}}
        Slow: {Type: Api, Properties: {Path: /slow, Method: get}}
        Malformed: {Type: Api, Properties: {Path: /malformed, Method: get}}
        Sleep: {Type: Api, Properties: {Path: /sleep, Method: get}}
        Env: {Type: Api, Properties: {Path: /env, Method: get}}
        Secret: {Type: Api, Properties: {Path: /secret, Method: get}}
        Table: {Type: Api, Properties: {Path: /table, Method: get}}
  LoudFunction:
    Type: AWS::Serverless::Function
    Condition: Loud
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Events:
        Loud: {Type: Api, Properties: {Path: /loud, Method: get}}
"""


@pytest.fixture(scope="module")
def echo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("echo-app")
    (root / "echo").mkdir()
    (root / "echo" / "app.py").write_text(textwrap.dedent(ECHO_APP))
    (root / "layer" / "python").mkdir(parents=True)
    (root / "layer" / "python" / "echo_helper.py").write_text('NAME = "from-layer"\n')
    (root / "template.yaml").write_text(ECHO_TEMPLATE)
    return root / "template.yaml"


@pytest.fixture(scope="module")
def echo(echo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with run_broker(
        tmp_path_factory.mktemp("echo-broker"),
        env={"EXTRA": "from --env"},
        profile=NOT_LOCAL_PROFILE,
        max_concurrency=2,
        template=echo_template,
        parameter_overrides={"Greeting": "hi"},
    ) as running:
        yield running


def get_json(response: requests.Response) -> Any:
    assert response.headers["Content-Type"] == "application/json", response.text
    return response.json()


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def raw_request(
    broker: LocalBroker, method: str, target: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> RawResponse:
    """One request exactly as given (repeated headers too), with http.client."""
    url = urlsplit(broker.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=TIMEOUT)
    try:
        connection.putrequest(method, target)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return RawResponse(response.status, response.msg, response.read())
    finally:
        connection.close()


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by ``pids`` (from /proc)."""
    by_inode: dict[str, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            if family == socket.AF_INET:
                ip = socket.inet_ntop(family, raw[::-1])
            else:
                ip = socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
            by_inode[fields[9]] = (ip, int(port, 16))
    found: set[tuple[str, int]] = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        found |= {by_inode[link[8:-1]] for link in links if link.startswith("socket:[") and link[8:-1] in by_inode}
    return found


def process_identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): survives pid reuse; None once the process is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (pid, fields[19])


def wait_gone(identities: list[tuple[int, str]], timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [i for i in identities if process_identity(i[0]) == i]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# --- the template -----------------------------------------------------------------------------


def test_template_resolution_of_the_real_template() -> None:
    # Given the project's own template, with and without overrides
    defaults = load_app(REPO_ROOT / "template.yaml")
    separate = load_app(REPO_ROOT / "template.yaml", {"ExchangeSecretName": "exchange/secret"})
    # Then Ref, Fn::If, Globals and Conditions resolve as CloudFormation would
    assert {r.path for r in defaults.routes} >= {"/auth/login", "/auth/refresh", "/auth/exchange"}
    # the exchange token in its own secret by default: the public login function cannot read it
    assert defaults.secret_ids() == ["token-broker/client", "token-broker/exchange"]
    assert separate.functions["ExchangeFunction"].environment["BROKER_SECRET_ID"] == "exchange/secret"
    assert separate.functions["PasswordFunction"].environment["BROKER_SECRET_ID"] == "token-broker/client"
    password = defaults.functions["PasswordFunction"]
    assert password.environment["POWERTOOLS_SERVICE_NAME"] == "token-broker-local"  # the stack name
    assert password.timeout == 10
    assert password.memory_size == 256
    assert [d.name for d in password.layer_dirs] == ["broker"]  # unbuilt: the ContentUri itself


def test_unknown_parameter_override_is_an_error() -> None:
    with pytest.raises(TemplateError, match="NoSuchParameter"):
        load_app(REPO_ROOT / "template.yaml", {"NoSuchParameter": "x"})


# --- the real broker's options: origins, refresh delivery, the demo SPA -----------------------


def preflight(broker: LocalBroker, origin: str) -> requests.Response:
    return requests.options(
        f"{broker.url}/auth/login",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-csrf"},
        timeout=TIMEOUT,
    )


@pytest.mark.integration
def test_origins_option_allows_an_spa_dev_server_on_another_port(built_template: Path, tmp_path: Path) -> None:
    # Given a runner started with --origins naming an SPA dev server on another port
    added = "http://localhost:8080"
    with run_broker(tmp_path, profile=NOT_LOCAL_PROFILE, origins=["http://localhost:5173", f"{added}/"]) as broker:
        # When that origin sends a CORS preflight
        allowed = preflight(broker, added)
        # Then the function answers 204 with its CORS headers
        assert allowed.status_code == 204
        assert allowed.headers["Access-Control-Allow-Origin"] == added
        assert allowed.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
        assert "X-CSRF" in allowed.headers["Access-Control-Allow-Headers"]
        assert allowed.headers["Vary"] == "Origin"
        # And the runner's own demo-SPA origin stays allowed
        assert preflight(broker, broker.url).status_code == 204
        # And an origin not listed is refused, without CORS headers
        refused = preflight(broker, "http://localhost:8081")
        assert refused.status_code == 403
        assert "Access-Control-Allow-Origin" not in refused.headers
        # And the banner names exactly the allowed origins
        port = urlsplit(broker.url).port
        own = f"http://127.0.0.1:{port}, http://localhost:{port}"
        assert f"Allowed origins (CORS, Origin check): http://localhost:5173, {added}, {own}\n" in broker.banner


def test_origins_option_refuses_what_is_not_an_origin() -> None:
    # Given origins with spaces, a trailing slash and a repeat, then values the broker would refuse
    assert parse_origins(" http://localhost:5173/, https://app.example:8443,http://localhost:5173") == [
        "http://localhost:5173",
        "https://app.example:8443",
    ]
    for bad in ("*", "null", "localhost:5173", "http://localhost:5173/app", "http://x?y=1", "ftp://x"):
        # When one is given, Then the runner stops at once, naming it
        with pytest.raises(SystemExit, match="--origins"):
            parse_origins(bad)


@pytest.mark.integration
def test_banner_names_the_delivery_mode_and_the_spa_written_for_it(broker: LocalBroker) -> None:
    # Given the default broker (body mode)
    # Then the banner says so, with the demo SPA's URL
    assert "Refresh token delivery: body\n" in broker.banner
    assert f"Demo SPA: {broker.url}/  (body mode:" in broker.banner
    # When the SPA is fetched
    page = requests.get(f"{broker.url}/", timeout=TIMEOUT)
    # Then it describes body mode only: no claim that the refresh token stays in a cookie
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'data-delivery="body"' in page.text
    assert "(body mode)" in page.text
    for claim in ("BFF mode)", "HttpOnly cookie", "delivery:"):
        assert claim not in page.text


def test_spa_in_cookie_mode_keeps_its_bff_text_only() -> None:
    # Given the demo SPA's source, When it is rendered for cookie mode
    page = render_page((REPO_ROOT / "local" / "spa" / "index.html").read_text(), "cookie")
    # Then only the cookie-mode text is left
    assert 'data-delivery="cookie"' in page
    assert "(BFF mode)" in page
    assert "the refresh token stays in an\nHttpOnly cookie" in page
    for claim in ("(body mode)", "in body mode:", "returns the refresh token"):
        assert claim not in page
    assert "{{" not in page


@pytest.mark.integration
def test_routes_are_read_from_the_built_template(broker: LocalBroker, built_template: Path) -> None:
    # Given the built template's Api events
    routes = load_app(built_template).routes
    expected = [{"method": r.method, "path": r.path, "function": r.function} for r in routes]
    # Then the runner serves exactly those, each answered by its function (not API Gateway's 403)
    assert broker.routes == expected
    for route in routes:
        if route.auth == "AWS_IAM":
            response = broker.signed_post(route.path)
        else:
            response = requests.request(route.method, broker.url + route.path, timeout=TIMEOUT)
        assert "x-amzn-ErrorType" not in response.headers, route
        # every answer is no-store but the metadata document's, which is meant to be cached
        cacheable = route.path == "/.well-known/oauth-authorization-server"
        assert response.headers["Cache-Control"] == ("public, max-age=3600" if cacheable else "no-store"), route


# --- API Gateway behaviour --------------------------------------------------------------------


@pytest.mark.integration
def test_unknown_route_or_method_is_api_gateways_403(echo: LocalBroker) -> None:
    for method, path in (("GET", "/nowhere"), ("POST", "/cookies"), ("DELETE", "/items/1/more")):
        response = requests.request(method, echo.url + path, timeout=TIMEOUT)
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}


@pytest.mark.integration
def test_event_has_the_rest_proxy_shape(echo: LocalBroker) -> None:
    # Given a request with a repeated header and a repeated query parameter
    headers = [("Content-Type", "application/json"), ("X-Multi", "one"), ("X-Multi", "two")]
    response = raw_request(echo, "POST", "/echo?a=1&a=2&empty=", headers, b'{"hello": "world"}')
    event = json.loads(response.body)
    # Then the function sees API Gateway's REST (1.0) event
    assert event["resource"] == "/echo"
    assert event["path"] == "/echo"
    assert event["httpMethod"] == "POST"
    assert event["headers"]["X-Multi"] == "two"
    assert event["multiValueHeaders"]["X-Multi"] == ["one", "two"]
    assert event["queryStringParameters"] == {"a": "2", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "empty": [""]}
    assert event["pathParameters"] is None
    assert event["stageVariables"] is None
    assert event["body"] == '{"hello": "world"}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["stage"] == "local"
    assert context["resourcePath"] == "/echo"
    assert context["httpMethod"] == "POST"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["protocol"] == "HTTP/1.1"
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert response.headers["x-amzn-RequestId"] == context["requestId"]


@pytest.mark.integration
def test_no_query_and_no_body_are_none(echo: LocalBroker) -> None:
    event = get_json(requests.get(f"{echo.url}/echo", timeout=TIMEOUT))
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False


@pytest.mark.integration
def test_path_parameters(echo: LocalBroker) -> None:
    event = get_json(requests.get(f"{echo.url}/items/42", timeout=TIMEOUT))
    assert event["resource"] == "/items/{id}"
    assert event["pathParameters"] == {"id": "42"}


@pytest.mark.integration
def test_binary_body_is_base64_encoded(echo: LocalBroker) -> None:
    payload = bytes(range(256))
    event = get_json(
        requests.put(
            f"{echo.url}/echo", data=payload, headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT
        )
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


@pytest.mark.integration
def test_text_type_that_is_not_utf8_is_base64_encoded(echo: LocalBroker) -> None:
    event = get_json(
        requests.post(f"{echo.url}/echo", data=b"\xff\xfe", headers={"Content-Type": "text/plain"}, timeout=TIMEOUT)
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


@pytest.mark.integration
def test_multi_value_set_cookie_reaches_the_client_as_several_headers(echo: LocalBroker) -> None:
    # Given a function answering with multiValueHeaders and headers
    response = raw_request(echo, "GET", "/cookies")
    # Then every value is its own header line, merged as API Gateway merges them
    assert response.status == 200
    assert response.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/", "c=3"]
    assert response.headers["X-Single"] == "one"


@pytest.mark.integration
def test_base64_response_body_is_decoded(echo: LocalBroker) -> None:
    response = requests.get(f"{echo.url}/binary", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == bytes(range(256))


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/fail", "/malformed"])
def test_function_error_is_api_gateways_502(echo: LocalBroker, path: str) -> None:
    response = requests.get(echo.url + path, timeout=TIMEOUT)
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    assert "boom" not in response.text


@pytest.mark.integration
def test_timeout_is_502_and_the_function_recovers(echo: LocalBroker) -> None:
    # Given a function that sleeps past its 2 s Timeout
    started = time.monotonic()
    response = requests.get(f"{echo.url}/slow", timeout=TIMEOUT)
    # Then the RIE stops it at the timeout and API Gateway's 502 comes back
    assert response.status_code == 502
    assert 1.5 < time.monotonic() - started < 8
    assert "Task timed out after 2.00 seconds" in echo.logs()
    # And the next request is served
    assert requests.get(f"{echo.url}/echo", timeout=TIMEOUT).status_code == 200


@pytest.mark.integration
def test_body_over_10_mb_is_413(echo: LocalBroker) -> None:
    host = urlsplit(echo.url)
    with socket.create_connection((host.hostname, host.port), timeout=TIMEOUT) as client:
        length = 10 * 1024 * 1024 + 1
        client.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
        status_line = client.makefile("rb").readline()
    assert status_line.split()[1] == b"413"


# --- the function's environment -------------------------------------------------------------


@pytest.mark.integration
def test_function_environment_is_resolved_like_lambdas(echo: LocalBroker, echo_template: Path) -> None:
    reply = get_json(requests.get(f"{echo.url}/env", timeout=TIMEOUT))
    env = reply["env"]
    code_dir = str(echo_template.parent / "echo")
    # Template variables: Globals merged with the function's, Ref/Sub/If resolved, overrides applied
    assert env["GREETING"] == "hi"  # --parameter-overrides
    assert env["STACK"] == "token-broker-local-us-east-1"
    assert env["MODE"] == "quiet"
    assert env["OWN"] == "own"
    assert env["EXTRA"] == "from --env"
    # Lambda's own variables and the local services
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "EchoFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "2"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] == echo.moto_url
    assert env["LAMBDA_TASK_ROOT"] == reply["cwd"] == code_dir
    assert env["_HANDLER"] == "app.handler"
    # Code, then layers, and nothing from the repository
    assert env["PYTHONPATH"].split(":") == [code_dir, str(echo_template.parent / "layer" / "python")]
    assert reply["helper"] == "from-layer"
    assert 0 < reply["remaining_ms"] <= 2000


@pytest.mark.integration
def test_secret_is_served_by_moto_and_can_be_updated(echo: LocalBroker) -> None:
    # Given the default demo secret, created under the template's BROKER_SECRET_ID
    assert echo.secret_ids == ["token-broker-local/echo"]
    served = get_json(requests.get(f"{echo.url}/secret", timeout=TIMEOUT))
    # (without the exchange token: only a secret the exchange function reads holds it)
    without_exchange = {key: value for key, value in DEMO_SECRET.items() if key != "exchange_token"}
    assert served == {**without_exchange, "broker_keys": served["broker_keys"]}
    assert len(served["broker_keys"]) == 1  # a fresh cookie key for this run
    # When the test stores a new version
    echo.put_secret({**DEMO_SECRET, "client_secret": "rotated"})
    # Then the function reads it
    assert get_json(requests.get(f"{echo.url}/secret", timeout=TIMEOUT))["client_secret"] == "rotated"
    echo.put_secret(DEMO_SECRET)


@pytest.mark.integration
def test_template_tables_are_created_in_moto(echo: LocalBroker) -> None:
    # Given a DynamoDB table in the template, referenced by !Ref in the environment
    reply = get_json(requests.get(f"{echo.url}/table", timeout=TIMEOUT))
    # Then the function reaches it in moto, with its TTL attribute
    assert reply == {"table": "token-broker-local-StateTable", "v": "stored", "ttl": "expires"}


# --- the emulator pool ------------------------------------------------------------------------


@pytest.mark.integration
def test_concurrent_requests_queue_on_at_most_max_concurrency_emulators(echo: LocalBroker) -> None:
    # Given max-concurrency 2, when 6 requests arrive at once
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: requests.get(f"{echo.url}/sleep", timeout=TIMEOUT), range(6)))
    # Then all succeed, served by at most 2 runtimes
    assert [r.status_code for r in responses] == [200] * 6
    assert 1 <= len({r.json()["pid"] for r in responses}) <= 2


@pytest.mark.integration
def test_everything_listens_on_loopback_only(echo: LocalBroker) -> None:
    requests.get(f"{echo.url}/echo", timeout=TIMEOUT)  # at least one emulator is up
    addresses = listening_addresses([echo.pid, *echo.children()])
    # the runner, moto, and each RIE's two ports
    assert len(addresses) >= 4
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}


@pytest.mark.integration
def test_logs_are_prefixed_and_never_hold_bodies_or_authorization(echo: LocalBroker) -> None:
    requests.post(
        f"{echo.url}/echo?code=query-marker",
        data="body-marker",
        headers={"Authorization": "Bearer header-marker"},
        timeout=TIMEOUT,
    )
    logs = echo.logs()
    assert "[runner] POST /echo -> 200 (EchoFunction)" in logs
    assert "[EchoFunction] REPORT RequestId:" in logs
    for marker in ("body-marker", "header-marker", "query-marker"):
        assert marker not in logs


# --- stopping ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_sigterm_stops_every_process_it_started(echo_template: Path, tmp_path: Path) -> None:
    with run_broker(
        tmp_path, profile=NOT_LOCAL_PROFILE, template=echo_template, parameter_overrides={"Mode": "loud"}
    ) as broker:
        # Given a runner with warm emulators of two functions (LoudFunction exists only when Mode=loud)
        with ThreadPoolExecutor(max_workers=3) as pool:
            paths = ["/sleep", "/sleep", "/loud"]
            codes = list(pool.map(lambda p: requests.get(broker.url + p, timeout=TIMEOUT).status_code, paths))
        assert codes == [200, 200, 200]
        children = [i for i in map(process_identity, broker.children()) if i is not None]
        assert len(children) >= 5  # moto, 2 RIEs + their runtimes, 1 more RIE + runtime
        # When it gets SIGTERM
        os.kill(broker.pid, signal.SIGTERM)
        assert broker.process.wait(timeout=20) == 0
        # Then nothing it started is left
        assert wait_gone(children, timeout=2) == []


@pytest.mark.integration
def test_sigkill_of_the_runner_leaves_no_process(echo_template: Path, tmp_path: Path) -> None:
    with run_broker(tmp_path, profile=NOT_LOCAL_PROFILE, template=echo_template) as broker:
        assert requests.get(f"{broker.url}/echo", timeout=TIMEOUT).status_code == 200
        children = [i for i in map(process_identity, broker.children()) if i is not None]
        assert len(children) >= 3
        # When the runner dies without a chance to clean up
        os.kill(broker.pid, signal.SIGKILL)
        broker.process.wait(timeout=10)
        # Then its children die with it (PR_SET_PDEATHSIG; the runtime exits with its RIE)
        assert wait_gone(children, timeout=10) == []


# --- local.invoke -----------------------------------------------------------------------------


@pytest.mark.integration
def test_invoke_prints_the_response_and_the_report(echo_template: Path, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"path": "/env", "httpMethod": "GET"}))
    result = subprocess.run(
        [*INVOKE, "EchoFunction", str(event), "--no-build", "--template", str(echo_template), "--profile", "bakrypt"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "EchoFunction"
    report = [line for line in result.stderr.splitlines() if line.startswith("REPORT RequestId:")]
    assert len(report) == 1
    for field in ("Init Duration:", "Duration:", "Billed Duration:", "Memory Size: 128 MB", "Max Memory Used:"):
        assert field in report[0]


@pytest.mark.integration
def test_make_invoke_prints_the_response_alone_on_stdout(built_template: Path) -> None:
    # Given a shell's environment (not a sub-make's: that one prints "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    # When `make invoke` runs the password function against the local upstream
    result = subprocess.run(
        ["make", "invoke", "FUNCTION=PasswordFunction", "EVENT=events/password-json.json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    # Then stdout is the Lambda response, and nothing else (`make invoke | jq .` works)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    assert "access_token" in json.loads(response["body"])
    # And the build output, the logs and the REPORT line went to stderr
    assert "Build Succeeded" in result.stderr
    assert "REPORT RequestId:" in result.stderr
