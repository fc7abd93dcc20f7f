"""The code flow's upstream endpoints: the profile's explicit URLs, or OIDC discovery from its issuer.

Discovery (``{issuer}/.well-known/openid-configuration``) is fetched on first use, never at
cold start, and kept for the execution environment's life: an upstream's endpoints do not
move under a running deployment. Every discovered URL passes the same check as a configured
one (https, or http on loopback), and the document must name the issuer it was fetched for
(OpenID Connect Discovery §4.3), so a document cannot send the broker elsewhere.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from broker.errors import ConfigError, UpstreamFailure
from broker.profiles import check_url
from broker.upstream import get

if TYPE_CHECKING:
    from broker.profiles import Profile

WELL_KNOWN = "/.well-known/openid-configuration"


class Endpoints(NamedTuple):
    authorization_url: str
    token_url: str
    jwks_url: str | None
    end_session_url: str | None


_documents: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def endpoints(profile: Profile, timeout: float) -> Endpoints:
    """The code flow's URLs: explicit ones win; discovery fills in the rest."""
    complete = profile.authorization_url and profile.token_url and (profile.jwks_url or not profile.oidc)
    document = discovered(profile.issuer, timeout) if profile.issuer and not complete else {}
    found = Endpoints(
        authorization_url=profile.authorization_url or _url(document, "authorization_endpoint") or "",
        token_url=profile.token_url or _url(document, "token_endpoint") or "",
        jwks_url=profile.jwks_url or _url(document, "jwks_uri"),
        end_session_url=profile.end_session_url or _url(document, "end_session_endpoint"),
    )
    if not found.authorization_url or not found.token_url or (profile.oidc and not found.jwks_url):
        raise UpstreamFailure("The upstream's metadata lacks an endpoint the code flow needs.")
    return found


def discovered(issuer: str, timeout: float) -> dict[str, Any]:
    """The issuer's discovery document, fetched once per execution environment."""
    with _lock:
        document = _documents.get(issuer)
    if document is None:
        document = fetch_json(issuer.rstrip("/") + WELL_KNOWN, timeout)
        if document.get("issuer") != issuer:
            raise UpstreamFailure("The upstream's discovery document names another issuer.")
        with _lock:
            _documents[issuer] = document
    return document


def fetch_json(url: str, timeout: float) -> dict[str, Any]:
    """A JSON object by GET (discovery, JWKS); anything else is the upstream's failure."""
    answer = get(url, timeout)
    if answer.status != 200:
        raise UpstreamFailure(f"The upstream answered HTTP {answer.status} for its metadata.")
    try:
        document = json.loads(answer.data)
    except ValueError as exc:
        raise UpstreamFailure("The upstream's metadata is not JSON.") from exc
    if not isinstance(document, dict):
        raise UpstreamFailure("The upstream's metadata is not a JSON object.")
    return document


def _url(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    try:
        return check_url(value, key) if isinstance(value, str) else check_url("", key)
    except ConfigError as exc:
        raise UpstreamFailure(f"The upstream's discovery document holds an unusable {key}.") from exc
