"""GET /.well-known/oauth-authorization-server: RFC 8414 metadata, built from the deployment.

No secret and no upstream call: the document names the broker's own endpoints under the
API's base URL, and the profile's scope allowlist. The base URL is ``BROKER_PUBLIC_URL`` when
set (a CDN or proxy in front), otherwise the one the request came in on: API Gateway's
``requestContext.domainName`` and the part of ``requestContext.path`` before the route (the
stage, or a custom domain's base path). The scheme is https, except on a loopback host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from broker.config import Config
from broker.errors import BrokerError, InvalidRequest, OriginNotAllowed, RouteOff
from broker.http import Cors, error_response, json_response, parse_event
from broker.observability import logger
from broker.profiles import is_loopback
from broker.routes import AUTHORIZE, LOGOUT, OPENID_CONFIGURATION, SERVED_AT, TOKEN_ENDPOINT

# The document changes only with a deployment: clients and caches may keep it for an hour.
CACHE_CONTROL = "public, max-age=3600"
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_BASE_PATH = re.compile(r"^(?:/[A-Za-z0-9._~-]+)*$")


def metadata(base_url: str, config: Config) -> dict[str, Any]:
    """RFC 8414 §2, for the flows this deployment has on (``BROKER_LOGIN_FLOWS``).

    Without the code flow there is no authorization endpoint, so no response type:
    ``response_types_supported`` (a required member) is empty rather than naming a flow a client
    would then try. With it, ``/auth/authorize`` is the endpoint (a BFF login: it takes
    ``return_to`` and runs PKCE itself, docs/code-flow.md)."""
    flows = config.login_flows
    grant_types = [name for name in SERVED_AT if name != "password" or "password" in flows]
    document: dict[str, Any] = {
        "issuer": base_url,
        "token_endpoint": f"{base_url}{TOKEN_ENDPOINT}",
        "revocation_endpoint": f"{base_url}{LOGOUT}",
        "grant_types_supported": grant_types,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": list(config.profile.scopes),
    }
    if "code" in flows:
        document["grant_types_supported"] = [*grant_types, "authorization_code"]
        document["authorization_endpoint"] = f"{base_url}{AUTHORIZE}"
        document["response_types_supported"] = ["code"]
        document["code_challenge_methods_supported"] = ["S256"]
    return document


def base_url(event: Mapping[str, Any], headers: Mapping[str, str], configured: str) -> str:
    """The API's base URL as this request reached it (the stage path included)."""
    if configured:
        return configured
    context = event.get("requestContext")
    context = context if isinstance(context, Mapping) else {}
    host = context.get("domainName") or headers.get("host")
    if not isinstance(host, str) or not _HOST.match(host):
        raise InvalidRequest("The request names no usable host.")
    full, route = context.get("path"), event.get("path")
    prefix = ""
    if isinstance(full, str) and isinstance(route, str) and route and full.endswith(route):
        prefix = full[: -len(route)].rstrip("/")
    if not _BASE_PATH.match(prefix):
        raise InvalidRequest("The request path is not usable.")
    scheme = "http" if is_loopback(urlsplit(f"//{host}").hostname or "") else "https"
    return f"{scheme}://{host}{prefix}"


class MetadataEndpoint:
    """Serves the metadata document. Created once per execution environment, at cold start."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cors = Cors(config.allowed_origins, credentials=config.cookie_mode)

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        request = None
        try:
            request = parse_event(event)
            if request.origin is not None and request.origin not in self.cors.origins:
                raise OriginNotAllowed()
            if request.method != "GET":
                raise InvalidRequest("Only GET is supported on this route.")
            if event.get("resource") == OPENID_CONFIGURATION and "code" not in self.config.login_flows:
                raise RouteOff()
            document = metadata(base_url(event, request.headers, self.config.public_url), self.config)
        except BrokerError as exc:
            self._log(exc.status, started)
            return error_response(exc, request, self.cors)
        response = json_response(200, document, request, self.cors)
        response["headers"]["Cache-Control"] = CACHE_CONTROL
        del response["headers"]["Pragma"]
        self._log(200, started)
        return response

    def _log(self, status: int, started: float) -> None:
        duration = round((time.perf_counter() - started) * 1000, 2)
        logger.info("Metadata request finished", extra={"status": status, "duration_ms": duration})


def metadata_endpoint() -> MetadataEndpoint:
    """The function's endpoint: the configuration read once, at cold start (no secret needed)."""
    return MetadataEndpoint(Config.from_env(needs_secret=False))
