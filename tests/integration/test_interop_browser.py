"""oidc-client-ts, unmodified, in headless Chromium on its own origin (a SPA dev server), against the
broker over HTTP (local runner, CORS) and the real local upstream: configured from discovery, with
its default settings (so its default scope=openid is sent), it logs in with
``signinResourceOwnerCredentials``, refreshes with ``signinSilent`` through the one token endpoint,
revokes with ``revokeTokens``, and surfaces unsupported_grant_type as its own ``ErrorResponse``."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from local.runner.testing import LocalBroker, run_broker
from tests.integration.interop import DEMO, METADATA_PATH, refresh_is_revoked, userinfo
from tests.support import ROOT

pytestmark = pytest.mark.integration
LIBRARY = ROOT / "tests/node_modules/oidc-client-ts/dist/browser/oidc-client-ts.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE = '<!doctype html><meta charset="utf-8"><title>SPA</title><script src="oidc-client-ts.min.js"></script>'


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def spa_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static server for the SPA page and the library, on its own origin (as a dev server is)."""
    assert LIBRARY.exists(), "oidc-client-ts is not installed: `make test` installs tests/package.json"
    root = tmp_path_factory.mktemp("spa")
    (root / "index.html").write_text(PAGE)
    shutil.copy(LIBRARY, root / LIBRARY.name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def spa_broker(
    built_template: Path, spa_origin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker]:
    with run_broker(tmp_path_factory.mktemp("interop"), env={"BROKER_ALLOWED_ORIGINS": spa_origin}) as broker:
        yield broker


@pytest.fixture
def page(spa_origin: str, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (apt-get)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    try:
        driver.get(f"{spa_origin}/")
        yield driver
    finally:
        driver.quit()


def run(driver: webdriver.Chrome, body: str, *args: Any) -> dict[str, Any]:
    """Run an async snippet in the page: {"ok": its value} or {"error": the thrown error's fields}."""
    script = f"""
        const done = arguments[arguments.length - 1];
        const args = Array.from(arguments).slice(0, -1);
        (async (...args) => {{ {body} }})(...args).then(
            (ok) => done({{ok: ok === undefined ? null : ok}}),
            (e) => done({{error: {{name: e.name, message: String(e.message), error: e.error ?? null,
                                   error_description: e.error_description ?? null}}}}));
    """
    result: dict[str, Any] = driver.execute_async_script(script, *args)
    return result


# The library's own settings: where to find the metadata, and its client id. Everything else is
# its default, scope "openid" included.
MAKE_MANAGER = """
    window.mgr = new oidc.UserManager({
        authority: args[0], metadataUrl: args[0] + args[1], client_id: "spa", redirect_uri: location.origin + "/",
    });
    return mgr.settings.scope;
"""
TOKENS = "return {access_token: user.access_token, refresh_token: user.refresh_token, scope: user.scope};"


def test_oidc_client_ts_logs_in_refreshes_and_revokes(spa_broker: LocalBroker, page: webdriver.Chrome) -> None:
    broker = spa_broker
    # Given oidc-client-ts configured from the broker's discovery, with its defaults
    assert run(page, MAKE_MANAGER, broker.url, METADATA_PATH) == {"ok": "openid"}

    # When the user logs in (the library sends its default scope=openid and its client_id)
    login = run(page, f"const user = await mgr.signinResourceOwnerCredentials(args[0]); {TOKENS}", DEMO)
    # Then it holds the upstream's tokens, and they work
    assert "ok" in login, login  # fails before the scope policy: the upstream refuses "openid"
    first = login["ok"]
    assert userinfo(broker, first["access_token"]) == 200

    # When it refreshes silently: its refresh-token path, through the same token endpoint
    renewed = run(page, f"const user = await mgr.signinSilent(); {TOKENS}")
    assert "ok" in renewed, renewed
    second = renewed["ok"]
    assert second["refresh_token"] != first["refresh_token"]
    assert userinfo(broker, second["access_token"]) == 200
    assert refresh_is_revoked(broker, first["refresh_token"])  # rotated upstream

    # When the user logs out: the library revokes the access and the refresh token (RFC 7009)
    revoked = run(page, "await mgr.revokeTokens(); const user = await mgr.getUser(); return user.refresh_token;")
    assert revoked == {"ok": None}, revoked
    # Then both are dead at the upstream
    assert refresh_is_revoked(broker, second["refresh_token"])
    assert userinfo(broker, second["access_token"]) == 401


# An app built for the code flow receives a callback: the library exchanges the code at the token
# endpoint with grant_type=authorization_code, which this deployment does not serve.
CODE_CALLBACK = """
    const state = await oidc.SigninState.create({
        data: null, request_type: "si:r", code_verifier: true, client_id: mgr.settings.client_id,
        authority: mgr.settings.authority, redirect_uri: mgr.settings.redirect_uri,
    });
    await mgr.settings.stateStore.set(state.id, state.toStorageString());
    await mgr.signinCallback(mgr.settings.redirect_uri + "?code=returned-code&state=" + state.id);
"""


def test_oidc_client_ts_surfaces_unsupported_grant_type_as_its_error(
    spa_broker: LocalBroker, page: webdriver.Chrome
) -> None:
    run(page, MAKE_MANAGER, spa_broker.url, METADATA_PATH)
    outcome = run(page, CODE_CALLBACK)
    assert "error" in outcome, outcome
    assert outcome["error"]["name"] == "ErrorResponse"
    assert outcome["error"]["error"] == "unsupported_grant_type"
    assert "not served by this broker" in outcome["error"]["error_description"]
