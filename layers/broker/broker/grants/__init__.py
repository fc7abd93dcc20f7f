"""One class per grant; ``base.Grant`` is what they share."""

from __future__ import annotations

from broker.grants.base import Grant, Reply
from broker.grants.exchange import ExchangeGrant
from broker.grants.password import PasswordGrant
from broker.grants.refresh import RefreshGrant
from broker.grants.revocation import RevocationGrant
from broker.grants.token_endpoint import TokenEndpointGrant

__all__ = ["ExchangeGrant", "Grant", "PasswordGrant", "RefreshGrant", "Reply", "RevocationGrant", "TokenEndpointGrant"]
