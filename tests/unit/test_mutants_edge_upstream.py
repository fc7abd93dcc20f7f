"""One upstream call at its edges: what is sent (a POST with the body and headers as given, a
GET asking for JSON), the one deadline (an interval timer in the main thread, left disarmed
after every call, re-installed if something replaced it; socket timeouts elsewhere), the one
retry (only when the connection never opened and time remains) and how each failure reads.

Written against the mutants mutation testing left alive in broker.upstream.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from urllib3.exceptions import NewConnectionError

import broker.upstream
from broker.errors import BrokerError, UpstreamFailure, UpstreamTimeout
from broker.upstream import UpstreamAnswer, UpstreamRequest, get, send
from local.faulty import FaultyUpstream
from tests.support import SINK
from tests.unit.test_mutants_edge_secrets import Extension, http_answer, unaccepting_listener


@pytest.fixture
def faulty() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def no_timer_left() -> Iterator[None]:
    """Every call disarms its interval timer, whatever happened: a timer left armed would
    interrupt whatever the function runs next."""
    yield
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def failure(call: Any, *args: Any) -> tuple[BrokerError, float]:
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        call(*args)
    return info.value, time.monotonic() - started


def in_a_thread(call: Any, *args: Any, within: float = 15.0) -> Any:
    """``call(*args)`` in a worker thread (no interval timer there), its result or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call(*args))
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=within)
    assert outcome, "the call did not return"
    return outcome[0]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- what is sent ---------------------------------------------------------------------------------


def test_send_posts_the_body_and_headers_as_given(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/token", method="POST").respond_with_json({"access_token": "at"}, headers={"X-A": "1"})
    request = UpstreamRequest(
        httpserver.url_for("/token"), {"Content-Type": "application/x-www-form-urlencoded", "X-Partner": "p"}, b"a=1"
    )
    answer = send(request, 2.0)
    assert isinstance(answer, UpstreamAnswer)
    assert (answer.status, json.loads(answer.data), answer.headers["x-a"]) == (200, {"access_token": "at"}, "1")
    sent = httpserver.log[0][0]
    assert sent.get_data() == b"a=1"
    assert sent.headers["X-Partner"] == "p"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_get_asks_for_json_without_a_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/jwks", method="GET").respond_with_json({"keys": []})
    answer = get(httpserver.url_for("/jwks"), 2.0)
    assert (answer.status, json.loads(answer.data)) == (200, {"keys": []})
    sent = httpserver.log[0][0]
    assert sent.headers["Accept"] == "application/json"
    assert sent.get_data() == b""


def test_a_redirect_is_answered_as_it_came_never_followed(faulty: FaultyUpstream) -> None:
    answer = send(UpstreamRequest(faulty.url + "/redirect-307", {}, b"password=pw"), 2.0)
    assert answer.status == 307
    assert [seen.path for seen in faulty.seen] == ["/redirect-307"]


def test_the_method_is_sent_in_upper_case() -> None:
    # Method names are case-sensitive (RFC 9110 §9.1): "post" is not POST to every server.
    server = Extension(http_answer("200 OK", {"access_token": "at"}))  # a raw listener: the request line as sent
    try:
        send(UpstreamRequest(f"http://127.0.0.1:{server.port}/token", {}, b"a=1"), 2.0)
        get(f"http://127.0.0.1:{server.port}/jwks", 2.0)
    finally:
        server.close()
    lines = [raw.decode().split("\r\n", 1)[0] for raw in server.requests]
    assert lines == ["POST /token HTTP/1.1", "GET /jwks HTTP/1.1"]


def answered_in_parts(head: str, parts: list[bytes], pause: float) -> UpstreamAnswer:
    """``send`` to a raw upstream that answers 200 with ``head``'s header lines, then each of
    ``parts`` after ``pause`` seconds (each part its own read at the broker)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            received = b""
            while not received.endswith(b"\r\n\r\na=1"):  # all of it: unread bytes would make close() a reset
                received += conn.recv(4096)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{head}\r\n\r\n".encode())
            for part in parts:
                time.sleep(pause)
                conn.sendall(part)

    server = threading.Thread(target=answer, daemon=True)
    server.start()
    try:
        return send(UpstreamRequest(f"http://127.0.0.1:{port}/token", {}, b"a=1"), 3.0)
    finally:
        server.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_an_answer_without_a_length_is_read_to_its_end(framing: str) -> None:
    # Given an upstream that declares no length (it closes the connection, or sends chunks) and
    # sends its body a byte at a time
    body = json.dumps({"access_token": "at", "token_type": "Bearer"}).encode()
    head = "Connection: close" if framing == "close" else "Transfer-Encoding: chunked"
    parts = [bytes([byte]) if framing == "close" else b"1\r\n" + bytes([byte]) + b"\r\n" for byte in body]
    answer = answered_in_parts(head, parts + ([b"0\r\n\r\n"] if framing == "chunked" else []), 0.01)
    # Then the whole body is read
    assert (answer.status, answer.data) == (200, body)


def compressed_in_two(first: bytes, rest: bytes) -> tuple[bytes, bytes]:
    """A deflate (zlib) stream of ``first + rest`` in two pieces, the first decodable alone."""
    compressor = zlib.compressobj()
    head = compressor.compress(first) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return head, compressor.compress(rest) + compressor.flush()


def test_a_compressed_answer_is_read_to_its_end_not_to_its_declared_length() -> None:
    # Given a deflate-encoded answer whose Content-Length counts the compressed bytes, sent in two
    # pieces, the first of which decodes to exactly as many bytes as that declared length
    rest = b'","token_type":"Bearer"}'
    for pad in range(200):
        first = b'{"access_token":"at","pad":"' + b"a" * pad
        pieces = compressed_in_two(first, rest)
        if len(first) == len(pieces[0]) + len(pieces[1]):
            break
    else:
        pytest.fail("no padding makes the first piece decode to the declared length")
    head = f"Content-Encoding: deflate\r\nContent-Length: {len(pieces[0]) + len(pieces[1])}"
    answer = answered_in_parts(head, list(pieces), 0.1)
    # Then the broker reads on to the end of the body (the decoded length is not the declared
    # one), and hands on the whole decoded answer
    assert (answer.status, answer.data) == (200, first + rest)
    assert json.loads(answer.data)["token_type"] == "Bearer"


# -- the deadline ---------------------------------------------------------------------------------


def test_a_trickling_answer_is_cut_at_the_deadline_by_the_timer(faulty: FaultyUpstream) -> None:
    error, elapsed = failure(send, UpstreamRequest(faulty.url + "/trickle", {}, b""), 0.5)
    assert isinstance(error, UpstreamTimeout)
    assert 0.45 <= elapsed < 1.2


def test_a_replaced_alarm_handler_is_put_back_by_the_next_call(faulty: FaultyUpstream) -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        error, elapsed = failure(send, UpstreamRequest(faulty.url + "/trickle", {}, b""), 0.5)
        assert isinstance(error, UpstreamTimeout)
        assert elapsed < 1.2
        assert fired == []
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_in_a_worker_thread_socket_timeouts_bound_the_call_and_no_handler_is_touched(faulty: FaultyUpstream) -> None:
    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    error = in_a_thread(send, UpstreamRequest(faulty.url + "/hang", {}, b""), 0.3)
    elapsed = time.monotonic() - started
    assert isinstance(error, UpstreamTimeout)
    assert 0.25 <= elapsed < 0.9
    assert signal.getsignal(signal.SIGALRM) is handler


def test_the_connect_timeout_is_never_longer_than_the_deadline() -> None:
    with unaccepting_listener() as port:
        started = time.monotonic()
        error = in_a_thread(send, UpstreamRequest(f"http://127.0.0.1:{port}/token", {}, b""), 0.3)
        elapsed = time.monotonic() - started
    assert isinstance(error, UpstreamTimeout)
    assert (error.status, error.error) == (504, "temporarily_unavailable")
    assert 0.25 <= elapsed < 0.9


def test_the_connect_timeout_is_3_s_within_a_longer_deadline() -> None:
    with unaccepting_listener() as port:
        started = time.monotonic()
        error = in_a_thread(send, UpstreamRequest(f"http://127.0.0.1:{port}/token", {}, b""), 6.0)
        elapsed = time.monotonic() - started
    assert isinstance(error, UpstreamTimeout)
    assert 2.9 <= elapsed < 4.0


def test_in_a_worker_thread_a_body_that_stalls_is_cut_at_the_deadline_not_a_read_timeout_later() -> None:
    # Given an upstream that sends its head at once, then its body slowly for 0.6 s, then nothing
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def stall() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            received = b""
            while not received.endswith(b"\r\n\r\na=1"):
                received += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
            for _ in range(10):
                time.sleep(0.06)
                conn.sendall(b" ")
            done.wait(10)

    server = threading.Thread(target=stall, daemon=True)
    server.start()
    try:
        # When the call's deadline is 0.7 s (each socket read alone would wait 0.7 s more)
        started = time.monotonic()
        error = in_a_thread(send, UpstreamRequest(f"http://127.0.0.1:{port}/token", {}, b"a=1"), 0.7, within=5.0)
        elapsed = time.monotonic() - started
    finally:
        done.set()
        server.join(timeout=5)
        listener.close()
    # Then it ends at the deadline, not when the last read's own timeout runs out
    assert isinstance(error, UpstreamTimeout)
    assert 0.65 <= elapsed < 1.1


# -- the one retry, and how each failure reads ------------------------------------------------------


def retries_logged(since: int) -> list[dict[str, Any]]:
    """The retry warnings logged since ``since``, each record once (one record can reach the
    sink twice: through the broker's logger and the root logger's handlers)."""
    decoder = json.JSONDecoder()
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in SINK.lines[since:]:
        with contextlib.suppress(ValueError):
            shipped, end = decoder.raw_decode(line)
            record = json.loads(line[end:])
            if shipped.get("message") == "Upstream connection failed; retrying once":
                found[record["created"], record["lineno"]] = shipped
    return list(found.values())


def test_nothing_listening_is_tried_twice_then_could_not_connect() -> None:
    mark = len(SINK.lines)
    error, _ = failure(send, UpstreamRequest(f"http://127.0.0.1:{unused_port()}/token", {}, b""), 0.5)
    assert isinstance(error, UpstreamFailure)
    assert (error.status, error.description) == (502, "Could not connect to the upstream authorization server.")
    retried = retries_logged(mark)
    assert len(retried) == 1
    assert (retried[0]["level"], retried[0]["reason"]) == ("WARNING", "NewConnectionError")


def test_a_connection_that_failed_after_the_deadline_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[float] = []

    def refused_late(method: str, request: UpstreamRequest, deadline: float) -> UpstreamAnswer:
        attempts.append(time.monotonic())
        time.sleep(max(deadline - time.monotonic(), 0) + 0.01)  # the refusal came after the deadline
        raise NewConnectionError(None, "refused")  # type: ignore[arg-type]  # the pool passes a connection

    monkeypatch.setattr(broker.upstream, "_request", refused_late)
    error = in_a_thread(send, UpstreamRequest("http://127.0.0.1:9/token", {}, b""), 0.2)
    assert isinstance(error, UpstreamFailure)
    assert error.description == "Could not connect to the upstream authorization server."
    assert len(attempts) == 1


def test_a_dropped_connection_is_a_failed_connection_never_retried(faulty: FaultyUpstream) -> None:
    error, _ = failure(send, UpstreamRequest(faulty.url + "/drop", {}, b"grant_type=refresh_token"), 2.0)
    assert isinstance(error, UpstreamFailure)
    assert error.description == "The connection to the upstream authorization server failed."
    assert len(faulty.seen) == 1


def test_untrusted_tls_is_a_tls_failure() -> None:
    with FaultyUpstream(tls="self-signed") as server:
        error, _ = failure(send, UpstreamRequest(f"https://localhost:{server.port}/ok", {}, b""), 2.0)
    assert isinstance(error, UpstreamFailure)
    assert error.description == "TLS to the upstream authorization server failed."
    assert server.seen == []
