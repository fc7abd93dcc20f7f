"""BFF (cookie) mode over HTTP through the local runner against the real upstream, and in a
real headless Chromium loading the demo SPA from the same site."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker.cookies import COOKIE_NAME, CookieJar, parse_keys
from local.runner.testing import LocalBroker, run_broker

pytestmark = pytest.mark.integration
TIMEOUT = 30
DEMO = {"username": "demo", "password": "demo-password"}
DEPLOYMENT = "token-broker-local"  # the template's BROKER_DEPLOYMENT_ID: AWS::StackName, as the runner resolves it


@pytest.fixture(scope="module")
def cookie_broker(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with run_broker(tmp_path_factory.mktemp("bff"), env={"BROKER_REFRESH_DELIVERY": "cookie"}) as broker:
        yield broker


def cookie_from(response: requests.Response) -> str:
    """The refresh cookie's value from Set-Cookie. (requests' jar, rightly, will not send a
    Secure cookie over plain http, so the test carries it the way a browser on https would.)"""
    header = response.headers["Set-Cookie"]
    name, _, rest = header.partition("=")
    assert name == COOKIE_NAME
    return rest.split(";", 1)[0]


def raw_refresh_token(broker: LocalBroker, cookie: str) -> str:
    """What the cookie holds, opened with the deployment's key (the test plays the broker)."""
    keys = parse_keys(",".join(json.loads(broker.get_secret())["broker_keys"]))
    token: str = CookieJar(keys, DEPLOYMENT, 60).open(cookie)
    return token


def test_login_refresh_csrf_and_logout_over_http(cookie_broker: LocalBroker) -> None:
    broker = cookie_broker
    origin = {"Origin": broker.url}

    def post(path: str, cookie: str | None = None, **headers: str) -> requests.Response:
        sent = {**origin, **headers, **({"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {})}
        body = DEMO if path == "/auth/login" else None
        return requests.post(f"{broker.url}{path}", headers=sent, json=body, timeout=TIMEOUT)

    # Login sets the cookie; the body has no refresh token
    login = post("/auth/login")
    assert login.status_code == 200, login.text
    assert "refresh_token" not in login.json()
    assert login.headers["Access-Control-Allow-Credentials"] == "true"
    cookie = cookie_from(login)
    first = raw_refresh_token(broker, cookie)
    assert first not in login.text

    # Refresh with only the cookie and X-CSRF rotates it
    refreshed = post("/auth/refresh", cookie, **{"X-CSRF": "1"})
    assert refreshed.status_code == 200, refreshed.text
    cookie = cookie_from(refreshed)
    second = raw_refresh_token(broker, cookie)
    assert second != first
    assert broker.upstream_refresh(first).json()["error"] == "invalid_grant"  # rotated at the upstream

    # Without the header, or from an unlisted origin: 403
    assert post("/auth/refresh", cookie).status_code == 403
    assert post("/auth/refresh", cookie, Origin="https://evil.example", **{"X-CSRF": "1"}).status_code == 403

    # Logout revokes at the upstream and clears the cookie
    logout = post("/auth/logout", cookie, **{"X-CSRF": "1"})
    assert logout.status_code == 200
    assert logout.headers["Set-Cookie"].startswith(f"{COOKIE_NAME}=;")
    assert "Max-Age=0" in logout.headers["Set-Cookie"]
    refused = broker.upstream_refresh(second)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
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
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_status(driver: webdriver.Chrome, expected: str) -> None:
    WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_element(By.ID, "status").text == expected)


def refresh_cookie(driver: webdriver.Chrome) -> dict[str, object] | None:
    return next((c for c in driver.get_cookies() if c["name"] == COOKIE_NAME), None)


def test_a_real_browser_never_lets_javascript_see_the_refresh_token(
    cookie_broker: LocalBroker, browser: webdriver.Chrome
) -> None:
    # Given the demo SPA served from the broker's own site
    browser.get(f"{cookie_broker.url}/")

    # When the user logs in
    browser.find_element(By.ID, "login-button").click()
    wait_for_status(browser, "signed in")
    # Then the browser holds the refresh cookie, HttpOnly and Secure, and JavaScript cannot read it
    cookie = refresh_cookie(browser)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert COOKIE_NAME not in browser.execute_script("return document.cookie")

    # When the user refreshes, the cookie rotates, still out of JavaScript's reach
    browser.find_element(By.ID, "refresh-button").click()
    wait_for_status(browser, "refreshed")
    rotated = refresh_cookie(browser)
    assert rotated is not None
    assert rotated["value"] != cookie["value"]
    assert COOKIE_NAME not in browser.execute_script("return document.cookie")

    # When the user logs out, the cookie is gone
    browser.find_element(By.ID, "logout-button").click()
    wait_for_status(browser, "signed out")
    assert refresh_cookie(browser) is None

    # And no response body the page's JavaScript received held a refresh token
    bodies: list[str] = browser.execute_script("return window.__bodies")
    assert len(bodies) == 3
    assert all("refresh_token" not in body for body in bodies)
    assert "access_token" in bodies[0]
