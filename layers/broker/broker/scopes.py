"""Scope is the confidential client's privilege, not the browser's.

The broker sends the client's own credentials with every grant, so a scope the SPA asks for is
forwarded only when the profile allows every item of it (``scopes``); a profile without an
allowlist drops a requested scope (the upstream's default applies). ``default_scope`` is sent
when the SPA asks for none, on the grants that issue a new authorization (not on refresh,
where an omitted scope means "as originally granted", RFC 6749 §6).
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.errors import InvalidScope
from broker.profiles import Profile


def scoped(params: Mapping[str, str], profile: Profile, *, use_default: bool) -> dict[str, str]:
    """``params`` with the scope the profile allows; ``InvalidScope`` for anything beyond it."""
    result = {key: value for key, value in params.items() if key != "scope"}
    requested = params.get("scope", "").split()
    if requested and profile.scopes:
        refused = [item for item in requested if item not in profile.scopes]
        if refused:
            raise InvalidScope(f"Scope {_safe(refused[0])} is not allowed; allowed: {' '.join(profile.scopes)}.")
        result["scope"] = " ".join(requested)
    elif not requested and use_default and profile.default_scope:
        result["scope"] = profile.default_scope
    return result


def _safe(item: str) -> str:
    """A refused scope token for the description (printable ASCII by the schema), kept short."""
    return repr(item[:40])
