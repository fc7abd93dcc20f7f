"""The code flow's building blocks, each rule at its edge (found untested by mutation testing).

broker.navigation (the query string, return_to, the redirect), broker.oidc_discovery (explicit
URLs against discovery, the document's checks) and broker.grants.code_flow (the failure
redirect's error codes, the callback URL), called directly; the upstream is pytest-httpserver.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import broker.oidc_discovery
from broker.errors import BrokerError, InvalidRequest, UpstreamFailure
from broker.grants.code_flow import failure, redirect_uri
from broker.http import Request
from broker.navigation import MAX_RETURN_TO, checked_return_to, parse_query, redirect_response, with_params
from broker.oidc_discovery import Endpoints, discovered, endpoints, fetch_json
from broker.profiles import Profile
from tests.unit.conftest import ORIGIN

ORIGINS = frozenset({ORIGIN, "https://app.example.com"})


def exactly(text: str) -> str:
    """A ``match=`` pattern for exactly ``text``."""
    return f"^{re.escape(text)}$"


def query_of(query: Any) -> Request:
    return Request("GET", {}, b"", "", query=query)


# -- the query string ----------------------------------------------------------------------------


def test_the_query_string_is_read_by_the_bodys_rules() -> None:
    """One value per name (API Gateway's single or multi-value map); empty is missing; a repeat is 400."""
    assert parse_query(query_of({"a": "1", "b": ["2"], "c": ""})) == {"a": "1", "b": "2"}
    assert parse_query(query_of(None)) == {}
    with pytest.raises(InvalidRequest, match=exactly("Parameter 'a' is sent more than once.")):
        parse_query(query_of({"a": ["1", "2"]}))


@pytest.mark.parametrize("query", [{"a": 1}, {"a": [None]}, {"a": ["1", 2]}, {1: "a"}])
def test_a_query_value_or_name_that_is_not_text_is_malformed(query: Any) -> None:
    with pytest.raises(InvalidRequest, match=exactly("The query string is malformed.")):
        parse_query(query_of(query))


# -- return_to -------------------------------------------------------------------------------------


def test_return_to_is_kept_as_given_on_an_allowed_origin() -> None:
    for url in (f"{ORIGIN}/", f"{ORIGIN}/app?tab=1#x", "https://app.example.com", "https://app.example.com/a/b"):
        assert checked_return_to(url, ORIGINS) == url


@pytest.mark.parametrize("url", [None, ""])
def test_a_missing_return_to_is_named(url: str | None) -> None:
    with pytest.raises(InvalidRequest, match=exactly("Missing required parameter: return_to.")):
        checked_return_to(url, ORIGINS)


def test_return_to_may_be_2048_characters_and_no_more() -> None:
    head = f"{ORIGIN}/"
    longest = head + "a" * (MAX_RETURN_TO - len(head))
    assert checked_return_to(longest, ORIGINS) == longest
    with pytest.raises(InvalidRequest, match=exactly("Parameter 'return_to' is invalid.")):
        checked_return_to(longest + "a", ORIGINS)


@pytest.mark.parametrize(
    "url",
    [f"{ORIGIN}/a\\b", f"{ORIGIN}/a b", f"{ORIGIN}/a\tb", f"{ORIGIN}/a\x01b", f"{ORIGIN}/a\x7fb", f"{ORIGIN}/\u2028"],
)
def test_what_parsers_disagree_on_is_invalid_even_on_an_allowed_origin(url: str) -> None:
    """Backslashes, whitespace and control characters: refused before the URL is parsed."""
    with pytest.raises(InvalidRequest, match=exactly("Parameter 'return_to' is invalid.")):
        checked_return_to(url, ORIGINS)


@pytest.mark.parametrize(
    "url",
    ["https://evil.example/", f"{ORIGIN}@evil.example/", "http://u@localhost:5173/", "/relative", "localhost:5173"],
)
def test_a_return_to_off_the_allowed_origins_is_named_so(url: str) -> None:
    with pytest.raises(InvalidRequest, match=exactly("Parameter 'return_to' is not on an allowed origin.")):
        checked_return_to(url, ORIGINS)


def test_userinfo_is_refused_even_where_an_allowed_origin_were_written_with_it() -> None:
    """An Origin never carries userinfo; a return_to with some is refused, whatever the list says."""
    listed = frozenset({"https://user@app.example.com"})
    with pytest.raises(InvalidRequest, match=exactly("Parameter 'return_to' is not on an allowed origin.")):
        checked_return_to("https://user@app.example.com/", listed)


# -- the redirect ----------------------------------------------------------------------------------


def test_with_params_adds_to_the_query_string_and_keeps_the_rest() -> None:
    assert with_params("https://a.example/p", {"x": "1 2", "y": "&"}) == "https://a.example/p?x=1+2&y=%26"
    assert with_params("https://a.example/p?k=v#f", {"x": "1"}) == "https://a.example/p?k=v&x=1#f"
    assert with_params("https://a.example/p?k=v", {}) == "https://a.example/p?k=v"


def test_a_redirect_is_a_bare_302_with_its_cookies() -> None:
    assert redirect_response("https://a.example/", ("a=1", "b=2")) == {
        "statusCode": 302,
        "headers": {"Location": "https://a.example/", "Cache-Control": "no-store", "Pragma": "no-cache"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": "",
        "isBase64Encoded": False,
    }
    assert redirect_response("https://a.example/")["multiValueHeaders"] == {}


# -- the failure redirect and the callback URL -------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        ("access_denied", "access_denied"),
        ("invalid_scope", "invalid_scope"),
        ("temporarily_unavailable", "temporarily_unavailable"),
        ("invalid_grant", "invalid_grant"),  # a spent or replayed code
        ("invalid_client", "server_error"),  # the broker's own credentials: not the user's business
        ("invalid_token", "server_error"),
        ("unsupported_grant_type", "server_error"),
    ],
)
def test_a_failure_sends_back_an_rfc_6749_code_or_server_error(error: str, sent: str) -> None:
    reply = failure(f"{ORIGIN}/app?tab=1", error, ("cleared",))
    assert (reply.status, reply.location, reply.cookies) == (302, f"{ORIGIN}/app?tab=1&error={sent}", ("cleared",))
    assert failure(f"{ORIGIN}/", error).cookies == ()


def config_with(redirect: str) -> Any:
    return SimpleNamespace(config=SimpleNamespace(redirect_uri=redirect))


def test_the_callback_url_is_the_configured_one_or_next_to_the_route_called() -> None:
    called = Request("GET", {}, b"", "", url="https://api.example.com/v1/auth/authorize")
    assert redirect_uri(config_with(""), called) == "https://api.example.com/v1/auth/callback"
    assert redirect_uri(config_with("https://auth.example/cb"), called) == "https://auth.example/cb"
    with pytest.raises(BrokerError, match=exactly("The callback URL is unknown: set BROKER_REDIRECT_URI.")):
        redirect_uri(config_with(""), Request("GET", {}, b"", ""))


# -- OIDC discovery -----------------------------------------------------------------------------------


@pytest.fixture
def idp(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """A new execution environment (nothing discovered) and an issuer at /issuer."""
    monkeypatch.setattr(broker.oidc_discovery, "_documents", {})
    return httpserver


def serve_document(server: HTTPServer, **document: Any) -> dict[str, Any]:
    full = {
        "issuer": server.url_for("/issuer"),
        "authorization_endpoint": server.url_for("/authorize"),
        "token_endpoint": server.url_for("/token"),
        "jwks_uri": server.url_for("/jwks"),
        "end_session_endpoint": server.url_for("/logout"),
        **document,
    }
    served = {k: v for k, v in full.items() if v is not None}
    server.expect_request("/issuer/.well-known/openid-configuration").respond_with_json(served)
    return served


def test_discovery_fills_in_what_the_profile_does_not_name(idp: HTTPServer) -> None:
    serve_document(idp)
    profile = Profile("p", issuer=idp.url_for("/issuer"), end_session_url="https://idp.example/bye")
    assert endpoints(profile, 2) == Endpoints(
        authorization_url=idp.url_for("/authorize"),
        token_url=idp.url_for("/token"),
        jwks_url=idp.url_for("/jwks"),
        end_session_url="https://idp.example/bye",
    )
    # explicit URLs win over discovered ones
    explicit = profile._replace(authorization_url="https://idp.example/a", token_url="https://idp.example/t")
    assert endpoints(explicit, 2)[:3] == ("https://idp.example/a", "https://idp.example/t", idp.url_for("/jwks"))


def test_a_profile_naming_every_url_it_needs_is_not_discovered(idp: HTTPServer) -> None:
    """Discovery only when a URL is missing: the JWKS for OIDC, none without."""
    plain = Profile("p", authorization_url="https://idp.example/a", token_url="https://idp.example/t")
    oidc = plain._replace(issuer=idp.url_for("/issuer"), jwks_url="https://idp.example/j")
    assert endpoints(plain, 2) == Endpoints("https://idp.example/a", "https://idp.example/t", None, None)
    assert endpoints(oidc, 2) == Endpoints(
        "https://idp.example/a", "https://idp.example/t", "https://idp.example/j", None
    )
    assert idp.log == []
    # an OIDC profile without a jwks_url discovers it
    serve_document(idp)
    assert endpoints(oidc._replace(jwks_url=None), 2).jwks_url == idp.url_for("/jwks")
    assert len(idp.log) == 1


@pytest.mark.parametrize("missing", ["authorization_endpoint", "token_endpoint", "jwks_uri"])
def test_a_document_lacking_an_endpoint_the_flow_needs_is_an_upstream_failure(idp: HTTPServer, missing: str) -> None:
    serve_document(idp, **{missing: None})
    with pytest.raises(
        UpstreamFailure, match=exactly("The upstream's metadata lacks an endpoint the code flow needs.")
    ):
        endpoints(Profile("p", issuer=idp.url_for("/issuer")), 2)


def test_without_an_end_session_endpoint_there_is_none(idp: HTTPServer) -> None:
    serve_document(idp, end_session_endpoint=None)
    assert endpoints(Profile("p", issuer=idp.url_for("/issuer")), 2).end_session_url is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("authorization_endpoint", "http://idp.example/a"),
        ("token_endpoint", 42),
        ("jwks_uri", "https://u@idp.example/j"),
        ("end_session_endpoint", ["https://idp.example/bye"]),
    ],
)
def test_an_unusable_discovered_url_is_an_upstream_failure(idp: HTTPServer, key: str, value: Any) -> None:
    """A discovered URL passes the configured ones' check: https (http on loopback only), no userinfo."""
    serve_document(idp, **{key: value})
    with pytest.raises(UpstreamFailure, match=exactly(f"The upstream's discovery document holds an unusable {key}.")):
        endpoints(Profile("p", issuer=idp.url_for("/issuer")), 2)


def test_the_document_is_fetched_once_per_issuer(idp: HTTPServer) -> None:
    issuer = idp.url_for("/issuer")
    document = serve_document(idp)
    other = {**document, "issuer": idp.url_for("/other")}
    idp.expect_request("/other/.well-known/openid-configuration").respond_with_json(other)
    assert discovered(issuer, 2) == document
    assert discovered(issuer, 2) == document
    assert discovered(idp.url_for("/other"), 2) == other
    assert [entry[0].path for entry in idp.log] == [
        "/issuer/.well-known/openid-configuration",
        "/other/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize("path", ["/issuer/", "/issuerX", "/issuer"])
def test_the_document_is_under_the_issuer_as_written_less_a_trailing_slash(idp: HTTPServer, path: str) -> None:
    """OpenID Connect Discovery §4: {issuer}/.well-known/openid-configuration, the issuer's "/" dropped."""
    issuer = idp.url_for(path)
    document = {"issuer": issuer, "authorization_endpoint": idp.url_for("/a"), "token_endpoint": idp.url_for("/t")}
    idp.expect_request(f"{path.rstrip('/')}/.well-known/openid-configuration").respond_with_json(document)
    assert discovered(issuer, 2) == document


def test_a_document_naming_another_issuer_is_refused_and_not_kept(idp: HTTPServer) -> None:
    serve_document(idp, issuer="https://evil.example")
    for _ in range(2):
        with pytest.raises(UpstreamFailure, match=exactly("The upstream's discovery document names another issuer.")):
            discovered(idp.url_for("/issuer"), 2)
    assert len(idp.log) == 2


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, "{}", "The upstream answered HTTP 500 for its metadata."),
        (404, "{}", "The upstream answered HTTP 404 for its metadata."),
        (200, "<html>", "The upstream's metadata is not JSON."),
        (200, "[1, 2]", "The upstream's metadata is not a JSON object."),
        (200, '"text"', "The upstream's metadata is not a JSON object."),
    ],
)
def test_metadata_that_is_not_a_json_object_by_200_is_an_upstream_failure(
    idp: HTTPServer, status: int, body: str, message: str
) -> None:
    idp.expect_request("/doc").respond_with_data(body, status=status, content_type="application/json")
    with pytest.raises(UpstreamFailure, match=exactly(f"{message}")):
        fetch_json(idp.url_for("/doc"), 2)


def test_metadata_is_read_by_get(idp: HTTPServer) -> None:
    idp.expect_request("/doc", method="GET").respond_with_data(json.dumps({"a": [1]}))
    assert fetch_json(idp.url_for("/doc"), 2) == {"a": [1]}
