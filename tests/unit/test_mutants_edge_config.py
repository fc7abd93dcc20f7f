"""The configuration's rules at their edges (docs/configuration.md): each variable is read under
its own name, each default is the documented one, each bound is inclusive and each refusal
names the variable and the rule, so a misconfigured function fails its cold start saying why.

Written against the mutants mutation testing left alive in broker.config and broker.profiles.
"""

from __future__ import annotations

import json
import re

import pytest

from broker.config import Config, session_token
from broker.errors import ConfigError
from broker.profiles import PRESETS, URL_KEYS, Profile, _choice, _url, check_url, is_loopback, parse_profile

SECRET_ID = "token-broker/client"
BASE = {"BROKER_SECRET_ID": SECRET_ID}
COOKIE = {"BROKER_REFRESH_DELIVERY": "cookie", "BROKER_ALLOWED_ORIGINS": "https://app.example.com"}


def config(**env: str) -> Config:
    return Config.from_env({**BASE, **env})


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)  # a function that reads the secret: the default
    return str(info.value)


# -- the defaults -----------------------------------------------------------------------------


def test_an_environment_with_only_the_secret_id_gets_every_documented_default() -> None:
    c = Config.from_env(BASE)
    assert c.secret_id == SECRET_ID
    assert c.profile == PRESETS["bakrypt-testnet"]
    assert c.allowed_origins == frozenset()
    assert c.secret_ttl == 300.0
    assert c.upstream_timeout == 8.0
    assert c.refresh_delivery == "body"
    assert c.cookie_mode is False
    assert c.cookie_max_age == 30 * 24 * 3600
    assert c.deployment_id == SECRET_ID  # binds cookies to the secret when no id is given
    assert c.state_table == ""
    assert c.login_max_failures == 5
    assert c.login_max_failures_per_ip == 50
    assert c.refresh_grace == 30.0
    assert c.guards_fail_closed is False
    assert c.secrets_backend == "sdk"
    assert c.extension_port == 2773
    assert c.public_url == ""
    assert c.login_flows == frozenset({"password"})
    assert c.redirect_uri == ""
    assert c.session_claims == ("sub", "name", "email", "preferred_username")
    assert c.first_origin == ""


def test_blank_values_count_as_unset() -> None:
    names = (
        "BROKER_PROFILE",
        "BROKER_TOKEN_URL",
        "BROKER_EXCHANGE_URL",
        "BROKER_SECRET_TTL",
        "BROKER_UPSTREAM_TIMEOUT",
        "BROKER_REFRESH_DELIVERY",
        "BROKER_COOKIE_MAX_AGE",
        "BROKER_DEPLOYMENT_ID",
        "BROKER_LOGIN_MAX_FAILURES",
        "BROKER_GUARDS_FAIL_CLOSED",
        "BROKER_SECRETS_BACKEND",
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
        "BROKER_PUBLIC_URL",
        "BROKER_LOGIN_FLOWS",
        "BROKER_SESSION_CLAIMS",
    )
    blank = dict.fromkeys(names, "  ")
    assert config(**blank) == Config.from_env(BASE)


# -- every variable is read, under its own name -------------------------------------------------


def test_every_variable_is_read_under_its_documented_name() -> None:
    c = Config.from_env(
        {
            "BROKER_SECRET_ID": "  other/secret  ",
            "BROKER_PROFILE": " didit ",
            "BROKER_ALLOWED_ORIGINS": "https://app.example.com",
            "BROKER_SECRET_TTL": "12.5",
            "BROKER_UPSTREAM_TIMEOUT": "3.5",
            "BROKER_REFRESH_DELIVERY": "Cookie",
            "BROKER_COOKIE_MAX_AGE": "3600.9",
            "BROKER_DEPLOYMENT_ID": " prod-eu ",
            "BROKER_STATE_TABLE": " broker-state ",
            "BROKER_LOGIN_MAX_FAILURES": "7",
            "BROKER_LOGIN_MAX_FAILURES_PER_IP": "70",
            "BROKER_REFRESH_GRACE": "45",
            "BROKER_GUARDS_FAIL_CLOSED": "yes",
            "BROKER_SECRETS_BACKEND": "EXTENSION",
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": "2775",
            "BROKER_PUBLIC_URL": "https://api.example.com/prod/",
            "BROKER_LOGIN_FLOWS": "password,code",
            "BROKER_REDIRECT_URI": " https://api.example.com/prod/auth/callback ",
            "BROKER_SESSION_CLAIMS": "sub, email",
        }
    )
    assert c.secret_id == "other/secret"
    assert c.profile.name == "didit"
    assert c.profile.client_auth == "client_secret_basic"
    assert c.allowed_origins == frozenset({"https://app.example.com"})
    assert (c.secret_ttl, c.upstream_timeout, c.refresh_grace) == (12.5, 3.5, 45.0)
    assert c.refresh_delivery == "cookie"
    assert c.cookie_mode is True
    assert c.cookie_max_age == 3600
    assert type(c.cookie_max_age) is int
    assert c.deployment_id == "prod-eu"
    assert c.state_table == "broker-state"
    assert (c.login_max_failures, c.login_max_failures_per_ip) == (7, 70)
    assert type(c.login_max_failures) is int
    assert type(c.login_max_failures_per_ip) is int
    assert c.guards_fail_closed is True
    assert c.secrets_backend == "extension"
    assert c.extension_port == 2775
    assert c.public_url == "https://api.example.com/prod"
    assert c.login_flows == frozenset({"password", "code"})
    assert c.redirect_uri == "https://api.example.com/prod/auth/callback"
    assert c.session_claims == ("sub", "email")
    assert c.first_origin == "https://app.example.com"


# -- the secret id ----------------------------------------------------------------------------


def test_the_secret_id_is_required_unless_the_function_reads_no_secret() -> None:
    assert refusal({}) == "BROKER_SECRET_ID is required"
    assert refusal({"BROKER_SECRET_ID": "   "}) == "BROKER_SECRET_ID is required"
    assert Config.from_env({}, needs_secret=False).secret_id == ""


# -- numbers: inclusive bounds, named in the refusal --------------------------------------------

NUMBERS = [
    # name, minimum, just below, maximum, just above, the bounds as the refusal prints them
    ("BROKER_SECRET_TTL", "0", "-0.001", "86400", "86400.001", "0 and 86400"),
    ("BROKER_UPSTREAM_TIMEOUT", "0.1", "0.099", "28", "28.001", "0.1 and 28"),
    ("BROKER_COOKIE_MAX_AGE", "60", "59.9", str(400 * 86400), str(400 * 86400 + 1), "60 and 3.456e+07"),
    ("BROKER_LOGIN_MAX_FAILURES", "1", "0.9", "100", "100.1", "1 and 100"),
    ("BROKER_LOGIN_MAX_FAILURES_PER_IP", "1", "0.9", "1000", "1000.1", "1 and 1000"),
    ("BROKER_REFRESH_GRACE", "0", "-0.1", "300", "300.1", "0 and 300"),
]


@pytest.mark.parametrize(("name", "low", "below", "high", "above", "bounds"), NUMBERS, ids=[n[0] for n in NUMBERS])
def test_a_number_is_accepted_at_its_bounds_and_refused_past_them(
    name: str, low: str, below: str, high: str, above: str, bounds: str
) -> None:
    field = {
        "BROKER_SECRET_TTL": "secret_ttl",
        "BROKER_UPSTREAM_TIMEOUT": "upstream_timeout",
        "BROKER_COOKIE_MAX_AGE": "cookie_max_age",
        "BROKER_LOGIN_MAX_FAILURES": "login_max_failures",
        "BROKER_LOGIN_MAX_FAILURES_PER_IP": "login_max_failures_per_ip",
        "BROKER_REFRESH_GRACE": "refresh_grace",
    }[name]
    assert getattr(config(**{name: low}), field) == float(low)
    assert getattr(config(**{name: high}), field) == float(high)
    for value in (below, above):
        assert refusal({**BASE, name: value}) == f"{name} must be between {bounds}"
    assert refusal({**BASE, name: "soon"}) == f"{name} must be a number of seconds"


# -- choices and flags ------------------------------------------------------------------------


def test_a_choice_is_case_insensitive_and_a_wrong_one_lists_the_allowed() -> None:
    assert config(BROKER_SECRETS_BACKEND="SDK").secrets_backend == "sdk"
    assert (
        refusal({**BASE, "BROKER_SECRETS_BACKEND": "vault"}) == "BROKER_SECRETS_BACKEND must be one of: sdk, extension"
    )
    assert (
        refusal({**BASE, "BROKER_REFRESH_DELIVERY": "header"}) == "BROKER_REFRESH_DELIVERY must be one of: body, cookie"
    )


@pytest.mark.parametrize(("raw", "value"), [("false", False), ("0", False), ("No", False), ("TRUE", True), ("1", True)])
def test_a_flag_reads_the_usual_spellings(raw: str, value: bool) -> None:
    assert config(BROKER_GUARDS_FAIL_CLOSED=raw).guards_fail_closed is value


def test_a_flag_refuses_anything_else() -> None:
    assert refusal({**BASE, "BROKER_GUARDS_FAIL_CLOSED": "maybe"}) == "BROKER_GUARDS_FAIL_CLOSED must be true or false"


@pytest.mark.parametrize("port", ["1", "65535"])
def test_the_extension_port_is_any_tcp_port(port: str) -> None:
    assert config(PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=port).extension_port == int(port)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "27x3", "2773.0"])
def test_the_extension_port_refuses_what_is_not_a_tcp_port(port: str) -> None:
    refused = refusal({**BASE, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": port})
    assert refused == "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT must be a TCP port"


# -- origins, cookie mode and the login flows ---------------------------------------------------


def test_origins_are_trimmed_of_spaces_and_a_trailing_slash_and_empty_ones_skipped() -> None:
    c = config(BROKER_ALLOWED_ORIGINS=" , https://shop.example.BOX/ ,, https://a.example.com ,")
    assert c.allowed_origins == frozenset({"https://a.example.com", "https://shop.example.BOX"})
    # the first listed origin is where a callback without a return_to goes
    assert c.first_origin == "https://shop.example.BOX"


@pytest.mark.parametrize("wildcard", ["*", "null", "https://a.example.com, *"])
def test_origins_refuse_a_wildcard_or_null(wildcard: str) -> None:
    refused = refusal({**BASE, "BROKER_ALLOWED_ORIGINS": wildcard})
    assert refused == "BROKER_ALLOWED_ORIGINS lists exact origins; '*' and 'null' are not allowed"


def test_cookie_mode_needs_allowed_origins() -> None:
    refused = refusal({**BASE, "BROKER_REFRESH_DELIVERY": "cookie", "BROKER_ALLOWED_ORIGINS": " , "})
    assert refused == "cookie mode needs BROKER_ALLOWED_ORIGINS (the CSRF defence checks Origin)"


def test_the_code_flow_needs_cookie_mode() -> None:
    refused = refusal({**BASE, "BROKER_LOGIN_FLOWS": "code", "BROKER_ALLOWED_ORIGINS": "https://app.example.com"})
    assert refused == "the code flow (BROKER_LOGIN_FLOWS=code) needs BROKER_REFRESH_DELIVERY=cookie"
    assert config(BROKER_LOGIN_FLOWS=" code ", **COOKIE).login_flows == frozenset({"code"})


def test_an_unknown_login_flow_is_refused() -> None:
    refused = refusal({**BASE, **COOKIE, "BROKER_LOGIN_FLOWS": "password,implicit"})
    assert refused == "BROKER_LOGIN_FLOWS lists some of: password, code"


def test_session_claims_are_trimmed_deduplicated_and_kept_in_order() -> None:
    assert config(BROKER_SESSION_CLAIMS=" email ,, sub,email ").session_claims == ("email", "sub")
    assert config(BROKER_SESSION_CLAIMS=" , ").session_claims == ("sub", "name", "email", "preferred_username")


# -- URLs: the profile's, the redirect URI and the public URL ----------------------------------


def test_the_token_and_exchange_urls_from_the_environment_override_the_profile() -> None:
    c = config(
        BROKER_PROFILE="bakrypt",
        BROKER_TOKEN_URL=" https://idp.example.com/token ",
        BROKER_EXCHANGE_URL="https://idp.example.com/exchange",
    )
    assert c.profile.token_url == "https://idp.example.com/token"
    assert c.profile.exchange_url == "https://idp.example.com/exchange"
    assert c.profile.revocation_url == PRESETS["bakrypt"].revocation_url


@pytest.mark.parametrize("key", URL_KEYS)
def test_every_profile_url_is_checked_at_cold_start_and_named(key: str) -> None:
    profile = json.dumps({key: "http://idp.example.com/x"})
    refused = refusal({**BASE, "BROKER_PROFILE": profile})
    assert refused == f"{key} must be an https:// URL (http:// only for loopback hosts)"
    assert getattr(config(BROKER_PROFILE=json.dumps({key: "https://idp.example.com/x"})).profile, key) == (
        "https://idp.example.com/x"
    )


def test_the_token_url_from_the_environment_is_checked_too() -> None:
    refused = refusal({**BASE, "BROKER_TOKEN_URL": "http://idp.example.com/token"})
    assert refused == "token_url must be an https:// URL (http:// only for loopback hosts)"


def test_the_redirect_uri_is_checked() -> None:
    refused = refusal({**BASE, **COOKIE, "BROKER_REDIRECT_URI": "http://evil.example/cb"})
    assert refused == "BROKER_REDIRECT_URI must be an https:// URL (http:// only for loopback hosts)"


def test_the_public_url_loses_its_trailing_slash_and_may_hold_any_path() -> None:
    assert config(BROKER_PUBLIC_URL="https://api.example.com/").public_url == "https://api.example.com"
    assert config(BROKER_PUBLIC_URL="https://api.example.com/XStageX/").public_url == "https://api.example.com/XStageX"


@pytest.mark.parametrize("suffix", ["?x=1", "#top", "/a@b"])
def test_the_public_url_is_an_issuer_without_query_fragment_or_userinfo(suffix: str) -> None:
    refused = refusal({**BASE, "BROKER_PUBLIC_URL": "https://api.example.com/prod" + suffix})
    assert refused == "BROKER_PUBLIC_URL is the issuer: no query, fragment, userinfo or backslash"


def test_the_public_url_must_be_https() -> None:
    refused = refusal({**BASE, "BROKER_PUBLIC_URL": "http://api.example.com"})
    assert refused == "BROKER_PUBLIC_URL must be an https:// URL (http:// only for loopback hosts)"


# -- check_url: https, or http to a loopback host -----------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://idp.example.com/token", "http://localhost:8000/t", "http://127.0.0.9/t", "http://[::1]:8000/t"],
)
def test_https_or_a_loopback_http_url_is_accepted_as_given(url: str) -> None:
    assert check_url(url, "token_url") == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://idp.example.com\\@localhost/", "must not hold a backslash, whitespace or a control character"),
        ("https://idp.example.com/a b", "must not hold a backslash, whitespace or a control character"),
        ("https://idp.example.com/\x7f", "must not hold a backslash, whitespace or a control character"),
        ("https://idp.example.com:99999999/", "is not a valid URL"),
        ("https://user:pw@idp.example.com/", "must not hold user information (user@)"),
        ("https:///token", "must be an https:// URL (http:// only for loopback hosts)"),
        ("http://10.0.0.1/token", "must be an https:// URL (http:// only for loopback hosts)"),
        ("ftp://localhost/token", "must be an https:// URL (http:// only for loopback hosts)"),
    ],
)
def test_any_other_url_is_refused_with_the_rule_it_breaks(url: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_url(url, "token_url")
    assert str(info.value) == f"token_url {rule}"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.255.0.1", True), ("::1", True), ("10.0.0.1", False),
     ("localhost.example.com", False), ("", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- profiles: presets, JSON objects and their refusals -----------------------------------------


def test_a_preset_name_is_read_with_surrounding_space() -> None:
    assert parse_profile("  bakrypt\n") is PRESETS["bakrypt"]


def test_a_json_profile_on_a_preset_keeps_the_preset_name_and_the_rest_is_custom() -> None:
    on_didit = parse_profile(json.dumps({"preset": "didit", "token_url": "https://didit.example/t"}))
    assert on_didit == PRESETS["didit"]._replace(token_url="https://didit.example/t")
    custom = parse_profile(json.dumps({"preset": None, "token_url": "https://idp.example.com/t"}))
    assert custom == Profile(name="custom", token_url="https://idp.example.com/t")


SCHEME_RULE = "profile exchange_scheme must be a single token such as Token or Bearer"
DEFAULT_SCOPE_RULE = "profile default_scope must be a space-separated string of scope tokens"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("keycloak", "unknown profile preset; known: bakrypt, bakrypt-testnet, didit, or a JSON object"),
        ("[]", "unknown profile preset; known: bakrypt, bakrypt-testnet, didit, or a JSON object"),
        ("{not json", "BROKER_PROFILE is not valid JSON"),
        (json.dumps({"zeta": 1, "alpha": 2, "token_url": "https://a.example"}), "unknown profile keys: alpha, zeta"),
        (json.dumps({"preset": "keycloak"}), "profile preset is unknown"),
        (json.dumps({"preset": ""}), "profile preset is unknown"),
        (json.dumps({"exchange_scheme": "Two words"}), SCHEME_RULE),
        (json.dumps({"exchange_scheme": 5}), SCHEME_RULE),
        (json.dumps({"fields": {"password": 1}}), "profile fields must be an object of strings"),
        (json.dumps({"fields": ["password"]}), "profile fields must be an object of strings"),
        (json.dumps({"fields": {"client_assertion": "x"}}),
         "profile fields may rename only: client_id, client_secret, code, code_verifier, grant_type, password, "
         "redirect_uri, refresh_token, scope, username"),
        (json.dumps({"headers": {"X-Partner": None}}), "profile headers must be an object of strings"),
        (json.dumps({"headers": {"Content-Length": "1"}}), "profile header 'Content-Length' is not allowed"),
        (json.dumps({"headers": {"bad header": "x"}}), "profile header 'bad header' is not allowed"),
        (json.dumps({"headers": {"X-A": "a\rb"}}), "profile header 'X-A' has a control character"),
        (json.dumps({"headers": {"X-A": "a\nb"}}), "profile header 'X-A' has a control character"),
        (json.dumps({"headers": {"X-A": "a\x00b"}}), "profile header 'X-A' has a control character"),
        (json.dumps({"response_fields": {"jwt": 1}}), "profile response_fields must be an object of strings"),
        (json.dumps({"response_fields": {"jwt": "password"}}),
         "profile response_fields may map only to: access_token, token_type, expires_in, refresh_token, scope, "
         "id_token"),
        (json.dumps({"scopes": "read"}), "profile scopes must be a list of RFC 6749 scope tokens"),
        (json.dumps({"scopes": ["read", 1]}), "profile scopes must be a list of RFC 6749 scope tokens"),
        (json.dumps({"scopes": ["read write"]}), "profile scopes must be a list of RFC 6749 scope tokens"),
        (json.dumps({"default_scope": "  "}), DEFAULT_SCOPE_RULE),
        (json.dumps({"default_scope": ["read"]}), DEFAULT_SCOPE_RULE),
        (json.dumps({"default_scope": 'read "write"'}), DEFAULT_SCOPE_RULE),
    ],
)  # fmt: skip
def test_an_invalid_profile_is_refused_saying_why(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        parse_profile(raw)


def test_a_json_profile_sets_every_field_it_names() -> None:
    profile = parse_profile(
        json.dumps(
            {
                "exchange_scheme": "Bearer",
                "fields": {"username": "email", "scope": None},
                "headers": {"X-Partner": "Xp {partner_id}", "X-Grant": "{grant_type}/{partner_id}"},
                "response_fields": {"jwt": "access_token"},
                "scopes": ["read", "write", "read"],
                "default_scope": "  read   write ",
            }
        )
    )
    assert profile.exchange_scheme == "Bearer"
    assert dict(profile.fields) == {"username": "email", "scope": None}
    assert profile.placeholders() == frozenset({"partner_id", "grant_type"})
    assert profile.render_headers({"partner_id": "p-1", "grant_type": "password"}) == {
        "X-Partner": "Xp p-1",
        "X-Grant": "password/p-1",
    }
    # the upstream's camelCase names are still recognised beside the profile's own
    assert profile.response_fields["jwt"] == "access_token"
    assert profile.response_fields["accessToken"] == "access_token"
    assert profile.scopes == ("read", "write")
    assert profile.default_scope == "read write"


def test_the_url_and_choice_readers_refuse_with_the_key_named() -> None:
    # The parsers are built once, at import: called here as parse_profile calls them.
    assert _url("issuer")("https://idp.example.com") == "https://idp.example.com"
    with pytest.raises(ConfigError, match=r"^profile issuer must be a string$"):
        _url("issuer")(["https://idp.example.com"])
    assert _choice("encoding", ("form", "json"))("json") == "json"
    with pytest.raises(ConfigError, match=r"^profile encoding must be one of: form, json$"):
        _choice("encoding", ("form", "json"))("xml")


def test_the_session_token_is_read_per_call_and_empty_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    assert session_token() == ""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "renewed-after-restore")
    assert session_token() == "renewed-after-restore"
