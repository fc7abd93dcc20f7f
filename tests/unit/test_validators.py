"""The routes' schemas compiled ahead of time (broker/validators) behave as fastjsonschema compiles them.

The functions run generated code (layers/broker/generate_validators.py) instead of compiling
at cold start; these tests pin that code to broker/schemas.py and to fastjsonschema's own
behaviour, so a schema edit without `make validators` fails here, not in production.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import SchemaViolation
from broker.grants import ExchangeGrant, Grant, PasswordGrant, RefreshGrant, RevocationGrant
from tests.support import ROOT

GRANTS = (PasswordGrant(), RefreshGrant(), ExchangeGrant(), RevocationGrant())


def load_generator() -> ModuleType:
    path = ROOT / "layers" / "broker" / "generate_validators.py"
    spec = importlib.util.spec_from_file_location("generate_validators", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outcome(validate: Callable[[Any], Any], data: Any) -> tuple[str, ...]:
    """What a validator does with ``data``: accepts it, or rejects it naming a field and a rule."""
    try:
        validate(data)
    except (SchemaViolation, fastjsonschema.JsonSchemaValueException) as exc:
        return ("rejected", str(exc), exc.name or "", exc.rule or "")
    return ("accepted",)


def test_the_committed_validators_are_what_the_generator_writes_from_the_schemas() -> None:
    # Given the generator, run on the current broker/schemas.py
    generator = load_generator()

    # When its output is compared with the committed files
    expected = generator.expected()
    differing = [str(path.name) for path, text in expected.items() if not path.exists() or path.read_text() != text]

    # Then none differs (`make validators` rewrites them), and no stray file is left behind
    assert differing == []
    committed = {p.name for p in (ROOT / "layers" / "broker" / "broker" / "validators").glob("*.py")}
    assert committed == {path.name for path in expected}


@pytest.mark.parametrize("grant", GRANTS, ids=lambda g: g.name)
def test_each_route_loads_its_own_generated_validator(grant: Grant) -> None:
    # Given a route's grant
    # When its validator is asked for
    validate = grant.validate

    # Then it is the generated module's function, loaded once
    assert validate is importlib.import_module(f"broker.validators.{grant.name}").validate
    assert grant.validate is validate


PARAM_VALUES = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=1100),
    st.sampled_from(["password", "refresh_token", "", " ", "\x7f", "a\x00b", "openid profile", "x" * 4097]),
    # every length limit of the schemas, and either side of it
    st.sampled_from([0, 1, 63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097]).map(lambda n: "a" * n),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
)
PARAMS = st.dictionaries(
    st.sampled_from(
        ["grant_type", "username", "password", "scope", "refresh_token", "token_type_hint", "client_id", "other"]
    ),
    PARAM_VALUES,
    max_size=6,
)
DOCUMENTS = st.one_of(PARAMS, st.lists(st.integers(), max_size=2), st.text(max_size=5), st.none(), st.integers())


@settings(max_examples=300, deadline=None)
@given(data=DOCUMENTS)
def test_generated_and_runtime_compiled_validators_agree_on_every_input(data: Any) -> None:
    # Given each route's schema compiled at run time by fastjsonschema, and its generated validator
    for grant in GRANTS:
        compiled = fastjsonschema.compile(dict(grant.schema))

        # When both validate the same document
        # Then they accept the same documents, and reject the others with the same message, field and rule
        assert outcome(grant.validate, data) == outcome(compiled, data), grant.name


LENGTHS = (0, 1, 63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097)


@pytest.mark.parametrize("grant", GRANTS, ids=lambda g: g.name)
def test_each_field_at_each_length_limit_is_judged_as_at_run_time(grant: Grant) -> None:
    # Given the route's schema compiled at run time, and a document with every required field valid
    compiled = fastjsonschema.compile(dict(grant.schema))
    base = dict.fromkeys(grant.schema.get("required", ()), "valid")
    fields = list(grant.schema.get("properties", {})) or ["anything"]
    for field in fields:
        for length in LENGTHS:
            # When one field is this long (and made of a character every pattern allows)
            document = {**base, field: "a" * length}
            # Then the generated validator decides as the compiled one does
            assert outcome(grant.validate, document) == outcome(compiled, document), (field, length)


def test_a_rejection_names_the_field_and_rule_but_never_keeps_the_value() -> None:
    # Given a password that breaks the schema (too long)
    secret = "p" * 5000

    # When the password route validates it
    with pytest.raises(SchemaViolation) as caught:
        PasswordGrant().validate({"username": "alice", "password": secret})

    # Then the exception says where and why, and holds no copy of the value anywhere
    assert (caught.value.name, caught.value.rule) == ("data.password", "maxLength")
    assert secret not in repr(vars(caught.value))
    assert not hasattr(caught.value, "value")


def test_the_generated_code_needs_neither_fastjsonschema_nor_decimal_at_run_time() -> None:
    # Given a fresh interpreter with only the layer's source on its path
    code = (
        "import sys, json\n"
        "from broker.validators import password, refresh_token, exchange, logout\n"
        "password.validate({'username': 'a', 'password': 'b'})\n"
        "print(json.dumps(sorted(m for m in ('fastjsonschema', 'decimal') if m in sys.modules)))\n"
    )

    # When it loads and runs every generated validator
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "layers" / "broker",
        capture_output=True,
        text=True,
        check=True,
    )

    # Then neither module was imported
    assert json.loads(result.stdout) == []
