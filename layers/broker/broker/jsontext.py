"""Compact JSON text, as ``json.JSONEncoder(separators=(",", ":"), ...).encode`` writes it.

``JSONEncoder.encode`` runs ``iterencode`` in Python on every call (choosing the string
encoder, defining a float formatter, building the C encoder) before the C encoder does the
work. The broker encodes one response body and one log line per request, so this builds
the same C encoder directly, with the same arguments and a fresh circular-reference memo per
call (``check_circular``), and falls back to ``JSONEncoder.encode`` where the stdlib would
not use the C encoder either (no C accelerator, an indent, a bare string).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any


def compact_encoder(*, ensure_ascii: bool = True, default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":"), ensure_ascii=…, default=…).encode``, faster."""
    stock = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii, default=default).encode
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C accelerator
        return stock
    make = c_make_encoder
    strings = encode_basestring_ascii if ensure_ascii else encode_basestring
    fallback: Callable[[Any], Any] = default or json.JSONEncoder().default

    def encode(obj: Any) -> str:
        if isinstance(obj, str):
            return stock(obj)
        chunks = make({}, fallback, strings, None, ":", ",", False, False, True)(obj, 0)
        return "".join(chunks)

    return encode
