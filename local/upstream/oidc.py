"""OpenID Connect for the local upstream: the ID token's profile claims for the demo user."""

from __future__ import annotations

from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):  # type: ignore[misc]  # DOT is untyped
    """DOT puts each claim in the ID token when its scope (``oidc_claim_scope``) was granted."""

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        name = user.get_username()
        return {"name": user.get_full_name() or name.title(), "email": user.email or f"{name}@example.com",
                "preferred_username": name}  # fmt: skip
