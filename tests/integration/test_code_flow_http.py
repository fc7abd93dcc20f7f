"""The authorization code flow in a real headless Chromium: the demo SPA's button → the local
django-oauth-toolkit's login page (OIDC, PKCE, RS256) → the broker's callback → back on the SPA.
One broker for the module, in code mode (``make run FLOW=code``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker.cookies import COOKIE_NAME, LOGIN_COOKIE_NAME, CookieJar, parse_keys
from local.runner.testing import LocalBroker, run_broker
from tests.integration.test_bff_http import DEPLOYMENT, TIMEOUT, browser, refresh_cookie

pytestmark = pytest.mark.integration
__all__ = ["browser"]  # the Chromium fixture, shared with the BFF test
CODE_FLOW = {"BROKER_LOGIN_FLOWS": "code", "BROKER_REFRESH_DELIVERY": "cookie"}


@pytest.fixture(scope="module")
def code_broker(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with run_broker(tmp_path_factory.mktemp("code"), env=CODE_FLOW) as broker:
        yield broker


def wait_for(driver: webdriver.Chrome, condition: str) -> None:
    WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_element(By.ID, "status").text == condition)


def test_the_routes_refuse_what_they_must_over_http(code_broker: LocalBroker) -> None:
    http = requests.Session()
    http.request = functools.partial(http.request, timeout=TIMEOUT)  # type: ignore[method-assign]
    # A return_to off the allowed origins: 400, no redirect, no cookie
    off = http.get(
        f"{code_broker.url}/auth/authorize", params={"return_to": "https://evil.example/"}, allow_redirects=False
    )
    assert off.status_code == 400
    assert off.json()["error"] == "invalid_request"
    assert "Set-Cookie" not in off.headers
    # A callback without the login cookie: back to the SPA with an error, only the login cookie cleared
    stray = http.get(f"{code_broker.url}/auth/callback", params={"code": "x", "state": "y"}, allow_redirects=False)
    assert stray.status_code == 302
    assert parse_qs(urlsplit(stray.headers["Location"]).query) == {"error": ["invalid_request"]}
    assert stray.headers["Set-Cookie"].startswith(f"{LOGIN_COOKIE_NAME}=; Max-Age=0")
    # The password route of a deployment that signs in with the code flow only: 404
    login = http.post(f"{code_broker.url}/auth/login", json={"username": "demo", "password": "demo-password"})
    assert login.status_code == 404
    # No session without the cookie
    session = http.get(f"{code_broker.url}/auth/session", headers={"Origin": code_broker.url, "X-CSRF": "1"})
    assert session.status_code == 401
    assert session.json()["error"] == "invalid_token"


def test_a_real_browser_signs_in_on_the_upstreams_page_and_javascript_never_sees_a_broker_cookie(
    code_broker: LocalBroker, browser: webdriver.Chrome
) -> None:
    broker = code_broker
    assert broker.upstream_url is not None
    # Given the demo SPA, when the user presses "Sign in with the authorization server"
    browser.get(f"{broker.url}/")
    browser.find_element(By.ID, "code-login-button").click()
    # Then the upstream's own login page asks for the password; the test fills it in
    WebDriverWait(browser, TIMEOUT).until(lambda d: d.current_url.startswith(f"{broker.upstream_url}/accounts/login/"))
    browser.find_element(By.NAME, "username").send_keys("demo")
    browser.find_element(By.NAME, "password").send_keys("demo-password")
    browser.find_element(By.ID, "sign-in").click()

    # And after the callback the browser is back on the SPA, signed in, with the session's claims
    wait_for(browser, "signed in")
    assert browser.current_url == f"{broker.url}/"
    output = json.loads(browser.find_element(By.ID, "output").text)
    assert output["claims"]["preferred_username"] == "demo"
    assert output["claims"]["email"] == "demo@example.com"
    assert output["claims"]["sub"]
    cookie = refresh_cookie(browser)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert not any(c["name"] == LOGIN_COOKIE_NAME for c in browser.get_cookies())  # used once, cleared
    assert "__Host-broker" not in browser.execute_script("return document.cookie")

    # When the SPA refreshes, the access token it gets is one the upstream accepts
    tokens = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/auth/refresh', {method: 'POST', credentials: 'include', headers: {'X-CSRF': '1'}})"
        ".then(r => r.json()).then(done);"
    )
    assert "refresh_token" not in tokens
    userinfo = requests.get(
        f"{broker.upstream_url}/auth/userinfo/",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=TIMEOUT,
    )
    assert userinfo.status_code == 200
    assert userinfo.json() == {"username": "demo"}

    # When the user logs out: the upstream revoked the token, and the SPA is offered the end-session URL
    rotated = refresh_cookie(browser)
    assert rotated is not None
    keys = parse_keys(",".join(json.loads(broker.get_secret())["broker_keys"]))
    refresh_token = CookieJar(keys, DEPLOYMENT, 60).open(str(rotated["value"]))
    browser.find_element(By.ID, "logout-button").click()
    wait_for(browser, "signed out")
    assert refresh_cookie(browser) is None
    assert broker.upstream_refresh(refresh_token).json()["error"] == "invalid_grant"
    end_session = urlsplit(browser.find_element(By.ID, "end-session").get_attribute("href") or "")
    assert f"{end_session.scheme}://{end_session.netloc}{end_session.path}" == f"{broker.upstream_url}/o/logout/"
    assert parse_qs(end_session.query) == {"client_id": ["demo-client"], "post_logout_redirect_uri": [f"{broker.url}/"]}
    bodies: list[str] = browser.execute_script("return window.__bodies")
    assert all("refresh_token" not in body for body in bodies)
    assert COOKIE_NAME not in browser.execute_script("return document.cookie")
