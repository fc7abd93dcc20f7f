"""AES-256-GCM sealing: one blob format for the refresh cookies and the guards' shared outcomes.

A blob is ``VERSION + key id + nonce + ciphertext and tag``: the key id is 4 bytes in a
cookie (it names which of the listed keys sealed it) and absent in an outcome (one key). The
associated data binds a blob to its place (the deployment, the table item). Derived keys
come from HKDF-SHA256 (RFC 5869). ``cryptography`` is imported on first use only, so
importing this module loads no cipher (body mode and the password route never need one).
"""

from __future__ import annotations

import os

VERSION = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32


class Unsealable(Exception):
    """The blob does not open; ``reason`` ("version", "short" or "tag") names why, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def derive_key(root: bytes, salt: bytes, info: bytes) -> bytes:
    """A 32-byte key by HKDF-SHA256 (RFC 5869), with ``cryptography``'s HKDF."""
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - loaded on first use
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415 - loaded on first use

    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(root)


def seal(key: bytes, plain: bytes, associated: bytes, kid: bytes = b"") -> bytes:
    """Encrypt and authenticate ``plain``; ``associated`` must be given again to open it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 - loaded on first use

    nonce = os.urandom(NONCE_BYTES)
    return VERSION + kid + nonce + AESGCM(key).encrypt(nonce, plain, associated)


def key_id(blob: bytes, kid_bytes: int) -> bytes:
    """The key id a blob carries; ``Unsealable`` if it is not a whole blob of this version."""
    if blob[:1] != VERSION:
        raise Unsealable("version")
    if len(blob) <= 1 + kid_bytes + NONCE_BYTES + TAG_BYTES:  # nothing sealed is ever empty
        raise Unsealable("short")
    return blob[1 : 1 + kid_bytes]


def unseal(key: bytes, blob: bytes, associated: bytes, kid_bytes: int = 0) -> bytes:
    """The plaintext ``seal`` was given; ``Unsealable`` for another key, place or a tampered blob."""
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - loaded on first use
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 - loaded on first use

    key_id(blob, kid_bytes)
    start = 1 + kid_bytes
    nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, sealed, associated)
    except InvalidTag as exc:
        raise Unsealable("tag") from exc


def preload(*, cipher: bool) -> None:
    """Import the KDF (and the cipher) now, in the init phase, not in the first request."""
    import cryptography.hazmat.primitives.kdf.hkdf  # noqa: PLC0415 - the import is the point

    if cipher:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401, PLC0415 - the import is the point
