"""The secret's rules at their edges: what the secret may hold, how long it is cached, what a
failed read logs and answers, and what the broker sends the AWS Parameters and Secrets Lambda
Extension (GET, the session token, one attempt, a 1 s connect and a 5 s read timeout).
https://docs.aws.amazon.com/secretsmanager/latest/userguide/retrieving-secrets_lambda.html

Written against the mutants mutation testing left alive in broker.secrets.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from broker.config import Config
from broker.errors import SecretUnavailable
from broker.secrets import (
    BrokerSecret,
    ExtensionError,
    ExtensionFetch,
    SecretStore,
    decode_broker_keys,
    fetcher_for,
    parse_secret,
    sdk_fetch,
)
from tests.support import DEMO_SECRET, SINK
from tests.unit.conftest import SECRET_ID, SecretsManager

SESSION_TOKEN = "session-token-for-the-extension"
REQUIRED = ("client_id", "client_secret")


def log_records(since: int) -> list[dict[str, Any]]:
    """The Powertools JSON lines logged since ``since`` (an index into the session's sink)."""
    decoder = json.JSONDecoder()
    records = []
    for line in SINK.lines[since:]:
        try:
            record, _ = decoder.raw_decode(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def logged(since: int, message: str) -> dict[str, Any]:
    found = [record for record in log_records(since) if record.get("message") == message]
    assert found, f"{message!r} was not logged"
    return found[-1]


def failed_read(store: SecretStore, within: float = 5.0) -> tuple[SecretUnavailable, dict[str, Any]]:
    """The error a failing read raises (in a worker thread, so a read that never ends fails the
    test after ``within`` seconds instead of hanging it), and the line it logged."""
    mark = len(SINK.lines)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            store.get()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=within)
    assert not worker.is_alive(), f"the read did not end within {within} s"
    assert len(outcome) == 1
    assert isinstance(outcome[0], SecretUnavailable)
    return outcome[0], logged(mark, "Secret read failed")


# -- what the secret may hold ---------------------------------------------------------------


def test_a_secret_keeps_strings_and_numbers_and_a_broker_keys_list_and_drops_the_rest() -> None:
    secret = parse_secret(
        json.dumps(
            {
                "client_id": "demo-client",
                "partner_id": 42,
                "ratio": 1.5,
                "enabled": True,
                "nested": {"a": "b"},
                "aliases": ["x", "y"],
                "broker_keys": ["k1", "k2"],
            }
        )
    )
    assert dict(secret.values) == {
        "client_id": "demo-client",
        "partner_id": "42",
        "ratio": "1.5",
        "broker_keys": "k1,k2",
    }
    assert parse_secret(json.dumps({"broker_keys": ["k1", 2]})).get("broker_keys") is None
    assert secret.get("enabled") is None


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"'])
def test_a_secret_that_is_not_a_json_object_is_refused(raw: str) -> None:
    with pytest.raises(SecretUnavailable, match=r"^The broker's secret is not a JSON object\.$"):
        parse_secret(raw)


def test_the_sensitive_values_are_the_non_empty_ones() -> None:
    secret = parse_secret(json.dumps({"client_id": "demo-client", "empty": "", "client_secret": "s3cret"}))
    assert secret.sensitive_values() == ("demo-client", "s3cret")
    assert BrokerSecret().sensitive_values() == ()


@pytest.mark.parametrize("text", ["a", "é" * 43])
def test_a_broker_key_that_is_not_base64url_is_malformed(text: str) -> None:
    with pytest.raises(SecretUnavailable) as info:
        decode_broker_keys(text)
    assert info.value.description == "The broker's secret holds a malformed broker_keys entry."
    assert (info.value.status, info.value.error) == (503, "temporarily_unavailable")


# -- the cache ----------------------------------------------------------------------------------


class Source:
    """A secret source that counts its reads and can be made to fail."""

    def __init__(self) -> None:
        self.reads = 0
        self.value = json.dumps(DEMO_SECRET)
        self.error: Exception | None = None

    def __call__(self, secret_id: str) -> str:
        assert secret_id == SECRET_ID
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.value


def test_a_cached_secret_is_served_until_the_ttl_has_passed_to_the_second() -> None:
    now = [100.0]
    source = Source()
    store = SecretStore(SECRET_ID, ttl=10.0, required=REQUIRED, fetch=source, clock=lambda: now[0])
    first = store.get()
    now[0] = 109.999
    assert store.get() is first
    assert source.reads == 1
    now[0] = 110.0
    store.get()
    assert source.reads == 2
    assert store.reads == 2


def test_the_first_call_reads_whatever_the_clock_reads() -> None:
    # time.monotonic's reference point is undefined: a store must not serve a cache it never filled
    source = Source()
    store = SecretStore(SECRET_ID, ttl=10.0, required=REQUIRED, fetch=source, clock=lambda: -5.0)
    assert store.get().get("client_id") == DEMO_SECRET["client_id"]
    assert source.reads == 1


def test_a_forced_read_reads_now_and_restarts_the_ttl() -> None:
    now = [0.0]
    source = Source()
    store = SecretStore(SECRET_ID, ttl=10.0, required=REQUIRED, fetch=source, clock=lambda: now[0])
    store.get()
    now[0] = 5.0
    source.value = json.dumps({**DEMO_SECRET, "client_secret": "rotated"})
    assert store.get(force=True).get("client_secret") == "rotated"
    now[0] = 14.0
    assert store.get().get("client_secret") == "rotated"
    assert source.reads == 2


def test_a_failed_read_leaves_the_cached_secret_in_place() -> None:
    now = [0.0]
    source = Source()
    store = SecretStore(SECRET_ID, ttl=10.0, required=REQUIRED, fetch=source, clock=lambda: now[0])
    cached = store.get()
    source.value = "not json"
    with pytest.raises(SecretUnavailable):
        store.get(force=True)
    assert store.get() is cached
    assert store.reads == 2


def test_clearing_the_cache_makes_the_next_call_read_again() -> None:
    source = Source()
    store = SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=source)
    store.get()
    store.clear()
    store.get()
    assert source.reads == 2


# -- a failed read: what is logged and answered -------------------------------------------------


def test_a_read_error_logs_its_error_code_never_the_message_and_answers_503() -> None:
    class ClientError(Exception):
        response: ClassVar[dict[str, Any]] = {
            "Error": {"Code": "ResourceNotFoundException", "Message": "secret s3cret-name"}
        }

    source = Source()
    source.error = ClientError("the secret s3cret-name was not found")
    error, record = failed_read(SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=source))
    assert record["secret_error"] == "ResourceNotFoundException"
    assert record["level"] == "ERROR"
    assert "s3cret-name" not in json.dumps(record)
    assert (error.status, error.error, error.description) == (
        503,
        "temporarily_unavailable",
        "The broker's credentials are unavailable.",
    )


@pytest.mark.parametrize("response", [None, {}, {"Error": {}}])
def test_a_read_error_without_an_error_code_logs_its_type(response: Any) -> None:
    class Broken(Exception):
        pass

    failure = Broken("boom")
    if response is not None:
        failure.response = response  # type: ignore[attr-defined]  # as botocore's ClientError carries it
    source = Source()
    source.error = failure
    _, record = failed_read(SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=source))
    assert record["secret_error"] == "Broken"


def test_a_secret_unavailable_from_the_source_is_answered_as_it_is() -> None:
    source = Source()
    source.error = SecretUnavailable("The broker's secret has no SecretString.")
    store = SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=source)
    with pytest.raises(SecretUnavailable, match=r"^The broker's secret has no SecretString\.$"):
        store.get()


def test_a_secret_that_is_not_json_is_logged_as_such() -> None:
    source = Source()
    source.value = "[]"
    mark = len(SINK.lines)
    with pytest.raises(SecretUnavailable, match="not a JSON object"):
        SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=source).get()
    assert logged(mark, "Secret is not a JSON object")["level"] == "ERROR"


def test_a_secret_missing_a_required_key_or_with_it_empty_names_the_keys_in_the_log() -> None:
    source = Source()
    source.value = json.dumps({"client_id": "", "partner_id": "p"})
    mark = len(SINK.lines)
    with pytest.raises(SecretUnavailable) as info:
        SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=source).get()
    assert info.value.description == "The broker's secret lacks a required key."
    record = logged(mark, "Secret lacks required keys")
    assert record["missing_keys"] == ["client_id", "client_secret"]
    assert record["level"] == "ERROR"


# -- the SDK backend ----------------------------------------------------------------------------


def test_the_sdk_backend_reads_the_secret_string(secrets_manager: SecretsManager) -> None:
    fetch = fetcher_for(Config.from_env({"BROKER_SECRET_ID": SECRET_ID}))
    assert fetch is sdk_fetch
    assert json.loads(fetch(SECRET_ID)) == DEMO_SECRET
    assert secrets_manager.reads == [SECRET_ID]


def test_a_binary_only_secret_is_refused(secrets_manager: SecretsManager) -> None:
    secrets_manager.client.create_secret(Name="binary-only", SecretBinary=b"\x00\x01")
    with pytest.raises(SecretUnavailable, match=r"^The broker's secret has no SecretString\.$"):
        sdk_fetch("binary-only")


# -- the extension backend: a raw local server sees exactly what is sent -------------------------


class Extension:
    """A localhost listener standing in for the extension: records each raw request and answers
    ``answer`` (or closes without one, or holds the connection open)."""

    def __init__(self, answer: bytes | None = None, *, hold: bool = False) -> None:
        self.answer = answer
        self.hold = hold
        self.requests: list[bytes] = []
        self.connections = 0
        self._held: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)  # wakes up to notice close()
        self._closed = threading.Event()
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(5.0)
            data = b""
            try:
                while b"\r\n\r\n" not in data or len(data) < _request_length(data):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            self.requests.append(data)
            if self.hold:
                self._held.append(conn)
                continue
            if self.answer is not None:
                conn.sendall(self.answer)
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._server.close()
        for conn in self._held:
            conn.close()


def _request_length(data: bytes) -> int:
    """The length of the request in ``data`` once its head is in: head and declared body.
    (All of it is read: closing a socket with unread bytes would reset the connection.)"""
    head, _, _ = data.partition(b"\r\n\r\n")
    declared = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return len(head) + 4 + (int(declared[0]) if declared else 0)


def http_answer(status: str, body: Any) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def get_secret_value(secret: Any) -> dict[str, Any]:
    return {"Name": SECRET_ID, "SecretString": json.dumps(secret), "VersionStages": ["AWSCURRENT"]}


@pytest.fixture
def serve() -> Iterator[Any]:
    made: list[Extension] = []

    def start(answer: bytes | None = None, *, hold: bool = False) -> Extension:
        made.append(Extension(answer, hold=hold))
        return made[-1]

    yield start
    for extension in made:
        extension.close()


def extension_store(port: int) -> SecretStore:
    config = Config.from_env(
        {
            "BROKER_SECRET_ID": SECRET_ID,
            "BROKER_SECRETS_BACKEND": "extension",
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
        }
    )
    fetch = fetcher_for(config)
    assert isinstance(fetch, ExtensionFetch)
    return SecretStore(SECRET_ID, ttl=300.0, required=REQUIRED, fetch=fetch)


def test_the_extension_is_asked_with_a_get_and_the_session_token(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    extension = serve(http_answer("200 OK", get_secret_value(DEMO_SECRET)))
    assert extension_store(extension.port).get().get("client_secret") == DEMO_SECRET["client_secret"]
    # Method names are case-sensitive (RFC 9110 §9.1); field names are not.
    request_line, *header_lines = extension.requests[0].decode().split("\r\n")
    assert request_line == "GET /secretsmanager/get?secretId=token-broker%2Fclient HTTP/1.1"
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in header_lines if line)}
    assert headers["x-aws-parameters-secrets-token"] == SESSION_TOKEN


def test_without_a_session_token_the_extension_is_sent_an_empty_one(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    extension = serve(http_answer("200 OK", get_secret_value(DEMO_SECRET)))
    extension_store(extension.port).get()
    header_lines = extension.requests[0].decode().split("\r\n")[1:]
    assert "x-aws-parameters-secrets-token: " in [line.lower() for line in header_lines]


@pytest.mark.parametrize("status", ["401 Unauthorized", "404 Not Found", "500 Internal Server Error"])
def test_an_extension_error_status_is_logged_and_answered_503(serve: Any, status: str) -> None:
    extension = serve(http_answer(status, {"message": "no"}))
    error, record = failed_read(extension_store(extension.port))
    code = status.split(maxsplit=1)[0]
    assert record["secret_error"] == f"extension HTTP {code}"
    assert (error.status, error.description) == (503, "The broker's credentials are unavailable.")
    assert str(ExtensionError(int(code))) == f"HTTP {code}"


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ("not json", "The extension's answer is not a GetSecretValue result."),
        ([1], "The extension's answer is not a GetSecretValue result."),
        ({"Name": SECRET_ID}, "The broker's secret has no SecretString."),
        ({"SecretString": 7}, "The broker's secret has no SecretString."),
    ],
)
def test_an_extension_answer_without_a_secret_string_is_503_saying_so(serve: Any, body: Any, description: str) -> None:
    extension = serve(http_answer("200 OK", body))
    with pytest.raises(SecretUnavailable) as info:
        extension_store(extension.port).get()
    assert (info.value.status, info.value.description) == (503, description)


def test_the_extension_is_asked_once_a_dropped_connection_is_not_retried(serve: Any) -> None:
    extension = serve(None)  # reads the request, closes without an answer
    _, record = failed_read(extension_store(extension.port))
    assert record["secret_error"] == "ProtocolError"
    assert extension.connections == 1


@contextlib.contextmanager
def unaccepting_listener() -> Iterator[int]:
    """A port whose accept queue is full: the kernel leaves a further connection unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(3):
        pending = socket.socket()
        pending.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            pending.connect(("127.0.0.1", port))
        queued.append(pending)
    try:
        yield port
    finally:
        for pending in queued:
            pending.close()
        listener.close()


def test_an_extension_that_does_not_accept_times_out_after_1_s(serve: Any) -> None:
    # Given a listener whose accept queue is full: the kernel leaves further connections unanswered
    with unaccepting_listener() as port:
        store = extension_store(port)
        started = time.monotonic()
        _, record = failed_read(store, within=3.0)
        elapsed = time.monotonic() - started
    assert record["secret_error"] == "ConnectTimeoutError"
    assert 0.9 <= elapsed < 1.8


def test_an_extension_that_accepts_but_never_answers_times_out_after_5_s(serve: Any) -> None:
    extension = serve(hold=True)
    store = extension_store(extension.port)
    started = time.monotonic()
    _, record = failed_read(store, within=8.0)
    elapsed = time.monotonic() - started
    assert record["secret_error"] == "ReadTimeoutError"
    assert 4.9 <= elapsed < 5.8
    assert extension.connections == 1
