"""docs/openapi.yaml against the running broker: Schemathesis generates requests from it (JSON
and form bodies, headers, preflights; valid and invalid), sends them to the local runner, and
checks every answer: never a 5xx, and status, content type, headers and body as documented.

A broker of its own: the generated logins fail upstream and would lock the session's shared
broker out (the guards count failures per source IP). Fixed seed, bounded examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from local.runner.testing import LocalBroker, run_broker
from tests.support import ROOT

DOCUMENT = ROOT / "docs" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
OPERATIONS = [
    (path, method.upper()) for path, item in yaml.safe_load(DOCUMENT.read_text())["paths"].items() for method in item
]
EXAMPLES = 25  # per operation and generation mode
SEED = 20261201
NOT_APPLICABLE = [positive_data_acceptance, negative_data_rejection]  # why: see the comment in the test


@pytest.fixture(scope="module")
def contract_broker(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with run_broker(tmp_path_factory.mktemp("contract")) as running:
        yield running


# A GET with no body and no parameter but Origin (the metadata document) has nothing to make
# invalid: negative generation cannot produce a case for it.
CASES = [
    (path, method, mode)
    for path, method in OPERATIONS
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    if not (method == "GET" and mode == schemathesis.GenerationMode.NEGATIVE)
]


def test_every_documented_operation_is_exercised() -> None:
    assert {(path, method) for path, method, _ in CASES} == set(OPERATIONS)
    assert {method for _, method in OPERATIONS} == {"POST", "OPTIONS", "GET"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "method", "mode"), CASES, ids=[f"{mode.value}-{method} {path}" for path, method, mode in CASES]
)
def test_every_answer_is_as_documented(
    contract_broker: LocalBroker, path: str, method: str, mode: schemathesis.GenerationMode
) -> None:
    operation = SCHEMA[path][method]
    calls: list[int] = []

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case[Any]) -> None:
        # When the generated request is sent, Then the answer is documented (schemathesis' checks).
        # A schema-valid login may be refused: the upstream answers invalid_grant (400) for an
        # unknown user, as RFC 6749 says, so "valid data is accepted" does not apply. Nor does
        # "invalid data is refused": X-CSRF and the cookie only count in cookie mode, and
        # unknown parameters are ignored (RFC 6749 §3.2).
        response = case.call_and_validate(
            base_url=contract_broker.url,
            timeout=30,
            excluded_checks=[positive_data_acceptance, negative_data_rejection],
        )
        calls.append(response.status_code)
        assert response.status_code < 500

    check()
    assert calls, "no request was generated"
