"""SAM's own emulator, really run: ``sam local invoke`` and ``sam local start-api`` in Docker.

Docker is the machine's daemon or a private one; the python3.13 image is the real one or a
stand-in built from Debian packages (``local/samlocal``). The functions call the local
django-oauth-toolkit upstream over TLS on the Docker bridge, and moto's Secrets Manager and
DynamoDB. Deselect with ``-m 'not samlocal'``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from local.runner.logs import LogSink
from local.runner.services import DEMO_PASSWORD, DEMO_USERNAME
from local.runner.template import load_app
from local.runner.testing import LocalBroker
from local.samlocal.stack import SamLocal, sam_local
from tests.support import EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.samlocal]
TIMEOUT = 30
ORIGIN = "http://localhost:5173"  # env.json's BROKER_ALLOWED_ORIGINS and the template's default
DEMO = {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
INVOKE_WORKERS = 3  # concurrent `sam local invoke`s share SAM's image build and overlap its start-up


def event_function(path: Path, built_template: Path) -> str:
    """The function the template routes an events/ file's method and path to."""
    event = json.loads(path.read_text())
    found = load_app(built_template).route_for(event["httpMethod"], event["path"])
    assert found is not None, f"{path.name}: no route of the template serves {event['httpMethod']} {event['path']}"
    return found[0].function


EVENT_FILES = sorted(EVENTS.glob("*.json"))

# What each events/ file gets against the local upstream and the demo secret; an event
# added later without a row still gets the checks every answer must pass.
EXPECTED: dict[str, tuple[int, str | None]] = {
    "password-json": (200, None),
    "password-form": (200, None),
    "password-base64": (200, None),
    "password-wrong-password": (400, "invalid_grant"),
    "password-unlisted-origin": (403, "invalid_request"),
    "password-preflight": (204, None),
    "refresh-json": (400, "invalid_grant"),  # its token was never issued by this upstream
    "refresh-form": (400, "invalid_grant"),
    "exchange": (200, None),
    "logout-json": (200, None),  # RFC 7009: an unknown token is still a success
}


@pytest.fixture(scope="module")
def sam(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamLocal]:
    log = tmp_path_factory.mktemp("samlocal") / "stack.log"
    with log.open("w") as stream, sam_local(LogSink(stream), tmp_path_factory.mktemp("samlocal-work")) as running:
        yield running


@pytest.fixture(scope="module")
def invoked(sam: SamLocal, built_template: Path) -> dict[str, tuple[str, dict[str, Any], str]]:
    """``sam local invoke`` of every events/ file, a few at a time: name → (function, result, stderr)."""

    def invoke(path: Path) -> tuple[str, tuple[str, dict[str, Any], str]]:
        function = event_function(path, built_template)
        result, stderr = sam.invoke(function, path)
        return path.stem, (function, result, stderr)

    with ThreadPoolExecutor(INVOKE_WORKERS) as pool:
        return dict(pool.map(invoke, EVENT_FILES))


def test_every_function_of_the_template_has_an_event_to_invoke(built_template: Path) -> None:
    # Given the built template, and the events/ files
    functions = set(load_app(built_template).functions)
    # When each event is routed as API Gateway would
    covered = {event_function(path, built_template) for path in EVENT_FILES}
    # Then every function gets at least one `sam local invoke`
    assert functions <= covered, f"no events/ file for {sorted(functions - covered)}"


@pytest.mark.parametrize("event", [p.stem for p in EVENT_FILES])
def test_sam_local_invoke_answers_each_event(invoked: dict[str, tuple[str, dict[str, Any], str]], event: str) -> None:
    # Given `sam local invoke <Function> -e events/<event>.json --env-vars env.json` in SAM's container
    function, result, stderr = invoked[event]
    status, body = result["statusCode"], result.get("body") or ""
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    # Then the answer is the broker's: never a 500, always JSON, no-store (the metadata: cacheable)
    assert 200 <= status < 500, (function, result, stderr[-2000:])
    assert headers["cache-control"] == ("public, max-age=3600" if function == "MetadataFunction" else "no-store")
    assert headers["content-type"] == "application/json"
    parsed = json.loads(body) if body else {}
    if event in EXPECTED:
        expected_status, expected_error = EXPECTED[event]
        assert (status, parsed.get("error")) == (expected_status, expected_error), (result, stderr[-2000:])
        if status == 200 and event.split("-", maxsplit=1)[0] in ("password", "exchange"):
            assert parsed["token_type"] == "Bearer"
            assert parsed["access_token"]
    # And SAM reports the invocation it ran
    assert "REPORT RequestId" in stderr or "END RequestId" in stderr


@pytest.fixture(scope="module")
def api(sam: SamLocal) -> Iterator[str]:
    with sam.start_api() as url:
        yield url


def post(base: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{base}{path}", timeout=TIMEOUT, **kwargs)


def test_start_api_login_refresh_logout(api: str) -> None:
    # Given `sam local start-api --warm-containers EAGER` against the local upstream
    # When the SPA logs in
    login = post(api, "/auth/login", json=DEMO, headers={"Origin": ORIGIN})
    # Then it gets the upstream's tokens, with CORS for its origin
    assert login.status_code == 200, login.text
    tokens = login.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"]
    assert login.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert login.headers["Cache-Control"] == "no-store"
    # When it refreshes, Then it gets a new pair
    refreshed = post(api, "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, headers={"Origin": ORIGIN})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"] != tokens["access_token"]
    # When it logs out with the new refresh token, Then the token is revoked
    new_refresh = refreshed.json()["refresh_token"]
    logout = post(api, "/auth/logout", data={"refresh_token": new_refresh})
    assert logout.status_code == 200, logout.text
    again = post(api, "/auth/refresh", json={"refresh_token": new_refresh})
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


EVIL = {"Origin": "https://evil.example"}
ERROR_ROWS = [
    pytest.param({"json": {"username": "nobody", "password": "wrong"}}, 400, "invalid_grant", id="wrong-password"),
    pytest.param({"json": DEMO, "headers": EVIL}, 403, "invalid_request", id="origin"),
    pytest.param({"data": b"{not", "headers": {"Content-Type": "application/json"}}, 400, "invalid_request", id="bad"),
    pytest.param({"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "invalid_request", id="type"),
    pytest.param({"json": {"username": "demo", "password": "x" * 17000}}, 413, "invalid_request", id="too-large"),
    pytest.param({"json": {"username": "demo"}}, 400, "invalid_request", id="missing"),
]


@pytest.mark.parametrize(("request_kwargs", "status", "error"), ERROR_ROWS)
def test_start_api_error_table(api: str, request_kwargs: dict[str, Any], status: int, error: str) -> None:
    # Given a login request the error table refuses
    # When it goes through SAM's local API Gateway
    response = post(api, "/auth/login", **request_kwargs)
    # Then the broker's RFC 6749 error comes back, no-store
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_start_api_preflight(api: str) -> None:
    # Given a CORS preflight from the allowed origin
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    # When it reaches SAM's local API Gateway
    response = requests.options(f"{api}/auth/login", headers=headers, timeout=TIMEOUT)
    # Then the function answers it
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


# The differential test: one request, two emulators. What may differ: issued tokens, the
# date, request ids, and what each HTTP server adds on its own.
IGNORED_HEADERS = {"date", "server", "connection", "keep-alive", "content-length", "transfer-encoding"}
TOKEN_KEYS = ("access_token", "refresh_token", "id_token")


def normalised(response: requests.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() not in IGNORED_HEADERS}
    headers = {k: v for k, v in headers.items() if not k.startswith(("x-amzn-", "x-amz-apigw"))}
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = {k: ("<token>" if k in TOKEN_KEYS and v else v) for k, v in body.items()}
    return response.status_code, headers, body


def exchanges(base: str) -> list[tuple[str, tuple[int, dict[str, str], Any]]]:
    """The same sequence of requests against one base URL; each answer normalised."""
    answers: list[tuple[str, tuple[int, dict[str, str], Any]]] = []

    def send(name: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{base}{path}", timeout=TIMEOUT, **kwargs)
        answers.append((name, normalised(response)))
        return response

    tokens = send("login", "POST", "/auth/login", json=DEMO, headers={"Origin": ORIGIN}).json()
    form = "grant_type=password&username=demo&password=demo-password&client_id=spa"
    send("login-form", "POST", "/auth/login", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    body = base64.b64encode(b"\x00\x01binary")
    send("login-binary", "POST", "/auth/login", data=body, headers={"Content-Type": "application/octet-stream"})
    send("wrong-password", "POST", "/auth/login", json={"username": "nobody", "password": "x"})
    send("origin", "POST", "/auth/login", json=DEMO, headers={"Origin": "https://evil.example"})
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    send("preflight", "OPTIONS", "/auth/refresh", headers=preflight)
    send("too-large", "POST", "/auth/login", json={"username": "demo", "password": "x" * 17000})
    refreshed = send("refresh", "POST", "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
    send(
        "logout", "POST", "/auth/logout", json={"refresh_token": refreshed["refresh_token"]}, headers={"Origin": ORIGIN}
    )
    send("refresh-revoked", "POST", "/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
    send("query-string", "POST", "/auth/login?x=1&x=2", json=DEMO)
    send("unknown-path", "POST", "/auth/nowhere", json=DEMO)
    send("unrouted-method", "GET", "/auth/login")
    return answers


# API Gateway's own answers (no route matched): `sam local start-api` does not apply the
# template's gateway responses (their Cache-Control and CORS headers); the runner does, as
# API Gateway does. A documented limit of SAM's (docs/local-runner.md).
GATEWAY_ANSWERS = {"unknown-path", "unrouted-method"}
GATEWAY_RESPONSE_HEADERS = {"cache-control", "access-control-allow-origin", "vary"}


def test_start_api_and_the_local_runner_answer_alike(api: str, broker: LocalBroker) -> None:
    # Given the same requests, in the same order, through SAM and through `make run`'s runner
    # When each answers
    through_sam, through_runner = exchanges(api), exchanges(broker.url)
    # Then status, headers and body agree, tokens and dates aside
    differences = []
    for (name, sam_answer), (_, runner_answer) in zip(through_sam, through_runner, strict=True):
        compared = runner_answer
        if name in GATEWAY_ANSWERS:
            assert runner_answer[1]["cache-control"] == "no-store"  # the template's gateway responses
            headers = {k: v for k, v in runner_answer[1].items() if k not in GATEWAY_RESPONSE_HEADERS}
            compared = (runner_answer[0], headers, runner_answer[2])
        if sam_answer != compared:
            differences.append((name, sam_answer, compared))
    assert differences == [], "\n".join(f"{n}:\n  sam:    {s}\n  runner: {r}" for n, s, r in differences)


def test_start_api_does_not_enforce_aws_iam_on_exchange(api: str, broker: LocalBroker) -> None:
    # Given the exchange route, AWS_IAM in the template, called unsigned
    # When it goes through SAM and through the local runner
    through_sam, through_runner = post(api, "/auth/exchange"), post(broker.url, "/auth/exchange")
    # Then the runner refuses it as API Gateway would, and SAM (a documented limit) lets it through
    assert (through_runner.status_code, through_runner.json()["message"]) == (403, "Missing Authentication Token")
    assert through_sam.status_code == 200, through_sam.text
    assert through_sam.json()["access_token"]


def test_no_secret_or_token_in_sam_logs(sam: SamLocal, api: str, invoked: dict[str, Any]) -> None:
    # Given the SAM runs above: invokes (their stderr) and start-api (its log)
    logs = sam.start_api_log() + "".join(stderr for _, _, stderr in invoked.values())
    # When a login issues tokens through SAM
    tokens = post(api, "/auth/login", json=DEMO).json()
    logs += sam.start_api_log()
    # Then no password, client secret or token appears in any log line
    planted = [
        DEMO_PASSWORD,
        "demo-client-secret",
        "demo-exchange-token",
        tokens["access_token"],
        tokens["refresh_token"],
    ]
    assert [value for value in planted if re.search(re.escape(value), logs)] == []
