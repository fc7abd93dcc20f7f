"""The local "stack": moto with the secrets, the upstream unless a profile is given, each function's environment.

Shared by the runner (``python -m local.runner``) and ``python -m local.invoke``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from local.runner.logs import LogSink
from local.runner.processes import Supervisor
from local.runner.services import (
    create_table,
    demo_secret,
    function_services_env,
    local_profile,
    put_secret,
    start_moto,
    start_upstream,
)
from local.runner.template import App, Function

PROFILE_VARIABLE = "BROKER_PROFILE"
SECRET_VARIABLE = "BROKER_SECRET_ID"
EXCHANGE_FUNCTION = "ExchangeFunction"


@dataclass(frozen=True)
class Stack:
    app: App  # functions with their final environment (services excluded)
    moto_url: str
    upstream_url: str | None
    secret_ids: list[str]
    services_env: Mapping[str, str]
    supervisor: Supervisor  # every process started for this stack, emulators included


def read_secret_file(path: Path | None) -> dict[str, object]:
    if path is None:
        return demo_secret()
    secret = json.loads(path.read_text())
    if not isinstance(secret, dict):
        raise ValueError(f"{path}: the secret must be a JSON object")
    return secret


def configure(
    app: App,
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    function_env: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[App, bool]:
    """Apply ``--profile``, ``--env`` (every function) and per-function variables, in that order.

    Returns the app and whether the local upstream is needed: it is, unless a profile came
    from the command line or the overrides (then ``BROKER_PROFILE`` is left as given).
    """
    functions: dict[str, Function] = {}
    needs_upstream = True
    for name, function in app.functions.items():
        variables = dict(function.environment)
        if profile:
            variables[PROFILE_VARIABLE] = profile
        variables.update(env or {})
        variables.update((function_env or {}).get(name, {}))
        if profile or PROFILE_VARIABLE in (env or {}) or PROFILE_VARIABLE in (function_env or {}).get(name, {}):
            needs_upstream = False
        functions[name] = replace(function, environment=variables)
    return replace(app, functions=functions), needs_upstream


def secret_for(app: App, secret_id: str, secret: Mapping[str, object]) -> Mapping[str, object]:
    """As a deployment keeps them: the exchange token only in a secret the exchange function reads."""
    readers = {name for name, f in app.functions.items() if f.environment.get(SECRET_VARIABLE) == secret_id}
    if EXCHANGE_FUNCTION in readers:
        return secret
    return {key: value for key, value in secret.items() if key != "exchange_token"}


@contextmanager
def local_stack(
    app: App,
    sink: LogSink,
    *,
    secret: Mapping[str, object],
    needs_upstream: bool,
    state_dir: Path | None = None,
    upstream_hosts: Sequence[str] = (),
    oidc: bool = False,
) -> Iterator[Stack]:
    """Start moto with the secrets and tables (and the upstream); on exit, stop every process started."""
    supervisor = Supervisor()
    owned_dir = None if state_dir is not None else Path(tempfile.mkdtemp(prefix="token-broker-local-"))
    try:
        # Both take a second or two to import: start them side by side.
        with ThreadPoolExecutor(max_workers=2) as starting:
            moto = starting.submit(start_moto, supervisor, sink)
            upstream = None
            if needs_upstream:
                text_secret = {k: v for k, v in secret.items() if isinstance(v, str)}
                upstream_dir = state_dir or owned_dir or Path(".")
                upstream = starting.submit(
                    start_upstream, supervisor, sink, upstream_dir, text_secret, upstream_hosts, oidc
                )
            moto_url = moto.result()
            upstream_url = None if upstream is None else upstream.result()
        secret_ids = app.secret_ids(SECRET_VARIABLE)
        for secret_id in secret_ids:
            put_secret(moto_url, secret_id, secret_for(app, secret_id, secret))
        for table in app.tables:
            create_table(moto_url, table)
        if upstream_url is not None:
            profile = local_profile(upstream_url, oidc)
            functions = {
                name: replace(f, environment={**f.environment, PROFILE_VARIABLE: profile})
                for name, f in app.functions.items()
            }
            app = replace(app, functions=functions)
        yield Stack(app, moto_url, upstream_url, secret_ids, function_services_env(moto_url), supervisor)
    finally:
        supervisor.stop_all()
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
