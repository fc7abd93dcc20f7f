"""The views DOT does not provide: the exchange, userinfo, and test control."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, set_token_value
from oauth2_provider.oauth2_backends import get_oauthlib_core

SERVICE_USERNAME = "exchange-service"
EXCHANGE_SCOPE = "read"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Runtime:
    """State the test-control endpoints may change while the server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.client_id = ""
        self.access_token_expire_seconds = 3600
        self._exchange_token = ""
        self._token: dict[str, int] = {}
        self._calls: dict[str, int] = {}

    @property
    def exchange_token(self) -> str:
        with self._lock:
            return self._exchange_token

    @exchange_token.setter
    def exchange_token(self, value: str) -> None:
        with self._lock:
            self._exchange_token = value

    def count(self, endpoint: str, grant_type: str | None = None) -> None:
        with self._lock:
            if endpoint == "token":
                key = grant_type or "(missing)"
                self._token[key] = self._token.get(key, 0) + 1
            else:
                self._calls[endpoint] = self._calls.get(endpoint, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"token": dict(self._token), **self._calls}

    def reset_stats(self) -> None:
        with self._lock:
            self._token.clear()
            self._calls.clear()


runtime = Runtime()

Handler = Callable[[HttpRequest], HttpResponse]


def stats_middleware(get_response: Handler) -> Handler:
    """Count requests per named endpoint, and token requests per grant type."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        match = request.resolver_match
        if match is not None and match.url_name and not match.url_name.startswith("control"):
            grant_type = request.POST.get("grant_type") if match.url_name == "token" else None
            runtime.count(match.url_name, grant_type)
        return response

    return middleware


def _error(status: int, body: dict[str, str], **headers: str) -> JsonResponse:
    return JsonResponse(body, status=status, headers={**NO_STORE, **headers})


def exchange(request: HttpRequest) -> HttpResponse:
    """bakrypt-style exchange: ``Authorization: Token <exchange_token>`` → access token."""
    if request.method != "POST":
        return _error(405, {"detail": f'Method "{request.method}" not allowed.'})
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    expected = runtime.exchange_token
    if scheme != "Token" or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        return _error(401, {"detail": "Invalid token."}, **{"WWW-Authenticate": "Token"})
    access_token = get_access_token_model()(
        user=get_user_model().objects.get(username=SERVICE_USERNAME),
        application=get_application_model().objects.get(client_id=runtime.client_id),
        expires=timezone.now() + timedelta(seconds=runtime.access_token_expire_seconds),
        scope=EXCHANGE_SCOPE,
    )
    raw_token = secrets.token_urlsafe(32)
    set_token_value(access_token, raw_token)
    access_token.save()
    body = {
        "access_token": raw_token,
        "token_type": "Bearer",
        "expires_in": runtime.access_token_expire_seconds,
        "scope": EXCHANGE_SCOPE,
    }
    return JsonResponse(body, headers=NO_STORE)


def userinfo(request: HttpRequest) -> HttpResponse:
    """A protected resource: proves a bearer access token is real and live."""
    valid, oauth_request = get_oauthlib_core().verify_request(request, scopes=[])
    if not valid:
        return _error(401, {"error": "invalid_token"}, **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return JsonResponse({"username": oauth_request.user.get_username()}, headers=NO_STORE)


def _control(request: HttpRequest, method: str) -> HttpResponse | None:
    """Refuse a control call that is not ``method`` from loopback."""
    if not ipaddress.ip_address(request.META.get("REMOTE_ADDR", "0.0.0.0")).is_loopback:
        return _error(403, {"error": "forbidden"})
    if request.method != method:
        return _error(405, {"error": "method_not_allowed"})
    return None


def _json_field(request: HttpRequest, name: str) -> str | None:
    try:
        value = json.loads(request.body).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def control_client_secret(request: HttpRequest) -> HttpResponse:
    """Rotate the seeded application's secret; DOT hashes it on save."""
    if (refused := _control(request, "POST")) is not None:
        return refused
    if (secret := _json_field(request, "client_secret")) is None:
        return _error(400, {"error": "client_secret (a non-empty string) is required"})
    application = get_application_model().objects.get(client_id=runtime.client_id)
    application.client_secret = secret
    application.save()
    return JsonResponse({"ok": True})


def control_exchange_token(request: HttpRequest) -> HttpResponse:
    if (refused := _control(request, "POST")) is not None:
        return refused
    if (token := _json_field(request, "exchange_token")) is None:
        return _error(400, {"error": "exchange_token (a non-empty string) is required"})
    runtime.exchange_token = token
    return JsonResponse({"ok": True})


def control_stats(request: HttpRequest) -> HttpResponse:
    if (refused := _control(request, "GET")) is not None:
        return refused
    return JsonResponse(runtime.stats())


def control_reset_stats(request: HttpRequest) -> HttpResponse:
    if (refused := _control(request, "POST")) is not None:
        return refused
    runtime.reset_stats()
    return JsonResponse({"ok": True})
