"""Two warm-path shortcuts in broker.upstream keep the behaviour of what they replace."""

from __future__ import annotations

import json

import pytest

from broker.errors import UpstreamFailure
from broker.profiles import PRESETS
from broker.upstream import _timeout, _token_body

TOKEN = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 60}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_a_token_body_in_any_json_encoding_reads_as_json_loads_reads_it(encoding: str) -> None:
    # Given an upstream answer encoded as RFC 8259 allows (and as json.loads detects)
    data = json.dumps(TOKEN).encode(encoding)

    # When the broker reads it
    body = _token_body(data, PRESETS["bakrypt"])

    # Then it is the token json.loads would have read
    assert json.loads(data) == TOKEN
    assert body == TOKEN


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe\x00", b'{"access_token": "a"', b"[]"])
def test_what_json_loads_refuses_is_refused(data: bytes) -> None:
    # Given an answer that is not a JSON object
    # When the broker reads it, then it is an upstream failure, as before
    with pytest.raises(UpstreamFailure):
        _token_body(data, PRESETS["bakrypt"])


@pytest.mark.parametrize("remaining", [0.05, 0.5, 0.99, 1.0, 2.34, 7.99999, 8.0, 27.95])
def test_the_socket_timeouts_never_exceed_what_remains_of_the_deadline(remaining: float) -> None:
    # Given what remains of a call's deadline
    # When the urllib3 timeouts for it are chosen
    timeout = _timeout(remaining)

    # Then neither exceeds it, nor falls short of it by a tenth of a second or more
    assert timeout.read_timeout is not None
    assert timeout.connect_timeout is not None
    assert remaining - 0.1 < timeout.read_timeout <= remaining
    assert timeout.connect_timeout == min(3.0, timeout.read_timeout)


def test_calls_with_the_same_budget_share_one_timeout_object() -> None:
    # Given two calls that start with (nearly) the whole 8 s budget
    # Then they get the same Timeout object (urllib3 clones it per request)
    assert _timeout(7.99998) is _timeout(7.99991)
