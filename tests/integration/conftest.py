"""Session fixtures: the template built once, and one broker on the local DOT upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.runner.main import BUILT_TEMPLATE, sam_build
from local.runner.testing import LocalBroker, run_broker


@pytest.fixture(scope="session")
def built_template() -> Path:
    """``sam build --cached`` once per session; brokers then start with ``--no-build``."""
    sam_build()
    return BUILT_TEMPLATE


@pytest.fixture(scope="session")
def broker(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The real broker, default settings, against the local django-oauth-toolkit upstream."""
    with run_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running
