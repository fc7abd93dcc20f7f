"""The refresh and login cookies and the sealed blob, as mutation testing found them unpinned:
what a refused cookie tells the caller, why a blob does not open, and which cookie is ours.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from broker import sealing
from broker.cookies import (
    COOKIE_NAME,
    LOGIN_COOKIE_NAME,
    CookieJar,
    InvalidCookie,
    clear_cookie,
    clear_login_cookie,
    parse_keys,
    read_cookie,
)
from broker.errors import SecretUnavailable

KEY = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
DEPLOYMENT = "token-broker-test"
NOW = 1_800_000_000.0


def jar(now: float = NOW, max_age: int = 3600) -> CookieJar:
    return CookieJar(parse_keys(KEY), DEPLOYMENT, max_age, clock=lambda: now)


# -- what a refused cookie or blob says ------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", "not a cookie", "AQ", jar().seal("rt")[:-2]], ids=["empty", "text", "short", "cut"]
)
def test_a_cookie_that_does_not_open_is_invalid_grant_asking_to_sign_in(value: str) -> None:
    with pytest.raises(InvalidCookie) as refused:
        jar().open(value)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert refused.value.description == "The refresh cookie is invalid or expired; sign in again."


@pytest.mark.parametrize(
    ("blob", "reason"),
    [(b"\x02" + bytes(40), "version"), (b"\x01" + bytes(28), "short"), (b"\x01" + bytes(40), "tag")],
    ids=["version", "short", "tag"],
)
def test_an_unsealable_blob_names_why_and_nothing_else(blob: bytes, reason: str) -> None:
    """The reason is the exception's whole message: it may be logged, and holds no value."""
    with pytest.raises(sealing.Unsealable) as refused:
        sealing.unseal(bytes(32), blob, b"place")
    assert refused.value.reason == reason
    assert str(refused.value) == reason
    assert refused.value.args == (reason,)


@pytest.mark.parametrize("kid_bytes", [0, 4])
def test_a_blob_must_carry_at_least_one_sealed_byte(kid_bytes: int) -> None:
    """Version, key id, nonce and tag alone are short; one byte more is a whole blob, whose key id is read."""
    kid = bytes(range(1, kid_bytes + 1))
    envelope = sealing.VERSION + kid + bytes(sealing.NONCE_BYTES + sealing.TAG_BYTES)
    with pytest.raises(sealing.Unsealable) as refused:
        sealing.key_id(envelope, kid_bytes)
    assert refused.value.reason == "short"
    assert sealing.key_id(envelope + b"x", kid_bytes) == kid


def test_cookie_mode_without_broker_keys_says_what_is_missing() -> None:
    with pytest.raises(SecretUnavailable) as missing:
        parse_keys("")
    assert missing.value.description == "Cookie mode needs broker_keys in the broker's secret."


# -- which cookie is ours (RFC 6265 §5.2: only SP and HTAB are trimmed) ------------------------


@pytest.mark.parametrize(
    ("header", "found"),
    [
        (f"{COOKIE_NAME}=abc", "abc"),
        (f"theme=dark; {COOKIE_NAME}=abc; lang=en", "abc"),
        (f" \t{COOKIE_NAME} \t= \tabc \t", "abc"),
        (f"{COOKIE_NAME}=; {COOKIE_NAME}=abc", "abc"),
        (f"{COOKIE_NAME}= \t ;{COOKIE_NAME}=abc", "abc"),
        (f"{COOKIE_NAME}=a=b", "a=b"),
        (f"{COOKIE_NAME}=XabcX", "XabcX"),
        (f"{COOKIE_NAME}=XX", "XX"),
        (f"{COOKIE_NAME}=\xa0", "\xa0"),
        (f"{COOKIE_NAME}=\xa0abc\u2000", "\xa0abc\u2000"),
        (f"\xa0{COOKIE_NAME}=abc", None),
        (f"X{COOKIE_NAME}X=abc", None),
        (f"{COOKIE_NAME}", None),
        (f"{COOKIE_NAME}=", None),
        ("theme=dark", None),
        ("", None),
    ],
)
def test_the_cookie_is_found_by_its_exact_name_in_either_header_form(header: str, found: str | None) -> None:
    # API Gateway v1 gives one (lower-cased) Cookie header; a list holds every Cookie header sent
    assert read_cookie({"cookie": header}, []) == found
    assert read_cookie({}, [header]) == found
    assert read_cookie({}, ["theme=dark", header]) == found


def test_the_list_of_cookie_headers_wins_over_the_single_header() -> None:
    assert read_cookie({"cookie": f"{COOKIE_NAME}=single"}, [f"{COOKIE_NAME}=listed"]) == "listed"
    assert read_cookie({"cookie": f"{COOKIE_NAME}=single"}, ["theme=dark"]) is None


def test_without_any_cookie_header_there_is_no_cookie() -> None:
    assert read_cookie({}, []) is None
    assert read_cookie({"origin": "https://app.example.com"}, []) is None


def test_the_login_cookie_is_read_by_its_own_name() -> None:
    header = f"{COOKIE_NAME}=refresh; {LOGIN_COOKIE_NAME}=login"
    assert read_cookie({}, [header], LOGIN_COOKIE_NAME) == "login"
    assert read_cookie({}, [header]) == "refresh"
    assert read_cookie({}, [f"{COOKIE_NAME}=refresh"], LOGIN_COOKIE_NAME) is None


# -- the Set-Cookie values ---------------------------------------------------------------------


def test_the_refresh_cookie_is_host_only_secure_httponly_and_strict() -> None:
    name_value, *attributes = jar(max_age=1800).set_cookie("rt-1").split("; ")
    name, _, value = name_value.partition("=")
    assert name == COOKIE_NAME
    assert jar().open(value) == "rt-1"
    assert attributes == ["Max-Age=1800", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"]
    assert clear_cookie() == f"{COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"


def test_the_login_cookie_is_lax_and_lives_its_own_max_age() -> None:
    """Lax: it must come back on the upstream's redirect to the callback."""
    login = {"state": "s-1", "nonce": "n-1", "verifier": "v-1", "return_to": "/"}
    name_value, *attributes = jar(max_age=3600).seal_login(login, 600).split("; ")
    name, _, value = name_value.partition("=")
    assert name == LOGIN_COOKIE_NAME
    assert attributes == ["Max-Age=600", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"]
    assert jar(NOW + 599).open_login(value) == {**login, "exp": int(NOW) + 600}
    with pytest.raises(InvalidCookie):
        jar(NOW + 600).open_login(value)
    assert clear_login_cookie() == f"{LOGIN_COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"


def test_a_login_cookie_and_a_refresh_cookie_never_open_as_each_other() -> None:
    login_value = jar().seal_login({"state": "s"}, 600).split(";")[0].partition("=")[2]
    with pytest.raises(InvalidCookie):
        jar().open(login_value)
    with pytest.raises(InvalidCookie):
        jar().open_login(jar().seal("rt"))


# -- what a refresh cookie holds ---------------------------------------------------------------


def forged(payload: Any, place: bytes = b"broker-refresh-cookie|") -> str:
    """A cookie sealed as the module documents it, around any payload: the blob under the
    first key, its key id the first 4 bytes of SHA-256("broker-cookie-kid" + key), the place
    and deployment as associated data, base64url without padding."""
    key = parse_keys(KEY)[0]
    kid = hashlib.sha256(b"broker-cookie-kid" + key).digest()[:4]
    blob = sealing.seal(key, json.dumps(payload).encode(), place + DEPLOYMENT.encode(), kid=kid)
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def test_a_refresh_cookie_lives_max_age_seconds() -> None:
    value = jar(max_age=3600).seal("rt-1")
    assert jar(NOW + 3599.9).open(value) == "rt-1"
    with pytest.raises(InvalidCookie):
        jar(NOW + 3600).open(value)


def test_a_session_carries_its_claims_only_when_there_are_some() -> None:
    claims = {"sub": "user-1", "email": "a@example.com"}
    assert jar().open_session(jar().seal("rt-1", claims)) == ("rt-1", claims)
    assert jar().open_session(jar().seal("rt-2")) == ("rt-2", {})
    assert jar().open_session(jar().seal("rt-3", {})) == ("rt-3", {})
    assert jar().open_session(forged({"rt": "rt-4", "exp": int(NOW) + 60})) == ("rt-4", {})


def test_the_documented_format_opens() -> None:
    assert jar().open(forged({"rt": "rt-1", "exp": int(NOW) + 1})) == "rt-1"
    assert jar().open_login(forged({"state": "s", "exp": int(NOW) + 1}, b"broker-login-cookie|"))["state"] == "s"


@pytest.mark.parametrize(
    "payload",
    [
        ["rt-1", int(NOW) + 60],
        "rt-1",
        {"rt": "rt-1"},
        {"rt": "rt-1", "exp": str(int(NOW) + 60)},
        {"rt": "rt-1", "exp": NOW + 60.5},
        {"rt": "rt-1", "exp": int(NOW)},
        {"exp": int(NOW) + 60},
        {"rt": 42, "exp": int(NOW) + 60},
        {"rt": "rt-1", "exp": int(NOW) + 60, "cl": ["sub"]},
        {"rt": "rt-1", "exp": int(NOW) + 60, "cl": "sub"},
    ],
    ids=[
        "list",
        "string",
        "no-exp",
        "text-exp",
        "float-exp",
        "expired",
        "no-rt",
        "int-rt",
        "list-claims",
        "text-claims",
    ],
)
def test_a_well_sealed_cookie_with_the_wrong_content_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidCookie) as refused:
        jar().open_session(forged(payload))
    assert refused.value.error == "invalid_grant"
