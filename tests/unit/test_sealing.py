"""broker.sealing: the one AES-256-GCM blob format, and what was sealed before it still opens.

The pinned values below were produced by the code this module replaced (guards.py's own
``hkdf_sha256`` and ``_seal``, cookies.py's own AES-GCM): deployed keys, cookies and stored
outcomes must come out the same.
"""

from __future__ import annotations

import base64
from types import MappingProxyType

import pytest

from broker import sealing
from broker.cookies import CookieJar, InvalidCookie, parse_keys
from broker.guards import GuardKeys
from broker.secrets import BrokerSecret
from broker.singleflight import open_outcome, seal_outcome
from broker.state_table import TableFault

KEY = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
NEW_KEY = base64.urlsafe_b64encode(b"n" * 32).rstrip(b"=").decode()
DEPLOYMENT = "token-broker-test"
SEALED_AT = 1_800_000_000.0

# CookieJar(parse_keys(KEY), DEPLOYMENT, 3600, clock=lambda: SEALED_AT).seal("rt-pinned"), before sealing.py
PINNED_COOKIE = "AR_lZ5BWIF3NBmORsPqqjp2i5fbkxNg_679ZLDq_lB0vr4ui-eCtR1eXp20S58OMi0ixoasFOV9yKBpHHG0KQ71QwQzQXHY"
# guards._seal(keys, "refresh#abc", {"tokens": {...}}) with the keys of KEY, before sealing.py
PINNED_OUTCOME = base64.b64decode(
    "AVzAvMqvB9hnqca7l+QYGu5mVMK1DNjRvqrCrFZ7jhF/Mmxb1q5OQWgI4gckmiODYc0+4h03uGUCfAvcWo63pnk0BF94MANRNjWUxrxBOAp9UHB1oSenP+Y+"
)


def test_hkdf_gives_the_rfc_5869_vector() -> None:
    # RFC 5869 A.1 (HKDF-SHA256); the first 32 bytes of its 42-byte OKM
    okm = sealing.derive_key(
        bytes.fromhex("0b" * 22), bytes.fromhex("000102030405060708090a0b0c"), bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    )
    assert okm.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"


@pytest.mark.parametrize(
    ("values", "mac", "cipher"),
    [
        (
            {"broker_keys": KEY},
            "aac74d228a994b1756869b5d52e2630a08bd339119347279e6abeac4a44c359d",
            "4ef41915136c34e5a0afe21c5d5b1c08d1a0059f678365603451f709e7fdd086",
        ),
        (
            {"client_secret": "demo-client-secret"},
            "c8a5ce9ce13f817b86834ae51a2dea2802d905f338483bfd07d8c39cc2ecd28d",
            "2840898360aefb7d99c7659342cfbac0abaf00461c54d0e918766bdc8ac376fe",
        ),
    ],
    ids=["broker_keys", "client_secret"],
)
def test_guard_keys_are_the_ones_deployed_today(values: dict[str, str], mac: str, cipher: str) -> None:
    # The hand-written HKDF's output for the same secret: counters and outcomes keep their keys
    keys = GuardKeys.from_secret(BrokerSecret(MappingProxyType(values)))
    assert (keys.mac.hex(), keys.cipher.hex()) == (mac, cipher)


def test_a_cookie_sealed_by_the_old_code_still_opens() -> None:
    jar = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600, clock=lambda: SEALED_AT + 60)
    assert jar.open(PINNED_COOKIE) == "rt-pinned"
    # and not with another deployment's id, nor after its expiry
    with pytest.raises(InvalidCookie):
        CookieJar(parse_keys(KEY), "another", 3600, clock=lambda: SEALED_AT).open(PINNED_COOKIE)
    with pytest.raises(InvalidCookie):
        CookieJar(parse_keys(KEY), DEPLOYMENT, 3600, clock=lambda: SEALED_AT + 3600).open(PINNED_COOKIE)


def test_a_rotated_jar_opens_the_old_cookie_with_the_old_key() -> None:
    jar = CookieJar(parse_keys(f"{NEW_KEY},{KEY}"), DEPLOYMENT, 3600, clock=lambda: SEALED_AT)
    assert jar.open(PINNED_COOKIE) == "rt-pinned"


def test_a_new_cookie_has_the_old_layout() -> None:
    # version 1, 4-byte key id, 12-byte nonce, AES-GCM ciphertext and 16-byte tag, base64url unpadded
    jar = CookieJar(parse_keys(KEY), DEPLOYMENT, 3600, clock=lambda: SEALED_AT)
    value, pinned = jar.seal("rt-pinned"), PINNED_COOKIE
    assert "=" not in value
    assert len(value) == len(pinned)
    raw, old = (base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)) for v in (value, pinned))
    assert raw[:5] == old[:5]  # same version, same key id
    assert raw[5:17] != old[5:17]  # a fresh nonce


def test_an_outcome_sealed_by_the_old_code_still_opens() -> None:
    keys = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": KEY})))
    assert open_outcome(keys, "refresh#abc", PINNED_OUTCOME) == {
        "tokens": {"access_token": "at-pinned", "token_type": "Bearer"}
    }
    # bound to its item: under another item's key it does not open
    with pytest.raises(TableFault) as other_item:
        open_outcome(keys, "refresh#abd", PINNED_OUTCOME)
    assert other_item.value.code == "outcome_does_not_open"


def test_a_new_outcome_has_the_old_layout() -> None:
    keys = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": KEY})))
    outcome = {"tokens": {"access_token": "at-pinned", "token_type": "Bearer"}}
    blob = seal_outcome(keys, "refresh#abc", outcome)
    assert len(blob) == len(PINNED_OUTCOME)
    assert blob[:1] == b"\x01"
    assert open_outcome(keys, "refresh#abc", blob) == outcome


@pytest.mark.parametrize(
    ("blob", "code"),
    [
        (b"\x02" + PINNED_OUTCOME[1:], "outcome_version"),
        (PINNED_OUTCOME[:-1] + bytes([PINNED_OUTCOME[-1] ^ 1]), "outcome_does_not_open"),
        (PINNED_OUTCOME[:20], "outcome_does_not_open"),
        (b"\x01", "outcome_does_not_open"),
        (b"", "outcome_version"),
    ],
    ids=["version", "tampered", "truncated", "header-only", "empty"],
)
def test_an_outcome_that_does_not_open_is_a_table_fault(blob: bytes, code: str) -> None:
    keys = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": KEY})))
    with pytest.raises(TableFault) as fault:
        open_outcome(keys, "refresh#abc", blob)
    assert fault.value.code == code


def test_seal_and_unseal_with_and_without_a_key_id() -> None:
    key = bytes(range(32))
    for kid in (b"", b"kid!"):
        blob = sealing.seal(key, b"plain", b"place", kid=kid)
        assert sealing.key_id(blob, len(kid)) == kid
        assert sealing.unseal(key, blob, b"place", len(kid)) == b"plain"
        with pytest.raises(sealing.Unsealable) as wrong_place:
            sealing.unseal(key, blob, b"elsewhere", len(kid))
        assert wrong_place.value.reason == "tag"
        with pytest.raises(sealing.Unsealable):
            sealing.unseal(bytes(32), blob, b"place", len(kid))
