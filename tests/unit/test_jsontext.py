"""broker.jsontext writes exactly what ``json.JSONEncoder(...).encode`` writes, and fails where it fails."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.jsontext import compact_encoder

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8")),
    st.builds(object),  # not JSON: ``default`` decides
    st.builds(Decimal, st.integers()),
)
KEYS = st.one_of(st.text(), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)


def result(encode: Any, document: Any) -> tuple[str, str]:
    """Text written, or the type of the error raised (messages name object addresses)."""
    try:
        return "ok", encode(document)
    except (TypeError, ValueError) as exc:
        return "error", type(exc).__name__


@pytest.mark.parametrize("ensure_ascii", [True, False])
@settings(max_examples=300, deadline=None)
@given(document=DOCUMENTS)
def test_same_text_as_the_stock_encoder_for_any_document(ensure_ascii: bool, document: Any) -> None:
    # Given the stock encoder and broker.jsontext's, with the options the broker uses
    for default in (None, str):
        stock = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii, default=default).encode
        fast = compact_encoder(ensure_ascii=ensure_ascii, default=default)

        # When both encode the same document
        # Then they write the same text, or both refuse it with the same kind of error
        assert result(fast, document) == result(stock, document)


def test_a_circular_document_is_refused_and_leaves_no_trace_in_the_next_call() -> None:
    # Given a document whose second item is a list that contains itself
    loop: list[Any] = []
    loop.append(loop)
    document: list[Any] = [{"a": 1}, loop]
    encode = compact_encoder()

    # When it is encoded, then the circular reference is detected (not a RecursionError)
    with pytest.raises(ValueError, match="Circular reference"):
        encode(document)
    # And once the loop is gone the same encoder writes the same document: no memo of the
    # failed call (which was inside ``document`` when it failed) survives into the next one
    document.pop()
    assert encode(document) == '[{"a":1}]'
