"""ID token validation (broker.id_token) at each rule's edge, as mutation testing found them untested.

The JWKS is served by pytest-httpserver on loopback; tokens are signed per test. Each rule
pins what `validate` accepts, and for a refusal the `reason` it names (the callback logs it):
the check that failed, never a value.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import broker.id_token
from broker.id_token import IdTokenRejected, KeySet, check_claims, key_set, validate
from tests.unit.test_code_flow import SIGNER, STRANGER, jwk

CLIENT = "demo-client"
NONCE = "the-nonce"
EC_SIGNER = ec.generate_private_key(ec.SECP256R1())


def exactly(text: str) -> str:
    """A ``match=`` pattern for exactly ``text``."""
    return f"^{re.escape(text)}$"


class Jwks:
    """The upstream's JWKS: ``documents[i]`` answers the i-th fetch (the last one from then on)."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.url = server.url_for("/jwks")
        self.issuer = server.url_for("/issuer")
        self.documents: list[list[Any]] = [[jwk(SIGNER, "k1")]]
        self.fetches = 0

    def answer(self, request: Request) -> Response:
        keys = self.documents[min(self.fetches, len(self.documents) - 1)]
        self.fetches += 1
        return Response(json.dumps({"keys": keys}), content_type="application/json")

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.issuer, "sub": "user-1", "aud": CLIENT, "iat": now, "exp": now + 300, "nonce": NONCE}
        return {k: v for k, v in {**base, **changes}.items() if v is not None}

    def validate(self, token: str, keys: KeySet | None = None, leeway: int = 0) -> dict[str, Any]:
        return validate(
            token,
            keys or KeySet(self.url, 60.0),
            issuer=self.issuer,
            client_id=CLIENT,
            nonce=NONCE,
            leeway=leeway,
            timeout=2,
        )

    def reason(self, token: str, leeway: int = 0) -> str:
        with pytest.raises(IdTokenRejected) as caught:
            self.validate(token, leeway=leeway)
        assert str(caught.value) == caught.value.reason
        return caught.value.reason


@pytest.fixture
def jwks(httpserver: HTTPServer) -> Jwks:
    fake = Jwks(httpserver)
    httpserver.expect_request("/jwks").respond_with_handler(fake.answer)
    return fake


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.id_token, "_key_sets", {})


def sign(claims: dict[str, Any], key: Any = SIGNER, kid: str | None = "k1", alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def without(key: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k not in names}


# -- the reason names the failed check ---------------------------------------------------------


def test_each_refusal_names_its_check(jwks: Jwks) -> None:
    """Every refusal carries a reason naming the check (PyJWT's own as its exception's name)."""
    now = int(time.time())
    assert jwks.reason("not.a.jwt") == "malformed"
    assert jwks.reason(jwt.encode(jwks.claims(), "k" * 32, algorithm="HS256")) == "algorithm"
    assert jwks.reason(sign(jwks.claims(), STRANGER, kid="k9")) == "unknown key"
    assert jwks.reason(sign(jwks.claims(exp=now - 3600, iat=now - 7200))) == "ExpiredSignatureError"
    assert jwks.reason(sign(jwks.claims(aud="another-client"))) == "InvalidAudienceError"
    assert jwks.reason(sign(jwks.claims(azp="another-client"))) == "azp"
    assert jwks.reason(sign(jwks.claims(nonce="another-nonce"))) == "nonce"
    assert jwks.reason(sign(jwks.claims(iat=str(now)))) == "iat"  # PyJWT takes a numeric string


def test_a_key_of_another_type_than_the_tokens_algorithm_is_refused_as_key(jwks: Jwks) -> None:
    # Given an EC key without "alg" under the token's kid, and a token claiming RS256
    ec_key = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_SIGNER.public_key()))
    jwks.documents = [[{**ec_key, "kid": "k1", "use": "sig"}]]
    # Then the key does not load for RS256: refused as "key", never verified with another algorithm
    assert jwks.reason(sign(jwks.claims())) == "key"


# -- the claims PyJWT must require, and the leeway --------------------------------------------------


@pytest.mark.parametrize("claim", ["sub", "exp", "iat", "iss", "aud"])
def test_a_token_without_a_required_claim_is_refused(jwks: Jwks, claim: str) -> None:
    """iss, aud, exp, iat and sub are required: a token lacking one never validates."""
    assert jwks.reason(sign(jwks.claims(**{claim: None}))) == "MissingRequiredClaimError"


def test_the_leeway_tolerates_a_recently_expired_token(jwks: Jwks) -> None:
    now = int(time.time())
    token = sign(jwks.claims(exp=now - 10, iat=now - 310))
    assert jwks.validate(token, leeway=60)["sub"] == "user-1"
    assert jwks.reason(token, leeway=0) == "ExpiredSignatureError"


# -- azp and several audiences (OpenID Connect Core §3.1.3.7) ---------------------------------------


def test_a_single_audience_needs_no_azp(jwks: Jwks) -> None:
    assert jwks.validate(sign(jwks.claims()))["aud"] == CLIENT


def test_several_audiences_need_an_azp_naming_the_client(jwks: Jwks) -> None:
    audiences = [CLIENT, "another-client"]
    assert jwks.validate(sign(jwks.claims(aud=audiences, azp=CLIENT)))["aud"] == audiences
    assert jwks.reason(sign(jwks.claims(aud=audiences))) == "azp"
    assert jwks.reason(sign(jwks.claims(aud=[*audiences, "a-third"]))) == "azp"


def test_an_iat_is_accepted_up_to_now_plus_the_leeway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The iat check allows the clock skew exactly: now + leeway passes, a fraction later does not."""
    monkeypatch.setattr(time, "time", lambda: 1000.0)  # the clock check_claims reads
    claims = {"aud": CLIENT, "azp": CLIENT, "nonce": NONCE}
    check_claims({**claims, "iat": 1060}, CLIENT, NONCE, 60)
    with pytest.raises(IdTokenRejected, match=exactly("iat")):
        check_claims({**claims, "iat": 1060.5}, CLIENT, NONCE, 60)


# -- which key verifies: kid, use, kty, alg ----------------------------------------------------------


def test_the_kid_picks_the_key_among_several(jwks: Jwks) -> None:
    jwks.documents = [[jwk(SIGNER, "k1"), jwk(STRANGER, "k2")]]
    assert jwks.validate(sign(jwks.claims(), STRANGER, kid="k2"))["sub"] == "user-1"


def test_a_token_without_kid_needs_exactly_one_signing_key(jwks: Jwks) -> None:
    """Without a kid, the one signing key is used; with several, which one is unknown."""
    token = sign(jwks.claims(), kid=None)
    assert jwks.validate(token)["sub"] == "user-1"
    jwks.documents = [[jwk(SIGNER, "k1"), jwk(STRANGER, "k2")]]
    assert jwks.reason(token) == "unknown key"


def test_encryption_and_symmetric_keys_are_never_signing_keys(jwks: Jwks) -> None:
    """Only keys with use "sig" (or none) and a kty other than "oct" count, whatever else the JWKS holds."""
    # Given a JWKS whose one signing key has no "use", next to an encryption key, an HMAC
    # key and an entry that is not a key at all
    encryption = {**jwk(STRANGER, "k2"), "use": "enc"}
    symmetric = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "k3", "alg": "HS256"}
    jwks.documents = [[without(jwk(SIGNER, "k1"), "use"), encryption, symmetric, "not-a-key", ["nor", "this"]]]
    # Then a token without kid finds the signing key, and the encryption key's kid is unknown
    assert jwks.validate(sign(jwks.claims(), kid=None))["sub"] == "user-1"
    assert jwks.reason(sign(jwks.claims(), STRANGER, kid="k2")) == "unknown key"
    assert jwks.reason(sign(jwks.claims(), SIGNER, kid="k3")) == "unknown key"


def test_a_jwk_without_alg_takes_the_tokens_algorithm(jwks: Jwks) -> None:
    jwks.documents = [[without(jwk(SIGNER, "k1"), "alg")]]
    assert jwks.validate(sign(jwks.claims(), alg="PS256"))["sub"] == "user-1"


def test_a_jwk_naming_its_alg_verifies_that_algorithm_only(jwks: Jwks) -> None:
    # Given the key published for RS256, and a token signed with the same RSA key but PS256
    token = sign(jwks.claims(), alg="PS256")
    # Then it is refused: the key's alg binds it, not the token's header
    assert jwks.reason(token) == "InvalidAlgorithmError"


# -- the key set's refetch on an unknown kid -----------------------------------------------------------


def test_an_unknown_kid_refetches_once_the_interval_has_passed_exactly(jwks: Jwks) -> None:
    now = [0.0]
    keys = KeySet(jwks.url, 60.0, clock=lambda: now[0])
    jwks.documents = [[jwk(SIGNER, "k1")], [jwk(STRANGER, "k2")]]
    assert keys.key("k1", "RS256", 2).key_id == "k1"
    now[0] = 60.0
    assert keys.key("k2", "RS256", 2).key_id == "k2"
    assert jwks.fetches == 2


def test_a_kid_still_unknown_after_the_refetch_is_refused_even_with_one_key(jwks: Jwks) -> None:
    now = [0.0]
    keys = KeySet(jwks.url, 60.0, clock=lambda: now[0])
    jwks.documents = [[jwk(SIGNER, "k1")], [jwk(STRANGER, "k3")]]
    assert keys.key("k1", "RS256", 2).key_id == "k1"
    now[0] = 61.0
    with pytest.raises(IdTokenRejected, match=exactly("unknown key")):
        keys.key("k2", "RS256", 2)
    assert jwks.fetches == 2


def test_with_a_zero_interval_a_kid_unknown_at_the_first_load_is_looked_for_again(jwks: Jwks) -> None:
    """An interval of 0 never trusts a miss: the first load's miss refetches at once."""
    keys = KeySet(jwks.url, 0.0, clock=lambda: 5.0)
    jwks.documents = [[jwk(SIGNER, "k1")], [jwk(STRANGER, "k2")]]
    assert keys.key("k2", "RS256", 2).key_id == "k2"
    assert jwks.fetches == 2


def test_the_key_set_cache_is_per_jwks_url(fresh_cache: None) -> None:
    first = key_set("https://idp.example/jwks", 60.0)
    other = key_set("https://other.example/jwks", 60.0)
    assert (first.url, other.url) == ("https://idp.example/jwks", "https://other.example/jwks")
    assert key_set("https://idp.example/jwks", 60.0) is first
