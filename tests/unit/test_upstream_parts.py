"""The upstream's token answer is read as RFC 8259 JSON, in any encoding json.loads detects."""

from __future__ import annotations

import json

import pytest

from broker.answers import interpret
from broker.errors import UpstreamFailure
from broker.profiles import PRESETS
from broker.upstream import UpstreamAnswer

TOKEN = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 60}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_a_token_body_in_any_json_encoding_reads_as_json_loads_reads_it(encoding: str) -> None:
    # Given an upstream answer encoded as RFC 8259 allows (and as json.loads detects)
    data = json.dumps(TOKEN).encode(encoding)

    # When the broker reads it
    body = interpret(UpstreamAnswer(200, {}, data), PRESETS["bakrypt"], ())

    # Then it is the token json.loads would have read
    assert json.loads(data) == TOKEN
    assert body == TOKEN


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe\x00", b'{"access_token": "a"', b"[]"])
def test_what_json_loads_refuses_is_refused(data: bytes) -> None:
    # Given an answer that is not a JSON object
    # When the broker reads it, then it is an upstream failure
    with pytest.raises(UpstreamFailure):
        interpret(UpstreamAnswer(200, {}, data), PRESETS["bakrypt"], ())
