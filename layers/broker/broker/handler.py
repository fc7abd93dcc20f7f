"""Glue between a function's ``app.py`` and the core: one broker per execution environment."""

from __future__ import annotations

from broker.config import Config
from broker.grants import Grant, TokenBroker


def broker_for(grant: Grant) -> TokenBroker:
    """Read the configuration once, at cold start; an invalid one fails the init loudly."""
    return TokenBroker(grant, Config.from_env())
